# The two commands a newcomer needs: `make run` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# PyTorch goes in before ms-swift so ms-swift keeps it. The default is the CPU build on these machines'
# disk; on a CUDA box use e.g. `make TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'`.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run serve test test-slow test-browser lint check bench schemas clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[train,dev]'
	touch $@

setup: $(STAMP)

# The demo: a tiny model, datasets and jobs, followed to the end; the daemon it starts keeps serving until Ctrl-C.
run: setup
	$(BIN)/llmtraind demo --keep-serving

serve: setup
	$(BIN)/llmtraind serve

test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

# The status page in headless Chromium: Debian's chromium and chromium-driver (root, apt).
test-browser: setup
	command -v chromium >/dev/null || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver)
	$(BIN)/python -m pytest tests/integration/test_page.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint test

bench: setup
	$(BIN)/python -m pytest -m bench -s -p no:randomly tests/bench

clean:
	rm -rf $(VENV) build *.egg-info
