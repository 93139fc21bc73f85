"""helpers.experiments.benchmark: both pipelines timed on the same data, results merged per machine without losing
others."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

from helpers import config, targets
from helpers.experiments import benchmark, speed_report, throughput


@pytest.mark.slow
def test_benchmark_times_both_pipelines_and_keeps_other_machines(phantom_root, tmp_path):
    specified_run = tmp_path / "runs" / "specified" / "rnn-seed42"
    specified_run.mkdir(parents=True)
    labels = np.array([0, 1, 2, 3])
    np.savez(specified_run / "predictions_test.npz", labels=labels, probabilities=np.eye(4)[[0, 1, 2, 0]],
             paths=np.array([f"Testing/glioma/{index}.jpg" for index in range(4)]))
    results = benchmark.run_benchmark(phantom_root, models=("rnn",), epochs=3, project_batch_sizes=(16, 32),
                                      runs_root=tmp_path / "runs")
    assert results["accuracy"]["rnn"] == {
        "specified_validation_accuracy": None, "specified_test_accuracy": 0.75, "project_validation_accuracy": None,
        "project_test_accuracy": None, "specified_validation_accuracy_by_seed": {},
        "specified_test_accuracy_by_seed": {"42": 0.75}, "project_validation_accuracy_by_seed": {},
        "project_test_accuracy_by_seed": {}}
    assert speed_report.accuracy_table(results)["specified_test_accuracy"].tolist() == [0.75]
    rows = {(row["pipeline"], row["batch_size"]): row for row in results["training"]}
    assert set(rows) == {("specified", 32), ("project", 128), ("project", 16), ("project", 32), ("floor", 128)}, \
        "the recipe's 128 too, and its bare training steps"
    assert all(len(row["epoch_seconds"]) == 3 and row["image_size"] == 64 for row in rows.values())
    assert all(row["seconds_per_epoch"] == statistics.median(row["epoch_seconds"][1:]) for row in rows.values())
    def images_per_epoch(row):
        return row["training_images_per_second"] * row["seconds_per_epoch"]

    assert images_per_epoch(rows[("project", 32)]) == pytest.approx(images_per_epoch(rows[("specified", 32)]))
    recipe_row = rows[("project", 128)]  # the speed-up is the recipe's own batch size, not the fastest one timed
    assert recipe_row["recipe_default"] and not rows[("project", 16)]["recipe_default"]
    assert results["speedup_over_specified"]["rnn"] == rows[("specified", 32)]["seconds_per_epoch"] / \
        recipe_row["seconds_per_epoch"]
    floor_row = rows[("floor", 128)]
    assert floor_row["augmentation"] == "none" and not floor_row.get("recipe_default")
    assert results["speedup_bound"]["rnn"] == rows[("specified", 32)]["seconds_per_epoch"] / \
        floor_row["seconds_per_epoch"]
    assert results["data_loading"]["images"] == 520 and results["data_loading"]["first_load_seconds"] > 0
    inference = results["inference"][0]
    assert inference["inference_images_per_second"] > 0 and inference["first_pass_images_per_second"] > 0
    assert set(speed_report.summary_table(results)["pipeline"]) == {"specified", "project", "floor"}
    markdown = speed_report.speed_markdown(results)
    ratio = results["speedup_over_specified"]["rnn"]
    assert f"| rnn | {rows[('specified', 32)]['seconds_per_epoch']:.2f} s/epoch (rnn, batch 32) | " in markdown
    bound = results["speedup_bound"]["rnn"]
    judged = "met" if ratio >= targets.EPOCH_SPEEDUP_TARGET else "missed"
    assert f"rnn {ratio:.1f}x ({judged}; its bare training steps allow at most {bound:.1f}x)" in markdown
    assert f"| {floor_row['seconds_per_epoch']:.2f} s/epoch ({bound:.1f}x) |" in markdown
    assert "75.00% → –" in markdown, "the seed-42 accuracies, a dash where a recipe was not trained"
    assert "test accuracy equal or better" not in markdown, "no verdict without both recipes' accuracies"
    results["accuracy"]["rnn"].update(project_test_accuracy=0.70, project_test_accuracy_by_seed={"42": 0.70})
    assert "mean over the seeds both trained: rnn missed (1 seed)" in speed_report.speed_markdown(results)

    output = tmp_path / "benchmarks.json"
    output.write_text(json.dumps({"jax-H100-16cores": {"machine": "jax-H100-16cores"}}))
    benchmark.save_benchmark(results, output)
    stored = json.loads(output.read_text())
    assert set(stored) == {"jax-H100-16cores", results["machine"]}


def test_pipelines_take_turns_epoch_by_epoch():
    order = []

    def pipeline(name):
        def train_one_epoch(epoch, timer):
            order.append((name, epoch))
            timer.on_epoch_begin(epoch)
            timer.on_epoch_end(epoch)
        return benchmark.TimedPipeline({"model": "rnn", "pipeline": name, "images": 100}, train_one_epoch)

    rows = benchmark.time_interleaved([pipeline("specified"), pipeline("project")], epochs=3)
    assert order == [("specified", 0), ("project", 0), ("specified", 1), ("project", 1), ("specified", 2),
                     ("project", 2)]
    assert [row["pipeline"] for row in rows] == ["specified", "project"]
    assert all(len(row["epoch_seconds"]) == 3 and "images" not in row for row in rows)
    assert rows[0]["training_images_per_second"] == 100 / rows[0]["seconds_per_epoch"]


def test_published_speed_page_matches_the_published_benchmark():
    page = (config.REPORTS_DIR / speed_report.SPEED_PAGE).read_text()
    expected = speed_report.stored_speed_page(config.REPORTS_DIR / benchmark.BENCHMARK_FILE)
    assert page == expected, "reports/benchmarks.md is stale: helpers.experiments.benchmark page"
    for section in ("## The prediction command", "## Time to accuracy", "## Repeatability across runs and CPUs"):
        assert section in page


@pytest.mark.slow
def test_compute_floor_trains_an_epoch_without_augmentation(phantom_root):
    dataset = benchmark.load_dataset(phantom_root, 64, progress=False)
    settings = benchmark.recipe("project", "rnn", batch_size=48)
    pipeline = benchmark.compute_floor_pipeline("rnn", dataset, settings)
    training, _ = benchmark.split_validation(dataset.training)
    timer = benchmark.EpochTimer()
    pipeline.train_one_epoch(0, timer)
    assert int(pipeline.model.optimizer.iterations) == -(-len(training) // 48), "as many steps as an epoch has batches"
    assert len(timer.seconds) == 1 and timer.seconds[0] > 0
    assert "augmentation" not in [layer.name for layer in pipeline.model.layers]
    assert pipeline.description == {"model": "rnn", "pipeline": "floor", "batch_size": 48, "augmentation": "none",
                                    "precision": "float32", "image_size": 64, "images": len(training)}


def test_accuracy_is_compared_over_the_seeds_both_recipes_trained(tmp_path):
    def write_run(recipe_folder, name, seed, correct):
        folder = (tmp_path / recipe_folder / f"{name}-seed{seed}" if recipe_folder == "specified"
                  else config.study_run(tmp_path / recipe_folder, name, seed))  # runs/full/<recipe>/
        folder.mkdir(parents=True)
        labels = np.zeros(4, dtype=int)
        predicted = np.array([0] * correct + [1] * (4 - correct))
        paths = np.array([f"Testing/glioma/{index}.jpg" for index in range(4)])
        np.savez(folder / "predictions_test.npz", labels=labels, probabilities=np.eye(4)[predicted], paths=paths)
        # validation with an external "some tumour" image (label 4), which the dataset's accuracy leaves out
        np.savez(folder / "predictions_validation.npz", labels=np.append(labels, 4),
                 probabilities=np.eye(4)[np.append(predicted, 0)], paths=np.append(paths, "external/set/train/x.png"))

    for seed, correct in ((42, 4), (43, 2)):
        write_run("specified", "cnn_wide", seed, correct)
    for seed, correct in ((42, 3), (43, 4), (44, 0)):
        write_run("full", "cnn", seed, correct)
    accuracy = benchmark.recipe_accuracies("cnn", tmp_path)
    assert accuracy["specified_test_accuracy"] == 1.0 and accuracy["project_test_accuracy"] == 0.75
    assert accuracy["project_test_accuracy_by_seed"] == {"42": 0.75, "43": 1.0, "44": 0.0}
    assert accuracy["project_validation_accuracy_by_seed"] == {"42": 0.75, "43": 1.0, "44": 0.0}
    assert speed_report.common_seed_means(accuracy) == (["42", "43"], 0.75, 0.875), "seed 44 only has one recipe"
    results = {"accuracy": {"cnn": accuracy}}
    table = speed_report.accuracy_table(results)
    assert table.loc[0, "seeds_both_trained"] == 2 and table.loc[0, "project_mean_test_accuracy"] == 0.875
    assert speed_report._mean_comparison(accuracy) == "; 75.00% → 87.50% (mean of 2 seeds)"


def test_refresh_accuracy_rereads_the_run_folders_and_keeps_the_timings(tmp_path):
    folder = config.study_run(tmp_path / "runs" / "full", "rnn", 42)
    folder.mkdir(parents=True)
    np.savez(folder / "predictions_test.npz", labels=np.array([0, 1]), probabilities=np.eye(4)[[0, 0]],
             paths=np.array(["Testing/glioma/a.jpg", "Testing/meningioma/b.jpg"]))
    path = tmp_path / "benchmarks.json"
    path.write_text(json.dumps({"cpu": {"specified_models": {"rnn": "rnn"}, "training": [1, 2], "accuracy": {}}}))
    benchmark.refresh_accuracy(path, tmp_path / "runs")
    stored = json.loads(path.read_text())["cpu"]
    assert stored["training"] == [1, 2] and stored["accuracy"]["rnn"]["project_test_accuracy"] == 0.5
    assert stored["accuracy_read"]["git_commit"]


def test_prediction_command_timing_is_reported_with_its_ratio_and_agreement():
    timing = {"machine": "tensorflow-cpu-2cores", "provenance": {"git_commit": "0123456789abcdef"}, "model": "hybrid",
              "calls": 5, "median_seconds": {"numpy": 2.0, "tensorflow": 10.0},
              "first_call_seconds": {"numpy": 2.5, "tensorflow": 12.0}, "warm_seconds_per_image": 0.05,
              "largest_probability_difference": 3e-7}
    text = speed_report.prediction_command_markdown(timing)
    assert "**2.00 s** per call" in text and "10.00 s on TensorFlow's (5.0x" in text and "50 ms" in text
    assert "at most 3.0e-07" in text
    page = speed_report.speed_page({}, {"tensorflow-cpu-2cores": timing})
    assert "## The prediction command" in page and text in page
    measured = {**timing, "provenance": {"git_commit": "0123456789abcdef",
                                         "device": {"cpu_model": "AMD EPYC", "cpu_count": 2}},
                "median_cpu_seconds": {"numpy": 2.25, "tensorflow": 11.5}}
    text = speed_report.prediction_command_markdown(measured)
    assert "`tensorflow-cpu-2cores` (AMD EPYC, 2 cores)" in text
    assert "**2.00 s** per call (2.25 CPU-s)" in text and "10.00 s (11.50 CPU-s) on TensorFlow's" in text


@pytest.mark.slow
def test_the_prediction_command_timing_counts_the_cpu_seconds_of_its_processes(tmp_path):
    image = throughput.phantom_image(tmp_path)
    timing = throughput.time_prediction_command(image, calls=1)
    for backend in ("numpy", "tensorflow"):
        assert 0 < timing["median_cpu_seconds"][backend] < 10 * timing["median_seconds"][backend]
