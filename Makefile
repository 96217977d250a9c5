# The front door. Targets are verbs: `make book` and `make test` are the two commands a
# reader, reviewer or teacher needs on a fresh clone (Linux, Python 3.11+, make, git).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export PYTHONHASHSEED := 0
# One BLAS thread: the models are small, and two threads on two busy cores were up to 10x slower.
export OPENBLAS_NUM_THREADS ?= 1
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: help venv lock data data-check book notebooks test test-unit test-notebooks test-book test-site pdf test-pdf linkcheck bench clean clean-data

help:
	@echo "make book   build the executed HTML book into _build/html (creates .venv, fetches data)"
	@echo "make test   everything CI checks: unit tests, nbval on every chapter, the book with warnings as errors,"
	@echo "            and the built book in headless Chromium (make test-site)"
	@echo "make pdf    the whole book as one PDF: _build/pdf/third-pillar-tested.pdf (then make test-pdf checks it)"
	@echo "make linkcheck  check the book's external links (needs the network; not part of make test)"
	@echo "make data   fetch, verify and build every data file;  make data-check  reports the cache"
	@echo "make bench  print the performance figures"
	@echo "make notebooks  re-execute every chapter in place (before committing a chapter)"
	@echo "make lock   re-resolve requirements.in into requirements.lock and environment.yml"

# The venv is rebuilt whenever the lock changes; the stamp records the lock it was built from.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $@

venv: $(STAMP)

lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.in
	.venv-lock/bin/python -m pip freeze --exclude-editable | LC_ALL=C sort -f > requirements.lock
	.venv-lock/bin/python -m analysis.envfiles requirements.lock > environment.yml
	rm -rf .venv-lock

data: $(STAMP)
	$(PY) -m analysis data

data-check: $(STAMP)
	$(PY) -m analysis data --check

# Execution errors become warnings and -W turns every warning into a failure: a broken
# chapter can never publish. Executed notebooks are cached in _build/.jupyter_cache.
book: data
	$(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo
	@echo "The book is built. Open: $(CURDIR)/_build/html/index.html"

notebooks: data
	$(PY) -m analysis notebooks book

# tests/site needs the built book and a browser: it runs in test-site, after `book`.
test-unit: data
	$(PY) -m pytest tests --ignore=tests/site

# --nbval-lax: only cells marked `# NBVAL_CHECK_OUTPUT` (key numbers at fixed precision)
# are compared with their committed output; every cell must still run without error.
test-notebooks: data
	$(PY) -m pytest --nbval-lax -p no:cacheprovider book

test-book: book

# The built book in a browser: every page of _build/html in headless Debian Chromium (driven by
# Playwright; installed by .ci/install-browser.sh when missing, never downloaded by a test tool)
# with no console error, internal links/anchors/images/cross-references resolved, alt text on
# every figure, and search answering "fixed effects".
test-site: book
	bash .ci/install-browser.sh
	$(PY) -m pytest tests/site/test_site.py

test: test-unit test-notebooks test-book test-site

# The whole book as one PDF: the single-page HTML build, printed by headless Chromium once
# MathJax has typeset it; then test-pdf checks that every toc document and figure is in it.
pdf: data
	$(VENV)/bin/jupyter-book build . --builder singlehtml -W -n --keep-going
	bash .ci/install-browser.sh
	$(PY) -m analysis.site book-pdf _build/singlehtml _build/pdf/third-pillar-tested.pdf
	$(MAKE) test-pdf

test-pdf: $(STAMP)
	$(PY) -m pytest tests/site/test_pdf.py

# External links (http/https) with Sphinx's linkcheck builder; report in _build/linkcheck.
# Needs the network, so it is not part of `make test` and fails on an offline machine.
linkcheck: data
	$(VENV)/bin/jupyter-book build . --builder custom --custom-builder linkcheck

bench: data
	$(PY) -m analysis.bench

clean:
	rm -rf _build

clean-data:
	rm -rf data/processed
