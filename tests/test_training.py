"""helpers.modeling.training: reproducible seeds, complete run folders, nothing half-written, and an end-to-end fit."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from helpers.evaluation import classification_summary
from helpers.inputs import data
from helpers.inputs.external import dataset_rows
from helpers.modeling import callbacks, recipes, run_folders, training

QUICK = recipes.TrainingSettings(epochs=2, batch_size=16, seed=11, verbose=0)


@pytest.fixture(scope="module")
def phantom_splits(phantom_root):
    """Training, validation and test splits of the shared phantom dataset at 64x64."""
    dataset = data.load_dataset(phantom_root, image_size=64, progress=False)
    kept, validation = data.split_validation(dataset.training, fraction=0.2, seed=0)
    return kept, validation, dataset.testing, dataset.fingerprint


@pytest.mark.slow
def test_same_seed_gives_the_same_weights(tmp_path, phantom_splits):
    kept, validation, _, _ = phantom_splits
    small = data.take_per_class(kept, 16)
    runs = [training.train_model("rnn", small, validation, None, tmp_path / f"run{i}", QUICK) for i in range(2)]
    first, second = (run.model.get_weights() for run in runs)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    other = training.train_model("rnn", small, validation, None, tmp_path / "other",
                                 recipes.TrainingSettings(epochs=2, batch_size=16, seed=12, verbose=0))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other.model.get_weights()))


@pytest.mark.slow
def test_run_folder_holds_model_labels_history_predictions_and_timings(tmp_path, phantom_splits):
    kept, validation, testing, fingerprint = phantom_splits
    run = training.train_model("hybrid", data.take_per_class(kept, 12), validation, testing, tmp_path / "run",
                               QUICK, data_fingerprint=fingerprint,
                               skipped_files=(("Training/glioma/x.jpg", "Training/glioma/x.jpg: cannot decode"),))
    names = {path.name for path in run.directory.iterdir()}
    assert names == {"model.keras", "labels.json", "history.csv", "timings.json", "run.json",
                     "predictions_validation.npz", "predictions_test.npz"}
    labels = json.loads((run.directory / "labels.json").read_text())
    assert labels["class_names"] == ["glioma", "meningioma", "notumor", "pituitary"]
    assert labels["image_size"] == 64
    assert list(run.history["epoch"]) == [1, 2] and "val_accuracy" in run.history
    assert len(run.timings["epoch_seconds"]) == 2 and run.timings["fit_seconds"] > 0
    assert run.details["data_fingerprint"] == fingerprint and run.details["parameters"] == 1_216_196
    assert run.details["settings"]["seed"] == 11 and "keras" in run.details["packages"]
    assert run.details["skipped_files"] == {"count": 1, "files": [{"path": "Training/glioma/x.jpg",
                                                                   "reason": "Training/glioma/x.jpg: cannot decode"}]}
    test = run.predictions["test"]
    assert test["probabilities"].shape == (len(testing), 4)
    assert list(test["paths"]) == list(testing.paths)
    # the saved predictions are those of the saved model
    again = run.model.predict(testing.images[..., None], verbose=0)
    assert np.allclose(again, test["probabilities"], atol=1e-5)
    reloaded = run_folders.load_run(run.directory)
    assert reloaded.class_names == run.class_names


@pytest.mark.slow
def test_validation_with_external_images_logs_the_datasets_own_accuracy_apart(tmp_path, phantom_splits):
    kept, validation, _, _ = phantom_splits
    external = validation.take(np.arange(0, len(validation), 3))
    external.paths = np.array([f"external/some-set/train/{i}.png" for i in range(len(external))])
    mixed = data.ImageSplit(*(np.concatenate([getattr(validation, name), getattr(external, name)])
                              for name in ("images", "labels", "paths", "hashes")))
    settings = recipes.TrainingSettings(epochs=1, batch_size=16, seed=11, verbose=0)
    run = training.train_model("rnn", data.take_per_class(kept, 12), mixed, None, tmp_path / "mixed", settings)
    own = dataset_rows(mixed.paths)
    assert list(own) == list(range(len(validation)))
    stored = run.predictions["validation"]  # one epoch: the saved model is the one the epoch ended with
    expected = (stored["probabilities"][own].argmax(axis=1) == stored["labels"][own]).mean()
    assert run.history[callbacks.DATASET_VALIDATION_METRIC].iloc[0] == pytest.approx(expected)
    assert run.history["val_accuracy"].iloc[0] == pytest.approx(
        (stored["probabilities"].argmax(axis=1) == stored["labels"]).mean())
    plain = training.train_model("rnn", data.take_per_class(kept, 12), validation, None, tmp_path / "plain", settings)
    assert callbacks.DATASET_VALIDATION_METRIC not in plain.history
    # a recipe that keeps the epoch best on the dataset's own images logs that accuracy even without external images
    own = dataclasses.replace(settings, epochs=2, checkpoint_metric=callbacks.DATASET_VALIDATION_METRIC)
    for name, split in (("own-plain", validation), ("own-mixed", mixed)):
        chosen = training.train_model("rnn", data.take_per_class(kept, 12), split, None, tmp_path / name, own)
        monitored = chosen.history[callbacks.DATASET_VALIDATION_METRIC]
        assert chosen.timings["best_epoch"] == int(chosen.history["epoch"][monitored.idxmax()])


@pytest.mark.slow
def test_a_failed_run_leaves_no_folder_behind(tmp_path, phantom_splits, monkeypatch):
    kept, validation, _, _ = phantom_splits

    def broken_load(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(keras.saving, "load_model", broken_load)
    with pytest.raises(RuntimeError, match="disk full"):
        training.train_model("rnn", data.take_per_class(kept, 4), validation, None, tmp_path / "run", QUICK)
    resume = run_folders.resume_directory(tmp_path / "run")
    assert list(tmp_path.iterdir()) == [resume], "only the epochs to resume from"


class _DiskFull(keras.callbacks.Callback):
    """Fail as a checkpoint write on a full disk does."""

    def on_epoch_end(self, epoch, logs=None):
        raise OSError(28, "No space left on device", "model.keras")


def test_a_full_disk_or_a_folder_not_writable_ends_in_one_line_with_nothing_half_written(
        tmp_path, phantom_splits, monkeypatch, capsys, phantom_root):
    kept, validation, _, _ = phantom_splits
    small = data.take_per_class(kept, 4)
    with pytest.raises(training.RunFolderWriteError, match=r"run: cannot write the run \(No space left on device: "
                                                             r"model.keras\); nothing was kept"):
        training.train_model("rnn", small, validation, None, tmp_path / "run", QUICK, callbacks=[_DiskFull()])
    assert list(tmp_path.iterdir()) == [], "no run folder, no resume folder, no lock file"

    def read_only(target):
        raise PermissionError(13, "Permission denied", str(target))

    monkeypatch.setattr(training, "staged_directory", read_only)  # a parent folder or run folder not writable
    with pytest.raises(training.RunFolderWriteError, match=r"cannot write the run \(Permission denied: .*run\)"):
        training.train_model("rnn", small, validation, None, tmp_path / "run", QUICK)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(training, "train_model", lambda *arguments, **options: read_only(tmp_path / "run"))
    arguments = ["--data-dir", str(phantom_root), "--run-dir", str(tmp_path / "run"), "--epochs", "1"]
    assert training._main(arguments) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'run'}: cannot write the run (Permission denied)")


def test_a_second_process_on_the_same_run_folder_is_refused_and_the_first_keeps_it(tmp_path, phantom_splits):
    kept, validation, _, _ = phantom_splits
    with run_folders.run_folder_lock(tmp_path / "run"):  # held as another process holds it (flock per open file)
        with pytest.raises(run_folders.RunFolderInUseError, match=rf"run: run folder in use \(process {os.getpid()} "):
            training.train_model("rnn", data.take_per_class(kept, 4), validation, None, tmp_path / "run", QUICK)
        assert not run_folders.resume_directory(tmp_path / "run").exists()
    run = training.train_model("rnn", data.take_per_class(kept, 4), validation, None, tmp_path / "run", QUICK)
    assert run.directory.is_dir() and sorted(path.name for path in tmp_path.iterdir()) == ["run"]


def test_a_damaged_resume_history_is_named_discarded_and_training_starts_again(tmp_path, capsys):
    resume = run_folders.resume_directory(tmp_path / "run")
    identity = {"model": "rnn", "seed": 1}
    assert run_folders.resumable_history(resume, identity) is None  # a fresh resume folder with its identity
    (resume / "backup").mkdir()
    (resume / run_folders.MODEL_FILE).write_bytes(b"weights")
    (resume / run_folders.HISTORY_FILE).write_text("epoch,loss\n0,1.0\nepoch,loss\n1,0.9\n")  # two writers
    assert run_folders.resumable_history(resume, identity) is None
    assert "damaged resume state discarded" in capsys.readouterr().err
    assert sorted(path.name for path in resume.iterdir()) == [run_folders.RUN_FILE]
    (resume / "backup").mkdir()
    (resume / run_folders.MODEL_FILE).write_bytes(b"weights")
    (resume / run_folders.HISTORY_FILE).write_text("epoch,loss\n0,1.0\n1,0.9\n")
    assert run_folders.resumable_history(resume, identity)["epoch"].tolist() == [0, 1]
    (resume / run_folders.HISTORY_FILE).write_text("")  # stopped before its first epoch ended
    assert run_folders.resumable_history(resume, identity) is None
    assert capsys.readouterr().err == "", "nothing was damaged, so nothing is said"


def test_a_recipe_with_its_own_image_size_refuses_images_of_another(tmp_path, phantom_splits):
    kept, validation, _, _ = phantom_splits
    settings = recipes.TrainingSettings(epochs=1, batch_size=16, image_size=32, verbose=0)
    with pytest.raises(ValueError, match="rnn: the recipe trains at 32x32 pixels but the images given are 64x64"):
        training.train_model("rnn", kept, validation, None, tmp_path / "run", settings)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="unknown augmentation 'cutmix'"):
        recipes.TrainingSettings(augmentation="cutmix")


def test_existing_run_folder_is_not_overwritten_unless_asked(tmp_path, phantom_splits):
    kept, validation, _, _ = phantom_splits
    (tmp_path / "run").mkdir()
    with pytest.raises(FileExistsError, match="run folder already exists"):
        training.train_model("rnn", kept, validation, None, tmp_path / "run", QUICK)


def test_incomplete_run_folder_is_reported(tmp_path):
    (tmp_path / "labels.json").write_text("{}")
    missing = r"not a complete run folder \(missing history.csv, timings.json, run.json\)"
    with pytest.raises(FileNotFoundError, match=missing):
        run_folders.load_run(tmp_path)


@pytest.mark.parametrize(("recipe_name", "metric", "mode"), [("specified", "val_loss", "min"),
                                                             ("project", "val_accuracy", "max")])
def test_early_stopping_watches_the_recipes_metric(tmp_path, recipe_name, metric, mode):
    callbacks = training.training_callbacks(recipes.recipe(recipe_name), tmp_path / "best.keras")
    stopping = next(callback for callback in callbacks if isinstance(callback, keras.callbacks.EarlyStopping))
    checkpoint = next(callback for callback in callbacks if isinstance(callback, keras.callbacks.ModelCheckpoint))
    assert (stopping.monitor, stopping.mode, stopping.restore_best_weights) == (metric, mode, True)
    assert stopping.patience == recipes.recipe(recipe_name).early_stopping_patience
    assert (checkpoint.monitor, checkpoint.mode) == ("val_accuracy", "max")


@pytest.mark.slow
def test_rnn_learns_the_phantoms_well_above_chance(tmp_path, phantom_splits):
    kept, validation, testing, _ = phantom_splits
    # BatchNorm's moving statistics (momentum 0.99) need about 1,000 updates before inference-mode predictions are
    # usable, so this small set trains with small batches: 40 steps x 25 epochs; no early stopping.
    settings = recipes.TrainingSettings(epochs=25, batch_size=8, early_stopping_patience=25, seed=3, verbose=0)
    run = training.train_model("rnn", kept, validation, testing, tmp_path / "run", settings)
    summary = classification_summary(testing.labels, run.predictions["test"]["probabilities"])
    assert summary["accuracy"] >= 0.6, summary["per_class"]  # chance is 0.25


class _StopAfter(keras.callbacks.Callback):
    """Interrupt training (as Ctrl-C would) once the given number of epochs has finished."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.epochs:
            raise KeyboardInterrupt


