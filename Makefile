# Two commands do all set-up: `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo test lint unit integration bench clean system-deps

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/auditstream demo

lint: $(BIN)/.installed
	$(BIN)/ruff check pipeline tests
	$(BIN)/ruff format --check pipeline tests
	$(BIN)/mypy

unit: $(BIN)/.installed system-deps
	$(BIN)/pytest tests/unit -q

# Debian packages the tests need; installed once, only as root (else: say what to install).
# One apt-get line per package group.
system-deps:
	@command -v promtool >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		prometheus prometheus-alertmanager; } || \
		{ echo "install Debian's prometheus and prometheus-alertmanager (promtool)"; exit 1; }
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; } || \
		{ echo "install Debian's chromium (headless, for the report test)"; exit 1; }

test: system-deps lint
	$(BIN)/pytest --durations=20 -ra

bench: $(BIN)/.installed
	$(BIN)/auditstream bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
