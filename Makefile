# make run: set up .venv and start the relay with relay.toml (embedded PostgreSQL).
# make test: set up .venv with the test extras and run the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test sink lint bench-setup bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

run: $(VENV)/.installed
	$(BIN)/relay serve --config relay.toml

sink: $(VENV)/.installed
	$(BIN)/relay sink --listen 127.0.0.1:2526

test: $(VENV)/.installed
	$(BIN)/python -m pytest

# make bench: the relay and Postfix side by side, then the fault runs (bench/README.md);
# make bench BENCH_ARGS="--quick" for a one-minute look without them.
BENCH_ARGS ?= --faults
bench: $(VENV)/.installed
	$(BIN)/python -m bench $(BENCH_ARGS)

lint: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) data .pytest_cache
