# Two commands: `make run` (set up, create dev certificates, serve) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test test-fast golden certs schema manifests bench bench-hostile bench-controller lock clean

# `make run` gets the runtime dependencies exactly as the image installs them
# (requirements.lock, by hash: the tests run what ships) and the package; `make test`
# adds the test tools. tools/venv.py takes a lock around each step, so the two may be
# started together.
$(VENV)/.runtime: pyproject.toml requirements.lock tools/venv.py
	$(PYTHON) tools/venv.py runtime

$(VENV)/.installed: $(VENV)/.runtime
	$(PYTHON) tools/venv.py test

# Development certificates only: in a cluster the server reads a mounted Secret.
certs: $(VENV)/.runtime
	$(BIN)/webhook certs generate --out certs --service webhook --namespace webhook-system --if-missing

# The command line is .venv/bin/webhook: say how to put it on the PATH before serving.
run: certs
	@echo 'The webhook command line, in another terminal: export PATH="$(CURDIR)/$(BIN):$$PATH"'
	$(BIN)/webhook serve

test: $(VENV)/.installed
	$(BIN)/python -m pytest

# The tests that start no process and are not marked slow, for the edit-test loop.
# `make test` still runs everything.
test-fast: $(VENV)/.installed
	$(BIN)/python -m pytest -m "not slow and not process"

# Record the golden answers again (tests/golden/) after a deliberate change of behaviour;
# review `git diff tests/golden/` with the change (docs/operations.md, "Golden answers").
golden: $(VENV)/.installed
	$(BIN)/python -m tests.golden.regenerate

# Benchmark against a no-op baseline in the same run (docs/performance.md). Uses wrk
# when installed (apt-get install wrk), a Python load generator otherwise.
bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

# Issue 17's hostile inputs replayed against one worker each, with the targets checked
# (bench/hostile.py; figures in docs/performance.md). About 4 minutes, mostly idle waits.
bench-hostile: $(VENV)/.installed
	$(BIN)/python bench/hostile.py

# Issue 19's controller figures: 10,000 pods across 1,000 workloads in the fake API server
# (bench/controller.py; figures in docs/performance.md). A few minutes.
bench-controller: $(VENV)/.installed
	$(BIN)/python bench/controller.py

schema: $(VENV)/.runtime
	$(BIN)/webhook policies schema > docs/policy.schema.json

# The image installs exactly these versions, by hash (Dockerfile). Regenerate after a
# change to the dependencies in pyproject.toml, or to take new releases, then run the tests.
lock: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet 'uv>=0.5'
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes -o requirements.lock

# kustomize reads only files under its folder: keep a copy of the shipped policies there.
manifests:
	rm -f manifests/base/policies/*.yaml
	cp policies/*.yaml manifests/base/policies/

clean:
	rm -rf $(VENV) .venv.lock *.egg-info .pytest_cache
