"""The environment: installed packages equal requirements.lock, and pyproject's floors cover the APIs the code calls."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from helpers import config, provenance

# APIs the code calls that are newer than some release a range could admit: package -> (first version, what, check).
API_FLOORS = {
    "numpy": ("2.0", "np.bitwise_count (helpers.inputs.duplicates)", lambda: hasattr(np, "bitwise_count")),
    "pillow": ("9.1", "PIL.Image.Resampling (helpers.inputs.data)", lambda: hasattr(__import__("PIL.Image").Image,
                                                                              "Resampling")),
    "keras": ("3.0", "keras.ops.image.affine_transform (helpers.modeling.models)",
              lambda: hasattr(__import__("keras").ops.image, "affine_transform")),
}


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((config.PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return {provenance._normalised(requirement.name): requirement for requirement in requirements}


def test_installed_environment_matches_the_lock():
    status = provenance.lock_status()
    assert status["matches"], f"installed packages differ from requirements.lock (run `make install`): " \
                              f"{status['differences']}"


def test_lock_drift_is_reported_package_by_package(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"numpy=={np.__version__} \\\n    --hash=sha256:00\nnot-a-real-package==1.0\n"
                    "keras[jax]==0.0.1 ; python_version >= '3.11'\n# a comment\n")
    assert provenance.locked_versions(lock) == {"numpy": np.__version__, "not-a-real-package": "1.0",
                                                "keras": "0.0.1"}
    status = provenance.lock_status(lock)
    assert not status["matches"] and set(status["differences"]) == {"not-a-real-package", "keras"}
    assert status["differences"]["not-a-real-package"] == {"locked": "1.0", "installed": None}
    assert not provenance.lock_status(tmp_path / "missing.lock")["matches"]


def test_every_runtime_dependency_is_locked_and_inside_its_declared_range():
    pins = provenance.locked_versions()
    for name, requirement in _declared().items():
        assert name in pins, f"{name} is declared but not in requirements.lock (run `make lock`)"
        assert Version(pins[name]) in requirement.specifier, f"{name}=={pins[name]} outside {requirement}"


@pytest.mark.parametrize("package", sorted(API_FLOORS))
def test_declared_floors_admit_only_versions_with_the_apis_the_code_calls(package):
    introduced, what, available = API_FLOORS[package]
    floors = [Version(spec.version) for spec in _declared()[package].specifier if spec.operator in (">=", "~=", "==")]
    assert floors and min(floors) >= Version(introduced), f"{package}'s floor admits versions without {what}"
    assert available(), f"the installed {package} lacks {what}"