class _EpochsRun(keras.callbacks.Callback):
    """Record which epochs (counted from 0) this call of fit ran, with the optimizer's step and learning rate after
    each."""

    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[int] = []
        self.steps: dict[int, tuple[int, float]] = {}

    def on_epoch_begin(self, epoch, logs=None):
        self.epochs.append(epoch)

    def on_epoch_end(self, epoch, logs=None):
        optimizer = self.model.optimizer
        self.steps[epoch] = (int(optimizer.iterations), float(optimizer.learning_rate))


@pytest.mark.slow
def test_an_interrupted_run_resumes_from_its_last_epoch_and_ends_where_an_uninterrupted_one_ends(
        tmp_path, phantom_splits):
    kept, validation, _, fingerprint = phantom_splits
    small = data.take_per_class(kept, 16)
    settings = recipes.TrainingSettings(epochs=4, batch_size=16, seed=21, verbose=0, schedule="cosine")
    target = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        training.train_model("rnn", small, validation, None, target, settings, data_fingerprint=fingerprint,
                             callbacks=[_StopAfter(2)])
    assert not target.exists() and run_folders.resume_directory(target).is_dir()
    assert not list(tmp_path.glob(".interrupted.*.partial")), "the staging folder is removed on Ctrl-C"
    ran = _EpochsRun()
    resumed = training.train_model("rnn", small, validation, None, target, settings, data_fingerprint=fingerprint,
                                   callbacks=[ran])
    assert ran.epochs == [2, 3] and resumed.timings["resumed"]
    assert list(resumed.history["epoch"]) == [1, 2, 3, 4] and not run_folders.resume_directory(target).exists()
    straight = _EpochsRun()
    uninterrupted = training.train_model("rnn", small, validation, None, tmp_path / "straight", settings,
                                         data_fingerprint=fingerprint, callbacks=[straight])
    assert resumed.timings["epochs_run"] == uninterrupted.timings["epochs_run"] == 4
    assert ran.steps == {epoch: straight.steps[epoch] for epoch in (2, 3)}  # the optimizer carries on
    # The data order and the random draws depend on the seed and the epoch alone: the same run, bit for bit.
    np.testing.assert_array_equal(resumed.history["loss"], uninterrupted.history["loss"])
    for after_resume, straight_through in zip(resumed.model.get_weights(), uninterrupted.model.get_weights()):
        np.testing.assert_array_equal(after_resume, straight_through)


