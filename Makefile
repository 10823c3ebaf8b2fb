# declip-mm: the commands that matter.
#   make demo     the main job: distil a tiny preset, then segment real sample photos with an open vocabulary
#   make test     installs when needed, then runs the whole test suite (this is what CI runs)
#   make test-fast the same without the tests marked slow
#   make install  one-command setup (virtual environment outside the repo, mmcv ops, import checks)
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test test-fast demo sample-data clean-env

install:
	@bash tools/install/setup_env.sh

test: install
	@PYTHONPATH=$(CURDIR) $(PY) -m pytest -q tests projects $(PYTEST_ARGS)

sample-data: install
	@PYTHONPATH=$(CURDIR) $(PY) tools/fetch_sample_data.py

# make demo DEMO_ARGS="--skip-proof --skip-distill --model-name EVA02-B-16 --backbone declip.pth --text-weights merged2b_s8b_b131k"
DEMO_ARGS ?=
demo: install
	@PYTHONPATH=$(CURDIR) $(PY) tools/demo.py $(DEMO_ARGS)

# Removes only this clone's link; the shared environment stays in the cache for other clones.
clean-env:
	rm -f .venv

# the quick loop while developing: everything not marked slow (CI runs `make test`, all of it)
test-fast: install
	@PYTHONPATH=$(CURDIR) $(PY) -m pytest -q tests projects -m "not slow" $(PYTEST_ARGS)
