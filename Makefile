# The two README commands: `make run` and `make test`. Both set the environment up first.
SHELL := /bin/bash
VENV := .venv
export PATH := $(abspath $(VENV)/bin):$(PATH)

.PHONY: setup run test test-fast test-slow bench bench-gpu report dvc-yaml dvc-lock clean

setup:  ## create .venv and install everything (idempotent; mmcv wheel cached in ~/.cache/vitpe)
	bash scripts/setup.sh

run: setup  ## the whole DAG at the params.yaml scale (tiny, embedded data, CPU by default); after a kill, rerun it
	python -m vitpe.launch snakemake --cores all results/tables/main.tex

test: setup  ## the whole test suite (pytest exit 5 = no tests collected counts as failure-free)
	pytest; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 0; fi; exit $$rc

test-fast: setup  ## everything but the end-to-end (slow) and paper-size tests: a few minutes
	pytest -m "not slow and not paper_size"

test-slow: setup  ## only what test-fast leaves out (test-fast + test-slow = test)
	pytest -m "slow or paper_size"

bench: setup  ## performance figures (not tests)
	python benchmarks/bench_data.py
	python benchmarks/bench_train.py
	python benchmarks/bench_tiny_floor.py
	python benchmarks/bench_adpe.py
	python benchmarks/bench_attacks.py
	python benchmarks/bench_gpu.py --small --compile --steps 20

bench-gpu: setup  ## on a CUDA GPU: the CUDA-only tests, then the paper-size steps against official-style references (img/s, memory, MFU)
	pytest -m cuda
	python benchmarks/bench_gpu.py --device cuda --compile

report: setup  ## HTML report with the figures
	snakemake --report results/report.html results/tables/main.tex

dvc-yaml: setup  ## regenerate dvc.yaml's stages from the Snakemake DAG (after changing experiments, seeds or the scale)
	python -m vitpe.dvc_stages

dvc-lock: setup  ## re-record dvc.lock for the stages whose files are here (`dvc commit` for a change that leaves the results as they are)
	python -m vitpe.dvc_stages --lock

clean:  ## remove everything the DAG wrote (keeps the committed metrics baseline)
	rm -rf data/embedded data/mini results/checkpoints results/figures results/logs results/checks .snakemake
