"""helpers.benchmark: both pipelines timed on the same data, results merged per machine without losing others."""

from __future__ import annotations

import json

from helpers import benchmark


def test_benchmark_times_both_pipelines_and_keeps_other_machines(phantom_root, tmp_path):
    results = benchmark.run_benchmark(phantom_root, models=("rnn",), epochs=2, project_batch_sizes=(16, 32))
    rows = {(row["pipeline"], row["batch_size"]): row for row in results["training"]}
    assert set(rows) == {("specified", 32), ("project", 16), ("project", 32)}
    assert all(len(row["epoch_seconds"]) == 2 and row["seconds_per_epoch"] > 0 for row in rows.values())
    assert rows[("project", 32)]["training_images_per_second"] * rows[("project", 32)]["seconds_per_epoch"] == \
        rows[("specified", 32)]["training_images_per_second"] * rows[("specified", 32)]["seconds_per_epoch"]
    fastest = min(rows[("project", 16)]["seconds_per_epoch"], rows[("project", 32)]["seconds_per_epoch"])
    assert results["speedup_over_specified"]["rnn"] == rows[("specified", 32)]["seconds_per_epoch"] / fastest
    assert results["data_loading"]["images"] == 520 and results["data_loading"]["first_load_seconds"] > 0
    assert results["inference"][0]["inference_images_per_second"] > 0
    assert set(benchmark.summary_table(results)["pipeline"]) == {"specified", "project"}

    output = tmp_path / "benchmarks.json"
    output.write_text(json.dumps({"jax-H100-16cores": {"machine": "jax-H100-16cores"}}))
    benchmark.save_benchmark(results, output)
    stored = json.loads(output.read_text())
    assert set(stored) == {"jax-H100-16cores", results["machine"]}
