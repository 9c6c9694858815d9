# Two commands do everything on a fresh machine: `make demo` and `make test`. Both create .venv at the
# repository root, install torch==2.13.0 first (so no loose requirement can pull a newer CUDA build), then the
# project with its test, ui and labelstudio extras; the install is skipped while pyproject.toml and this file are unchanged.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint format bench clean browser labelstudio

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test,ui,labelstudio]"
	touch $(STAMP)

# The browser tests drive Debian's Chromium (never a download of Playwright's own): installed here where this
# machine can (root or sudo with apt-get), as CI installs it; otherwise make test stops with one line saying how.
browser:
	@bash .ci/install-browser >/dev/null 2>&1 || { echo "make test: the browser tests need Chromium at /usr/bin/chromium; install it (sudo apt-get install chromium) and run make test again" >&2; exit 2; }

# The Label Studio round-trip test runs a real server, from its own virtual environment (.venv-labelstudio: its
# Django and pydantic pins must not move the project's); installed here once, a few minutes, as CI installs it.
labelstudio:
	@bash .ci/install-labelstudio >/dev/null || { echo "make test: the Label Studio test needs its server; install it with bash .ci/install-labelstudio (it needs PyPI) and run make test again" >&2; exit 2; }

test: $(STAMP) browser labelstudio
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m jobs.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python -m jobs.bench --size mid --batch 8 --new-tokens 32

clean:
	rm -rf $(VENV) .venv-labelstudio demo_out .pytest_cache .ruff_cache
