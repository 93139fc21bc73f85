"""helpers.experiments.levers: each lever's row read from its run folder, and the table judging it against the study's
runs (folders made here, no training)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import config
from helpers.experiments import levers
from helpers.modeling import run_folders
from test_budget import DEVICE, make_run


def lever_run(folder, seed, epoch_seconds, correct, total=10):
    """Write a run folder whose validation split holds total dataset images and two external ones, correct of the
    dataset's right, each epoch lasting the given seconds."""
    labels = [index % 4 for index in range(total)] + [config.ANY_TUMOUR_LABEL, 2]
    predicted = [label if index < correct else (label + 1) % 4 for index, label in enumerate(labels[:total])] + [0, 2]
    paths = [f"Training/x/{index}.jpg" for index in range(total)] + ["external/a/train/1.png", "external/b/train/2.png"]
    make_run(folder, [0.5] * 3, epoch_seconds[0], validation=(labels, predicted, paths))
    (folder / run_folders.TIMINGS_FILE).write_text(json.dumps({
        "epoch_seconds": epoch_seconds, "fit_seconds": float(sum(epoch_seconds)), "epochs_run": len(epoch_seconds)}))
    (folder / run_folders.RUN_FILE).write_text(json.dumps({"settings": {"seed": seed}, "device": DEVICE,
                                                        "git_commit": "abc"}))
    return folder


def test_a_lever_row_reads_epoch_time_after_the_first_and_accuracy_on_the_datasets_images(tmp_path):
    folder = lever_run(tmp_path / "run", 43, [9.0, 2.0, 4.0, 3.0], correct=8)
    row = levers.measure(folder, "rnn", "batch 128")
    assert (row["model"], row["lever"], row["seed"], row["backend"]) == ("rnn", "batch 128", 43, "tensorflow")
    assert row["seconds_per_epoch"] == 3.0, "the first epoch (tracing, warm-up) is left out of the median"
    assert row["fit_seconds"] == 18.0 and row["machine"] == "Test CPU, 2 cores"
    assert row["validation_accuracy"] == pytest.approx(0.8)
    assert row["whole_validation_accuracy"] == pytest.approx(10 / 12), "external tumour counts as any tumour class"


def test_a_lever_holds_when_its_mean_is_within_the_study_seeds_spread(tmp_path):
    def rows(lever, seconds, corrects):
        return [levers.measure(lever_run(tmp_path / config.folder_name(lever) / str(seed), seed, [seconds] * 3,
                                         correct), "rnn", lever) for seed, correct in zip((42, 43, 44), corrects)]

    study = rows(levers.STUDY_LEVER, 4.0, (9, 8, 7))  # mean 80%, standard deviation 10 points
    table = levers.levers_table([*study, *rows("mixed_bfloat16", 2.0, (7, 7, 7)),
                                 *rows("batch 128", 3.0, (6, 7, 7))]).set_index("lever")
    assert table.loc["mixed_bfloat16", "accuracy"] == "holds" and table.loc["mixed_bfloat16", "× study time"] == "0.50x"
    assert table.loc["batch 128", "accuracy"] == "lost" and table.loc[levers.STUDY_LEVER, "accuracy"] == "–"
    assert table.loc[levers.STUDY_LEVER, "validation, dataset's images"] == "80.00% ± 10.00%"
    assert list(table["seeds"]) == [3, 3, 3]
    assert "## Compute and recipe levers" in levers.levers_markdown({"rows": study})
    assert levers.stored_section(tmp_path) == ""


def test_a_compute_lever_changes_one_thing_a_recipe_lever_sets_its_whole_schedule_and_the_study_rows_are_the_studys():
    assert levers.LEVERS[levers.STUDY_LEVER] == ({}, {})
    assert all(len(changes) + len(environment) == 1 for changes, environment in levers.COMPUTE_LEVERS.values())
    assert {frozenset(changes) for changes, _ in levers.RECIPE_LEVERS.values()} == {
        frozenset({"epochs", "ema_momentum", "learning_rate"})}
    assert levers.adopted("sequencer", "40 epochs") and not levers.adopted("sequencer", "30 epochs")
    study_run = config.study_run(config.runs_dir() / "full", "rnn", 42)
    assert levers.lever_directory("rnn", levers.STUDY_LEVER, 42) == study_run
    assert np.all([levers.lever_directory("rnn", name, 42).parent.parent == config.runs_dir() / "levers"
                   for name in levers.LEVERS if name != levers.STUDY_LEVER])


