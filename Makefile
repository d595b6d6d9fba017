# make help: list the targets. Every target sets up .venv itself (scripts/setup.sh), so each works from a clean clone.
SHELL := /bin/bash
PY := .venv/bin/python
export PATH := $(CURDIR)/.venv/bin:$(PATH)

.PHONY: help setup demo test test-python test-rust lint bench bench-demo bench-gpu

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: ## create .venv and build jitrs into it (release)
	@scripts/setup.sh

demo: setup ## train a small JiT on builtin:mnist on the CPU (~10 min), score its samples; starts runs/demo over
	$(PY) -m jitrs train --demo --out runs/demo --overwrite

test: setup lint test-rust test-python ## the whole test suite: lint, cargo test, pytest

# One worker per core (tests/conftest.py keeps each worker on one thread and starts the longest tests first).
test-python:
	$(PY) -m pytest -q -n auto --dist loadgroup

test-rust:
	cargo test --release -q

lint: ## ruff + mypy + rustfmt + clippy + stubtest, warnings are errors
	$(PY) -m ruff check python tests testkit benches scripts
	$(PY) -m ruff format --check python tests testkit benches scripts
	$(PY) -m mypy python/jitrs
	cargo fmt --check
	cargo clippy -q --all-targets --all-features -- -D warnings
	$(PY) -m mypy.stubtest jitrs._native

bench: setup ## CPU benchmarks (load_batch, patchify, PNG, model) side by side with their baselines
	$(PY) benches/run_all.py

bench-demo: setup ## the README's first command from a clean cache, timed, with its quality figures (~10 min)
	$(PY) benches/bench_demo.py

bench-gpu: setup ## the GPU benchmark (model train/sample, end-to-end sampling) on a CUDA device
	$(PY) benches/bench_gpu.py

# The GPU acceptance check (README "GPU acceptance"): <= 8 min on a CUDA machine, a tiny mode on a CPU. No setup
# prerequisite, so it runs where there is no .venv: `make gpu-check PY=python3 GPU_CHECK_OUT=DIR`.
GPU_CHECK_OUT ?= runs/gpu-check
GPU_CHECK_ARGS ?=
.PHONY: gpu-check
gpu-check: ## GPU acceptance: env, pytest -m gpu, bench, train, sample, DDP; report in GPU_CHECK_OUT (PY=python3)
	$(PY) benches/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

# Wheels for clusters (README: Offline / cluster install). WHEEL_COMPAT empty: built for this machine's glibc
# (manylinux_2_34 on Debian 12) and packed by setup from .venv's build in about a second; a manylinux tag
# (manylinux_2_28, manylinux2014) links with zig against that older glibc instead, a second full compile.
WHEEL_COMPAT ?=
# The wheelhouses' target: CPython version and glibc floor (manylinux_2_28 is PyPI torch's own since 2.6).
WHEELHOUSE_PY ?= 3.12
WHEELHOUSE_COMPAT ?= manylinux_2_28
# The target's torch version (2.11.0, say), which torchvision is matched to; empty: the newest torch.
TORCH ?=
# What the GPU machine has already (Python 3.12, torch 2.11); wheelhouse-gpu brings only the rest.
GPU_PRESENT := torch numpy typer rich safetensors matplotlib tensorboard pyyaml scikit-learn scipy pillow pytest hypothesis
GPU_TORCH ?= 2.11.*
WHEELHOUSE := $(PY) scripts/wheelhouse.py --python $(WHEELHOUSE_PY) --platform $(WHEELHOUSE_COMPAT)_x86_64

.PHONY: wheel wheelhouse wheelhouse-gpu

wheel: setup ## the abi3 jitrs wheel in dist/ (WHEEL_COMPAT=manylinux_2_28: for older glibc, via zig)
ifneq ($(WHEEL_COMPAT),)
	$(PY) -m pip install -q "maturin[zig]>=1.9,<2"
	rm -f dist/jitrs-*.whl
	maturin build --release --quiet -i $(PY) --zig --compatibility $(WHEEL_COMPAT) --auditwheel check -o dist
endif
	@ls dist/jitrs-*.whl

wheelhouse: ## wheelhouse/: jitrs and every runtime dependency but torch (WHEELHOUSE_PY, TORCH)
	$(MAKE) wheel WHEEL_COMPAT=$(WHEELHOUSE_COMPAT)
	$(WHEELHOUSE) --wheel dist/jitrs-*.whl --out wheelhouse --present torch $(if $(TORCH),--constraint 'torch==$(TORCH)')

wheelhouse-gpu: ## wheelhouse-gpu/: only what the GPU machine lacks (jitrs, torch-fidelity, mlxtend, ...), < 64 MiB
	$(MAKE) wheel WHEEL_COMPAT=$(WHEELHOUSE_COMPAT)
	$(WHEELHOUSE) --wheel dist/jitrs-*.whl --out wheelhouse-gpu --present $(GPU_PRESENT) --constraint 'torch==$(GPU_TORCH)'
	@size=$$(du -sb wheelhouse-gpu | cut -f1); echo "wheelhouse-gpu/: $$size bytes"; \
	 [ "$$size" -le 67108864 ] || { echo "wheelhouse-gpu/ is over the 64 MiB that a device run carries" >&2; exit 1; }
