# The README's two commands: `make run` (install + main job) and `make test` (install + tests).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.rdfer-installed

.PHONY: install run test newcomer clean mutation docs

install: $(STAMP)

# Re-install only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: install
	$(VENV)/bin/rdfer demo

test: install
	$(PY) -m pytest -q

# The newcomer's path: build the wheel, install it non-editable into a fresh virtualenv, run the
# quick start, the CLI, a tiny training run and the README's python blocks from there (CI runs it).
newcomer: install
	PYTHON=$(PY) bash tests/newcomer.sh

# Mutation testing of the core modules (long; not part of `make test` or CI): writes
# benchmarks/results/mutation.md. Configuration: [tool.mutmut] in pyproject.toml.
mutation: install
	$(PY) -c "import mutmut" 2>/dev/null || $(PY) -m pip install --quiet -c constraints.txt -e '.[dev,mutation]'
	$(PY) benchmarks/mutation.py

# The documentation site (docs/, mkdocs.yml; MkDocs + Material, API reference by mkdocstrings) into
# site/. --strict: a broken link or anchor, a missing included file or API object fails it (CI runs it).
docs: install
	$(PY) -c "import mkdocs, material, mkdocstrings_handlers.python" 2>/dev/null || $(PY) -m pip install --quiet -c constraints.txt -e '.[dev,docs]'
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build dist *.egg-info site
