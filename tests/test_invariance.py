"""Training for invariance: gradient reversal, the source adversary's and the outline's losses, the training wrapper."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from helpers import config
from helpers.inputs import external
from helpers.inputs.synthetic import make_phantom_external_sets
from helpers.modeling import invariance, models, recipes, run_folders, training


def test_gradient_reversal_passes_values_and_returns_the_gradient_times_minus_strength():
    features = tf.constant([[1.0, -2.0, 3.0]])
    with tf.GradientTape() as tape:
        tape.watch(features)
        passed = invariance.GradientReversal(0.3)(features)
        total = tf.reduce_sum(passed * tf.constant([[1.0, 2.0, 4.0]]))
    np.testing.assert_allclose(passed.numpy(), features.numpy())
    np.testing.assert_allclose(tape.gradient(total, features).numpy(), [[-0.3, -0.6, -1.2]], rtol=1e-6)


def test_source_loss_reads_the_adversary_row_of_each_images_label():
    probabilities = np.full((2, invariance.CONDITIONS, 3), 1 / 3, dtype=np.float32)
    probabilities[0, 2] = [0.0, 1.0, 0.0]  # label 2's row is sure of source 1
    probabilities[1, 0] = [0.5, 0.25, 0.25]
    loss = keras.ops.convert_to_numpy(invariance.conditional_source_loss(probabilities, np.array([1, 2]),
                                                                         np.array([2, 0])))
    np.testing.assert_allclose(loss, [0.0, math.log(4)], atol=1e-5)
    uniform = keras.ops.convert_to_numpy(invariance.conditional_source_loss(
        np.full((1, invariance.CONDITIONS, 3), 1 / 3, np.float32), np.array([0]), np.array([4])))
    np.testing.assert_allclose(uniform, [math.log(3)], rtol=1e-5)


def test_outline_grid_marks_the_rows_and_cells_an_outline_touches():
    masks = np.zeros((1, 8, 8, 1), dtype=np.float32)
    masks[0, 2:4, 5, 0] = 255  # rows 2-3, column 5
    rows = keras.ops.convert_to_numpy(invariance.outline_grid(masks, (4,)))
    cells = keras.ops.convert_to_numpy(invariance.outline_grid(masks, (2, 2)))
    np.testing.assert_array_equal(rows, [[0, 1, 0, 0]])
    np.testing.assert_array_equal(cells, [[[0, 1], [0, 0]]])


def test_outline_loss_averages_over_images_with_a_known_outline_only():
    logits = np.zeros((2, 4, 1), dtype=np.float32)  # sigmoid 0.5 everywhere: ln 2 per cell
    targets = np.array([[0, 1, 0, 0], [1, 1, 1, 1]], dtype=np.float32)
    known = keras.ops.convert_to_numpy(invariance.outline_loss(logits, targets, np.array([1.0, 0.0])))
    assert float(known) == pytest.approx(math.log(2), rel=1e-5)
    sure = np.where(targets[..., None] > 0, 20.0, -20.0).astype(np.float32)
    assert float(keras.ops.convert_to_numpy(invariance.outline_loss(sure, targets, np.ones(2)))) < 1e-6
    assert float(keras.ops.convert_to_numpy(invariance.outline_loss(logits, targets, np.zeros(2)))) == 0.0


def test_spatial_features_find_the_map_each_model_summarises():
    shapes = {name: tuple(invariance.spatial_features(models.build_model(name, 64, "none")).shape[1:])
              for name in ("rnn", "sequencer", "cnn")}
    assert shapes == {"rnn": (32, 64), "sequencer": (8, 8, 128), "cnn": (4, 4, 128)}


@pytest.fixture(scope="module")
def external_root(tmp_path_factory):
    """Generated external sets of both sides: 12 images per part of each set."""
    return make_phantom_external_sets(tmp_path_factory.mktemp("external") / "sets", per_part=12, seed=7)


def test_training_inputs_carry_outlines_where_known_and_nothing_on_tumour_free_images(phantom_root, external_root):
    loaded = external.load_training_data(phantom_root, 64, "standardised", True, external_root, progress=False,
                                         sets=config.PHANTOM_EXTERNAL_SETS, collections=config.ALL_COLLECTIONS)
    sources = invariance.training_sources(loaded.training.paths)
    inputs = invariance.training_inputs(loaded.training, loaded.external, sources)
    from_external = np.char.startswith(loaded.training.paths.astype(str), external.PATH_PREFIX)
    tumour_free = loaded.training.labels == config.CLASS_NAMES.index(config.NO_TUMOUR_CLASS)
    outlined = inputs["outline"].reshape(len(loaded.training), -1).max(axis=1) == 255
    assert len(sources) >= 3 and set(inputs["source"][~from_external]) == {sources.index("dataset")}
    assert (inputs["outline_known"][tumour_free] == 1).all() and not outlined[tumour_free].any()
    assert (inputs["outline_known"][~from_external & ~tumour_free] == 0).all(), "dataset outlines are unknown"
    assert outlined[from_external & ~tumour_free].any() and (inputs["outline_known"][outlined] == 1).all()
    dataset_only = loaded.training.take(np.flatnonzero(~from_external))  # no external data: the dataset's own
    plain = invariance.training_inputs(dataset_only, {}, sources)  # tumour-free images still say "nowhere"
    assert (plain["outline_known"] == tumour_free[~from_external]).all() and not plain["outline"].any()
    with pytest.raises(ValueError, match=r"external/.*: an external training image whose set was not given"):
        invariance.training_inputs(loaded.training, {}, sources)


@pytest.mark.slow
def test_invariance_training_ships_the_plain_architecture_with_its_weights(phantom_root, external_root, tmp_path):
    settings = recipes.recipe("both-sides", "rnn", epochs=1, batch_size=64, image_size=64, verbose=0,
                               source_balance=False, source_adversary=0.5, outline_supervision=1.0)
    loaded = external.load_training_data(phantom_root, 64, "standardised", True, external_root, progress=False,
                                         sets=config.PHANTOM_EXTERNAL_SETS, collections=settings.external_collections)
    with pytest.raises(ValueError, match="an external training image whose set was not given"):
        training.train_model("rnn", loaded.training, loaded.validation, None, tmp_path / "no-outlines", settings)
    run = training.train_model("rnn", loaded.training, loaded.validation, None, tmp_path / "run", settings,
                               data_fingerprint=loaded.dataset.fingerprint, external=loaded.external,
                               external_fingerprint=loaded.external_fingerprint)
    plain = models.build_model("rnn", 64, settings.augmentation)
    assert [layer.name for layer in run.model.layers] == [layer.name for layer in plain.layers]
    assert run.model.count_params() == plain.count_params()
    reloaded = run_folders.load_run(run.directory)
    images = loaded.validation.images[:8, ..., np.newaxis]
    np.testing.assert_allclose(reloaded.model.predict(images, verbose=0), run.model.predict(images, verbose=0),
                               atol=1e-6)
    np.testing.assert_allclose(run.predictions["validation"]["probabilities"][:8], run.model.predict(images, verbose=0),
                               atol=1e-5)
    assert run_folders.run_matches(run.directory, "rnn", settings, data_fingerprint=loaded.dataset.fingerprint)
    other = recipes.recipe("both-sides", "rnn", epochs=1, batch_size=64, image_size=64, verbose=0)
    assert not run_folders.run_matches(run.directory, "rnn", other)


@pytest.mark.slow
def test_the_outline_and_source_losses_train_under_mixed_bfloat16(phantom_root, external_root, tmp_path):
    settings = recipes.recipe("both-sides", "hybrid", epochs=1, batch_size=64, image_size=64, verbose=0,
                               source_balance=False, source_adversary=0.5, outline_supervision=1.0,
                               precision="mixed_bfloat16")
    loaded = external.load_training_data(phantom_root, 64, "standardised", True, external_root, progress=False,
                                         sets=config.PHANTOM_EXTERNAL_SETS, collections=settings.external_collections)
    run = training.train_model("hybrid", loaded.training, loaded.validation, None, tmp_path / "run", settings,
                               data_fingerprint=loaded.dataset.fingerprint, external=loaded.external,
                               external_fingerprint=loaded.external_fingerprint)
    assert np.isfinite(run.history["loss"]).all() and np.isfinite(run.history["val_loss"]).all()
    probabilities = run.predictions["validation"]["probabilities"]
    assert probabilities.dtype == np.float32 and np.allclose(probabilities.sum(axis=1), 1, atol=1e-2)
