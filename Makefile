# rehearse: `make demo` (set up, then run the whole pipeline on the embedded default),
# `make test` (set up, check lint and formatting, then run the test suite). `make setup`
# alone creates .venv.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: setup test demo lint clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	bash scripts/setup.sh --dev --libero --venv $(VENV)
	touch $@

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/rehearse demo

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean-venv:
	rm -rf $(VENV)
