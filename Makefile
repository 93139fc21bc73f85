# Brain-tumour MRI classification with recurrent networks. `make help` lists the targets.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help install lock lint test test-fast command-times bench bench-backends gpu-check gpu-check-bundle study-ray bench-predict bench-folder reference-runs time-to-accuracy sizes repeatability mitigations levers factorial loso adaptation demo smoke study publish predict data-check download-data audit train-rnn clean-cache

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' \
		'{name[NR] = $$1; text[NR] = $$2; if (length($$1) > width) width = length($$1)} \
		END {for (i = 1; i <= NR; i++) printf "  make %-" width "s  %s\n", name[i], text[i]}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

INSTALLED := $(VENV)/.installed
LOCK := requirements.lock
LOCKED_EXTRAS := --extra dev --extra interactive --extra download

$(INSTALLED): pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

install: $(INSTALLED) ## create .venv with the exact versions of requirements.lock (hash-checked) and the project

lock: | $(BIN)/python ## refresh requirements.lock on purpose: the newest versions pyproject.toml's ranges allow, with hashes
	$(BIN)/python -m pip install --quiet "uv>=0.5"
	$(BIN)/uv pip compile pyproject.toml $(LOCKED_EXTRAS) --generate-hashes --python-version 3.11.7 \
		--no-header --no-annotate --output-file $(LOCK)

lint: $(INSTALLED) ## check the code style with ruff and the types with mypy
	$(BIN)/ruff check src tests
	$(BIN)/mypy

# The tests run on one worker process per core, at most four (pytest-xdist); TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= auto
PYTEST = $(BIN)/python -m pytest -n $(TEST_WORKERS) --maxprocesses 4 --dist worksteal

test: $(INSTALLED) ## run every test (the real-data tests need BRAIN_MRI_DATA_DIR)
	$(PYTEST)

test-fast: $(INSTALLED) ## run the tests that need neither real data nor several epochs of training
	$(PYTEST) -m "not realdata and not slow"

bench: $(INSTALLED) ## time loading, training epochs and inference against the specified pipeline, then the backends -> reports/benchmarks.json, reports/backends.json
	$(BIN)/python -m helpers.experiments.benchmark run --other-augmentations fused --other-precisions float32 mixed_bfloat16
	$(BIN)/python -m helpers.experiments.backends run

bench-backends: $(INSTALLED) ## every model on TensorFlow and JAX, taking turns epoch by epoch (EPOCHS=3) -> reports/backends.json
	$(BIN)/python -m helpers.experiments.backends run --epochs $(or $(EPOCHS),3)

# The GPU check's folder: the exported arrays and, for a machine that cannot reach a package index, the wheels.
GPU_CHECK_DIR ?= gpu-check

gpu-check: $(INSTALLED) ## train rnn, hybrid and the default's kind 3 epochs on JAX (a GPU where there is one) -> gpu-check/gpu-check.json
	$(BIN)/python -m helpers.experiments.gpu_check export --to $(GPU_CHECK_DIR)/arrays.npz
	KERAS_BACKEND=jax $(BIN)/python -m helpers.experiments.gpu_check run --arrays $(GPU_CHECK_DIR)/arrays.npz --output $(GPU_CHECK_DIR)

gpu-check-bundle: $(INSTALLED) ## the arrays and the Keras wheels an offline GPU machine needs, in gpu-check/ (docs/decisions.md, "Augmentation in the input pipeline")
	$(BIN)/python -m helpers.experiments.gpu_check export --to $(GPU_CHECK_DIR)/arrays.npz
	$(BIN)/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64 \
		-d $(GPU_CHECK_DIR)/wheels keras==$$($(BIN)/python -c "import keras; print(keras.__version__)") namex optree

command-times: $(INSTALLED) ## time make test-fast, make demo and make test from scratch -> reports/command_times.json, README's measured times
	$(BIN)/python -m helpers.experiments.command_times

bench-predict: $(INSTALLED) ## time brain-mri-predict on one image, cold processes and warm -> reports/benchmarks.md
	$(BIN)/python -m helpers.experiments.benchmark prediction-command $(IMAGE)

bench-folder: $(INSTALLED) ## time predict_files on 100 and 400 Testing images, one decoding thread and several -> reports/prediction_throughput.json
	$(BIN)/python -m helpers.experiments.throughput

# The study's models, seeds and reference models, read from the package (helpers.config).
HELPERS = $(BIN)/python -c
STUDY_MODELS = $(shell $(HELPERS) "from helpers import config; print(*config.STUDY_MODELS)")
STUDY_RECIPE = $(shell $(HELPERS) "from helpers import config; print(config.FULL_PROFILE.recipe)")
SEEDS ?= $(shell $(HELPERS) "from helpers import config; print(*config.FULL_PROFILE.seeds)")
REFERENCE_MODELS = $(shell $(HELPERS) "from helpers import config; print(*dict.fromkeys(config.REFERENCE_MODELS.values()))")

