"""Training from exported arrays: the bundle round trip, its refusals, and a run the study then reuses."""

import gzip
import pickle

import pytest

from helpers import config
from helpers.experiments import offsite
from helpers.inputs.synthetic import make_phantom_dataset


@pytest.fixture
def phantoms(tmp_path):
    """A phantom dataset large enough for the study's validation split (20 training images per class)."""
    return make_phantom_dataset(tmp_path / "dataset", 20, 4, seed=3)


@pytest.fixture
def bundle(tmp_path, phantoms):
    """A bundle of the phantom dataset, with an external folder that holds no set."""
    (tmp_path / "external").mkdir()
    path = tmp_path / "arrays.pkl.gz"
    summary = offsite.export_bundle(path, str(phantoms), str(tmp_path / "external"))
    return path, summary


def test_a_bundle_gives_back_the_arrays_it_was_exported_from(bundle, phantoms):
    from helpers.inputs.data import load_dataset

    path, summary = bundle
    dataset, external = offsite.load_bundle(path)
    assert dataset.fingerprint == summary["dataset_fingerprint"] == load_dataset(phantoms, progress=False).fingerprint
    assert external == {} and summary["external_sets"] == 0
    assert not list(path.parent.glob(".*"))  # written atomically: no staging file left


def test_a_damaged_or_foreign_bundle_is_refused_in_one_line(tmp_path, bundle):
    damaged = tmp_path / "damaged.pkl.gz"
    damaged.write_bytes(bundle[0].read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable bundle"):
        offsite.load_bundle(damaged)
    foreign = tmp_path / "foreign.pkl.gz"
    with gzip.open(foreign, "wb") as stream:
        pickle.dump({"format": 0}, stream)
    assert offsite._main(["train", "--bundle", str(foreign)]) == 1


def test_at_the_deadline_no_further_run_starts(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv(config.RUNS_DIR_VARIABLE, str(tmp_path / "runs"))
    jobs = [offsite.Job("study", "rnn", 42, epochs=1), offsite.Job("loso", "rnn", hold_out="Br35H", epochs=1)]
    outcomes = offsite.train_all(bundle[0], jobs, parallel=2, deadline_seconds=-1)
    assert outcomes == {job.name: "not started (deadline)" for job in jobs}


@pytest.mark.slow
def test_a_run_trained_from_a_bundle_is_the_one_the_study_reuses(bundle, tmp_path, monkeypatch):
    monkeypatch.setenv(config.RUNS_DIR_VARIABLE, str(tmp_path / "runs"))
    dataset, external = offsite.load_bundle(bundle[0])
    job = offsite.Job("study", "rnn", 42, epochs=1)
    assert job in offsite.pending_jobs(dataset, external, epochs=1)
    assert offsite.train_all(bundle[0], [job], parallel=1, deadline_seconds=None) == {job.name: "finished"}
    assert (tmp_path / "runs" / "logs" / f"offsite-{job.name}.log").is_file()
    assert job not in offsite.pending_jobs(dataset, external, epochs=1)
    study = offsite._study(42, epochs=1)
    data = offsite._study_data(study, dataset, external)
    directory = study.run_directory("rnn", 42)
    assert directory == config.study_run(tmp_path / "runs" / "full", "rnn", 42)
    assert study.reusable(directory, "rnn", study.settings("rnn", 42), data)
