"""Steps at prediction time against a source's look, measured where a source was never trained on: flip averaging and
adaptation to a series (helpers.modeling.adaptation).

`python -m helpers.experiments.adaptation` (`make adaptation`) reads the kept models of the study's runs and predicts
every external source's test images four ways (STEPS): as trained, averaged with their mirror images, adapted on all of
that source's test images at once (a folder of one source), and adapted on groups of MINIMUM_IMAGES images drawn at
random within the source (a series). It writes reports/adaptation.json, one row per (run, source, step): tumour
sensitivity, specificity, type accuracy and balanced accuracy, and the official Testing accuracy with the same step.
Runs: the benchmark protocol's (`dataset-only`: no external source trained on), the leave-one-source-out runs kept
(their held-out sources only) and the external recipe's (the same sources' other patients trained on). Models without
batch normalisation (the hybrid) are left out.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from helpers import commands, config, interrupts
from helpers.files import write_measured_rows
from helpers.modeling.adaptation import MINIMUM_IMAGES, adapt_in_place, copy_model, normalisation_layers
from helpers.modeling.run_folders import MODEL_FILE

ADAPTATION_FILE = "adaptation.json"
STEP = "at prediction"
# What changes at prediction time: nothing, the image and its mirror averaged, batch normalisation re-estimated on all
# of a source's images, or on random groups of MINIMUM_IMAGES of them.
STEPS = ("none", "flip averaging", "adapted to the whole source", f"adapted to groups of {MINIMUM_IMAGES}")
SEED = config.DEFAULT_SEED


def grouped(count: int, size: int, seed: int = SEED) -> list[np.ndarray]:
    """Return the indices 0..count-1 in random groups of `size` (the last groups one larger where it does not divide;
    one group when count is under twice the size)."""
    order = np.random.default_rng(seed).permutation(count)
    return [np.sort(group) for group in np.array_split(order, max(1, count // size))]


def adapted_predictions(model, images: np.ndarray, step: str, batch_size: int = 64, copy=None) -> np.ndarray:
    """Return a model's probabilities on images (N, size, size) with a step at prediction time (STEPS): none, flip
    averaging, adapted on all of them, or adapted group by group. copy: a copy of the model to adapt (adapt_in_place
    adapts it afresh each time; default: a new one)."""
    inputs = images[..., np.newaxis]
    if step == STEPS[0]:
        return np.asarray(model.predict(inputs, batch_size=batch_size, verbose=0))
    if step == STEPS[1]:
        from helpers.analysis.run_summaries import flip_averaged_probabilities

        return flip_averaged_probabilities(model, images)
    copy = copy if copy is not None else copy_model(model)
    groups = [np.arange(len(images))] if step == STEPS[2] else grouped(len(images), MINIMUM_IMAGES)
    probabilities = np.zeros((len(images), model.outputs[0].shape[-1]), np.float32)
    for group in groups:
        adapt_in_place(copy, inputs[group], batch_size)
        probabilities[group] = copy.predict(inputs[group], batch_size=batch_size, verbose=0)
    return probabilities


def _figures(summary: dict[str, Any]) -> dict[str, float | None]:
    """Return the mean of each figure of a both-sides summary (None where a source lacks its side)."""
    from helpers.inputs.sources import FIGURES

    return {name.replace("_", " "): (summary[name]["mean"] if name in summary else None) for name in FIGURES}


def measure_run(name: str, seed: int, recipe_name: str, held_out: str, directory: Path, model, external: dict,
                testing, sources: tuple[str, ...] | None = None) -> list[dict]:
    """Return the rows of one run: each source's figures (only `sources` where given) and the official Testing
    accuracy, with each step at prediction time."""
    from helpers.evaluation import both_sides_summary
    from helpers.inputs.sources import source_sides

    rows = []
    copy = copy_model(model)
    for step in STEPS:
        official = adapted_predictions(model, testing.images, step, copy=copy)
        accuracy = float((official.argmax(axis=1) == np.asarray(testing.labels)).mean())
        for source, sides in source_sides(external).items():
            if sources is not None and source not in sources:
                continue
            members = [side for side in (sides.tumour, sides.tumour_free) if side is not None]
            images = np.concatenate([side.images for side in members])
            probabilities = adapted_predictions(model, images, step, copy=copy)
            split = len(members[0].images)
            tumour = [probabilities[:split]] if sides.tumour is not None else None
            free = ([probabilities[split:] if sides.tumour is not None else probabilities]
                    if sides.tumour_free is not None else None)
            summary = both_sides_summary(tumour, free, truth=sides.truth, resamples=1)
            rows.append({"model": name, "recipe": recipe_name, "held out": held_out, "seed": seed,
                         "run": str(directory), "source": source, STEP: step,
                         "images": int(len(images)), "official test accuracy": accuracy, **_figures(summary)})
    return rows


Planned = tuple[str, int, str, str, Path, tuple[str, ...] | None]


def planned_runs(run_root: Path) -> list[Planned]:
    """Return (model, seed, recipe, what was held out, run folder, sources measured or None for all) for every run
    folder that keeps its model (config.run_folder names them <model>-seed<seed>): the study's runs of both recipes,
    then the leave-one-source-out runs."""
    from helpers.experiments.loso import hold_outs

    found: list[tuple[str, str, Path, tuple[str, ...] | None]] = []
    for recipe_name, held_out in (("dataset-only", "every external source"), ("outlined", "none")):
        found += [(recipe_name, held_out, directory, None)
                  for directory in sorted((run_root / "full" / recipe_name).glob("*-seed*"))]
    for hold_out in hold_outs():
        found += [(f"{directory.parent.parent.name} (LOSO)", hold_out.name, directory, hold_out.sources)
                  for directory in sorted((run_root / "loso").glob(f"*/{hold_out.slug}/*-seed*"))]
    planned = []
    for recipe_name, held_out, directory, sources in found:
        model_name, seed = directory.name.rsplit("-seed", 1)
        if (directory / MODEL_FILE).is_file():
            planned.append((model_name, int(seed), recipe_name, held_out, directory, sources))
    return planned


def build_table(models: tuple[str, ...], run_root: Path | None = None,
                progress: Callable[[str], None] = print) -> list[dict]:
    """Measure every planned run of these models (planned_runs) and return the rows."""
    import keras

    from helpers.analysis.study import Study

    study = Study.from_parameters(profile="full")
    data = study.load_data()
    external = {name: images for name, images in data.external.items() if images.spec.part == "test"}
    rows: list[dict] = []
    for name, seed, recipe_name, held_out, directory, sources in planned_runs(run_root or config.runs_dir()):
        if name not in models:
            continue
        model = keras.saving.load_model(directory / MODEL_FILE, compile=False)
        if not normalisation_layers(model):
            progress(f"{config.shown_path(directory)}: no batch normalisation, nothing to adapt")
            continue
        progress(f"{config.shown_path(directory)}: measuring ({recipe_name}, held out: {held_out})")
        rows.extend(measure_run(name, seed, recipe_name, held_out, directory, model, external, data.testing,
                                sources))
    return rows


def write_table(rows: list[dict], reports_dir: Path | None = None) -> Path:
    """Write the adaptation table with its provenance to reports/adaptation.json (atomically), keeping the earlier rows
    of runs not measured again."""
    from helpers.provenance import provenance

    return write_measured_rows((reports_dir or config.REPORTS_DIR) / ADAPTATION_FILE, rows,
                               ("run", "source", STEP), config.PROJECT_ROOT,
                               minimum_images=MINIMUM_IMAGES, provenance=provenance())


def load_table(reports_dir: Path = config.REPORTS_DIR):
    """Return the adaptation rows (a DataFrame), or None when they were never measured."""
    import pandas as pd

    from helpers.files import read_measured_rows

    rows = read_measured_rows(reports_dir / ADAPTATION_FILE)
    return None if rows is None else pd.DataFrame(rows)


SHOWN = ("sensitivity", "specificity", "balanced accuracy")


def summary_table(table):
    """Return one row per model, recipe and source (the official split as a source): each figure with each step at
    prediction time, the mean over the seeds measured (their count in `seeds`)."""
    import pandas as pd

    keys = ["model", "recipe", "source"]
    official = (table.drop_duplicates(["run", STEP]).assign(source=config.OFFICIAL_TESTING)
                .rename(columns={"official test accuracy": "accuracy"}))
    figures = pd.concat([table, official[[*keys, "run", STEP, "accuracy"]]])
    wide = figures.pivot_table(index=keys, columns=STEP, values=[*SHOWN, "accuracy"], aggfunc="mean")
    wide = wide.reindex(columns=sorted(wide.columns, key=lambda column: (
        [*SHOWN, "accuracy"].index(column[0]), STEPS.index(column[1]))))
    wide.insert(0, ("seeds", ""), figures.groupby(keys)["run"].nunique())
    return wide.dropna(axis=1, how="all")


def changes(table) -> dict[str, dict[str, float]]:
    """Return, for each step but none, the mean change in points of each figure where the source was never trained on
    (the benchmark protocol's runs and the leave-one-source-out runs), over runs and sources, and of the official
    accuracy over runs."""
    unseen = table[table["held out"] != "none"]
    keys = ["run", "source"]
    before = unseen[unseen[STEP] == STEPS[0]].set_index(keys)
    found = {}
    for step in STEPS[1:]:
        after = unseen[unseen[STEP] == step].set_index(keys)
        if after.empty:
            continue
        found[step] = {name: float((after[name] - before[name]).mean() * 100) for name in SHOWN}
        official = after["official test accuracy"] - before["official test accuracy"]
        found[step]["official"] = float(official.groupby(level="run").first().mean() * 100)
    return found


def change_sentence(table) -> str:
    """Return what each step at prediction time changes where the source was never trained on, in one paragraph."""
    unseen = table[table["held out"] != "none"]
    if unseen.empty:
        return "No run was measured on a source it never trained on."
    runs, models = unseen["run"].nunique(), ", ".join(sorted(unseen["model"].unique()))
    parts = [f"{step}: sensitivity {moved['sensitivity']:+.1f}, specificity {moved['specificity']:+.1f}, balanced "
             f"accuracy {moved['balanced accuracy']:+.1f}, official split {moved['official']:+.1f}"
             for step, moved in changes(table).items()]
    return (f"On sources never trained on ({runs} runs: {models}), mean change in points against predicting as "
            f"trained — {'; '.join(parts)}.")


def _main(argv: list[str] | None = None) -> int:
    """Command line: measure flip averaging and adaptation to a series on the study's kept models."""
    interrupts.command_started()
    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.adaptation", description=_main.__doc__)
    parser.add_argument("--models", nargs="+", default=["rnn", "crnn", "sequencer", "cnn"])
    arguments = parser.parse_args(argv)
    try:
        rows = build_table(tuple(arguments.models), progress=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        return commands.stopped("nothing was written")
    print(f"wrote {config.shown_path(write_table(rows))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
