# The two commands a newcomer needs: `make run` and `make test`. Each sets itself up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
# PyTorch goes in before ms-swift so ms-swift keeps it. The default is the CPU build on these machines'
# disk; on a CUDA box use e.g. `make TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'`.
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run serve test test-slow test-extended vlm-env test-slurm slurm test-browser browser lint check bench mutation schemas gpu-check clean

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

test: setup browser
	$(BIN)/python -m pytest

# Headless Chromium for the status page's test (Debian's chromium and chromium-driver). Best effort:
# without root or apt the page test is skipped, and the rest of the suite runs as usual.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1)) || \
	  echo "make: no chromium (needs root and apt): the status page test will be skipped"

test-slow: setup
	$(BIN)/python -m pytest -m slow

# Heavier real-swift feature suites (multimodal, long-running operation), kept out of `make test`'s time.
test-extended: setup browser vlm-env
	$(BIN)/python -m pytest -m extended

# What swift needs for Qwen2-VL beside the venv, kept apart from it (tests/vlmenv/sitecustomize.py says
# why): the multimodal tests put build/vlm-site on PYTHONPATH. On a CUDA box install these in the venv.
vlm-env: setup
	test -d build/vlm-site || $(BIN)/python -m pip install --quiet --no-deps --target build/vlm-site \
	  torchvision==0.28.0 qwen-vl-utils==0.0.14 av==18.1.0

# On a box with an NVIDIA GPU (offline is fine; torch built for CUDA, see TORCH_SPEC): NVML discovery, a
# tiny LoRA SFT on CUDA, a cancel that frees the GPU and two one-GPU jobs in turn, through real daemons,
# then a short report. Without a GPU it says so and exits 0.
gpu-check: setup
	$(BIN)/python -m tests.gpu_check

# The Slurm executor against a real Slurm the tests start on this machine (two nodes: slurmd -N n1/n2).
test-slurm: setup slurm
	$(BIN)/python -m pytest -m slurm

# Debian 12's Slurm 22.05 and munge for test-slurm (root, apt); the tests fail, never skip, without them.
slurm:
	@command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null && command -v munged >/dev/null || \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null 2>&1 || \
	   (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null))

# The status page in headless Chromium: Debian's chromium and chromium-driver (root, apt).
test-browser: setup browser
	$(BIN)/python -m pytest tests/integration/test_page.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

check: lint test

# Mutation testing of the pure core, one module at a time with 2 workers (tests/mutation.py lists the
# modules and their tests): prints each module's score and fails below 85 %. Not part of `make check`.
mutation: setup
	$(BIN)/python -m tests.mutation

bench: setup
	$(BIN)/python -m pytest -m bench -s -p no:randomly tests/bench

clean:
	rm -rf $(VENV) build *.egg-info
