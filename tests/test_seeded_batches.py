"""helpers.modeling.seeded_batches: augmentation in the input pipeline, drawn as the models' own layers draw, and the
backends side by side (helpers.experiments.backends, helpers.experiments.gpu_check)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers.inputs import data
from helpers.modeling import models, recipes, run_folders, seeded_batches, training
from helpers.modeling.seeded_batches import DRAWS_PER_BATCH, DRAWS_PER_EPOCH, BatchAugmentation


def _images(count: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    """Return random uint8 images with a bright square off-centre (so flips, rotations and zooms show)."""
    images = np.random.default_rng(seed).integers(0, 60, (count, size, size, 1)).astype(np.uint8)
    images[:, 4:12, 6:20] = 220
    return images


@pytest.mark.parametrize("name", ["layers", "robust", "fused"])
def test_the_pipeline_draws_and_transforms_as_the_models_own_augmentation_layers(name):
    images, epoch, batch = _images(), 3, 5
    block = models.AUGMENTATIONS[name](seed=7)
    for generator in seeded_batches._generators_of(block.layers if isinstance(block, keras.Sequential) else [block]):
        state = keras.ops.convert_to_numpy(generator.state.value)
        generator.state.assign(np.array([state[0], epoch * DRAWS_PER_EPOCH + batch * DRAWS_PER_BATCH],
                                        dtype=state.dtype))
    inside_a_model = keras.ops.convert_to_numpy(block(images, training=True))
    piped, _ = BatchAugmentation(name, 7)(images, epoch, batch)
    np.testing.assert_allclose(piped, inside_a_model, atol=1e-3)
    assert not np.allclose(piped, images)


def test_a_batch_depends_on_seed_epoch_and_batch_alone():
    images = _images()
    first = BatchAugmentation("robust", 3)
    again = BatchAugmentation("robust", 3)
    np.testing.assert_array_equal(first(images, 2, 4)[0], again(images, 2, 4)[0])
    np.testing.assert_array_equal(first(images, 2, 4)[0], first(images, 2, 4)[0])  # no state carried over
    assert not np.allclose(first(images, 2, 4)[0], first(images, 2, 5)[0])
    assert not np.allclose(first(images, 2, 4)[0], first(images, 3, 4)[0])
    assert not np.allclose(first(images, 2, 4)[0], BatchAugmentation("robust", 4)(images, 2, 4)[0])


def test_an_outline_moves_with_its_image_and_only_the_image_changes_its_look():
    images = _images()
    outlines = images.copy()
    image, outline = BatchAugmentation("robust", 9)(images, 1, 2, outlines)
    geometric_only, _ = BatchAugmentation("layers", 9)(images, 1, 2)
    np.testing.assert_allclose(outline, geometric_only, atol=1e-3)  # moved as the image moved
    assert not np.allclose(image, outline, atol=1.0)  # the image's contrast, gamma, noise changed; the outline's not


def test_no_augmentation_leaves_the_batches_as_they_are():
    images = _images()
    batches = seeded_batches.SeededBatches(images, np.arange(6), None, 4, seed=1,
                                           augmentation=BatchAugmentation("none", 1))
    inputs, labels = batches[0]
    np.testing.assert_array_equal(inputs, images[batches.order[:4]])
    np.testing.assert_array_equal(labels, batches.order[:4])


def test_the_fitted_model_has_no_layer_that_turns_compilation_off_and_the_shipped_one_carries_the_augmentation():
    fitted = models.build_model("rnn", image_size=32, augmentation="none", seed=1)
    fitted(_images()[:2])
    assert all(getattr(layer, "supports_jit", True) for layer in fitted._flatten_layers())
    shipped = models.shipped_model(fitted, "rnn", 32, "layers", 1)
    assert not all(getattr(layer, "supports_jit", True) for layer in shipped._flatten_layers())
    np.testing.assert_allclose(shipped.predict(_images(), verbose=0), fitted.predict(_images(), verbose=0),
                               atol=1e-6)


@pytest.fixture(scope="module")
def phantom_arrays(phantom_root, tmp_path_factory):
    """The shared phantom dataset exported as a worker reads it."""
    from helpers.experiments.backends import export_arrays

    return export_arrays(tmp_path_factory.mktemp("arrays") / "arrays.npz", phantom_root, recipe_name="demo")


@pytest.mark.slow
def test_both_backends_train_in_turns_and_report_seconds_and_accuracy(phantom_arrays):
    from helpers.experiments.backends import backend_table, compare_backends

    rows = compare_backends("rnn", phantom_arrays, epochs=2, recipe_name="demo")
    assert [row["backend"] for row in rows] == ["tensorflow", "jax"]
    for row in rows:
        assert row["seconds_per_epoch"] > 0 and row["first_epoch_seconds"] > 0 and row["epochs"] == 2
        assert 0.0 <= row["validation_accuracy"] <= 1.0
    assert "| rnn | layers | jax | 2 |" in backend_table(rows)


@pytest.mark.slow
def test_the_gpu_check_runs_on_the_cpu_with_jax_and_writes_its_figures(phantom_arrays, tmp_path):
    environment = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-m", "helpers.experiments.gpu_check", "run", "--arrays",
                             str(phantom_arrays), "--output", str(tmp_path), "--models", "rnn", "--epochs", "2"],
                            env=environment, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    written = json.loads((tmp_path / "gpu-check.json").read_text())
    assert written["backend"] == "jax" and written["devices"][0]["platform"] == "cpu"
    assert [row["model"] for row in written["rows"]] == ["rnn"] and written["rows"][0]["seconds_per_epoch"] > 0


def test_the_gpu_check_names_a_missing_arrays_file(tmp_path):
    from helpers.experiments import gpu_check

    with pytest.raises(SystemExit, match="no such arrays file"):
        gpu_check._main(["run", "--arrays", str(tmp_path / "missing.npz"), "--output", str(tmp_path)])


@pytest.mark.slow
def test_a_run_resumed_on_the_jax_backend_ends_bit_for_bit_where_an_uninterrupted_one_ends(tmp_path, phantom_root,
                                                                                           on_jax):
    script = f"""
