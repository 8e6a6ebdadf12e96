# One-command set-up: every target bootstraps .venv on first use.
#   make book     execute every notebook (active profile) and build the HTML book in _build/html
#   make test     ruff, then the whole test suite (unit tests, notebooks under nbval, book build, student edition, browser)
#   make student  write the solution-free student edition to _build/student
#   make assignments  write an nbgrader source tree to _build/assignments/source (one folder per chapter)
#   make bench    train the course's models and, beside them, the library reference implementations (zuko,
#                 diffusers, a pytorch/examples-style VAE, a plain loop); write _build/bench/results.json
#   make test-latest  a fresh .venv-latest with the newest release of every dependency (torch >= 2.14, a
#                 large download); the unit tests and the notebooks under smoke there (not part of make test)
#   make clean    remove build outputs (keeps .venv); make distclean also removes .venv
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The torch wheel to install when the environment has none. 2.13.0 is a CPU build on the course's
# reference machine; on Colab or a CUDA workstation torch is usually present already, or override it.
TORCH ?= torch==2.13.0
# Run profile (smoke | cpu | gpu). Empty means automatic: gpu if CUDA is available, else cpu.
PROFILE ?=
BENCH_PROFILE ?= $(if $(PROFILE),$(PROFILE),cpu)
# pytest-xdist workers for `make test` (auto: one per core). Each test file, and each notebook, stays on one
# worker in order (nbval runs a notebook's cells in one kernel); tests/conftest.py keeps the book's test
# files together and hands them out first, since the book build is the longest single test.
TEST_WORKERS ?= auto

# The environment of `make test-latest`, rebuilt on every run so that it has the newest releases.
LATEST_VENV ?= .venv-latest
LATEST_PY := $(LATEST_VENV)/bin/python

BOOK_STAMP := $(VENV)/.stamp-book
TEST_STAMP := $(VENV)/.stamp-test

.PHONY: book test test-latest student assignments bench clean distclean venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(BOOK_STAMP): pyproject.toml | $(PY)
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[book]"
	touch $@

$(TEST_STAMP): pyproject.toml $(BOOK_STAMP)
	$(PY) -m pip install --quiet -e ".[book,dev]"
	touch $@

venv: $(TEST_STAMP)

# The execution cache is keyed on notebook content, not on the profile, so a profile change invalidates
# it (otherwise a cpu build could silently reuse smoke results), and Sphinx's saved environment with it
# (otherwise the unchanged notebooks would not be read again and their pages would keep the old profile's
# outputs). The notebooks missing from the cache are executed one per core before the pages are read
# (book/_ext/parallel_execution.py, with _config.yml's execute settings); the build log then shows every
# chapter "Using cached notebook", and a failing notebook stops the build with its traceback.
book: $(BOOK_STAMP)
	@active=$$(COURSEKIT_PROFILE=$(PROFILE) $(PY) -c "import coursekit.runtime as r; print(r.get_profile())"); \
	  echo "Building the book under profile '$$active'"; \
	  mkdir -p _build; \
	  if [ "$$(cat _build/.profile 2>/dev/null)" != "$$active" ]; then rm -rf _build/.jupyter_cache _build/.doctrees; fi; \
	  echo "$$active" > _build/.profile; \
	  COURSEKIT_PROFILE=$$active $(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "Book written to _build/html/index.html"

test: $(TEST_STAMP)
	$(VENV)/bin/ruff check coursekit tests book/_ext
	COURSEKIT_PROFILE=smoke MPLBACKEND=Agg $(PY) -m pytest tests notebooks --nbval-lax --nbval-current-env -p no:cacheprovider \
	  -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# What a student on Colab or a fresh conda environment gets: the newest torch, numpy, matplotlib, ... The
# book build and the browser tests are left out (they test the pinned book toolchain, not the dependencies).
test-latest:
	rm -rf $(LATEST_VENV)
	$(PYTHON) -m venv $(LATEST_VENV)
	$(LATEST_PY) -m pip install --quiet --upgrade pip
	$(LATEST_PY) -m pip install --quiet --upgrade --upgrade-strategy eager "torch>=2.14" -e ".[book,dev]"
	@$(LATEST_PY) -c "import importlib.metadata as m; print('test-latest versions:', ', '.join(f'{p} {m.version(p)}' \
	  for p in ('torch', 'numpy', 'scipy', 'scikit-learn', 'matplotlib', 'nbformat', 'nbgrader', 'ipywidgets')))"
	COURSEKIT_PROFILE=smoke MPLBACKEND=Agg $(LATEST_PY) -m pytest tests notebooks --nbval-lax --nbval-current-env \
	  -p no:cacheprovider --ignore tests/test_book.py --ignore tests/test_browser.py \
	  -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

student: $(BOOK_STAMP)
	$(PY) -m coursekit.student --src notebooks --dst _build/student

assignments: $(BOOK_STAMP)
	$(PY) -m coursekit.student --nbgrader --src notebooks --dst _build/assignments/source

# The `bench` extra holds the library reference implementations the course's models are measured against.
bench: $(BOOK_STAMP)
	$(PY) -m pip install --quiet -e ".[book,bench]"
	MPLBACKEND=Agg $(PY) -m coursekit.bench --profile $(BENCH_PROFILE) --out _build/bench

clean:
	rm -rf _build .pytest_cache
	find . -name __pycache__ -not -path "./$(VENV)/*" -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(LATEST_VENV)
