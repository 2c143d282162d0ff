# mogli-bridge: `make demo`, `make test`, `make check`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install browser promtool demo test test-fast check chaos clean proto

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/mogli-bridge demo

test: install browser promtool
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -p no:cacheprovider --durations=30

# Headless Chromium for the status-page test (Debian package); best effort: the test skips, saying why,
# only where it still cannot be installed.
browser:
	@command -v chromium >/dev/null || (export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
		apt-get install -y -qq chromium >/dev/null) || true

# promtool (from Debian's prometheus package, unpacked into the venv, no service installed) for the alert
# rules' checks; best effort like the browser: those three tests skip, saying why, only where it cannot be had.
promtool: install browser
	@command -v promtool >/dev/null || test -x $(VENV)/bin/promtool || ( cd $(VENV) && \
		( apt-get download -qq prometheus >/dev/null 2>&1 || \
		  ( apt-get update -qq >/dev/null 2>&1 && apt-get download -qq prometheus >/dev/null 2>&1 ) ) && \
		dpkg-deb -x prometheus_*.deb tools && ln -sf ../tools/usr/bin/promtool bin/promtool; \
		rm -f prometheus_*.deb ) || true

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
