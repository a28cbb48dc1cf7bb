# newsbeam: `make run` runs the pipeline on seeds/, `make test` runs the whole suite.
# Both create .venv/ first, with the versions pinned in constraints.txt, on Python 3.11 or 3.12
# (Beam 2.62 supports 3.9-3.12; CI runs the suite on 3.11 and `make run` on 3.12):
#   make run VENV=.venv312 PYTHON=python3.12

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
OUTPUT ?= output
PIP_INSTALL := $(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: run test lint typecheck format bench clean venv venv-test prism

$(BIN)/activate:
	$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 12), f"newsbeam needs Python 3.11 or 3.12, not {sys.version.split()[0]} ($(PYTHON))"'
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

test: lint typecheck prism cluster-deps browser
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

# Running at scale (README): a real Flink 1.19 cluster on 127.0.0.1 (JobManager, 2 TaskManagers, Beam's
# Flink job server, a Python worker pool per TaskManager), Dataflow launches and s3:// / gs:// through
# Beam's filesystems. `cluster-deps` installs, idempotently: the gcp and aws extras into .venv, and into
# .cluster/ the Flink distribution (PyPI), the job server's classpath (Maven), pyspark, moto's S3 server and
# fake-gcs-server (built with Go from its module, like Prism).
# tests/cluster/ starts and stops a cluster of its own; `make test` runs it with the rest of the suite.
.PHONY: cluster-deps cluster-up cluster-down cluster-status test-cluster
CLUSTER := $(BIN)/python deploy/flink/cluster.py
# e.g. CLUSTER_ARGS="--state=/tmp/c2" (another cluster beside the default one) or "--standard-ports"
CLUSTER_ARGS ?=

$(VENV)/.installed-cluster: $(VENV)/.installed-test
	$(PIP_INSTALL) -e ".[test,gcp,aws]"
	touch $@

cluster-deps: $(VENV)/.installed-cluster airflow-venv
	$(CLUSTER) install

# Airflow and Beam's provider for it, in an environment of their own: Airflow's pins clash with Beam's
# (the provider brings another Beam). tests/test_deploy.py parses deploy/airflow/newsbeam_dag.py in it
# and runs its tasks. Built once per constraints file (3-5 minutes cold; measured 2m50s without the
# Google provider, +1m27s for it), in the cluster-deps step like the Spark venv.
AIRFLOW_VENV := .cluster/airflow-venv
AIRFLOW_PACKAGES := apache-airflow==3.3.2 "apache-airflow-providers-apache-beam[google]==6.3.1" \
	apache-airflow-providers-google==22.8.0
.PHONY: airflow-venv browser

$(AIRFLOW_VENV)/.installed: deploy/constraints/airflow-venv.txt
	$(PYTHON) -m venv $(AIRFLOW_VENV)
	$(AIRFLOW_VENV)/bin/pip install --quiet --disable-pip-version-check -c $< $(AIRFLOW_PACKAGES)
	touch $@

airflow-venv: $(AIRFLOW_VENV)/.installed

# The browser tests (tests/test_report.py) render the HTML report in Debian's Chromium, and
# tests/test_deploy.py checks the systemd units with systemd-analyze: both from Debian's packages,
# installed when missing and when running as root (CI); elsewhere the tests say what to install.
DEBIAN_PACKAGES := chromium:chromium systemd-analyze:systemd

browser:
	@missing=""; for pair in $(DEBIAN_PACKAGES); do \
		command -v "$${pair%%:*}" >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
		else echo "make browser: install$$missing (Debian: sudo apt-get install$$missing) for the browser and systemd tests" >&2; fi; \
	fi

cluster-up: cluster-deps  # free ports and pids in .cluster/flink/cluster.json; `newsbeam run --runner flink` uses it
	$(CLUSTER) up $(CLUSTER_ARGS)

cluster-status:  # healthy or not, the web UI's address, the job endpoint, the logs
	$(CLUSTER) status $(filter --state%,$(CLUSTER_ARGS))

cluster-down:
	$(CLUSTER) down $(filter --state%,$(CLUSTER_ARGS))

test-cluster: cluster-deps
	$(BIN)/pytest -q tests/cluster