reference-runs: $(INSTALLED) ## train the reference models (rnn, hybrid, cnn_wide) with the specified recipe (SEEDS="42 43 44") into runs/specified; finished runs are kept
	for seed in $(SEEDS); do for model in $(REFERENCE_MODELS); do \
		[ -d runs/specified/$$model-seed$$seed ] || \
		$(BIN)/python -m helpers.modeling.training --recipe specified --model $$model --seed $$seed || exit 1; \
	done; done

time-to-accuracy: $(INSTALLED) ## time the study's runs (runs/full, make study) against the specified recipe's (make reference-runs, else the stored rows) -> the time-to-accuracy table in reports/benchmarks.md
	$(BIN)/python -m helpers.experiments.benchmark time-to-accuracy

SIZE_MODELS ?= $(STUDY_MODELS)

sizes: $(INSTALLED) ## train the study's recipe (seed 42) at 96 and 128 pixels into runs/sizes/<recipe> (SIZE_MODELS="rnn ...") -> the input-size table in reports/benchmarks.md
	for size in 96 128; do for model in $(SIZE_MODELS); do \
		[ -d runs/sizes/$(STUDY_RECIPE)/$$model-$${size}px-seed42 ] || $(BIN)/python -m helpers.modeling.training \
			--recipe $(STUDY_RECIPE) --model $$model --seed 42 --image-size $$size \
			--run-dir runs/sizes/$(STUDY_RECIPE)/$$model-$${size}px-seed42 || exit 1; \
	done; done
	$(BIN)/python -m helpers.experiments.benchmark input-sizes

repeatability: $(INSTALLED) ## train rnn and hybrid twice under each oneDNN setting (fresh processes) -> reports/repeatability.json, reports/benchmarks.md
	$(BIN)/python -m helpers.experiments.repeatability
	$(BIN)/python -m helpers.experiments.benchmark page

mitigations: $(INSTALLED) ## train and measure each step against the source shortcut (seed 42) -> reports/mitigations.json
	$(BIN)/python -m helpers.experiments.mitigations

levers: $(INSTALLED) ## train rnn and hybrid under each compute lever (precision, batch 128, one inter-op thread), every study seed, and the sequencer under each recipe lever (20 or 30 epochs, weight average, higher peak), seed 42, beside the study's runs -> reports/levers.json
	$(BIN)/python -m helpers.experiments.levers --kind compute
	$(BIN)/python -m helpers.experiments.levers --kind recipe
	$(BIN)/python -m helpers.experiments.benchmark page

factorial: $(INSTALLED) ## train every model under each recipe (dataset-only, outlined), the profile's seeds, into runs/full/<recipe>/; finished runs kept, an interrupted one resumed
	$(BIN)/python -m helpers.experiments.factorial

loso: $(INSTALLED) ## train sequencer and rnn without each external source (seeds LOSO_SEEDS="42 43", default 42; finished runs and rows measured on the same settings and data kept) -> reports/loso.json
	$(BIN)/python -m helpers.experiments.loso --seeds $(or $(LOSO_SEEDS),42)

adaptation: $(INSTALLED) ## predict each external source with batch normalisation re-estimated on its images (whole, groups of 32), on the kept models of runs/full and runs/loso -> reports/adaptation.json
	$(BIN)/python -m helpers.experiments.adaptation

demo: $(INSTALLED) ## set up, then run the notebooks on generated data (offline) into runs/demo/reports
	$(BIN)/python -m helpers.reporting.pipeline --profile demo

smoke: $(INSTALLED) ## run the notebooks on 40 real images per class, 1 epoch, into runs/smoke/reports
	$(BIN)/python -m helpers.reporting.pipeline --profile smoke

study: loso factorial ## leave-one-source-out, every model under each recipe, then the full study's notebooks on the real data into reports/, then make publish
	$(BIN)/python -m helpers.reporting.pipeline --profile full
	$(MAKE) publish

study-ray: $(INSTALLED) ## train every unfinished study and leave-one-source-out run as Ray tasks (a cluster: ray start; else this machine), then make study
	$(BIN)/python -m helpers.experiments.cluster
	$(MAKE) study

publish: $(INSTALLED) ## write README's results table and models/ (best seed per model, model card) from reports/
	$(BIN)/python -m helpers.reporting.results

predict: $(INSTALLED) ## classify image files with the published model: make predict FILES="a.jpg b.png"
	$(BIN)/brain-mri-predict $(FILES)

data-check: $(INSTALLED) ## load the dataset (decoding or from the cache) and print its counts
	$(BIN)/python -m helpers.inputs.data check

download-data: $(INSTALLED) ## download the Kaggle dataset into data/brain-tumor-mri (needs kagglehub credentials)
	$(BIN)/python -m helpers.inputs.data download

audit: $(INSTALLED) ## print the duplicate audit of the dataset
	$(BIN)/python -m helpers.inputs.duplicates

train-rnn: $(INSTALLED) ## train the RNN with the project recipe (seed 42) into runs/project/rnn-seed42
	$(BIN)/python -m helpers.modeling.training --model rnn --overwrite

clean-cache: ## delete the decoded-array cache (.cache/)
	rm -rf .cache
