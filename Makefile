# Two commands: `make run` and `make test`. Both first run `setup`, which is
# idempotent and quick when nothing changed (stamp files keyed on the inputs).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python

.PHONY: setup run test test-fast bench clean

setup:
	@scripts/setup.sh

run: setup
	@$(VENV)/bin/kesu run

test: setup
	@$(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) node_modules intake/static/vendor .setup-stamps
