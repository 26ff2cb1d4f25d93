// Command evanphx applies RFC 6902 JSON patches with github.com/evanphx/json-patch,
// the library kube-apiserver uses for a mutating webhook's JSONPatch answer
// (k8s.io/apiserver/pkg/admission/plugin/webhook/mutating/dispatcher.go calls
// jsonpatch.DecodePatch and then patch.Apply on the JSON-encoded object).
//
// Input, on stdin or in the files named as arguments: a stream of JSON objects
//
//	{"id": "any label", "doc": {...}, "patch": [...]}
//
// (whitespace between and inside them is free; one per line is usual). For each
// one it writes a single line to stdout:
//
//	{"id": "...", "result": {...}}   the patched document
//	{"id": "...", "error": "..."}    DecodePatch or Apply failed
//
// The exit status is 0 when every input was read, whatever the patches did; it is
// 2 for unreadable input. Build without network access (Debian:
// golang-go golang-github-evanphx-json-patch-dev) with
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o evanphx .
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"

	jsonpatch "github.com/evanphx/json-patch"
)

type input struct {
	ID    json.RawMessage `json:"id"`
	Doc   json.RawMessage `json:"doc"`
	Patch json.RawMessage `json:"patch"`
}

type output struct {
	ID     json.RawMessage `json:"id,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// apply does what the API server does with a webhook's JSONPatch response.
func apply(doc, patch []byte) ([]byte, error) {
	decoded, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		return nil, fmt.Errorf("decode patch: %w", err)
	}
	patched, err := decoded.Apply(doc)
	if err != nil {
		return nil, fmt.Errorf("apply patch: %w", err)
	}
	return patched, nil
}

func process(r io.Reader, enc *json.Encoder) error {
	dec := json.NewDecoder(bufio.NewReader(r))
	for {
		var in input
		err := dec.Decode(&in)
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read input: %w", err)
		}
		out := output{ID: in.ID}
		if len(in.Doc) == 0 || len(in.Patch) == 0 {
			out.Error = `input needs both "doc" and "patch"`
		} else if patched, err := apply(in.Doc, in.Patch); err != nil {
			out.Error = err.Error()
		} else {
			out.Result = patched
		}
		if err := enc.Encode(out); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
	}
}

func main() {
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	run := func(name string, r io.Reader) {
		if err := process(r, enc); err != nil {
			w.Flush()
			fmt.Fprintf(os.Stderr, "evanphx: %s: %v\n", name, err)
			os.Exit(2)
		}
	}
	if len(os.Args) < 2 {
		run("stdin", os.Stdin)
		return
	}
	for _, name := range os.Args[1:] {
		f, err := os.Open(name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "evanphx: %v\n", err)
			os.Exit(2)
		}
		run(name, f)
		f.Close()
	}
}
