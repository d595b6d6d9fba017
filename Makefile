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

test-python:
	$(PY) -m pytest -q

test-rust:
	cargo test --release -q

lint: ## ruff + rustfmt + clippy + stubtest, warnings are errors
	$(PY) -m ruff check python tests testkit benches
	$(PY) -m ruff format --check python tests testkit benches
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
