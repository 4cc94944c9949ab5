# make run: set up .venv from uv.lock and start the relay with relay.toml (embedded PostgreSQL).
# make test: set up .venv from uv.lock with the test extras and run the tests.
# make lock: re-resolve uv.lock within pyproject.toml's ranges (a deliberate upgrade).
# make test-latest: the suite against the newest versions those ranges allow, in .venv-latest.
# make docs: regenerate docs/configuration.md from relay/config/schema.py.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV := .uv/bin/uv
# uv uses the Python that runs make's $(PYTHON), never one it downloads.
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
SYNC := $(UV) sync --locked --python $(PYTHON) --quiet

.PHONY: run test sink lint lock lock-check test-latest bench docs clean

# uv itself comes from PyPI, checked against the hashes in requirements-uv.txt.
$(UV): requirements-uv.txt
	rm -rf .uv
	$(PYTHON) -m venv .uv
	.uv/bin/python -m pip install --quiet --require-hashes --no-deps -r requirements-uv.txt
	touch $@

# Exactly the lock: `--locked` refuses a uv.lock that disagrees with pyproject.toml, and every
# file installed is checked against the lock's hashes. `run` and `sink` keep the test extras if
# they are there (--inexact); `test` removes anything the lock does not name.
.PHONY: venv venv-test
venv: $(UV)
	$(SYNC) --inexact

venv-test: $(UV)
	$(SYNC) --extra test

run: venv
	$(BIN)/relay serve --config relay.toml

sink: venv
	$(BIN)/relay sink --listen 127.0.0.1:2526

test: venv-test
	$(BIN)/python -m pytest

lock: $(UV)
	$(UV) lock --upgrade --python $(PYTHON)

lock-check: $(UV)
	$(UV) lock --check --python $(PYTHON)

# The newest releases pyproject.toml admits, resolved now and installed beside .venv, so a
# breaking release is seen here before a new user meets it. uv.lock is not touched.
test-latest: $(UV)
	$(UV) venv --quiet --allow-existing --python $(PYTHON) $(VENV)-latest
	$(UV) pip install --quiet --python $(VENV)-latest/bin/python --upgrade --refresh \
		-e '.[test]'
	$(UV) lock --upgrade --dry-run --python $(PYTHON)
	$(VENV)-latest/bin/python -m pytest

# make bench: the relay and Postfix side by side, then the fault runs, then fresh mail beside
# a backlog of up to a million deliveries (bench/README.md); make bench BENCH_ARGS="--quick"
# for a one-minute look at the first without the faults.
BENCH_ARGS ?= --faults
bench: venv-test
	$(BIN)/python -m bench $(BENCH_ARGS)
	$(BIN)/python -m bench.backlog

# The configuration reference is generated, never edited: tests/test_docs.py fails while it
# and the schema disagree.
docs: venv
	$(BIN)/python -m relay.config.reference docs/configuration.md

lint: venv-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(VENV)-latest .uv data .pytest_cache
