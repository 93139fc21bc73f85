"""helpers.provenance: what every run and report records about how it was produced."""

from __future__ import annotations

import platform
import subprocess

from helpers import config, provenance


def test_cpu_model_is_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n"
                       "flags\t\t: fpu avx512_bf16\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9R14 96-Core Processor\n")
    assert provenance.cpu_model(str(cpuinfo)) == "AMD EPYC 9R14 96-Core Processor"


def test_cpu_model_falls_back_to_the_platform_without_cpuinfo(tmp_path):
    assert provenance.cpu_model(str(tmp_path / "missing")) == (platform.processor() or "unknown")


def test_provenance_records_commit_packages_and_the_cpu():
    details = provenance.provenance()
    assert details["git_commit"] and details["packages"]["keras"]
    assert details["device"]["cpu_model"] == provenance.cpu_model()
    assert details["device"]["cpu_count"] >= 1


def test_the_commit_is_dirty_for_a_changed_source_file_but_not_for_a_report_the_project_wrote(tmp_path, monkeypatch):
    def git(*arguments):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *arguments], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "levers.json").write_text("{}")
    (tmp_path / "code.py").write_text("x = 1")
    git("init")
    git("add", ".")
    git("commit", "-m", "first")
    monkeypatch.setattr(config, "PROJECT_ROOT", tmp_path)
    monkeypatch.delenv("BRAIN_MRI_GIT_COMMIT", raising=False)
    (tmp_path / "reports" / "levers.json").write_text('{"rows": []}')
    assert len(provenance.git_commit()) == 40, "a report written by a run leaves the commit clean"
    (tmp_path / "code.py").write_text("x = 2")
    assert provenance.git_commit().endswith("-dirty")
