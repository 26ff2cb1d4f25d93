// Module mode needs the network (go mod tidy); offline, build in GOPATH mode
// against the Debian package instead: see the comment at the top of main.go.
module evanphx

go 1.19

// v4 API at this import path, as vendored by Kubernetes before it moved to
// gopkg.in/evanphx/json-patch.v4 (same code).
require github.com/evanphx/json-patch v4.12.0+incompatible

require github.com/pkg/errors v0.9.1 // indirect
