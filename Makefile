# Two entry points: `make demo` (set up, then run the whole chain on built-in synthetic data)
# and `make test` (set up, then run the test suite). Both create .venv on first use.
#
# PyTorch: TORCH_SPEC is installed before the package. The default, torch==2.13.0, is a CPU
# wheel on machines that keep one on disk and the default PyPI build elsewhere. For a GPU
# machine pick the build you want, e.g.
#   make TORCH_SPEC="torch==2.5.1 --index-url https://download.pytorch.org/whl/cu124" test
# or TORCH_SPEC=skip to keep a torch that is already in the environment.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-all lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	@if [ "$(TORCH_SPEC)" != "skip" ]; then $(BIN)/python -m pip install --quiet $(TORCH_SPEC); fi
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# A second `make demo` reuses demo_output (trained folds and written predictions are
# skipped); `brats-mtl demo --out demo_output --overwrite` or `make clean` starts again.
demo: $(STAMP)
	$(BIN)/brats-mtl demo --out demo_output

# The README's test command: lint (ruff check + ruff format --check), then the default suite.
test: lint
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

# The CPU benchmarks of benchmarks/ at small settings (a few minutes on 2 cores); each
# script's docstring gives its full-size command, the one behind the README's figures.
# gpu_check.py is not run (it needs CUDA); bench_inference.py and bench_uncertainty.py
# need the real case $(BENCH_CASE) and are skipped without it.
BENCH_CASE ?= ../shared/data/brats/BraTS2021_00000
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_evaluation.py --repeats 1
	$(BIN)/python benchmarks/bench_model.py --patch 64 --repeats 1 --no-train
	$(BIN)/python benchmarks/bench_training.py --steps 5 --warmup 1 --rounds 2 --threads 1
	@if [ -d "$(BENCH_CASE)" ]; then \
		set -e; \
		$(BIN)/python benchmarks/bench_inference.py --case "$(BENCH_CASE)" --model tiny \
			--configs window_tta0,whole_tta0; \
		$(BIN)/python benchmarks/bench_uncertainty.py --case "$(BENCH_CASE)" --model toy --folds 2; \
	else \
		echo "bench_inference.py, bench_uncertainty.py skipped: no case at $(BENCH_CASE)"; \
	fi

clean:
	rm -rf $(VENV) demo_output .pytest_cache .hypothesis
