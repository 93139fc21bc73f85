"""helpers.modeling.models: the specified architectures, exact parameter counts, cuDNN-eligible LSTMs, other
backends."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers.modeling import models, randomisation

# Exact sizes. rnn: Conv1D 20,544 + BatchNorm 256 + BiLSTM 197,632 + Dense 16,448 + output 260 (docs/design.md).
EXPECTED_PARAMETERS = {"rnn": 235_140, "hybrid": 1_216_196, "crnn": 1_369_492, "sequencer": 984_996,
                       "cnn": 1_411_796, "cnn_wide": 1_439_140}


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMETERS))
def test_parameter_counts_are_exact(name):
    assert models.build_model(name).count_params() == EXPECTED_PARAMETERS[name]


def test_rnn_layers_match_the_specification():
    table = {row["layer"]: row for row in models.layer_table(models.build_model("rnn"))}
    assert table["rows_as_time_steps"]["output_shape"] == (None, 64, 64)
    assert table["conv1d"]["parameters"] == 20_544
    assert table["batch_normalization"]["parameters"] == 256
    assert table["max_pooling1d"]["output_shape"] == (None, 32, 64)
    assert table["bidirectional_lstm"]["parameters"] == 197_632
    assert table["dense"]["parameters"] == 16_448
    assert table["class_probabilities"]["parameters"] == 260


def test_hybrid_reads_sixteen_feature_rows():
    table = {row["layer"]: row for row in models.layer_table(models.build_model("hybrid"))}
    assert table["feature_rows_as_time_steps"]["output_shape"] == (None, 16, 1024)


def test_crnn_reads_eight_feature_rows_and_eight_columns_within_the_recurrent_budget():
    model = models.build_model("crnn")
    assert model.get_layer("feature_rows_as_time_steps").output.shape[1:] == (8, 512)
    assert model.get_layer("feature_columns_as_time_steps").output.shape[1:] == (8, 512)
    assert model.count_params() <= 1_500_000


def test_cnn_is_about_one_and_a_half_million_parameters():
    assert 1.35e6 <= models.build_model("cnn").count_params() <= 1.65e6


@pytest.mark.slow
def test_sequencer_sweeps_rows_and_columns_in_residual_blocks_and_survives_saving(tmp_path):
    model = models.build_model("sequencer", augmentation="robust", seed=1)
    mixers = [layer for layer in model.layers if isinstance(layer, models.BidirectionalLSTM2D)]
    assert len(mixers) == 3 and all(layer.output.shape[1:] == (8, 8, 128) for layer in mixers)
    assert model.count_params() <= 1_500_000
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 1)).astype("float32")
    shifted = images.copy()
    shifted[1] = np.roll(images[1], 16, axis=0)  # another image in the batch must not change the first's output
    assert np.allclose(model(images, training=False)[0], model(shifted, training=False)[0], atol=1e-6)
    model.save(tmp_path / "sequencer.keras")
    loaded = keras.saving.load_model(tmp_path / "sequencer.keras")
    assert np.allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def _bidirectional_layers(model):
    """Return every Bidirectional layer, including those inside the sequencer's row-and-column mixers."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Bidirectional):
            found.append(layer)
        if isinstance(layer, models.BidirectionalLSTM2D):
            found.extend([layer.rows, layer.columns])
    return found


@pytest.mark.parametrize("name", ["rnn", "hybrid", "crnn", "sequencer"])
def test_lstms_keep_cudnn_eligible_settings(name):
    lstms = [layer.forward_layer for layer in _bidirectional_layers(models.build_model(name))]
    assert lstms
    for lstm in lstms:
        assert lstm.activation is keras.activations.tanh
        assert lstm.recurrent_activation is keras.activations.sigmoid
        assert lstm.dropout == 0 and lstm.recurrent_dropout == 0
        assert not lstm.unroll and lstm.use_bias
        assert lstm.use_cudnn in ("auto", True)


@pytest.mark.parametrize("augmentation", ["layers", "fused", "appearance"])
def test_augmentation_acts_only_in_training(augmentation):
    model = models.build_model("rnn", augmentation=augmentation, seed=1)
    images = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 1)).astype("float32")
    block = model.get_layer("augmentation")
    assert np.array_equal(np.asarray(block(images, training=False)), images)
    assert not np.array_equal(np.asarray(block(images, training=True)), images)


