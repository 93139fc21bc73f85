"""helpers.experiments.repeatability: weight fingerprints from fresh processes, and the table that compares settings
and CPUs."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from helpers.experiments import repeatability


def runs(*fingerprints, seconds=2.0):
    """Return stored runs with these fingerprints."""
    return [{"fingerprint": fingerprint, "seconds_per_epoch": seconds} for fingerprint in fingerprints]


def test_the_table_says_which_settings_repeat_and_agree_across_the_cap_and_cpus():
    stored = {
        "CPU A, 2 cores": {"runs": {"rnn": {"oneDNN (default)": runs("a", "a"),
                                            "oneDNN, capped at AVX2": runs("b", "b"),
                                            "oneDNN off": runs("c", "c", seconds=3.0),
                                            "oneDNN off, capped at AVX2": runs("c", "c", seconds=3.0)}}},
        "CPU B, 2 cores": {"runs": {"rnn": {"oneDNN (default)": runs("b", "d"),
                                            "oneDNN, capped at AVX2": runs("b", "b"),
                                            "oneDNN off": runs("c", "c"),
                                            "oneDNN off, capped at AVX2": runs("c", "c")}}},
    }
    table = repeatability.summary_table(stored).set_index(["CPU", "setting"])
    first = table.loc["CPU A, 2 cores"]
    assert first.loc["oneDNN (default)", "repeats on this CPU"] == "yes (2 runs)"
    assert first.loc["oneDNN (default)", "same weights with and without the AVX2 cap"] == "no"
    assert first.loc["oneDNN off", "same weights with and without the AVX2 cap"] == "yes"
    assert first.loc["oneDNN off", "× default time"] == "1.50x"
    assert first.loc["oneDNN off", "same weights on the other CPUs"] == "yes"
    assert first.loc["oneDNN (default)", "same weights on the other CPUs"] == "no"
    assert table.loc[("CPU B, 2 cores", "oneDNN (default)"), "repeats on this CPU"] == "no (2 results in 2 runs)"
    assert repeatability.verdict(table.reset_index()).startswith("7 of 8 model and setting pairs repeat")
    assert "Only 'oneDNN off' and 'oneDNN off, capped at AVX2' trained" in repeatability.verdict(table.reset_index())
    alone = repeatability.summary_table({"CPU A, 2 cores": stored["CPU A, 2 cores"]})
    assert set(alone["same weights on the other CPUs"]) == {"not measured"}


@pytest.mark.slow
def test_a_seed_trains_to_the_same_weights_in_two_fresh_processes(phantom_root):
    first, second = (repeatability.run_in_fresh_process("rnn", "oneDNN (default)", 1, 42, str(phantom_root))
                     for _ in range(2))
    assert len(first["fingerprint"]) == 64 and first["fingerprint"] == second["fingerprint"]


def test_the_weights_fingerprint_tells_one_weight_apart():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    before = repeatability.weights_fingerprint(model)
    assert repeatability.weights_fingerprint(model) == before
    kernel, bias = model.get_weights()
    kernel[0, 0] = np.nextafter(kernel[0, 0], np.float32(1))  # the smallest change a float32 weight can make
    model.set_weights([kernel, bias])
    assert repeatability.weights_fingerprint(model) != before


@pytest.mark.slow
def test_a_failing_run_names_the_model_and_the_setting(tmp_path):
    with pytest.raises(RuntimeError, match=r"repeatability run rnn \(oneDNN off\) failed"):
        repeatability.run_in_fresh_process("rnn", "oneDNN off", 1, 42, str(tmp_path / "missing"))
