"""helpers.config: profiles and relocatable folders."""

from __future__ import annotations

import pytest

from helpers import config
from helpers.inputs import data
from helpers.inputs.images import check_preprocessing
from helpers.modeling import recipes


def test_profiles_are_known_by_name():
    assert config.get_profile("smoke").epochs == 1
    assert config.get_profile("demo").synthetic and not config.get_profile("full").synthetic
    assert config.get_profile("full").images_per_class is None
    published = config.get_profile("published")  # a notebook opened without parameters reads, never trains
    assert published.reads_published and config.default_run_root(published) == config.PUBLISHED_RUNS_DIR
    assert "sequencer" in config.get_profile("full").models and "sequencer" not in config.get_profile("demo").models


def test_unknown_profile_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown profile 'fast'; choose one of full, published, smoke, demo"):
        config.get_profile("fast")


def test_cache_and_runs_folders_follow_their_environment_variables(tmp_path, monkeypatch):
    monkeypatch.setenv(config.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))
    monkeypatch.setenv(config.RUNS_DIR_VARIABLE, str(tmp_path / "runs"))
    assert config.cache_dir() == tmp_path / "cache"
    assert config.runs_dir() == tmp_path / "runs"
    monkeypatch.delenv(config.RUNS_DIR_VARIABLE)
    assert config.runs_dir() == config.PROJECT_ROOT / "runs"


def test_reports_print_project_paths_relative_to_the_project(tmp_path):
    assert config.shown_path(config.PROJECT_ROOT / "runs" / "full" / "rnn-seed42") == "runs/full/rnn-seed42"
    assert config.shown_path(tmp_path) == str(tmp_path)


@pytest.mark.parametrize(("call", "message"), [
    (lambda: data.load_dataset("x", on_error="ignore"), "unknown on_error 'ignore'; choose one of raise, skip"),
    (lambda: recipes.recipe("fast"), "unknown recipe 'fast'; choose one of specified"),
    (lambda: check_preprocessing("crop"), "unknown preprocessing 'crop'; choose one of"),
])
def test_every_named_option_is_checked_by_one_validator_in_the_same_words(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_training_data_sentence_names_both_sides_of_each_set_trained_on_and_the_outline_loss():
    import dataclasses

    from helpers.modeling.recipes import recipe, training_data_sentence

    sentence = training_data_sentence(dataclasses.asdict(recipe("outlined")))
    assert "`tcga-lgg-tumour-free` (TCGA post-contrast) as notumor" in sentence
    assert "`tcga-lgg-flair-glioma` (TCGA FLAIR) as glioma" in sentence
    assert "`br35h-tumour` (Br35H) as any tumour" in sentence
    assert "an outline loss (weight 1)" in sentence and "phantom" not in sentence  # the real sets when it names any
    robust = training_data_sentence(dataclasses.asdict(recipe("robust")))
    assert "tumour-free" not in robust and "outline" not in robust
    assert training_data_sentence(dataclasses.asdict(recipe("dataset-only"))).endswith("Training images only.")
