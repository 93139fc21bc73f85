"""helpers.experiments.cluster: the study's runs as Ray tasks, their run folders written back whole by the driver."""

from __future__ import annotations

import io
import tarfile

import pytest

from helpers import config
from helpers.experiments import cluster


def _archive(files: dict[str, str]) -> bytes:
    """Return a tar.gz archive of the given files (name: text)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in files.items():
            content = text.encode()
            entry = tarfile.TarInfo(name)
            entry.size = len(content)
            archive.addfile(entry, io.BytesIO(content))
    return buffer.getvalue()


def test_a_run_folder_from_a_task_is_written_back_whole_and_replaces_the_old_one(tmp_path):
    (tmp_path / "full" / "rnn-seed42").mkdir(parents=True)
    (tmp_path / "full" / "rnn-seed42" / "stale.txt").write_text("old")
    target = cluster.write_back("full/rnn-seed42", _archive({"./run.json": "{}", "./history.csv": "epoch\n1\n"}),
                                tmp_path)
    assert sorted(path.name for path in target.iterdir()) == ["history.csv", "run.json"]
    assert not [path for path in (tmp_path / "full").iterdir() if path.name.startswith(".")]  # no staging left


@pytest.mark.parametrize("relative", ["../outside", "/absolute/run"])
def test_a_run_folder_outside_the_runs_folder_is_refused(tmp_path, relative):
    with pytest.raises(ValueError, match="outside the runs folder"):
        cluster.write_back(relative, _archive({"./run.json": "{}"}), tmp_path / "runs")
    assert not (tmp_path / "outside").exists()


@pytest.mark.slow
def test_two_demo_runs_train_as_ray_tasks_and_the_study_then_reuses_them(tmp_path, monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv(config.RUNS_DIR_VARIABLE, str(tmp_path / "runs"))
    dataset, external = cluster.load_arrays("demo")
    jobs = [cluster.Job("study", model, 42, epochs=1, profile="demo") for model in ("rnn", "cnn")]
    assert set(jobs) <= set(cluster.pending_jobs(dataset, external, epochs=1, profile="demo", loso_runs=False))
    outcomes = cluster.train_on_ray(jobs, dataset, external, cpus_per_run=1, num_cpus=2)
    assert all(outcome.startswith("finished") for outcome in outcomes.values()), outcomes
    study = cluster._study("demo", 42, epochs=1)
    for model in ("rnn", "cnn"):
        directory = study.run_directory(model, 42)
        assert directory.is_relative_to(tmp_path / "runs") and (directory / "run.json").is_file()
    assert not set(jobs) & set(cluster.pending_jobs(dataset, external, epochs=1, profile="demo", loso_runs=False))
