# mogli-bridge: `make demo`, `make test`, `make check`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install browser demo test test-fast check chaos clean proto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/mogli-bridge demo

test: install browser
	$(PY) -m pytest -q -p no:cacheprovider

# Headless Chromium for the status-page test (Debian package); best effort: the test skips, saying why,
# only where it still cannot be installed.
browser:
	@command -v chromium >/dev/null || (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
		apt-get install -y -qq chromium >/dev/null) || true

# The long chaos run (20 kill cycles, 3,000 operations per scenario); figures in var/chaos-report.jsonl.
chaos: install
	mkdir -p var && rm -f var/chaos-report.jsonl
	MOGLI_CHAOS=long MOGLI_CHAOS_REPORT=var/chaos-report.jsonl $(PY) -m pytest -q -p no:cacheprovider tests/chaos
	cat var/chaos-report.jsonl
	$(PY) -m tests.chaos.table var/chaos-report.jsonl

test-fast: install
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

check: install
	$(VENV)/bin/ruff check bridge tests
	$(VENV)/bin/ruff format --check bridge tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

# Regenerate the Pub/Sub API modules from bridge/salesforce/pubsub_api/pubsub_api.proto (grpcio-tools).
proto: install
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. --grpc_python_out=. \
		bridge/salesforce/pubsub_api/pubsub_api.proto
