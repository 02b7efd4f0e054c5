# The two commands of the README's quick start, `make demo` and `make test`, and their setup:
# a virtualenv in .venv with torch, the build tools, and handgeom built from source (editable).
#   make demo | test | bench | build | clean
#   TORCH=...           torch requirement to install (default: the CUDA 13.0 build, torch 2.14.1)
#   HANDGEOM_CUDA=0|1   force the CUDA kernels off/on (default: on when nvcc and a CUDA torch exist)
#   HANDGEOM_CUDA_ARCHS CUDA architectures (default "80;90")
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.14.1
BIN := $(VENV)/bin
BUILD_INPUTS := $(shell find csrc cmake -type f) CMakeLists.txt pyproject.toml

.PHONY: demo test bench build clean

demo: build
	$(BIN)/python -m handgeom demo

test: build
	$(BIN)/python -m pytest

bench: build
	$(BIN)/python -m handgeom bench

build: $(VENV)/.built

$(VENV)/.tools:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)" "scikit-build-core>=0.10" "pybind11>=2.12" ninja "cmake>=3.26"
	touch $@

# Rebuilt when a C++/CUDA/CMake input changes; incremental thanks to build-dir in pyproject.toml.
$(VENV)/.built: $(VENV)/.tools $(BUILD_INPUTS)
	$(BIN)/pip install --quiet --no-build-isolation --editable ".[test]"
	touch $@

clean:
	rm -rf build $(VENV)