import json, keras, numpy as np
from helpers.inputs import data
from helpers.modeling import recipes, training
dataset = data.load_dataset({str(phantom_root)!r}, progress=False)
kept, validation = data.split_validation(dataset.training, fraction=0.2, seed=0)
small = data.take_per_class(kept, 12)
settings = recipes.TrainingSettings(epochs=3, batch_size=16, seed=5, verbose=0, augmentation="robust")
class Stop(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise KeyboardInterrupt
try:
    training.train_model("rnn", small, validation, None, {str(tmp_path / "resumed")!r}, settings, callbacks=[Stop()])
except KeyboardInterrupt:
    pass
resumed = training.train_model("rnn", small, validation, None, {str(tmp_path / "resumed")!r}, settings)
straight = training.train_model("rnn", small, validation, dataset.testing, {str(tmp_path / "straight")!r}, settings)
same = all(np.array_equal(a, b) for a, b in zip(resumed.model.get_weights(), straight.model.get_weights()))
print(json.dumps({{"backend": keras.backend.backend(), "resumed": resumed.timings["resumed"], "same": same,
                  "augmentation": resumed.model.get_layer("augmentation").__class__.__name__,
                  "recorded_backend": straight.details["device"]["backend"],
                  "test_rows": len(straight.predictions["test"]["probabilities"]) == len(dataset.testing)}}))
"""
    reported = on_jax(script)
    assert reported == {"backend": "jax", "resumed": True, "same": True, "augmentation": "Sequential",
                        "recorded_backend": "jax", "test_rows": True}


def test_a_resume_state_saved_by_a_model_that_augmented_itself_starts_again(tmp_path, phantom_root):
    dataset = data.load_dataset(phantom_root, progress=False)
    kept, validation = data.split_validation(dataset.training, fraction=0.2, seed=0)
    small = data.take_per_class(kept, 4)
    settings = recipes.TrainingSettings(epochs=1, batch_size=16, seed=5, verbose=0)
    resume = training.resume_directory(tmp_path / "run")
    resume.mkdir(parents=True)
    sizes = {"training": len(small), "validation": len(validation), "test": 0}
    identity = {"model": "rnn", "settings": dataclasses.asdict(settings), "data_fingerprint": "unknown",
                "external_fingerprint": None, "split_sizes": sizes}
    (resume / run_folders.RUN_FILE).write_text(json.dumps(identity))  # as runs before the pipeline wrote it
    (resume / run_folders.HISTORY_FILE).write_text("epoch,loss\n0,1.0\n")
    (resume / "backup").mkdir()
    (resume / run_folders.MODEL_FILE).write_text("a model with its augmentation layers")
    run = training.train_model("rnn", small, validation, None, tmp_path / "run", settings)
    assert not run.timings["resumed"] and run.details["augmented_by"] == training.AUGMENTED_BY


def test_the_speed_page_shows_each_backend_as_a_multiple_of_tensorflow_and_a_gpu_check(tmp_path):
    from helpers import config
    from helpers.experiments import backends, gpu_check
    from helpers.files import write_measured_rows

    measured = {"model": "rnn", "recipe": "dataset-only", "augmentation": "layers", "seed": 42, "epochs": 3,
                "first_epoch_seconds": 30.0,
                "cpu_seconds_per_epoch": 15.0, "validation_accuracy": 0.9}
    rows = [{**measured, "backend": "tensorflow", "seconds_per_epoch": 10.0},
            {**measured, "backend": "jax", "seconds_per_epoch": 5.0}]
    device = {"backend": "tensorflow", "accelerators": [], "cpu_count": 2, "cpu_model": "Test CPU"}
    write_measured_rows(tmp_path / backends.BACKENDS_FILE, rows, ("model", "backend", "recipe", "epochs"),
                        config.PROJECT_ROOT, provenance={"device": device})
    section = backends.stored_section(tmp_path)
    assert "| rnn | layers | jax | 3 | 30.0 | 5.0 | 15.0 | 0.50 | 90.00% | Test CPU, 2 cores |" in section
    assert gpu_check.stored_section(tmp_path) == ""
    check = {"backend": "jax", "devices": [{"platform": "gpu", "kind": "NVIDIA H200"}],
             "rows": [{"model": "rnn", "batch_size": 64, "epochs": 3, "first_epoch_seconds": 20.0,
                       "seconds_per_epoch": 1.25, "validation_accuracy": 0.5}]}
    (tmp_path / gpu_check.CHECK_FILE).write_text(json.dumps(check))
    assert "### GPU check (jax on NVIDIA H200" in gpu_check.stored_section(tmp_path)
    assert "| rnn | 64 | 3 | 20.0 | 1.25 | 50.00% |" in gpu_check.stored_section(tmp_path)