@pytest.mark.slow
def test_a_moving_average_of_the_weights_is_validated_and_saved_while_the_raw_weights_train_and_resume(
        tmp_path, phantom_splits):
    kept, validation, _, fingerprint = phantom_splits
    small = data.take_per_class(kept, 16)
    plain = recipes.TrainingSettings(epochs=4, batch_size=16, seed=24, verbose=0, schedule="cosine")
    averaged = dataclasses.replace(plain, ema_momentum=0.9)
    without = training.train_model("rnn", small, validation, None, tmp_path / "plain", plain)
    straight = training.train_model("rnn", small, validation, None, tmp_path / "straight", averaged)
    # The raw weights train as without the average (to rounding: the averaging ops change the compiled step, and on
    # some CPUs one loss by an ulp); validation judges the average.
    np.testing.assert_allclose(straight.history["loss"], without.history["loss"], rtol=1e-6)
    assert not np.allclose(straight.history["val_loss"], without.history["val_loss"])
    best = straight.history["val_accuracy"].max()
    saved = straight.predictions["validation"]
    assert np.isclose((saved["probabilities"].argmax(axis=1) == saved["labels"]).mean(), best)
    target = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        training.train_model("rnn", small, validation, None, target, averaged, data_fingerprint=fingerprint,
                             callbacks=[_StopAfter(2)])
    resumed = training.train_model("rnn", small, validation, None, target, averaged, data_fingerprint=fingerprint)
    assert resumed.timings["resumed"]
    np.testing.assert_array_equal(resumed.history["loss"], straight.history["loss"])
    np.testing.assert_array_equal(resumed.history["val_loss"], straight.history["val_loss"])


