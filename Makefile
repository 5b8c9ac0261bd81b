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

clean:
	rm -rf $(VENV) demo_output .pytest_cache .hypothesis
