# restore_nb — the two commands a user needs are `make demo` and `make test`.
# Everything else here is for developers. All targets create .venv on first use.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.restore_nb-installed
PIP := $(BIN)/python -m pip -qq --disable-pip-version-check
DEMO_OUT ?= restore_nb_demo

system-deps:
	tools/system_deps.sh

.PHONY: system-deps install demo test test-slow export clean-nbs lint prepare readme urls docs-check wheel release-check clean help

help:
	@echo "make demo       install into $(VENV) (first time) and run 'restore-nb demo' -> $(DEMO_OUT)/"
	@echo "make test       install into $(VENV) (first time) and run the whole default test suite"
	@echo "make test-slow  the same, also running notebook cells flagged '#| slow' and slow tests"
	@echo "make system-deps  Debian packages the tests use: chromium, chromium-driver, redis-server, tesseract-ocr (apt, as root or sudo)"
	@echo "make prepare    nbdev-export + nbdev-clean + README.md from nbs/index.ipynb (before committing)"
	@echo "make lint       ruff over the package, the notebooks, the tests and the tools (what CI checks)"
	@echo "make docs-check nbdev-proc-nbs (the docs pre-processing step; rendering needs Quarto)"
	@echo "make wheel      build dist/restore_nb-*.whl"
	@echo "make release-check  build sdist + wheel, twine check, install the wheel in a clean venv, restore (no upload)"

# (Re)install when pyproject.toml changes. torch/torchvision come from the package registry.
$(STAMP): pyproject.toml
	@tools/system_deps.sh
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	@echo "Installing restore_nb and its dependencies into $(VENV) (first time: several minutes, ~5 GB for torch)"
	$(PIP) install --upgrade pip
	$(PIP) install -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/restore-nb demo --out $(DEMO_OUT)

test: system-deps $(STAMP)
	$(BIN)/python -m pytest -n auto --dist worksteal tests

test-slow: $(STAMP)
	RESTORE_NB_SLOW=1 $(BIN)/python -m pytest -n auto --dist worksteal tests

export: $(STAMP)
	$(BIN)/nbdev-export

clean-nbs: $(STAMP)
	$(BIN)/nbdev-clean
	$(BIN)/nbdev-clean --fname colab

lint: $(STAMP)
	$(BIN)/ruff check restore_nb nbs tests tools

readme: $(STAMP)
	$(BIN)/python tools/make_readme.py

# the repository and docs URLs, named once in pyproject.toml, into the Colab notebooks and the site settings
urls: $(STAMP)
	$(BIN)/python tools/sync_urls.py

prepare: export urls clean-nbs readme

docs-check: $(STAMP)
	$(BIN)/python tools/proc_nbs.py

wheel: $(STAMP)
	$(BIN)/python -m pip wheel --no-deps -w dist .

release-check: $(STAMP)
	$(BIN)/python tools/release.py all --deps borrow

clean:
	rm -rf _proc _docs dist build *.egg-info $(DEMO_OUT)
