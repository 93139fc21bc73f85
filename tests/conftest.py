"""Shared fixtures: an isolated cache, no user external sets outside the real-data tests, a generated phantom
dataset, and the real dataset when configured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from helpers import config  # noqa: E402
from helpers.inputs.synthetic import make_phantom_dataset  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point the array cache at a fresh folder, so tests never read or write the user's cache."""
    folder = tmp_path_factory.mktemp("cache")
    previous = os.environ.get(config.CACHE_DIR_VARIABLE)
    os.environ[config.CACHE_DIR_VARIABLE] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop(config.CACHE_DIR_VARIABLE, None)
    else:
        os.environ[config.CACHE_DIR_VARIABLE] = previous


@pytest.fixture(autouse=True)
def no_user_external_sets(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the user's external sets ($BRAIN_MRI_EXTERNAL_DIR) out of every test that does not need the real data."""
    if request.node.get_closest_marker("realdata") is None:
        monkeypatch.delenv(config.EXTERNAL_DIR_VARIABLE, raising=False)


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated phantom dataset shared by the tests that only read it (100 training, 30 testing per class)."""
    return make_phantom_dataset(tmp_path_factory.mktemp("phantoms") / "brain-tumor-mri", 100, 30, seed=7)


@pytest.fixture(scope="session")
def saved_run(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """A quickly trained RNN run folder on the phantom dataset, shared by the tests that only read it."""
    from helpers.inputs import data
    from helpers.modeling import recipes, training

    dataset = data.load_dataset(phantom_root, image_size=64, progress=False)
    kept, validation = data.split_validation(dataset.training, fraction=0.2, seed=0)
    settings = recipes.TrainingSettings(epochs=1, batch_size=32, seed=5, verbose=0)
    return training.train_model("rnn", data.take_per_class(kept, 20), validation, None,
                                tmp_path_factory.mktemp("saved-run") / "run", settings)


@pytest.fixture
def small_phantom_root(tmp_path: Path) -> Path:
    """A tiny phantom dataset private to one test, which may damage it."""
    return make_phantom_dataset(tmp_path / "dataset", 4, 2, seed=3)


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The real dataset from $BRAIN_MRI_DATA_DIR; skipped locally when unset, a failure in CI (CI=true)."""
    location = os.environ.get(config.DATA_DIR_VARIABLE)
    if not location or not Path(location).is_dir():
        message = f"${config.DATA_DIR_VARIABLE} does not point at the real dataset ({location!r})"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message + "; CI must run the real-data tests")
        pytest.skip(message)
    return Path(location)


@pytest.fixture
def on_jax():
    """Return a runner of a Python script in a fresh process on the JAX backend (CPU, further variables given) that
    returns the JSON the script's last line prints."""
    pytest.importorskip("jax")

    def run(script: str, **variables: str) -> dict:
        environment = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu", **variables}
        result = subprocess.run([sys.executable, "-c", script], env=environment, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(result.stdout.strip().splitlines()[-1])

    return run
