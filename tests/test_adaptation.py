"""Adaptation to a series: batch-normalisation statistics re-estimated on a batch with known statistics, layer after
layer and inside nested models; what it refuses; the command's --adapt; the measurement's groups."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from helpers.experiments.adaptation import STEPS, adapted_predictions, grouped
from helpers.modeling import predict
from helpers.modeling.adaptation import AdaptationError, adapted_model, normalisation_layers
from helpers.modeling.models import build_ensemble


def _two_normalisations(name: str = "two") -> keras.Model:
    """Return features -> BN -> x*2 + 5 (fixed) -> BN, with identity affine parts and training statistics 0 and 1."""
    inputs = keras.Input((3,), name="features")
    first = keras.layers.BatchNormalization(name="first")(inputs)
    scaled = keras.layers.Dense(3, name="fixed", kernel_initializer=keras.initializers.Identity(gain=2.0),
                                bias_initializer=keras.initializers.Constant(5.0))(first)
    return keras.Model(inputs, keras.layers.BatchNormalization(name="second")(scaled), name=name)


def test_statistics_are_re_estimated_in_order_and_the_model_itself_is_unchanged():
    model = _two_normalisations()
    batch = np.random.default_rng(0).normal(3.0, 2.0, (4000, 3)).astype("float32")
    adapted = adapted_model(model, batch)
    first, second = (adapted.get_layer(name) for name in ("first", "second"))
    assert np.allclose(first.moving_mean.numpy(), batch.mean(axis=0), atol=1e-4)
    assert np.allclose(first.moving_variance.numpy(), batch.var(axis=0), rtol=1e-4)
    # the second layer sees the first one's adapted output (mean 0, variance 1), doubled and shifted by 5
    assert np.allclose(second.moving_mean.numpy(), 5.0, atol=1e-3)
    assert np.allclose(second.moving_variance.numpy(), 4.0, rtol=1e-2)
    output = adapted.predict(batch, verbose=0)
    assert np.allclose(output.mean(axis=0), 0.0, atol=1e-2) and np.allclose(output.std(axis=0), 1.0, atol=1e-2)
    assert np.allclose(model.get_layer("first").moving_mean.numpy(), 0.0), "the trained model is left as it was"
    assert np.allclose(model.predict(batch[:5], verbose=0), model.predict(batch[:5], verbose=0))


def test_the_members_of_an_ensemble_are_adapted_like_a_model_alone():
    members = [_two_normalisations("one"), _two_normalisations("other")]
    ensemble = build_ensemble(members)
    assert len(normalisation_layers(ensemble)) == 4
    batch = np.random.default_rng(1).normal(-1.0, 3.0, (500, 3)).astype("float32")
    alone = adapted_model(members[0], batch).predict(batch, verbose=0)
    assert np.allclose(adapted_model(ensemble, batch).predict(batch, verbose=0), alone, atol=1e-4)


def test_a_model_without_batch_normalisation_or_too_few_images_is_refused_naming_it():
    inputs = keras.Input((3,))
    plain = keras.Model(inputs, keras.layers.Dense(2)(inputs), name="plain")
    with pytest.raises(AdaptationError, match="^plain: has no batch-normalisation layer"):
        adapted_model(plain, np.zeros((64, 3)))
    with pytest.raises(AdaptationError, match="^scan.keras: adaptation needs at least 32 images .* 31 given$"):
        adapted_model(_two_normalisations(), np.zeros((31, 3)), name="scan.keras")


def test_groups_cover_every_image_once_and_each_group_is_adapted_on_its_own():
    groups = grouped(100, 32)
    assert [len(group) for group in groups] == [34, 33, 33]
    assert np.array_equal(np.sort(np.concatenate(groups)), np.arange(100))
    assert len(grouped(40, 32)) == 1, "under twice the size: one group"

    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, keras.layers.Softmax()(keras.layers.Dense(4)(keras.layers.Flatten()(
        keras.layers.BatchNormalization()(inputs)))))
    images = np.concatenate([np.full((64, 8, 8), 10.0), np.full((64, 8, 8), 200.0)]).astype("float32")
    images += np.random.default_rng(2).normal(0, 1, images.shape).astype("float32")
    whole = adapted_predictions(model, images, STEPS[2])
    assert np.allclose(whole, adapted_model(model, images[..., None]).predict(images[..., None], verbose=0))
    assert not np.allclose(adapted_predictions(model, images, STEPS[3]), whole, atol=1e-3), (
        "groups of a single intensity are standardised apart")
    mirrored = (model.predict(images[..., None], verbose=0) + model.predict(images[:, :, ::-1, None], verbose=0)) / 2
    assert np.allclose(adapted_predictions(model, images, STEPS[1]), mirrored, atol=1e-6)


def test_the_command_adapts_on_the_images_it_is_given_and_refuses_too_few(saved_run, phantom_root, capsys):
    files = sorted(str(path) for path in (phantom_root / "Testing").rglob("*.jpg"))[:40]
    plain = predict.predict_files(files, saved_run.directory)
    adapted = predict.predict_files(files, saved_run.directory, adapt=True)
    expected = adapted_model(saved_run.model, np.stack(
        [predict._read_input(file, predict.load_saved_model(saved_run.directory))[0][2] for file in files])[..., None])
    assert [item.confidence for item in adapted] != [item.confidence for item in plain]
    first = predict._read_input(files[0], predict.load_saved_model(saved_run.directory))[0][2]
    assert adapted[0].probabilities["glioma"] == pytest.approx(
        float(expected.predict(first[None, ..., None], verbose=0)[0][0]), abs=1e-5)

    assert predict.main([*files, "--model", str(saved_run.directory), "--adapt", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["adapted_to_images"] == 40
    assert predict.main([*files[:5], "--model", str(saved_run.directory), "--adapt"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.strip().endswith("at least 32 images of one series, folder or source; "
                                                                "5 given")
    assert len(captured.err.strip().splitlines()) == 1


def test_the_summary_averages_seeds_and_the_sentence_measures_only_sources_never_trained_on():
    import pandas as pd

    from helpers.experiments.adaptation import STEP, change_sentence, changes, summary_table

    def row(run, recipe, held_out, step, sensitivity, specificity, official):
        return {"model": "cnn", "recipe": recipe, "held out": held_out, "seed": 42, "run": run, "source": "TCGA",
                STEP: step, "images": 10, "official test accuracy": official,
                "sensitivity": sensitivity, "specificity": specificity, "type accuracy": None,
                "balanced accuracy": (sensitivity + specificity) / 2}

    table = pd.DataFrame([
        row("a", "dataset-only", "every external source", STEPS[0], 0.5, 0.9, 0.90),
        row("a", "dataset-only", "every external source", STEPS[3], 0.7, 0.8, 0.92),
        row("b", "dataset-only", "every external source", STEPS[0], 0.7, 0.9, 0.94),
        row("b", "dataset-only", "every external source", STEPS[3], 0.9, 0.8, 0.94),
        row("c", "outlined", "none", STEPS[0], 0.9, 0.9, 0.96),
        row("c", "outlined", "none", STEPS[3], 0.1, 0.1, 0.10)])
    summary = summary_table(table)
    benchmark = summary.loc[("cnn", "dataset-only", "TCGA")]
    assert benchmark[("seeds", "")] == 2
    assert benchmark[("sensitivity", STEPS[0])] == pytest.approx(0.6)
    assert benchmark[("sensitivity", STEPS[3])] == pytest.approx(0.8)
    assert summary.loc[("cnn", "dataset-only", "official Testing"), ("accuracy", STEPS[3])] == pytest.approx(0.93)
    assert changes(table) == {STEPS[3]: pytest.approx({"sensitivity": 20.0, "specificity": -10.0,
                                                       "balanced accuracy": 5.0, "official": 1.0})}
    sentence = change_sentence(table)
    assert "(2 runs: cnn)" in sentence, "the run trained on the source is left out"
    assert (f"{STEPS[3]}: sensitivity +20.0, specificity -10.0, balanced accuracy +5.0, official split +1.0."
            in sentence)
