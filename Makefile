# Two commands do all the set-up:  `make app` (dashboard)  and  `make test` (test suite).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: app test browser bench lint defaults

$(STAMP): pyproject.toml setup.py
	python3 -m venv $(VENV)
	# The CPU build of torch first, so nothing pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

app: $(STAMP)
	$(PY) -m landscape app

# Debian's chromium for the end-to-end browser test (Playwright drives /usr/bin/chromium).
browser:
	@command -v chromium >/dev/null || { \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: $(STAMP) browser
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: $(STAMP)
	for f in bench/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

defaults: $(STAMP)
	$(PY) -m landscape defaults --out checkpoints