def test_fused_augmentation_without_rotation_or_zoom_only_mirrors_some_images():
    images = np.random.default_rng(0).integers(0, 256, (32, 8, 8, 1)).astype("float32")
    layer = models.RandomFlipRotationZoom(rotation_factor=0.0, zoom_factor=0.0, seed=3)
    augmented = np.asarray(layer(images, training=True))
    unchanged = [np.allclose(augmented[index], images[index], atol=1e-3) for index in range(len(images))]
    mirrored = [np.allclose(augmented[index], images[index, :, ::-1], atol=1e-3) for index in range(len(images))]
    assert all(np.logical_xor(unchanged, mirrored)) and 0 < sum(mirrored) < len(images)


def test_fused_augmentation_rotates_and_zooms_within_the_specified_range():
    square = np.zeros((64, 32, 32, 1), "float32")
    square[:, 12:20, 12:20] = 255.0  # a centred 8x8 square: its area changes only with the zoom (at most 10%)
    layer = models.RandomFlipRotationZoom(seed=5)
    augmented = np.asarray(layer(square, training=True))
    area = (augmented > 127.5).sum(axis=(1, 2, 3))
    assert np.all((area > 64 / 1.1**2 - 8) & (area < 64 / 0.9**2 + 8))
    assert len(set(area.tolist())) > 5, "the zoom is random per image"
    assert not np.array_equal(augmented[0], augmented[1])


def test_intensity_curve_keeps_order_and_range_and_is_the_identity_at_strength_zero():
    ramp = np.tile(np.linspace(0.0, 1.0, 64, dtype="float32"), (8, 1)).reshape(8, 8, 8, 1)
    generator = keras.random.SeedGenerator(3)
    curved = keras.ops.convert_to_numpy(models.random_intensity_curve(ramp, 0.5, generator)).reshape(8, -1)
    assert np.all(np.diff(curved, axis=1) >= -1e-6) and curved.min() >= 0.0 and curved.max() <= 1.0 + 1e-6
    assert np.abs(curved - ramp.reshape(8, -1)).max() > 0.01 and not np.allclose(curved[0], curved[1])
    same = keras.ops.convert_to_numpy(models.random_intensity_curve(ramp, 0.0, generator)).reshape(8, -1)
    np.testing.assert_allclose(same, ramp.reshape(8, -1), atol=1e-4)


def test_bias_field_is_smooth_positive_and_within_its_strength():
    field = keras.ops.convert_to_numpy(models.random_bias_field((16, 32, 32, 1), 0.3, keras.random.SeedGenerator(2)))
    assert field.min() > np.exp(-5 * 0.3) and field.max() < np.exp(5 * 0.3)
    assert np.abs(np.diff(np.log(field), axis=1)).max() < 0.1, "neighbouring pixels change little"
    assert field.std(axis=(1, 2, 3)).min() > 0.0 and not np.allclose(field[0], field[1])


def test_random_kernels_fill_a_centred_square_of_a_drawn_side_and_filter_as_a_correlation():
    kernels = keras.ops.convert_to_numpy(randomisation.random_kernels(64, keras.random.SeedGenerator(4)))
    window = randomisation.WINDOW
    squares = kernels.reshape(64, window, window) != 0
    sides = squares.any(axis=1).sum(axis=1)
    assert set(sides.tolist()) == set(randomisation.KERNEL_SIDES)
    for square, side in zip(squares, sides):
        margin = (window - side) // 2
        assert square[margin:window - margin, margin:window - margin].all() and square.sum() == side * side
    image = np.zeros((1, 9, 9, 1), "float32")
    image[0, 4, 4, 0] = 1.0
    kernel = np.zeros((1, window * window), "float32")
    kernel[0, 0] = 2.0  # top-left weight: each pixel reads its up-left neighbour
    moved = keras.ops.convert_to_numpy(randomisation.filter_images(image, kernel))
    assert moved[0, 6, 6, 0] == 2.0 and moved.sum() == 2.0


def test_random_convolution_changes_the_texture_in_training_only_and_keeps_the_range():
    images = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 1)).astype("float32")
    layer = randomisation.RandomConvolution(rate=1.0, seed=1)
    changed = keras.ops.convert_to_numpy(layer(images, training=True))
    assert changed.min() >= 0.0 and changed.max() <= 255.0 and np.abs(changed - images).mean() > 5.0
    assert np.array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
    untouched = randomisation.RandomConvolution(rate=0.0, seed=1)
    assert np.array_equal(keras.ops.convert_to_numpy(untouched(images, training=True)), images)
    assert isinstance(models.build_model("rnn", augmentation="randomised").get_layer("augmentation").layers[-2],
                      randomisation.RandomConvolution)


