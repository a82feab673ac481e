# The two commands of the README. Each sets itself up (system packages, venv, install) first.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export PYANNOTE_METRICS_ENABLED := 0

.PHONY: setup test demo bench gpu-check clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q

demo: setup
	$(PY) -m jobs.demo --config configs/demo.yaml

bench: setup
	$(PY) -m bench.shards
	$(PY) -m bench.curate
	$(PY) -m bench.tokenize
	$(PY) -m bench.quality
	$(PY) -m bench.model
	$(PY) -m bench.loader

# On the first machine with NVIDIA GPUs: every CUDA path once, into gpu_check.json (bench/gpu_check.py).
gpu-check: setup
	$(PY) -m bench.gpu_check

clean:
	rm -rf demo_out bench_out models .pytest_cache
