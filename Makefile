# Two commands do everything on a fresh machine: `make demo` and `make test`. Both create .venv at the
# repository root, install torch==2.13.0 first (so no loose requirement can pull a newer CUDA build), then the
# project with its test, ui and labelstudio extras; the install is skipped while pyproject.toml and this file are unchanged.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint format bench clean browser

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[test,ui,labelstudio]"
	touch $(STAMP)

# The browser tests drive Debian's Chromium (never a download of Playwright's own): installed here where this
# machine can (root or sudo with apt-get), as CI installs it; otherwise make test stops with one line saying how.
browser:
	@bash .ci/install-browser >/dev/null 2>&1 || { echo "make test: the browser tests need Chromium at /usr/bin/chromium; install it (sudo apt-get install chromium) and run make test again" >&2; exit 2; }

test: $(STAMP) browser
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
	rm -rf $(VENV) demo_out .pytest_cache .ruff_cache
