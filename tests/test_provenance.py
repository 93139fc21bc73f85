"""helpers.provenance: what every run and report records about how it was produced."""

from __future__ import annotations

import platform

from helpers import provenance


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
