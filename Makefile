# Two commands on a fresh machine: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install the pinned dependencies on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: setup demo test lint clean torchrec gpu-check

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU build this project is measured on (an unpinned torch pulls a CUDA build).
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev,report,onnx,serve,search,ray]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/crossrec demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

# Optional: TorchRec's int8 EmbeddingBagCollection as a peer in benchmarks/compress.py (issue #3).
# --no-deps everywhere: TorchRec's declared requirements would replace the pinned CPU torch.
TORCHREC_PINS := fbgemm-gpu-cpu==1.8.0 torchrec==1.8.0 tensordict==0.15.3 pyvers==0.2.3 cloudpickle==3.1.3 \
                 pyre-extensions==0.0.32 typing-inspect==0.9.0 mypy-extensions==1.1.0

torchrec: $(STAMP)
	$(BIN)/python -m pip install --quiet --no-deps $(TORCHREC_PINS)

# On a machine with a CUDA GPU (issue #3's GPU column; <= 5 min): Table 1's rows timed on the GPU.
# Uses the machine's own python3 + torch (CUDA build) with this checkout on PYTHONPATH; see benchmarks/gpu_check.py.
gpu-check:
	PYTHONPATH=src python3 benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
