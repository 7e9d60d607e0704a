# ltv: `make help` lists the targets. Every target that runs Python installs .venv first if needed,
# so `make smoke` and `make test` work on a machine with only Python 3.11, pip and git.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ltv-installed
MLRUNS := $(CURDIR)/mlruns
export MLFLOW_TRACKING_URI := sqlite:///$(MLRUNS)/mlflow.db
HOST ?= 127.0.0.1
SERVE_PORT ?= 5001
UI_PORT ?= 5000
SERVE_WORKERS ?= $(shell nproc 2>/dev/null || echo 1)
MODEL ?= models:/ltv-pipeline@champion
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install smoke test test-all train predict evaluate serve ui lint format clean \
        bench bench-features bench-quality bench-serve bench-predict bench-train bench-scale bench-revenue

help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install ltv (editable) with the dev extra

smoke: $(STAMP) ## the whole loop on the default data: generate, train, register, predict, evaluate
	$(BIN)/python train.py
	$(BIN)/python predict.py
	$(BIN)/python evaluate.py
	$(BIN)/python evaluate.py submission=$(CURDIR)/outputs/submission.csv
	@echo "MLflow store: $(MLFLOW_TRACKING_URI)   (make ui to browse)"

test: $(STAMP) ## run the test suite (what CI runs)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-all: $(STAMP) ## the test suite including tests marked slow
	$(BIN)/python -m pytest -q -m "slow or not slow" $(PYTEST_ARGS)

train: $(STAMP) ## train with the default config (ARGS="..." for Hydra overrides)
	$(BIN)/python train.py $(ARGS)

predict: $(STAMP) ## write outputs/submission.csv with models:/ltv-pipeline@champion
	$(BIN)/python predict.py $(ARGS)

evaluate: $(STAMP) ## metrics of the champion on the holdout window
	$(BIN)/python evaluate.py $(ARGS)

serve: $(STAMP) ## serve the champion over HTTP on $(HOST):$(SERVE_PORT) (POST /invocations), one worker process per core
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow models serve -m "$(MODEL)" --env-manager local -h $(HOST) -p $(SERVE_PORT) --workers $(SERVE_WORKERS)

ui: $(STAMP) ## MLflow UI on $(HOST):$(UI_PORT) over the project's store (prints the URL of the ltv runs table)
	@$(BIN)/python -m ltv.tracking.store "$(MLFLOW_TRACKING_URI)" $(HOST) $(UI_PORT)
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_TRACKING_URI) -h $(HOST) -p $(UI_PORT)

lint: $(STAMP) ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## ruff autofix + format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: bench-features bench-quality bench-predict bench-serve ## all benchmarks (tables on stdout)

bench-features: $(STAMP) ## feature extraction speed/memory vs parquet read and a naive parser
	$(BIN)/python bench/features.py

bench-quality: $(STAMP) ## holdout quality table: baselines, the chain (rmsle and revenue), oracle
	$(BIN)/python bench/quality.py

bench-predict: $(STAMP) ## predict.py rows/s and peak memory at two input sizes, CPU per stage
	$(BIN)/python bench/predict.py --stages

bench-train: $(STAMP) ## chain vs single LightGBM training: s, rows/s, memory, RMSLE, seconds per stage, 3 sizes
	$(BIN)/python bench/train.py $(ARGS)

bench-scale: $(STAMP) ## train.py up to the real export's size (20.6M labelled rows): load/fit s, rows/s, peak tree MB, RMSLE
	$(BIN)/python bench/scale.py $(ARGS)

bench-revenue: $(STAMP) ## objective=revenue: estimands and predictive distributions vs the oracle, 2 seeds x 2 tails
	$(BIN)/python bench/revenue.py $(ARGS)

bench-serve: $(STAMP) ## model server latency (single row) and throughput (1,000-row requests)
	$(BIN)/python bench/serve.py --model-uri "$(MODEL)" --stages

clean: ## remove generated data, runs, outputs and caches (keeps .venv)
	rm -rf data outputs multirun mlruns .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