def test_a_moving_average_momentum_outside_zero_to_one_is_refused():
    with pytest.raises(ValueError, match="ema_momentum must be in"):
        recipes.TrainingSettings(ema_momentum=1.0)


@pytest.mark.slow
def test_a_backup_of_another_recipe_is_not_resumed(tmp_path, phantom_splits):
    kept, validation, _, fingerprint = phantom_splits
    small = data.take_per_class(kept, 8)
    settings = recipes.TrainingSettings(epochs=3, batch_size=16, seed=22, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        training.train_model("rnn", small, validation, None, tmp_path / "run", settings, callbacks=[_StopAfter(1)])
    ran = _EpochsRun()
    other = recipes.TrainingSettings(epochs=3, batch_size=16, seed=23, verbose=0)
    run = training.train_model("rnn", small, validation, None, tmp_path / "run", other, callbacks=[ran])
    assert ran.epochs == [0, 1, 2] and not run.timings["resumed"]


def test_command_line_ctrl_c_and_existing_folders_end_in_one_line(phantom_root, tmp_path, monkeypatch, capsys):
    def interrupted(*arguments, **options):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "train_model", interrupted)
    arguments = ["--data-dir", str(phantom_root), "--run-dir", str(tmp_path / "run"), "--epochs", "1"]
    assert training._main(arguments) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"interrupted: {tmp_path / 'run'} was not written"

    def exists(*arguments, **options):
        raise FileExistsError("run: run folder already exists; pass --overwrite on the command line")

    monkeypatch.setattr(training, "train_model", exists)
    assert training._main(arguments) == 1 and "--overwrite" in capsys.readouterr().err


