# Two commands do all set-up: `make demo` and `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo test lint unit integration bench clean

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

unit: $(BIN)/.installed
	$(BIN)/pytest tests/unit -q

test: lint
	$(BIN)/pytest --durations=20 -ra

bench: $(BIN)/.installed
	$(BIN)/auditstream bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
