# newsbeam: `make run` runs the pipeline on seeds/, `make test` runs the whole suite.
# Both create .venv/ first, with the versions pinned in constraints.txt.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
OUTPUT ?= output
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: run test lint typecheck format bench clean venv venv-test prism

$(BIN)/activate:
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "newsbeam needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check pip==24.3.1

$(VENV)/.installed: $(BIN)/activate pyproject.toml constraints.txt
	$(PIP_INSTALL) -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP_INSTALL) -e ".[test]"
	touch $@

venv: $(VENV)/.installed
venv-test: $(VENV)/.installed-test

run: $(VENV)/.installed
	$(BIN)/newsbeam run --config configs/local.yaml --output $(OUTPUT)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

test: lint typecheck prism
	$(BIN)/pytest -q

format: $(VENV)/.installed-test
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(VENV)/.installed-test  # not part of `make test`; e.g. make bench BENCH_ARGS="--copies 2"
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf $(OUTPUT) .pytest_cache .mypy_cache .ruff_cache

# Prism, Beam's portable local runner (a Go program), built from the Go module of the pinned Beam
# release: the streaming job and its tests run on it. Beam would download the binary; a build here
# never depends on that download. Needs Go 1.21+ and the Go module proxy.
BEAM_VERSION := 2.62.0
PRISM := .prism/bin/prism

prism: $(PRISM)

$(PRISM):
	@command -v go >/dev/null || { echo "make prism: Go is needed to build Beam's Prism runner (https://go.dev/dl/)" >&2; exit 1; }
	GOBIN=$(CURDIR)/.prism/bin GOFLAGS=-mod=mod GONOSUMDB=github.com/apache/beam/sdks/v2 \
		go install github.com/apache/beam/sdks/v2/go/cmd/prism@v$(BEAM_VERSION)
	@test -x $(PRISM)
