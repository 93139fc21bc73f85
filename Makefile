# Brain-tumour MRI classification with recurrent networks. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help install lint test test-fast data-check download-data audit train-rnn clean-cache

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

install: $(BIN)/python ## create .venv and install the project with its dev extra
	$(BIN)/python -m pip install -e ".[dev]"

lint: ## check the code style with ruff
	$(BIN)/ruff check src tests

test: ## run every test (the real-data tests need BRAIN_MRI_DATA_DIR)
	$(BIN)/python -m pytest

test-fast: ## run the tests that need neither real data nor several epochs of training
	$(BIN)/python -m pytest -m "not realdata and not slow"

data-check: ## load the dataset (decoding or from the cache) and print its counts
	$(BIN)/python -m helpers.data check

download-data: ## download the Kaggle dataset into data/brain-tumor-mri (needs kagglehub credentials)
	$(BIN)/python -m helpers.data download

audit: ## print the duplicate audit of the dataset
	$(BIN)/python -m helpers.duplicates

train-rnn: ## train the specified RNN with the specified recipe into runs/rnn-specified-seed42
	$(BIN)/python -m helpers.training --model rnn --run-dir runs/rnn-specified-seed42 --overwrite

clean-cache: ## delete the decoded-array cache (.cache/)
	rm -rf .cache
