# `make test` and `make demo` set up their own virtual environment on a fresh machine.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export HF_HUB_OFFLINE := 1

.PHONY: install transformers-tests test lint demo clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Transformers' common test files for the installed version, from its source distribution on the package index,
# cached in .cache/transformers-tests/ (see tests/transformers_tests.py).
transformers-tests: $(STAMP)
	$(PYTHON) -m tests.transformers_tests

test: $(STAMP) transformers-tests
	$(PYTHON) -m pytest -q

lint: $(STAMP)
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

demo: $(STAMP)
	$(PYTHON) scripts/demo.py

clean:
	rm -rf $(VENV) build *.egg-info .cache/transformers-tests