def test_a_lever_the_study_adopted_has_no_row_of_its_own_and_its_old_rows_are_dropped(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "REPORTS_DIR", tmp_path)
    assert levers.adopted("hybrid", "mixed_bfloat16") and not levers.adopted("hybrid", "float32")
    assert levers.adopted("rnn", "float32") and not levers.adopted("rnn", "mixed_bfloat16")
    assert not levers.adopted("hybrid", "one inter-op thread") and not levers.adopted("hybrid", levers.STUDY_LEVER)
    rows = {lever: levers.measure(lever_run(tmp_path / config.folder_name(lever), 42, [3.0] * 3, 9), "hybrid", lever)
            for lever in (levers.STUDY_LEVER, "mixed_bfloat16", "float32")}
    levers.write_rows([rows[levers.STUDY_LEVER], rows["mixed_bfloat16"]])  # as an earlier table held them
    levers.write_rows([rows["float32"]])
    stored = json.loads((tmp_path / levers.LEVERS_FILE).read_text())["rows"]
    assert [row["lever"] for row in stored] == [levers.STUDY_LEVER, "float32"]
    rnn_row = levers.measure(tmp_path / config.folder_name(levers.STUDY_LEVER), "rnn", levers.STUDY_LEVER)
    page = levers.levers_markdown({"rows": [*stored, rnn_row]})
    assert "adopted the hybrid's mixed_bfloat16:" in page and "float32" not in page.split("adopted")[1].split(":")[0]


def test_early_stopping_ends_after_patience_epochs_without_a_better_one_and_keeps_the_best_until_then():
    assert levers.plateau_stop([0.5, 0.7, 0.6, 0.7, 0.65, 0.9], patience=3) == (5, 2)
    assert levers.plateau_stop([0.5, 0.7, 0.6, 0.7, 0.65, 0.9], patience=4) == (6, 6)
    assert levers.plateau_stop([0.1, 0.2, 0.3], patience=1) == (3, 3), "a rising curve runs every epoch"


def test_a_lever_row_records_where_early_stopping_would_have_ended_its_run(tmp_path):
    folder = lever_run(tmp_path / "run", 42, [10.0] * 6, correct=8)
    pd.DataFrame({"epoch": range(1, 7), "val_accuracy": [0.5, 0.8, 0.7, 0.7, 0.7, 0.9], "seconds": [10.0] * 6}).to_csv(
        folder / run_folders.HISTORY_FILE, index=False)
    row = levers.measure(folder, "sequencer", "20 epochs")
    assert row["early_stop"]["3"] == {"epochs": 5, "seconds": 50.0, "share_of_time": 50 / 60,
                                      "validation_accuracy": 0.8}
    assert row["early_stop"]["5"] == {"epochs": 6, "seconds": 60.0, "share_of_time": 1.0, "validation_accuracy": 0.9}
    table = levers.early_stop_table([row, {"model": "rnn", "lever": "20 epochs"}]).set_index("patience")
    assert list(table["model"]) == ["sequencer"] * len(levers.PATIENCES), "rows measured before it are left out"
    assert table.loc[3, "stops after (epochs, per seed)"] == "5" and table.loc[3, "× the whole runs' time"] == "0.83x"
    assert "Early stop on a validation plateau" in levers.levers_markdown({"rows": [row]})


def test_each_kind_trains_its_levers_on_its_models_and_seeds_beside_the_study_runs_of_every_seed(tmp_path, monkeypatch):
    trained, measured = [], []
    monkeypatch.setattr(levers, "run_in_process", lambda model, lever, seed, folders: trained.append(
        (model, lever, seed)) or tmp_path)
    monkeypatch.setattr(levers, "measure", lambda directory, model, lever: measured.append((model, lever)) or {})
    monkeypatch.setattr(levers, "write_rows", lambda rows: tmp_path / levers.LEVERS_FILE)
    monkeypatch.setattr(levers, "read_measured_rows", lambda path: [])
    assert levers._main(["--kind", "recipe"]) == 0
    assert trained == [("sequencer", lever, 42) for lever in levers.RECIPE_LEVERS if lever != "40 epochs"]
    assert measured.count(("sequencer", levers.STUDY_LEVER)) == len(config.FULL_PROFILE.seeds)
    trained.clear()
    assert levers._main(["--kind", "compute", "--models", "rnn", "--levers", "batch 128", "--seeds", "43"]) == 0
    assert trained == [("rnn", "batch 128", 43)]
    assert set(levers.COMPUTE_LEVERS).isdisjoint(levers.RECIPE_LEVERS)


def test_a_study_run_missing_on_this_machine_keeps_its_stored_row_and_the_present_ones_are_measured(tmp_path,
                                                                                                    monkeypatch):
    monkeypatch.setattr(config, "runs_dir", lambda: tmp_path)
    lever_run(levers.lever_directory("rnn", levers.STUDY_LEVER, 43), 43, [3.0, 2.0, 2.0], correct=9)
    rows = levers.study_rows("rnn")
    assert [row["seed"] for row in rows] == [43] and rows[0]["validation_accuracy"] == pytest.approx(0.9)


def test_fewer_seeds_average_every_choice_of_that_many_runs_and_sum_their_training_time(tmp_path):
    for seed, correct in ((42, 10), (43, 8), (44, 6)):
        lever_run(config.study_run(tmp_path, "rnn", seed), seed, [60.0, 60.0], correct=correct)
    table = levers.ensemble_sizes(tmp_path, models=("rnn", "cnn"), seeds=(42, 43, 44))
    assert list(table["model"]) == ["rnn"] * 3, "a model without its runs has no rows"
    assert table.loc[0, "validation, dataset's images"] == "80.00% (60.00%–100.00%)"
    assert table.loc[2, "validation, dataset's images"] == "80.00%"  # two of three right on images 7-8, one on 9-10
    assert table.loc[2, "training (sum of the seeds' runs)"] == "6.0 min"
