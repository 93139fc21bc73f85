"""helpers.analysis.factorial and helpers.experiments.factorial: figures per (recipe, model), tests only within a
recipe, the recipe effect, the frontier's points and front, the training order; all with answers known by hand."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpers import config
from helpers.analysis import factorial, plots
from helpers.analysis.study import Study
from helpers.experiments.factorial import planned_runs
from helpers.modeling import run_folders

NO_TUMOUR = config.CLASS_NAMES.index(config.NO_TUMOUR_CLASS)
GLIOMA = config.CLASS_NAMES.index("glioma")
TEST_LABELS = np.array([0, 1, 2, 3] * 5)
# Four external test sets: Br35H tumours (4), TCGA FLAIR gliomas (4) and TCGA FLAIR tumour-free slices (4).
EXTERNAL_SETS = tuple(spec for spec in config.EXTERNAL_SETS if spec.part == "test"
                      and spec.source_name in ("Br35H", "TCGA FLAIR"))
EXTERNAL_PATHS = np.array([f"external/{name}/image{index}.png" for name in
                           ("br35h-tumour/test", "tcga-lgg-flair-glioma/test", "tcga-lgg-flair-tumour-free/test")
                           for index in range(4)])


def _one_hot(classes) -> np.ndarray:
    return np.eye(4, dtype=np.float32)[np.asarray(classes)]


def _run(model: str, seed: int, test_wrong: int, external: list[int] | None = None, minutes: float = 2.0,
         cpu_minutes: float | None = None) -> run_folders.TrainingRun:
    """A loaded run that gets the first test_wrong official test images wrong, predicts the given classes on the
    external test images (none: it kept no external predictions) and trained for the given minutes."""
    guesses = TEST_LABELS.copy()
    guesses[:test_wrong] = (guesses[:test_wrong] + 1) % 4
    validation_labels = np.array([0, 1, 2, 3, 4])
    predictions = {"test": {"probabilities": _one_hot(guesses), "labels": TEST_LABELS},
                   "validation": {"probabilities": _one_hot([0, 1, 2, 3, 0]), "labels": validation_labels,
                                  "paths": np.array(["Training/a", "Training/b", "Training/c", "Training/d",
                                                     "external/br35h-tumour/train/e"])}}
    if external is not None:
        predictions["external_test"] = {"probabilities": _one_hot(external), "paths": EXTERNAL_PATHS,
                                        "labels": np.zeros(len(EXTERNAL_PATHS), dtype=np.int64)}
    timings = {"fit_seconds": 60 * minutes, "fit_cpu_seconds": None if cpu_minutes is None else 60 * cpu_minutes}
    return run_folders.TrainingRun(directory=Path(f"runs/{model}-seed{seed}"), class_names=config.CLASS_NAMES,
                                   image_size=64, history=pd.DataFrame(), timings=timings,
                                   details={"parameters": 1000, "settings": {"seed": seed}}, predictions=predictions)


# Br35H: 3 of 4 kept; TCGA FLAIR: 2 of 4 gliomas kept (1 named glioma), 3 of 4 tumour-free called no tumour.
EXTERNAL_GUESSES = [1, 1, 3, NO_TUMOUR, GLIOMA, 1, NO_TUMOUR, NO_TUMOUR, NO_TUMOUR, NO_TUMOUR, NO_TUMOUR, 0]


def test_a_row_holds_official_clean_validation_time_and_both_sides_of_every_source():
    runs = {"dataset-only": {"rnn": [_run("rnn", 42, 2, EXTERNAL_GUESSES, cpu_minutes=3.0),
                                     _run("rnn", 43, 4, None, minutes=4.0, cpu_minutes=5.0)]}}
    clean = np.zeros(len(TEST_LABELS), dtype=bool)
    clean[:10] = True
    [row] = factorial.factorial_rows(runs, clean, EXTERNAL_SETS)
    assert (row["recipe"], row["model"], row["seeds"]) == ("dataset-only", "rnn", [42, 43])
    assert row["official_accuracy_per_seed"] == [0.9, 0.8] and row["official_accuracy"] == pytest.approx(0.85)
    assert row["clean_test_accuracy"] == pytest.approx((0.8 + 0.6) / 2)
    assert row["dataset_validation_accuracy"] == 1.0, "the external validation image left out"
    assert row["validation_accuracy"] == 1.0, "an external 'some tumour' image counts right as any tumour"
    assert (row["wall_minutes"], row["cpu_minutes"]) == (3.0, 4.0)
    assert row["external_seeds"] == 1, "figures per source from the seeds that kept external predictions"
    assert row["Br35H: sensitivity"] == 0.75 and "Br35H: specificity" not in row
    assert (row["TCGA FLAIR: sensitivity"], row["TCGA FLAIR: specificity"]) == (0.5, 0.75)
    assert row["TCGA FLAIR: type_accuracy"] == 0.25 and row["TCGA FLAIR: balanced_accuracy"] == 0.625
    assert factorial.run_minutes(_run("cnn", 42, 0)) == (2.0, None), "no CPU time: not guessed"
    shown = factorial.readable_factorial([row])
    assert shown.loc[("dataset-only", "rnn"), "official accuracy"] == "85.00% ± 5.00%"
    assert shown.loc[("dataset-only", "rnn"), "TCGA FLAIR: specificity"] == "75.0%"


def test_mcnemar_pairs_models_only_within_a_recipe():
    runs = {"dataset-only": {"rnn": [_run("rnn", 42, 0)], "cnn": [_run("cnn", 42, 6)]},
            "outlined": {"rnn": [_run("rnn", 42, 3)], "cnn": [_run("cnn", 42, 3)], "hybrid": [_run("hybrid", 42, 1)]}}
    table = factorial.within_recipe_mcnemar(TEST_LABELS, runs)
    assert list(table["recipe"]) == ["dataset-only"] + ["outlined"] * 3, "no pair across recipes"
    first = table.iloc[0]
    assert (first["first"], first["second"], first["only_first_correct"], first["only_second_correct"]) == (
        "rnn", "cnn", 6, 0)
    assert first["p_value"] == pytest.approx(2 * 0.5 ** 6), "exact two-sided binomial test of 6 against 0"
    same = table[(table["recipe"] == "outlined") & (table["first"] == "rnn") & (table["second"] == "cnn")].iloc[0]
    assert same["p_value"] == 1.0 and same["only_first_correct"] == same["only_second_correct"] == 0
    verdicts = factorial.architecture_verdicts(factorial.factorial_rows(runs, np.ones(20, bool), ()), table)
    assert [(verdict["recipe"], verdict["model"], verdict["winner"]) for verdict in verdicts] == [
        ("dataset-only", "rnn", "rnn"), ("outlined", "rnn", "neither"), ("outlined", "hybrid", "neither")]
    assert verdicts[0]["difference_points"] == pytest.approx(30.0)
    assert (verdicts[0]["model_alone_right"], verdicts[0]["baseline_alone_right"]) == (6, 0)
    # the test's seeds favour one model while the means over seeds favour the other: no winner is declared
    split = {"dataset-only": {"rnn": [_run("rnn", 42, 0), _run("rnn", 43, 20)], "cnn": [_run("cnn", 42, 6)]}}
    [mixed] = factorial.architecture_verdicts(factorial.factorial_rows(split, np.ones(20, bool), ()),
                                              factorial.within_recipe_mcnemar(TEST_LABELS, split))
    assert mixed["p_value"] < 0.05 and mixed["difference_points"] < 0 and mixed["winner"] == "neither"
    assert factorial.verdict_sentence(mixed).endswith(
        "no winner, the seeds disagree (the means favour cnn, the best-on-validation seeds rnn)")
    assert factorial.compact_verdicts([mixed]).endswith("(p = 0.031, = as the best seeds favour rnn)")
    assert factorial.compact_verdicts(verdicts[1:2]) == "`outlined`: rnn +0.0 (p = 1, =)"
    assert factorial.verdict_sentence(verdicts[0]) == ("under `dataset-only`, **rnn** wins: rnn 100.00% against cnn "
                                                       "70.00% (+30.0 points; McNemar p = 0.031, 6 against 0 images "
                                                       "right alone)")
    assert "no significant difference" in factorial.verdict_sentence(verdicts[1])


def test_the_recipe_effect_is_the_second_recipe_minus_the_first_in_points_for_models_under_both():
    runs = {"dataset-only": {"rnn": [_run("rnn", 42, 1, EXTERNAL_GUESSES)], "cnn": [_run("cnn", 42, 0)]},
            "outlined": {"rnn": [_run("rnn", 42, 3, [NO_TUMOUR] * 12)]}}
    effect = factorial.recipe_effect(factorial.factorial_rows(runs, np.ones(20, bool), EXTERNAL_SETS),
                                     "dataset-only", "outlined")
    assert list(effect.index) == ["rnn"], "the cnn trained under one recipe only"
    assert effect.loc["rnn", "official accuracy"] == pytest.approx(-10.0)
    assert effect.loc["rnn", "TCGA FLAIR: specificity"] == pytest.approx(25.0)
    assert effect.loc["rnn", "TCGA FLAIR: sensitivity"] == pytest.approx(-50.0)
    points = pd.DataFrame({"recipe": ["dataset-only", "outlined"], "model": ["rnn", "rnn"],
                           "held_out_balanced_accuracy": [0.625, 0.8]})
    held_out = factorial.recipe_effect(factorial.factorial_rows(runs, np.ones(20, bool), EXTERNAL_SETS),
                                       "dataset-only", "outlined", points, "TCGA FLAIR")
    assert held_out.loc["rnn", "TCGA FLAIR held out: balanced accuracy"] == pytest.approx(17.5)


def test_the_frontier_takes_a_dataset_only_models_own_figure_and_an_external_recipes_loso_rows():
    runs = {"dataset-only": {"rnn": [_run("rnn", 42, 0, EXTERNAL_GUESSES), _run("rnn", 43, 2, [NO_TUMOUR] * 12)],
                             "cnn": [_run("cnn", 42, 4, EXTERNAL_GUESSES)]},
            "outlined": {"rnn": [_run("rnn", 42, 1)], "cnn": [_run("cnn", 42, 2)]}}
    rows = factorial.factorial_rows(runs, np.ones(20, bool), EXTERNAL_SETS)
    loso = [{"model": "rnn", "recipe": "outlined", "held out": "TCGA post-contrast + TCGA FLAIR",
             "source": "TCGA FLAIR", "balanced accuracy": 0.8},
            {"model": "rnn", "recipe": "outlined", "held out": "TCGA FLAIR (sequence held out)",
             "source": "TCGA FLAIR", "balanced accuracy": 0.99},  # a sequence, not the source's whole collection
            {"model": "rnn", "recipe": "both-sides", "held out": "TCGA post-contrast + TCGA FLAIR",
             "source": "TCGA FLAIR", "balanced accuracy": 0.1}]  # another recipe
    points = factorial.frontier_points(rows, loso, "TCGA FLAIR").set_index(["recipe", "model"])
    rnn = points.loc[("dataset-only", "rnn")]
    assert rnn["held_out_balanced_accuracy"] == pytest.approx((0.625 + 0.5) / 2)
    assert rnn["held_out_balanced_accuracy_std"] == pytest.approx(0.0625) and rnn["held_out_seeds"] == 2
    assert rnn["official_accuracy"] == pytest.approx(0.95) and rnn["official_accuracy_std"] == pytest.approx(0.05)
    assert points.loc[("outlined", "rnn"), "held_out_balanced_accuracy"] == 0.8
    assert np.isnan(points.loc[("outlined", "cnn"), "held_out_balanced_accuracy"]), "no LOSO run: not drawn"
    # dataset-only rnn (95%, 56%), cnn (80%, 62.5%), outlined rnn (95%, 80%): only the outlined rnn is on the front
    assert factorial.pareto_front(points.reset_index()) == [("outlined", "rnn")]
    figure = plots.frontier(points.reset_index(), [("outlined", "rnn")], "TCGA FLAIR")
    assert len(figure.axes[0].collections) >= 3, "one marker per measured point"


def test_the_front_keeps_every_point_no_other_beats_on_both_axes():
    points = pd.DataFrame({"recipe": ["a", "a", "b", "b"], "model": ["w", "x", "y", "z"],
                           "official_accuracy": [0.97, 0.90, 0.93, 0.92],
                           "held_out_balanced_accuracy": [0.60, 0.85, 0.80, 0.79]})
    assert factorial.pareto_front(points) == [("a", "x"), ("b", "y"), ("a", "w")]


def test_the_frontier_source_is_tcga_flair_on_the_real_sets_and_a_two_sided_phantom_source_in_the_demo():
    assert factorial.frontier_source(config.EXTERNAL_SETS) == "TCGA FLAIR"
    assert factorial.frontier_source(config.PHANTOM_EXTERNAL_SETS) == "phantom second sequence"
    measured = [{"model": "rnn", "recipe": "outlined"}]
    assert factorial.loso_rows(config.PROFILES["demo"], measured) == [] == factorial.loso_rows(config.PROFILES["smoke"],
                                                                                                measured)
    assert factorial.loso_rows(config.PROFILES["full"], measured) == measured == factorial.loso_rows(
        config.PROFILES["published"], measured)


def test_every_model_trains_under_each_recipe_with_the_profiles_seeds_and_its_own_epochs(tmp_path, monkeypatch):
    monkeypatch.setenv(config.RUNS_DIR_VARIABLE, str(tmp_path))
    full = Study.from_parameters(profile="full")
    assert full.profile.compared_recipes == ("dataset-only", "outlined")
    assert [full.settings(name, 42, "dataset-only").epochs for name in ("rnn", "cnn")] == [100, 100]
    assert [full.settings(name, 42, "outlined").epochs for name in ("rnn", "cnn")] == [40, 40]
    assert not full.settings("cnn", 42, "dataset-only").external_training
    assert full.settings("rnn", 42, "outlined").outline_supervision > 0
    assert full.run_directory("cnn", 43, "dataset-only") == tmp_path / "full" / "dataset-only" / "cnn-seed43"
    assert full.run_directory("rnn", 43) == tmp_path / "full" / "dataset-only" / "rnn-seed43", "its published recipe"
    assert full.seeds_of("cnn", "dataset-only") == (42, 43, 44)
    assert full.seeds_of("sequencer", "dataset-only") == (42, 43, 44) == full.seeds_of("sequencer", "outlined")
    one = dataclasses.replace(full.profile, fewer_seeds=(("cnn", "dataset-only", (43,)),))  # the budget's cut
    assert one.seeds_of("cnn", "dataset-only", (42, 43, 44)) == (43,)
    assert one.seeds_of("cnn", "dataset-only", (44,)) == ()
    assert one.seeds_of("cnn", "outlined", (42,)) == (42,)
    smoke = Study.from_parameters(profile="smoke")
    assert [smoke.settings("rnn", 42, name).epochs for name in ("outlined", "dataset-only")] == [1, 2]
    custom = Study.from_parameters(profile="full", epochs=3)
    assert custom.settings("cnn", 42, "dataset-only").epochs == 3, "epochs given hold for every recipe"
    demo = Study.from_parameters(profile="demo")
    assert demo.profile.compared_recipes == ("demo-dataset-only", "demo")
    own, mixed = demo.settings("cnn", 42, "demo-dataset-only"), demo.settings("cnn", 42, "demo")
    assert (own.external_training, mixed.external_training, own.epochs, mixed.epochs) == (False, True, 8, 12)


def test_the_factorial_trains_the_missions_models_seed_by_seed_before_the_others():
    plan = planned_runs(("rnn", "sequencer", "cnn"), ("outlined", "dataset-only"), (42, 43))
    assert plan[:4] == [("outlined", "rnn", 42), ("outlined", "cnn", 42), ("dataset-only", "rnn", 42),
                        ("dataset-only", "cnn", 42)]
    assert plan[4:8] == [("outlined", "rnn", 43), ("outlined", "cnn", 43), ("dataset-only", "rnn", 43),
                         ("dataset-only", "cnn", 43)]
    assert plan[8:] == [("outlined", "sequencer", 42), ("dataset-only", "sequencer", 42),
                        ("outlined", "sequencer", 43), ("dataset-only", "sequencer", 43)]


def test_readme_and_the_index_show_one_table_per_recipe_never_a_row_beside_another_recipes():
    from helpers.reporting.factorial_report import factorial_html, factorial_markdown

    runs = {"dataset-only": {"rnn": [_run("rnn", 42, 0, EXTERNAL_GUESSES)], "cnn": [_run("cnn", 42, 6)]},
            "outlined": {"rnn": [_run("rnn", 42, 3, EXTERNAL_GUESSES), _run("rnn", 43, 3)]}}
    rows = factorial.factorial_rows(runs, np.ones(20, bool), EXTERNAL_SETS)
    mcnemar = factorial.within_recipe_mcnemar(TEST_LABELS, runs)
    metrics = {"notebooks": {"04_compare_cnn": {
        "recipes": ["dataset-only", "outlined"], "factorial": rows, "front": [["outlined", "rnn"]],
        "frontier_source": "TCGA FLAIR", "verdicts": factorial.architecture_verdicts(rows, mcnemar)}}}
    block = factorial_markdown(metrics)
    benchmark, external = block.split("**The external recipe**")
    assert "**The benchmark protocol**, `dataset-only` (the dataset's images only)" in benchmark
    assert benchmark.count("| rnn |") == benchmark.count("| cnn |") == 1 and "| cnn |" not in external
    assert "TCGA FLAIR balanced accuracy (never trained on)" in benchmark
    assert "(one seed)" in benchmark and "% ± " not in benchmark, "one seed has no spread to show"
    assert "% ± " in external, "two seeds show their spread"
    assert "TCGA FLAIR balanced accuracy (trained on)" in external
    assert "| 62.5% (1 of 2 seeds) |" in external, "an external figure says how many seeds it stands on"
    assert "`dataset-only`: rnn +30.0 (p = 0.031, rnn)." in block, "no verdict where the cnn did not train"
    assert "no other model and recipe beats rnn (`outlined`) on both" in block
    page = factorial_html(metrics)
    assert page.count("<table") == 2 and "<h3>The external recipe: `outlined`" in page
    assert factorial_markdown({"notebooks": {"04_compare_cnn": {}}}) == "" == factorial_html({})


def test_the_selection_score_weighs_the_datasets_validation_images_and_both_sides_of_the_external_ones():
    from helpers.analysis.selection import chosen_recipe, selection_score

    paths = np.array(["Training/glioma/a", "Training/notumor/b", "external/br35h-tumour/train/c",
                      "external/tcga-lgg-tumour-free/train/d", "external/tcga-lgg-tumour-free/train/e"])
    labels = np.array([GLIOMA, NO_TUMOUR, config.ANY_TUMOUR_LABEL, NO_TUMOUR, NO_TUMOUR])
    guesses = [GLIOMA, GLIOMA, 1, NO_TUMOUR, GLIOMA]  # own 1 of 2; tumour kept 1 of 1; tumour-free 1 of 2
    record = {"labels": labels, "probabilities": _one_hot(guesses), "paths": paths}
    assert selection_score(record) == pytest.approx((0.5 + (1.0 + 0.5) / 2) / 2)
    one_side = {name: values[:3] for name, values in record.items()}
    assert selection_score(one_side) == 0.5, "no external tumour-free image: the dataset's accuracy alone"

    def run(guessed):
        predictions = {"validation": {**record, "probabilities": _one_hot(guessed)}}
        return run_folders.TrainingRun(Path("r"), config.CLASS_NAMES, 64, pd.DataFrame(), {}, {}, predictions)

    better_outside = run([GLIOMA, GLIOMA, 1, NO_TUMOUR, NO_TUMOUR])  # 0.5 own, 1.0 balanced: 0.75
    better_inside = run([GLIOMA, NO_TUMOUR, NO_TUMOUR, GLIOMA, GLIOMA])  # 1.0 own, 0.0 balanced: 0.5
    assert chosen_recipe({"dataset-only": [better_inside], "outlined": [better_outside]}) == "outlined"
    assert chosen_recipe({"dataset-only": [better_inside, better_outside], "outlined": [better_inside]}) == (
        "dataset-only"), "the mean over a recipe's seeds"
    assert chosen_recipe({"dataset-only": [], "outlined": [better_inside]}) == "outlined", "an untrained recipe: none"

    from helpers.analysis.run_summaries import representative_run, validation_accuracy

    both = run([GLIOMA, NO_TUMOUR, 1, NO_TUMOUR, GLIOMA])  # 1.0 own, 0.75 balanced: 0.875; 4 of 5 on the whole split
    assert validation_accuracy(better_outside) == validation_accuracy(both) == pytest.approx(0.8)
    assert representative_run([better_outside, both]) is both, "the seed too is chosen by the score, not the split"


def test_a_model_is_published_with_the_recipe_notebook_04_chose_else_its_profiles():
    from helpers.reporting.published_default import published_recipe, published_run

    metrics = {"profile": "full", "notebooks": {"04_compare_cnn": {"published_recipes": {"cnn": "dataset-only"}}}}
    assert published_recipe(metrics, "cnn") == "dataset-only" and published_recipe(metrics, "cnn-ensemble") == (
        "dataset-only")
    assert published_recipe(metrics, "hybrid") == "outlined", "a record without the choice: the profile's recipe"
    assert published_run(metrics, Path("runs"), "cnn", 43) == Path("runs/dataset-only/cnn-seed43")


def test_the_factorials_cost_sums_its_runs_own_records():
    runs = {"dataset-only": {"rnn": [_run("rnn", 42, 0, cpu_minutes=3.0), _run("rnn", 43, 0, minutes=4.0)]},
            "outlined": {"cnn": [_run("cnn", 42, 0, minutes=6.0, cpu_minutes=9.0)]}}
    cost = factorial.factorial_cost(runs)
    assert (cost["runs"], cost["wall_minutes"], cost["cpu_minutes"], cost["runs_with_cpu_time"]) == (3, 12.0, 12.0, 2)
    assert cost["machines"] == ["unknown CPU, ? cores"]
    expected = ("The factorial's 3 runs trained for 0.2 hours of wall clock (12 CPU-minutes over the 2 runs that "
                "recorded them), on unknown CPU, ? cores.")
    assert factorial.cost_sentence(cost) == expected


def test_the_seeds_average_holds_the_splits_every_seed_kept():
    from helpers.analysis.run_summaries import mean_predictions

    averaged = mean_predictions([_run("cnn", 42, 0, EXTERNAL_GUESSES), _run("cnn", 43, 20)])
    assert set(averaged) == {"test", "validation"}, "one seed kept no external predictions: that split is left out"
    assert averaged["test"]["probabilities"][0].max() == 0.5
