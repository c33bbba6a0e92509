# Two commands on a fresh machine (Python 3.11+, make): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

.PHONY: demo test bench install clean chromium

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "modelsci needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)

$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[all,test]'
	touch $@

install: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/modelsci demo

test: $(INSTALLED) chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

# The site's browser tests need Debian's chromium: installed here when missing and we can (root + apt-get).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	else echo "chromium is missing: the browser tests will skip (install it with: apt-get install chromium)"; fi

bench: $(INSTALLED)
	$(BIN)/python benchmarks/bench_catalogue.py
	$(BIN)/python benchmarks/bench_games.py
	$(BIN)/python benchmarks/bench_site.py
	$(BIN)/python benchmarks/bench_filters.py
	$(BIN)/python benchmarks/bench_submit.py

clean:
	rm -rf $(VENV) modelsci-catalogue