def test_a_saved_model_keeps_its_fused_augmentation(tmp_path):
    model = models.build_model("rnn", augmentation="fused", seed=1)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(loaded.get_layer("augmentation"), models.RandomFlipRotationZoom)
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 1)).astype("float32")
    assert np.allclose(np.asarray(loaded(images)), np.asarray(model(images)), atol=1e-6)


def test_unknown_augmentation_is_refused():
    with pytest.raises(ValueError, match="unknown augmentation 'mixup'; choose one of layers, fused, robust, "
                                         "appearance, randomised, none"):
        models.build_model("rnn", augmentation="mixup")


def test_outputs_are_class_probabilities():
    model = models.build_model("hybrid", augmentation="none")
    probabilities = np.asarray(model(np.zeros((3, 64, 64, 1), "float32")))
    assert probabilities.shape == (3, 4)
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_unknown_model_name_lists_the_known_ones():
    known = "rnn, hybrid, crnn, sequencer, cnn, cnn_wide"
    with pytest.raises(ValueError, match=f"unknown model 'transformer'; choose one of {known}$"):
        models.build_model("transformer")


@pytest.mark.slow
def test_models_build_and_run_on_the_jax_backend():
    pytest.importorskip("jax")
    script = ("import json, numpy as np, keras; from helpers.modeling import models;"
              "counts = {n: models.build_model(n).count_params() for n in models.MODEL_BUILDERS};"
              "out = models.build_model('rnn')(np.zeros((2, 64, 64, 1), 'float32'));"
              "print(json.dumps({'backend': keras.backend.backend(), 'counts': counts, 'shape': list(out.shape)}))")
    environment = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    reported = json.loads(result.stdout.strip().splitlines()[-1])
    assert reported == {"backend": "jax", "counts": EXPECTED_PARAMETERS, "shape": [2, 4]}


def test_mixed_precision_is_one_setting_and_keeps_probabilities_in_float32():
    from helpers.modeling.training import precision_policy

    with precision_policy("mixed_bfloat16"):
        model = models.build_model("rnn")
    assert keras.config.dtype_policy().name == "float32", "the previous policy is restored"
    assert model.get_layer("bidirectional_lstm").compute_dtype == "bfloat16"
    assert model.get_layer("class_probabilities").compute_dtype == "float32"
    assert all(weight.dtype == "float32" for weight in model.weights)
    assert model.count_params() == 235_140
    from helpers.modeling.recipes import TrainingSettings

    with pytest.raises(ValueError, match="unknown precision 'half'"):
        TrainingSettings(precision="half")
    with pytest.raises(ValueError, match="unknown precision 'float16'"), precision_policy("float16"):
        pass


@pytest.mark.slow
def test_a_saved_sequencer_loads_every_time_in_the_process_that_saved_it(tmp_path):
    """Before the fix, 1 load in 20 failed (a recycled id made a forward LSTM a copy of a backward one)."""
    path = tmp_path / "sequencer.keras"
    models.build_model("sequencer", augmentation="none").save(path)
    for _ in range(30):
        loaded = keras.saving.load_model(path)
        mixers = [layer for layer in loaded.layers if isinstance(layer, models.BidirectionalLSTM2D)]
        assert all(not mixer.rows.forward_layer.go_backwards and mixer.rows.backward_layer.go_backwards
                   for mixer in mixers)


@pytest.mark.slow
def test_an_ensemble_predicts_its_members_mean_and_survives_saving(tmp_path):
    members = [models.build_model("sequencer", seed=seed) for seed in (1, 2)]
    ensemble = models.build_ensemble(members, "sequencer-ensemble")
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 1)).astype("uint8")
    expected = np.mean([member.predict(images, verbose=0) for member in members], axis=0)
    assert np.allclose(ensemble.predict(images, verbose=0), expected, atol=1e-6)
    assert ensemble.count_params() == sum(member.count_params() for member in members)
    ensemble.save(tmp_path / "ensemble.keras")
    reloaded = keras.saving.load_model(tmp_path / "ensemble.keras", compile=False)
    assert np.allclose(reloaded.predict(images, verbose=0), expected, atol=1e-6)


def test_an_ensemble_refuses_members_of_other_shapes():
    with pytest.raises(ValueError, match="mixed: the members differ"):
        models.build_ensemble([models.build_model("rnn"), models.build_model("rnn", image_size=96)], "mixed")
