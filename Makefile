# Two commands: `make run` and `make test`. Both first run `setup`, which is
# idempotent and quick when nothing changed (stamp files keyed on the inputs).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python

.PHONY: setup run test lint bench clean

setup:
	@scripts/setup.sh

run: setup
	@$(VENV)/bin/kesu run

test: setup lint
	@$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

# The house rules: ruff's lint and the import contracts (the floors of DESIGN.md §4, the
# intake's ciphertext-only promise). Both run before every test run.
lint: setup
	@$(VENV)/bin/ruff check --quiet .
	@out=$$($(VENV)/bin/lint-imports --no-cache 2>&1) || { echo "$$out"; exit 1; }

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) node_modules intake/static/vendor .setup-stamps
