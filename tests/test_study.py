"""helpers.analysis.study: parameters resolved from the profile, runs reused only when recipe and data match,
records."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import config
from helpers.analysis.run_summaries import (
    cheap_accuracy_table,
    default_ensemble,
    flip_averaged_probabilities,
    representative_run,
    summarise_runs,
    summary_row,
)
from helpers.analysis.study import Study
from helpers.metrics_record import Comparison, Exploration
from helpers.modeling import callbacks, models, recipes, run_folders


@pytest.fixture(autouse=True)
def no_external_sets(tmp_path, monkeypatch):
    """These tests study the phantom dataset alone: no external sets, whatever the environment points at."""
    monkeypatch.delenv(config.EXTERNAL_DIR_VARIABLE, raising=False)
    monkeypatch.setattr(config, "DEFAULT_EXTERNAL_DIR", tmp_path / "no-external-sets")


def _study(phantom_root, tmp_path, **overrides):
    parameters = {"profile": "smoke", "data_dir": str(phantom_root), "epochs": 1, "batch_size": 16,
                  "run_root": str(tmp_path / "runs"), **overrides}
    return Study.from_parameters(**parameters)


def test_empty_parameters_take_the_profile_defaults(tmp_path, monkeypatch):
    monkeypatch.setenv(config.RUNS_DIR_VARIABLE, str(tmp_path))
    study = Study.from_parameters(profile="full")
    assert study.epochs == 40 and study.seeds == (42, 43, 44) and study.batch_size is None
    assert study.run_root == tmp_path / "full" and study.metrics_dir == tmp_path / "full" / "metrics"
    assert study.settings("rnn", 43).seed == 43
    hybrid = study.settings("hybrid", 43)  # the outlined recipe (issue 26): every source on both sides, outline loss
    assert (hybrid.batch_size, hybrid.learning_rate, hybrid.schedule, hybrid.epochs) == (64, 2e-3, "cosine", 40)
    assert (hybrid.preprocessing, hybrid.augmentation, hybrid.external_training) == ("standardised", "robust", True)
    assert hybrid.external_collections == config.ALL_COLLECTIONS and hybrid.outline_supervision > 0
    rnn = study.settings("rnn", 43)  # the rnn as specified has its own recipe (issue 23): the dataset's images only
    assert (rnn.epochs, rnn.augmentation, rnn.external_training, rnn.outline_supervision) == (100, "layers", False, 0)
    assert (rnn.preprocessing, rnn.checkpoint_metric) == ("standardised", callbacks.DATASET_VALIDATION_METRIC)
    cnn = recipes.recipe("project", "cnn")  # the project recipe's own departure for cnn
    assert (cnn.batch_size, cnn.learning_rate, cnn.early_stopping_metric) == (64, 1e-3, "val_accuracy")
    demo = Study.from_parameters(profile="demo").settings("rnn", 42)  # the robust recipe scaled to the phantom set
    assert (demo.batch_size, demo.learning_rate, demo.schedule, demo.augmentation) == (16, 5e-4, "cosine", "layers")
    published = Study.from_parameters(profile="published")  # what a notebook opened without parameters reads
    assert published.run_root == config.PUBLISHED_RUNS_DIR
    assert published.metrics_dir == tmp_path / "published" / "metrics"
    assert published.settings("rnn", 42) == study.settings("rnn", 42), "the published runs are the full profile's"
    custom = Study.from_parameters(profile="full", epochs=3, batch_size=64, seeds=[1, 2])
    assert (custom.epochs, custom.seeds, custom.settings("cnn", 1).batch_size) == (3, (1, 2), 64)
    assert custom.settings("rnn", 1).epochs == 3, "epochs given in the parameters hold for every model"
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        Study.from_parameters(profile="fast")
    with pytest.raises(ValueError, match="epochs and batch_size must be >= 0"):
        Study.from_parameters(epochs=-1)


@pytest.mark.slow
def test_a_model_with_its_own_recipe_trains_on_the_datasets_images_and_validates_on_the_studys(monkeypatch):
    own = dataclasses.replace(config.PROFILES["demo"], images_per_class=20, model_recipes=(("rnn", "dataset-only"),))
    monkeypatch.setitem(config.PROFILES, "demo", own)
    study = Study.from_parameters(profile="demo")
    data = study.load_data(progress=False)
    rnn, cnn = study.settings("rnn", 42), study.settings("cnn", 42)
    assert (rnn.external_training, cnn.external_training) == (False, True)
    assert data.training_for(cnn) is data.training and len(data.training_for(rnn)) < len(data.training)
    assert not np.char.startswith(data.training_for(rnn).paths.astype(str), "external/").any()
    assert set(data.training_for(rnn).paths) <= set(data.training.paths)
    assert np.char.startswith(data.validation.paths.astype(str), "external/").any(), "one validation split for all"
    assert data.split_table(rnn)["training"].sum() == len(data.training_for(rnn))
    monkeypatch.setitem(config.PROFILES, "demo", dataclasses.replace(own, model_recipes=(("rnn", "specified"),)))
    with pytest.raises(ValueError, match="specified recipe of rnn preprocesses 'resize', the study's images are "
                                         "'standardised'"):
        Study.from_parameters(profile="demo").settings("rnn", 42)


def test_smoke_profile_takes_a_per_class_subset_with_a_fixed_validation_split(phantom_root, tmp_path):
    data = _study(phantom_root, tmp_path).load_data(progress=False)
    table = data.split_table()
    assert table["training"].tolist() == [40] * 4 and table["validation"].tolist() == [15] * 4
    assert table["test"].tolist() == [30] * 4
    assert not set(data.training.paths) & set(data.validation.paths)
    again = _study(phantom_root, tmp_path, seeds=[7]).load_data(progress=False)
    assert list(again.validation.paths) == list(data.validation.paths), "the validation split ignores model seeds"


@pytest.mark.slow
def test_runs_are_reused_only_for_the_same_recipe_and_data(phantom_root, tmp_path, capsys):
    study = _study(phantom_root, tmp_path)
    data = study.load_data(progress=False)
    first = study.train("rnn", data)
    assert "training into" in capsys.readouterr().out
    second = study.train("rnn", data)
    assert "reusing" in capsys.readouterr().out
    assert np.array_equal(first[0].predictions["test"]["probabilities"], second[0].predictions["test"]["probabilities"])
    assert len(study.load_runs("rnn", data)) == 1
    longer = _study(phantom_root, tmp_path, epochs=2)
    with pytest.raises(FileNotFoundError, match="run the rnn training notebook first"):
        longer.load_runs("rnn", data)
    longer.train("rnn", data)
    assert "training into" in capsys.readouterr().out
    with pytest.raises(FileNotFoundError, match="no finished cnn run for seed 42"):
        study.load_runs("cnn", data)

    published = _study(phantom_root, tmp_path, profile="published", run_root=str(tmp_path / "published"))
    with pytest.raises(FileNotFoundError, match='published run of rnn \\(seed 42\\) does not match this study '
                                                '\\(no finished run;.*set profile = "full"'):
        published.train("rnn", published.load_data(progress=False))

    cheap = cheap_accuracy_table({"rnn": second}, data, np.ones(len(data.testing), dtype=bool))
    assert list(cheap.index.get_level_values("variant")) == ["one network (seed 42)", "flip averaging",
                                                             "ensemble of 1 seed"]
    assert cheap["network passes per image"].tolist() == [1, 2, 1]
    one, flipped, ensemble = cheap["test accuracy"]
    assert one == ensemble == pytest.approx(float((second[0].predictions["test"]["probabilities"].argmax(1)
                                                    == data.testing.labels).mean()))
    mirror = second[0].model.predict(data.testing.images[:, :, ::-1, None], verbose=0)
    averaged = flip_averaged_probabilities(second[0].model, data.testing.images)
    assert np.allclose(averaged, (second[0].predictions["test"]["probabilities"] + mirror) / 2, atol=1e-5)
    assert flipped == pytest.approx(float((averaged.argmax(1) == data.testing.labels).mean()))

    summary = summarise_runs("rnn", second)
    row = summary_row(summary)
    assert row["parameters"] == 235_140 and row["seeds"] == 1
    assert row["accuracy_low"] <= row["accuracy"] <= row["accuracy_high"]
    assert summary["per_class"].shape == (4, 4) and representative_run(second) is second[0]


def test_record_writes_plain_json_from_numpy_and_pandas_values_and_reads_back_by_type(tmp_path):
    study = Study.from_parameters(profile="demo", run_root=str(tmp_path))
    written = Exploration(test_images=np.int64(3), load_seconds=np.float32(0.5), near_duplicate_threshold=None,
                          split_table=pd.DataFrame({"a": [1, 2]}, index=["x", "y"]), modes=pd.Series({"L": 2}),
                          dataset_counts={"training": np.arange(3)})
    path = study.record(written)
    content = json.loads(path.read_text())
    assert path == tmp_path / "metrics" / "01_explore_data.json"
    assert content["notebook"] == "01_explore_data" and content["profile"] == "demo"
    assert content["test_images"] == 3 and content["load_seconds"] == 0.5 and content["modes"] == {"L": 2}
    assert content["split_table"] == [{"index": "x", "a": 1}, {"index": "y", "a": 2}]
    assert content["dataset_counts"] == {"training": [0, 1, 2]}
    metrics = {"notebooks": {"01_explore_data": content}}
    read = Exploration.read(metrics)
    assert Exploration.recorded(metrics) and not Comparison.recorded(metrics)
    assert read.test_images == 3 and read.split_table == content["split_table"]
    assert Comparison.read(metrics).summaries == {} and Comparison.read(metrics).targets == []


def _run(seed, validation_right, model=None):
    """A loaded run whose validation predictions get the first validation_right of four images right."""
    labels = np.array([0, 1, 2, 3])
    probabilities = np.eye(4)[[label if index < validation_right else (label + 1) % 4
                               for index, label in enumerate(labels)]]
    return run_folders.TrainingRun(directory=Path(f"runs/m-seed{seed}"), class_names=config.CLASS_NAMES, image_size=64,
                                history=None, timings={}, details={"settings": {"seed": seed}},
                                predictions={"validation": {"probabilities": probabilities, "labels": labels,
                                                            "paths": np.array(["Training/image"] * 4)}},
                                loaded_model=model)


def test_the_candidate_ensemble_is_the_best_on_validation_models_and_needs_every_seeds_model():
    members = {seed: models.build_model("rnn", seed=seed) for seed in (1, 2)}
    runs = {"weak": [_run(1, 1, members[1]), _run(2, 2, members[2])],
            "strong": [_run(1, 4, members[1]), _run(2, 3, members[2])]}
    ensembles = default_ensemble(runs)
    assert list(ensembles) == ["strong-ensemble"]
    ensemble = ensembles["strong-ensemble"][0]
    assert ensemble.details["seeds"] == [1, 2]
    assert np.allclose(ensemble.predictions["validation"]["probabilities"],
                       np.mean([run.predictions["validation"]["probabilities"] for run in runs["strong"]], axis=0))
    assert ensemble.model.count_params() == 2 * members[1].count_params()
    assert default_ensemble({"strong": [_run(1, 4, members[1]), _run(2, 3)]}) == {}  # a seed without a model
    assert default_ensemble({"strong": [_run(1, 4, members[1])]}) == {}  # one seed
