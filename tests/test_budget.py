"""helpers.experiments.budget: time-to-accuracy and input-size tables read from run folders (made here, no training)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import config
from helpers.experiments import budget, speed_report
from helpers.modeling import callbacks, run_folders

DEVICE = {"backend": "tensorflow", "accelerators": [], "cpu_count": 2, "cpu_model": "Test CPU"}


def make_run(folder, accuracies, seconds_per_epoch, external=False, validation=None):
    """Write a run folder whose history has these validation accuracies, each epoch lasting the given seconds."""
    folder.mkdir(parents=True)
    metric = callbacks.DATASET_VALIDATION_METRIC if external else "val_accuracy"
    history = pd.DataFrame({"epoch": range(1, len(accuracies) + 1), "val_accuracy": accuracies,
                            "seconds": [seconds_per_epoch] * len(accuracies)})
    if external:
        history[metric] = accuracies
        history["val_accuracy"] = 0.0  # the mixed figure must not be the one read
    history.to_csv(folder / run_folders.HISTORY_FILE, index=False)
    (folder / run_folders.RUN_FILE).write_text(json.dumps({"settings": {"external_training": external},
                                                        "device": DEVICE}))
    (folder / run_folders.TIMINGS_FILE).write_text(json.dumps({
        "seconds_per_epoch": seconds_per_epoch, "fit_seconds": seconds_per_epoch * len(accuracies),
        "epochs_run": len(accuracies)}))
    (folder / run_folders.LABELS_FILE).write_text("{}")
    if validation is not None:
        labels, predicted, paths = validation
        np.savez(folder / run_folders.PREDICTION_FILES["validation"], probabilities=np.eye(4)[predicted],
                 labels=np.array(labels), paths=np.array(paths))
    return folder


def test_seconds_to_reach_counts_every_epoch_up_to_the_first_at_the_target():
    curve = pd.DataFrame({"epoch": [1, 2, 3], "accuracy": [0.5, 0.9, 0.95], "seconds": [10.0, 20.0, 30.0]})
    assert budget.seconds_to_reach(curve, 0.9) == (20.0, 2)
    assert budget.seconds_to_reach(curve, 0.96) is None


def test_time_to_accuracy_targets_the_specified_mean_and_compares_the_seeds_that_reach_it(tmp_path):
    make_run(tmp_path / "specified" / "rnn-seed42", [0.6, 0.7, 0.8], 10.0)  # never reaches 0.85
    make_run(tmp_path / "specified" / "rnn-seed43", [0.7, 0.8, 0.85, 0.9], 10.0)  # reaches it after 30 s
    make_run(config.study_run(tmp_path / "full", "rnn", 42), [0.8, 0.86, 0.95], 7.5, external=True)  # after 15 s
    row = budget.model_time_to_accuracy("rnn", tmp_path)
    assert row["target"] == pytest.approx(0.85)
    assert row["reference_seconds_by_seed"] == {"42": None, "43": (30.0, 3)}
    assert row["reference_seeds_reaching"] == 1 and row["reference_seconds"] == 30.0
    assert (row["timed_seconds"], row["timed_epoch"]) == (15.0, 2)
    assert row["speedup"] == pytest.approx(2.0) and not row["meets_target"]  # the target is 3x
    assert row["machines"] == ["Test CPU, 2 cores"]
    assert budget.model_time_to_accuracy("hybrid", tmp_path) is None
    table = budget.time_to_accuracy_table(budget.time_to_accuracy(tmp_path, ("rnn", "hybrid"), tmp_path / "none"))
    assert list(table["model"]) == ["rnn"] and table["speed-up"].iloc[0] == "2.0x"
    assert table["≥ 3x"].iloc[0] == "missed"


def test_the_specified_side_comes_from_the_stored_row_when_its_runs_are_not_here(tmp_path):
    make_run(tmp_path / "specified" / "rnn-seed43", [0.7, 0.8, 0.85, 0.9], 10.0)
    make_run(config.study_run(tmp_path / "full", "rnn", 42), [0.8, 0.86, 0.95], 7.5, external=True)
    measured = budget.time_to_accuracy(tmp_path, ("rnn",), tmp_path / "none")
    elsewhere = tmp_path / "elsewhere"  # another machine: the study's run, no specified runs
    make_run(config.study_run(elsewhere / "full", "rnn", 42), [0.8, 0.8, 0.9], 5.0, external=True)  # 0.9 after 15 s
    with pytest.raises(FileNotFoundError, match="make reference-runs and make study"):
        budget.time_to_accuracy(elsewhere, ("rnn",), tmp_path / "none")
    row = budget.time_to_accuracy(elsewhere, ("rnn",), tmp_path / "none", stored=measured)["rows"][0]
    assert row["target"] == 0.9 and row["reference_seconds"] == 40.0 and row["reference_seeds"] == ["43"]
    assert (row["timed_seconds"], row["speedup"]) == (15.0, pytest.approx(40 / 15))
    other_reference = {"rows": [{**measured["rows"][0], "reference_model": "cnn_wide"}]}
    assert budget.model_time_to_accuracy("rnn", elsewhere, other_reference) is None


def test_the_default_kind_is_timed_to_its_accuracy_on_every_seed_of_the_study(tmp_path):
    make_run(config.study_run(tmp_path / "full", "sequencer", 42), [0.9, 0.95, 0.97], 40.0, external=True)  # 120 s
    make_run(config.study_run(tmp_path / "full", "sequencer", 43), [0.9, 0.955], 40.0, external=True)  # never
    kind = budget.default_kind_time(tmp_path, "sequencer")
    assert kind["seconds_by_seed"] == {"42": (120.0, 3), "43": None} and kind["best_by_seed"]["43"] == 0.955
    sentence = budget.default_kind_sentence({"default_kind": kind})
    assert "sequencer, reaches 96% validation accuracy" in sentence
    assert "seed 42: 2.0 min (epoch 3); seed 43: not reached (best 95.50%)" in sentence
    assert budget.default_kind_sentence({"default_kind": None}) == ""


def test_a_run_with_external_validation_but_no_dataset_column_is_refused(tmp_path):
    folder = make_run(tmp_path / "old", [0.9], 1.0)
    (folder / run_folders.RUN_FILE).write_text(json.dumps({"settings": {"external_training": True}, "device": DEVICE}))
    with pytest.raises(ValueError, match="old: its validation holds external images"):
        budget.validation_curve(folder)


def test_time_to_accuracy_without_runs_names_the_folders_and_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="make time-to-accuracy"):
        budget.time_to_accuracy(tmp_path)


def test_input_sizes_score_the_datasets_own_validation_images_against_the_64_pixel_run(tmp_path):
    paths = ["Training/glioma/a.jpg", "Training/notumor/b.jpg", "external/set/train/c.png"]
    make_run(config.study_run(tmp_path / "full", "hybrid", 42), [0.5], 10.0, external=True,
             validation=([0, 2, 0], [0, 1, 3], paths))  # half the dataset's images right; the external one wrong
    make_run(tmp_path / "sizes" / config.FULL_PROFILE.recipe / "hybrid-96px-seed42", [0.5], 25.0, external=True,
             validation=([0, 2, 0], [0, 2, 3], paths))
    results = budget.input_sizes(tmp_path, ("hybrid", "rnn", "cnn"))
    assert [(row["image_size"], row["validation_accuracy"]) for row in results["rows"]] == [(64, 0.5), (96, 1.0)]
    assert {row["model"] for row in results["rows"]} == {"hybrid"}
    make_run(config.study_run(tmp_path / "full", "rnn", 42), [0.5], 10.0, validation=([0], [0], paths[:1]))
    assert not budget.input_sizes(tmp_path, ("rnn",))["rows"], "the rnn's own recipe is no 64-pixel row of the study's"
    table = budget.input_sizes_table(results)
    assert list(table["× 64 px time"]) == ["1.0x", "2.5x"]
    markdown = budget.input_sizes_markdown(results)
    assert "| hybrid  |       96 | 100.00%" in markdown
    assert f"The {config.FULL_PROFILE.recipe} recipe at each input size" in markdown


def test_the_speed_page_carries_the_stored_sections(tmp_path):
    make_run(tmp_path / "specified" / "rnn-seed42", [0.8], 10.0)
    make_run(config.study_run(tmp_path / "full", "rnn", 42), [0.9], 2.0, external=True)
    budget.save(budget.time_to_accuracy(tmp_path, ("rnn",), tmp_path / "none"), tmp_path / budget.TIME_TO_ACCURACY_FILE)
    page = speed_report.speed_page({}, {}, budget.stored_sections(tmp_path))
    assert "## Time to accuracy" in page and "5.0x" in page and "## Input size" not in page


def test_the_budget_sentence_says_which_models_the_target_minutes_buy():
    results = {"full_profile_from_scratch_seconds": 100 * 60.0, "full_profile_target_minutes": 60,
               "full_profile_training_seconds": {"rnn": 5 * 60.0, "hybrid": 20 * 60.0, "sequencer": 65 * 60.0},
               "rows": [{"model": "rnn", "timed_run_seconds": 90.0}, {"model": "hybrid", "timed_run_seconds": 270.0}]}
    sentence = budget.budget_sentence(results)
    assert "rnn 5, hybrid 20, sequencer 65" in sentence and "the other 10." in sentence
    assert "buy rnn, hybrid, without sequencer." in sentence
    assert sentence.endswith("(rnn, hybrid; one seed each) trained in 6 minutes together.")
