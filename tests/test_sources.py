"""Both sides of every source: which source an image is from, source-balanced weights, per-source tables, and
leave-one-source-out on generated sources."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import config
from helpers.experiments import loso, mitigations
from helpers.inputs import external, sources
from helpers.inputs.synthetic import make_phantom_external_sets
from helpers.modeling import recipes, run_folders, training


@pytest.fixture(scope="module")
def external_root(tmp_path_factory):
    """Generated stand-ins of the external sets, a second 'scanner' on both sides: 10 images per part of each set."""
    return make_phantom_external_sets(tmp_path_factory.mktemp("sources") / "sets", per_part=10, seed=7)


def test_the_phantom_scanner_gives_both_sides_in_two_sequences(external_root):
    sets = external.load_external_sets(external_root, 64, "standardised", sets=config.PHANTOM_EXTERNAL_SETS)
    sides = sources.source_sides(sets, "test")
    assert list(sides) == ["phantom outlines", "phantom scanner", "phantom second sequence"]
    assert sides["phantom outlines"].tumour_free is None and sides["phantom outlines"].truth == config.ANY_TUMOUR
    scanner = sides["phantom scanner"]
    assert scanner.truth == "glioma" and set(scanner.tumour_free.labels) == {config.CLASS_NAMES.index("notumor")}
    assert not scanner.tumour_free.masks.any() and all(mask.any() for mask in scanner.tumour.masks)
    second = sides["phantom second sequence"].tumour
    assert [path.split("/")[-1] for path in second.paths] == [path.split("/")[-1] for path in scanner.tumour.paths]
    assert not np.array_equal(second.images, scanner.tumour.images)  # the same slices, another contrast


def test_source_balance_weights_give_both_sides_of_every_source_the_same_weight():
    paths = np.array(["Training/glioma/a.jpg"] * 6 + ["Training/notumor/b.jpg"] * 2
                     + ["external/phantom-glioma/train/c.png"] * 3 + ["external/phantom-tumour-free/train/d.png"]
                     + ["external/phantom-tumour/train/e.jpg"] * 2)
    labels = np.array([0] * 6 + [2] * 2 + [0] * 3 + [2] + [config.ANY_TUMOUR_LABEL] * 2)
    assert list(sources.image_sources(paths[[0, 8, 11, 12]])) == ["dataset", "phantom scanner", "phantom scanner",
                                                                   "phantom outlines"]
    weights = sources.source_balance_weights(paths, labels)
    assert weights.mean() == pytest.approx(1.0)
    totals = [float(weights[group].sum()) for group in (slice(0, 6), slice(6, 8), slice(8, 11), slice(11, 12),
                                                          slice(12, 14))]
    assert totals[0] == pytest.approx(totals[1]) and totals[2] == pytest.approx(totals[3])
    assert totals[0] + totals[1] == pytest.approx(2 * (totals[2] + totals[3]))  # each source keeps its share
    assert weights[12] == pytest.approx(weights[12:].mean()) and totals[4] == pytest.approx(2 * weights[12])


def test_source_table_reads_each_source_on_both_sides(external_root):
    sets = external.load_external_sets(external_root, 64, "standardised", sets=config.PHANTOM_EXTERNAL_SETS,
                                       parts=("test",))
    no_tumour = config.CLASS_NAMES.index("notumor")
    # A model that calls everything from the phantom scanner 'glioma': it keeps every tumour and no tumour-free slice.
    predictions = {"source-reader": {name: [np.tile(np.eye(4)[0], (len(images), 1))] for name, images in sets.items()}}
    labels = np.array([0, 1, no_tumour, no_tumour])
    official = {"source-reader": [np.eye(4)[[0, 0, no_tumour, 0]]]}
    figures = sources.source_evaluation(predictions, sets, official, labels)["source-reader"]
    assert list(figures) == [config.OFFICIAL_TESTING, "phantom outlines", "phantom scanner",
                             "phantom second sequence"]
    assert figures[config.OFFICIAL_TESTING]["type_accuracy"]["mean"] == 0.5
    assert figures[config.OFFICIAL_TESTING]["specificity"]["mean"] == 0.5
    scanner = figures["phantom scanner"]
    assert (scanner["sensitivity"]["mean"], scanner["specificity"]["mean"]) == (1.0, 0.0)
    assert scanner["balanced_accuracy"]["mean"] == 0.5 and scanner["type_accuracy"]["mean"] == 1.0
    table = sources.source_table({"source-reader": figures})
    shown = sources.readable_source_table(table)
    assert shown.loc[("source-reader", "phantom outlines"), "specificity"] == "—"
    assert shown.loc[("source-reader", "phantom scanner"), "images (tumour / none)"] == "10 / 10"


def test_runs_written_before_a_setting_existed_still_match_with_its_default(tmp_path):
    settings = recipes.recipe("robust", "rnn", image_size=64)
    recorded = json.loads(json.dumps({"model": "rnn", "settings": {
        key: value for key, value in training.dataclasses.asdict(settings).items()
        if key not in run_folders.ADDED_SETTINGS}}))
    (tmp_path / run_folders.RUN_FILE).write_text(json.dumps(recorded))
    assert run_folders.run_matches(tmp_path, "rnn", settings)
    assert not run_folders.run_matches(tmp_path, "rnn", recipes.recipe("both-sides", "rnn", image_size=64))
    assert run_folders.run_differences(tmp_path, "rnn", recipes.recipe("outlined", "rnn", image_size=64),
                                    data_fingerprint="f") == ["data_fingerprint", "settings.external_collections",
                                                              "settings.outline_supervision"]
    assert run_folders.run_differences(tmp_path / "elsewhere", "rnn", settings) == ["no finished run"]


def test_hold_outs_leave_out_each_origin_and_each_further_sequence():
    names = [item.name for item in loso.hold_outs()]
    assert names == ["Br35H", "TCGA post-contrast + TCGA FLAIR", "TCGA FLAIR (sequence held out)"]
    whole_tcga = loso.hold_outs()[1]
    assert set(whole_tcga.collections) == {"tcga-lgg-glioma", "tcga-lgg-tumour-free", "tcga-lgg-flair-glioma",
                                           "tcga-lgg-flair-tumour-free"}
    settings = loso.hold_out_settings("rnn", loso.hold_outs()[2], epochs=1)
    assert "tcga-lgg-flair-glioma" not in settings.external_collections
    assert "tcga-lgg-glioma" in settings.external_collections and settings.outline_supervision
    assert not settings.source_balance
    assert loso.hold_out_settings("rnn", whole_tcga, recipe_name="both-sides").source_balance
    assert loso.run_directory("rnn", whole_tcga, recipe_name="both-sides").parts[-3:] == (
        "both-sides", "tcga-post-contrast-tcga-flair", "rnn-seed42")


@pytest.mark.slow
def test_leave_one_source_out_trains_without_the_source_and_measures_it(phantom_root, external_root, tmp_path):
    held_out = loso.hold_outs(config.PHANTOM_EXTERNAL_SETS)[2]
    assert held_out.name == "phantom second sequence (sequence held out)"
    rows = loso.build_table(phantom_root, external_root, models=("rnn",), sets=config.PHANTOM_EXTERNAL_SETS,
                            run_root=tmp_path / "runs", epochs=1, only=(held_out.name,))
    assert [(row["model"], row["source"]) for row in rows] == [("rnn", "phantom second sequence")]
    assert rows[0]["tumour images"] == 10 and rows[0]["tumour-free images"] == 10
    assert 0 <= rows[0]["balanced accuracy"] <= 1
    run = run_folders.load_run(loso.run_directory("rnn", held_out, tmp_path / "runs"))
    trained_on = {path.split("/")[1] for path in run.predictions["validation"]["paths"] if path.startswith("external/")}
    assert trained_on and not trained_on & set(held_out.collections)
    again = loso.build_table(phantom_root, external_root, models=("rnn",), sets=config.PHANTOM_EXTERNAL_SETS,
                             run_root=tmp_path / "runs", epochs=1, only=(held_out.name,))
    assert again == rows  # the finished run is reused, not trained again
    assert len(rows[0]["measurement"]) == 64
    elsewhere = {"models": ("rnn",), "sets": config.PHANTOM_EXTERNAL_SETS, "run_root": tmp_path / "elsewhere",
                 "only": (held_out.name,), "measured": rows}
    assert loso.build_table(phantom_root, external_root, epochs=1, **elsewhere) == rows, "rows reused without runs"
    assert not (tmp_path / "elsewhere").exists()
    assert loso.build_table(phantom_root, external_root, epochs=2, train=False, **elsewhere) == [], "other settings"
    from helpers.inputs import data  # what the off-site job list asks of the same arrays

    preprocessing = recipes.recipe(loso.RECIPE).preprocessing
    arrays = (data.load_dataset(phantom_root, 64, progress=False, preprocessing=preprocessing),
              external.load_external_sets(external_root, 64, preprocessing, sets=config.PHANTOM_EXTERNAL_SETS))
    nowhere = tmp_path / "elsewhere"  # no run folders: only the measured rows can tell
    assert loso.is_finished("rnn", held_out, arrays, epochs=1, run_root=nowhere, measured=rows)
    assert not loso.is_finished("rnn", held_out, arrays, epochs=2, run_root=nowhere, measured=rows)
    assert not loso.is_finished("rnn", loso.hold_outs(config.PHANTOM_EXTERNAL_SETS)[0], arrays, epochs=1,
                                run_root=nowhere, measured=rows)
    path = loso.write_table(rows, tmp_path)
    assert loso.load_table(tmp_path)["held out"].tolist() == [held_out.name] and path.name == "loso.json"


def test_tumour_contrast_tells_a_visible_outline_from_an_invisible_one():
    from helpers.analysis import explain

    generator = np.random.default_rng(0)
    images = np.zeros((3, 24, 24), np.uint8)
    images[:, 2:22, 2:22] = generator.normal(100, 5, (3, 20, 20)).clip(1, 255).astype(np.uint8)
    masks = np.zeros((3, 24, 24), bool)
    masks[:2, 9:15, 9:15] = True
    images[0, 9:15, 9:15] = 160  # bright against its rim: 12 rim standard deviations
    contrast = explain.tumour_contrast(images, masks)
    assert contrast[0] > 5 and contrast[1] < explain.VISIBLE_CONTRAST and np.isnan(contrast[2])
    table = explain.visibility_table({"set": (images, masks)})
    assert table.loc["set", "outlined images"] == 2 and table.loc["set", "share visible"] == 0.5


def test_the_mitigation_table_averages_each_rung_over_its_seeds(tmp_path):
    rows = [{"model": "rnn", "variant": variant, "seed": seed, "run": f"runs/{seed}",
             "official_test_accuracy": accuracy}
            for variant, seed, accuracy in (("cosine recipe", 42, 0.8), ("cosine recipe", 43, 0.9),
                                            ("+ every source on both sides", 42, 0.7))]
    mitigations.write_table(rows[:1], tmp_path)
    mitigations.write_table(rows[1:], tmp_path)  # a later seed joins the earlier one, it does not replace it
    table = mitigations.load_table(tmp_path)
    assert table.loc[("rnn", "cosine recipe"), "seeds"] == "42 43"
    assert table.loc[("rnn", "cosine recipe"), "official_test_accuracy"] == pytest.approx(0.85)
    assert table.loc[("rnn", "+ every source on both sides")].tolist() == ["42", 0.7]


def test_source_images_take_as_many_of_each_source_as_the_profile_does(phantom_root, external_root, tmp_path):
    import dataclasses

    from helpers.analysis.study import Study

    whole = Study.from_parameters(profile="demo", data_dir=str(phantom_root), external_dir=str(external_root),
                                  run_root=str(tmp_path / "runs"))
    whole = dataclasses.replace(whole, profile=dataclasses.replace(whole.profile, synthetic=False))
    few = dataclasses.replace(whole, profile=dataclasses.replace(whole.profile, images_per_class=8, external_per_set=5))
    everything, taken = whole.source_images("resize"), few.source_images("resize")
    assert list(taken) == list(everything) and len(taken) == 4 + 5
    assert {name: len(images) for name, images in taken.items()} == {
        name: 8 if name.startswith("dataset ") else 5 for name in everything}
    assert all(len(everything[name]) > len(taken[name]) for name in everything)


def test_the_loso_table_keeps_rows_in_recipe_model_and_hold_out_order_whatever_was_measured_last(tmp_path):
    names = [item.name for item in loso.hold_outs()]

    def row(model, recipe, held_out, seed=42):
        return {"model": model, "recipe": recipe, "held out": held_out, "source": held_out, "seed": seed}

    loso.write_table([row("sequencer", "outlined", names[0]), row("rnn", "outlined", names[1])], tmp_path)
    loso.write_table([row("rnn", "outlined", names[0], 43), row("rnn", "both-sides", names[2])], tmp_path)
    loso.write_table([row("rnn", "outlined", names[0])], tmp_path)  # another seed: both kept, in seed order
    loso.write_table([row("rnn", "outlined", names[0], 43)], tmp_path)  # measured again: its place stays
    shown = loso.load_table(tmp_path)
    assert list(zip(shown["recipe"], shown["model"], shown["held out"], shown["seed"])) == [
        ("both-sides", "rnn", names[2], 42), ("outlined", "rnn", names[0], 42), ("outlined", "rnn", names[0], 43),
        ("outlined", "rnn", names[1], 42), ("outlined", "sequencer", names[0], 42)]
    assert loso.run_directory("rnn", loso.hold_outs()[0], seed=43).name == "rnn-seed43"
