# Two entry points for a fresh machine: `make run` and `make test`.
# Both create .venv with the pinned packages of pyproject.toml on first use.

VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SITE = $(shell $(BIN)/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
MPY_OUT := build/mpy-check
NODE_PACKAGES := benchmarks/node_modules/.package-lock.json

.PHONY: run test lint typecheck compile test-packages pytest benchmarks clean

run: $(STAMP)
	$(BIN)/evse run

test: lint typecheck compile pytest

$(STAMP): pyproject.toml
	@command -v python3 >/dev/null || (apt-get update && apt-get install -y python3)
	@python3 -c 'import ensurepip, venv' 2>/dev/null || (apt-get update && apt-get install -y python3-venv)
	@command -v npm >/dev/null || (apt-get update && apt-get install -y nodejs npm)
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check host tests benchmarks
	$(BIN)/ruff format --check host tests benchmarks

# Firmware and shared protocol code, checked against the ESP32 and MicroPython stdlib stubs.
typecheck: $(STAMP)
	$(BIN)/pyright --typeshedpath $(SITE)

# Every module must compile to .mpy, as it will for the board (the same build as `evse build`).
compile: $(STAMP)
	$(BIN)/evse build --target unix --out $(MPY_OUT)

# System packages only the tests need: PostgreSQL for the storage tests, Chromium for the
# browser tests.
test-packages:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update && apt-get install -y postgresql)
	@command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium chromium-driver)

# The 32-bit MicroPython (WebAssembly, for node) of benchmarks/bench_heap32.py and
# tests/test_heap32.py, pinned in benchmarks/package-lock.json.
$(NODE_PACKAGES): benchmarks/package-lock.json $(STAMP)
	cd benchmarks && npm ci --no-audit --no-fund

pytest: $(STAMP) test-packages $(NODE_PACKAGES)
	$(BIN)/pytest -n 2

benchmarks: $(STAMP) $(NODE_PACKAGES)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python "$$b" || exit 1; done

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache .hypothesis benchmarks/node_modules