def test_command_line_training_stops_at_a_corrupt_image_unless_told_to_skip_it(tmp_path, monkeypatch, capsys):
    from helpers.inputs.synthetic import make_phantom_dataset

    root = make_phantom_dataset(tmp_path / "dataset", 20, 4, seed=5)
    victim = sorted((root / "Training" / "notumor").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:300])
    given = {}

    def record(*arguments, **options):
        given.update(options)
        raise FileExistsError("stop here")

    monkeypatch.setattr(training, "train_model", record)
    arguments = ["--data-dir", str(root), "--run-dir", str(tmp_path / "run"), "--epochs", "1"]
    assert training._main(arguments) == 1
    error = capsys.readouterr().err
    assert f"{victim.name}" in error and "training's --skip-corrupt" in error and not given
    assert training._main([*arguments, "--skip-corrupt"]) == 1
    assert f"skipped: {victim}: cannot decode image" in capsys.readouterr().err
    assert [path for path, _ in given["skipped_files"]] == [f"Training/notumor/{victim.name}"]


@pytest.mark.slow
def test_data_parallel_training_is_one_setting_on_two_virtual_devices(tmp_path, small_phantom_root, on_jax):
    script = f"""
import json, keras
from helpers.inputs import data
from helpers.modeling import recipes, training
dataset = data.load_dataset({str(small_phantom_root)!r}, progress=False)
kept, validation = data.split_validation(dataset.training, fraction=0.25, seed=0)
run = training.train_model("cnn", kept, validation, None, {str(tmp_path / "run")!r},
                           recipes.TrainingSettings(epochs=1, batch_size=4, augmentation="none", verbose=0))
distribution = keras.distribution.distribution()
print(json.dumps({{"kind": type(distribution).__name__, "devices": len(distribution.device_mesh.devices.ravel()),
                  "epochs": int(run.timings["epochs_run"])}}))
"""
    reported = on_jax(script, BRAIN_MRI_DATA_PARALLEL="1", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    assert reported == {"kind": "DataParallel", "devices": 2, "epochs": 1}


def test_ctrl_c_while_a_command_starts_ends_it_in_one_line_with_status_130(tmp_path):
    import signal
    import time

    process = subprocess.Popen([sys.executable, "-m", "helpers.modeling.training", "--help"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    time.sleep(0.5)  # still importing its libraries (seconds)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130 and not out
    assert err.strip().splitlines()[-1] == "interrupted while starting: nothing was written"
    assert "Traceback" not in err


@pytest.mark.slow
def test_a_swallowed_ctrl_c_is_raised_again_at_the_next_training_step(tmp_path, phantom_splits):
    from helpers import interrupts

    kept, validation, _, _ = phantom_splits
    interrupts.REQUESTED.set()  # as if a library had swallowed the KeyboardInterrupt of a Ctrl-C
    try:
        with pytest.raises(KeyboardInterrupt):
            training.train_model("rnn", data.take_per_class(kept, 4), validation, None, tmp_path / "run",
                                 recipes.TrainingSettings(epochs=2, batch_size=8, verbose=0))
    finally:
        interrupts.REQUESTED.clear()
    assert not (tmp_path / "run").exists()


def test_every_command_hands_ctrl_c_back_once_it_has_started():
    from helpers import config

    commands = [path for path in (config.PROJECT_ROOT / "src" / "helpers").rglob("*.py")
                if 'if __name__ == "__main__":' in path.read_text()]
    assert commands, "the package has commands"
    silent = [path.name for path in commands if "interrupts.command_started()" not in path.read_text()]
    assert not silent, f"these commands would end at once on any Ctrl-C (helpers.interrupts): {silent}"
