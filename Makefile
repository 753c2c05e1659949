# Two commands do everything on a fresh clone (only Python >= 3.10 needed):
#   make book   build the executed book into _build/html
#   make test   library tests + nbval over every chapter
#   make test-backends   the library tests on JAX and PyTorch (own venv, .venv-backends)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export IPYTHONDIR := $(CURDIR)/.ipython
export TF_CPP_MIN_LOG_LEVEL := 2
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: book test venv render check-sync notebooks nb clean test-backends venv-backends lint \
        test-backends-core

# The library on the other Keras 3 backends: the same stack plus jax (CPU) and torch (the
# CPU build), in a venv of their own so that the book's .venv stays TensorFlow-only.
BVENV   := .venv-backends
BBIN    := $(BVENV)/bin
BSTAMP  := $(BVENV)/.installed
BACKEND_PYTEST := $(BBIN)/python -m pytest -p no:cacheprovider -o addopts="" -q -n 2 --dist loadfile
BACKEND_TESTS  := tests --ignore=tests/test_book_html.py
## The cross-backend contract (tests/test_backend.py: every transform and fit leaves the
## caller's model bit-identical, same seed same numbers, gradients, .keras files across
## backends, DataParallel on JAX).
BACKEND_CORE   := tests/test_backend.py
## JAX compiles each new model's functions; many tests build models of the same shapes, so
## XLA's persistent cache saves time: within one run, tests/test_backend.py 128 s -> 76 s and
## the whole suite about a fifth; from the cache of an earlier run, the whole suite 700 -> 420
## CPU-s (2026-12-02). Its keys are the computation without its source locations, the flags,
## the jax version and the cache's own path (XLA's compile options carry it). So it lives in
## the user's cache directory, where later runs and fresh clones find it, like pip's
## (JAX_CACHE=dir moves it and starts it empty; a run from an empty cache writes about 20 MB,
## and it can be deleted at any time; JAX's size limit stays unset: its eviction reads every
## entry on every write). The test models are tiny, so compiling costs more than
## running: XLA's CPU backend compiles without LLVM's optimisations (a MobileNetV2 test: 77 -> 49
## CPU-s; the suite passes either way). One OpenMP thread per PyTorch worker: two workers
## with PyTorch's default threads each spin against each other.
JAX_CACHE ?= $(or $(XDG_CACHE_HOME),$(if $(HOME),$(HOME)/.cache),$(abspath $(BVENV)))/compressnet-lite/jax
JAX_RUN   := KERAS_BACKEND=jax JAX_COMPILATION_CACHE_DIR=$(JAX_CACHE) \
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0 \
             XLA_FLAGS="--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
TORCH_RUN := KERAS_BACKEND=torch OMP_NUM_THREADS=1

## pip byte-compiles what it installs on one core (about 70 of the 135 s of a fresh .venv);
## compileall does it on every core (about 38 s on two), so pip installs with --no-compile.
## The .pyc files matter where PYTHONDONTWRITEBYTECODE is set: nothing else writes them, and
## every process (test workers, notebook kernels) would compile TensorFlow's imports again.
## A file that does not compile is skipped, as pip skips it.
venv: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -r requirements.txt
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib || echo "compileall: files above not compiled"
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## It is layered on .venv: a .pth file puts .venv's packages on its path, so pip installs
## only what requirements-backends.txt adds (jax, torch; measured: 19 CPU-s instead of
## about 150 for a second copy of TensorFlow and the book's stack). Both venvs come from
## the same Python; a .venv of another Python version is refused.
venv-backends: $(BSTAMP)
$(BSTAMP): requirements.txt requirements-backends.txt pyproject.toml $(STAMP)
	test -x $(BBIN)/python || $(PYTHON) -m venv $(BVENV)
	$(BBIN)/python .ci/layer_venv.py $(BIN)/python
	$(BBIN)/python -m pip install --quiet --upgrade pip
	$(BBIN)/python -m pip install --quiet --no-compile -r requirements-backends.txt
	$(BBIN)/python -m compileall -q -j 0 $(BVENV)/lib || echo "compileall: files above not compiled"
	touch $(BSTAMP)

## The library's tests (not the notebooks) on JAX, then on PyTorch.
test-backends: venv-backends
	$(JAX_RUN) $(BACKEND_PYTEST) $(BACKEND_TESTS)
	$(TORCH_RUN) $(BACKEND_PYTEST) $(BACKEND_TESTS)

## K="expression" selects tests by name (pytest -k).
test-backends-core: venv-backends
	$(JAX_RUN) $(BACKEND_PYTEST) $(BACKEND_CORE) $(if $(K),-k "$(K)")
	$(TORCH_RUN) $(BACKEND_PYTEST) $(BACKEND_CORE) $(if $(K),-k "$(K)")

## Build the book: execute the chapters whose notebook is missing or out of sync with its
## source (book/*.py), then render every chapter's executed, validated notebook. The outputs
## committed with a chapter are the ones `make test` checks under nbval; `make notebooks`
## executes every chapter again.
book: venv
	$(BIN)/python .ci/notebooks.py stale
	$(MAKE) render

## Every test: the library's unit tests and nbval over every chapter notebook.
test: venv
	$(BIN)/python -m pytest -n 2 --dist loadfile

## ruff (pyflakes, pycodestyle) over the code, and every docstring example of the library run.
lint: venv
	$(BIN)/ruff check compressnet_lite tests benchmarks .ci
	$(BIN)/python -m pytest -q -p no:cacheprovider -o addopts="" --doctest-modules compressnet_lite

## Render the committed (validated) outputs with warnings as errors, fresh, without executing.
render: venv
	rm -rf _build/html _build/.doctrees
	$(BIN)/jupyter-book config sphinx . > /dev/null
	PYTHONPATH=book/_ext $(BIN)/sphinx-build -b html -n -W --keep-going -E -q -D nb_execution_mode=off . _build/html
	rm -f conf.py

## The .ipynb files must hold exactly the cells of their jupytext sources (book/*.py).
check-sync: venv
	$(BIN)/python .ci/notebooks.py check

## Regenerate and execute notebooks from their sources: make notebooks, or make nb NB=book/01_background.py
notebooks: venv
	$(BIN)/python .ci/notebooks.py build book/[0-9]*.py
nb: venv
	$(BIN)/python .ci/notebooks.py build $(NB)

clean:
	rm -rf _build conf.py
