# Two commands on a fresh machine (Python 3.11, no GPU):  `make demo`  and  `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: setup browser demo test test-fast bench clean

# torch is pinned and installed first: here `pip install torch==2.13.0` takes the local CPU wheel,
# while an unpinned torch would pull several GB of CUDA packages.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Headless Chromium from Debian's packages for the MLflow UI browser test (Playwright drives this binary;
# no browser is downloaded). Installed once, as root (CI); skipped when already there.
CHROMIUM := /usr/bin/chromium
browser:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	     chromium chromium-driver >/dev/null) || echo "warning: could not install chromium; the browser test will fail"; \
	else echo "note: $(CHROMIUM) missing (sudo apt-get install chromium chromium-driver); the browser test is skipped"; fi

demo: setup
	$(BIN)/orchestrator run pipeline

test: setup browser
	$(BIN)/python -m pytest -q --durations=30 $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf outputs test-artifacts .pytest_cache
