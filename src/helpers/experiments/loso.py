"""Leave-one-source-out: train with a whole external source (or one of its sequences) left out, measure on it.

`python -m helpers.experiments.loso` (`make loso`) trains, for each hold-out below and each model of MODELS, a recipe
(RECIPE unless told) without the held-out collections (seed SEED unless told, reusing a run folder trained with the
same settings and data), then measures the held-out source's *test* parts on both sides and writes reports/loso.json,
one row per (model, recipe, hold-out, source, seed). A row records a digest of what it measured, so a machine without
the run folders reuses the rows of the same settings and data instead of training again. It is the study's figure for
"a source absent from training".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import commands, config, interrupts
from helpers.files import read_measured_rows, write_measured_rows

LOSO_FILE = "loso.json"
RECIPE = "outlined"
# The recipes a table may hold, in the order it shows them.
RECIPES = ("both-sides", "outlined", "randomised")
SEED = config.DEFAULT_SEED
# The published default's kind and the specified model.
MODELS = ("sequencer", "rnn")


@dataclass(frozen=True)
class HoldOut:
    """A part of the external data left out of training: its collections, and the sources measured on it."""

    name: str
    collections: tuple[str, ...]
    sources: tuple[str, ...]

    @property
    def slug(self) -> str:
        """Return the hold-out's name as a folder name."""
        return config.folder_name(self.name)


def hold_outs(sets: tuple[config.ExternalSet, ...] = config.EXTERNAL_SETS) -> list[HoldOut]:
    """Return one hold-out per origin (every set it gave, all sequences), then one per further sequence of an origin
    that gives several (leave-one-sequence-out: the first sequence stays in training)."""
    found: list[HoldOut] = []
    origins = dict.fromkeys(spec.origin or spec.collection for spec in sets)
    for origin in origins:
        members = [spec for spec in sets if (spec.origin or spec.collection) == origin]
        sources = tuple(dict.fromkeys(spec.source_name or spec.collection for spec in members))
        collections = tuple(dict.fromkeys(spec.collection for spec in members))
        found.append(HoldOut(" + ".join(sources), collections, sources))
        sequences = list(dict.fromkeys(spec.sequence for spec in members if spec.sequence))
        for sequence in sequences[1:]:
            chosen = [spec for spec in members if spec.sequence == sequence]
            names = tuple(dict.fromkeys(spec.source_name or spec.collection for spec in chosen))
            found.append(HoldOut(f"{' + '.join(names)} (sequence held out)",
                                 tuple(dict.fromkeys(spec.collection for spec in chosen)), names))
    return found


def hold_out_settings(model_name: str, hold_out: HoldOut, epochs: int | None = None, seed: int = SEED,
                      image_size: int = config.DEFAULT_IMAGE_SIZE, recipe_name: str = RECIPE):
    """Return a recipe for a model without the held-out collections."""
    from helpers.modeling.recipes import recipe

    base = recipe(recipe_name, model_name)
    kept = tuple(name for name in base.external_collections if name not in hold_out.collections)
    return recipe(recipe_name, model_name, seed=seed, image_size=image_size, external_collections=kept,
                  epochs=epochs or config.get_profile("full").epochs)


def run_directory(model_name: str, hold_out: HoldOut, run_root: Path | None = None, seed: int = SEED,
                  recipe_name: str = RECIPE) -> Path:
    """Return the run folder of a model trained without a hold-out
    (runs/loso/<recipe>/<hold-out>/<model>-seed<seed>)."""
    return (run_root or config.runs_dir() / "loso") / recipe_name / hold_out.slug / f"{model_name}-seed{seed}"


def _finished(directory: Path, model_name: str, settings, loaded) -> bool:
    """Tell whether a run folder holds this model trained with these settings on this training data."""
    from helpers.modeling.run_folders import run_matches

    return run_matches(directory, model_name, settings, data_fingerprint=loaded.dataset.fingerprint,
                       external_fingerprint=loaded.external_fingerprint)


def is_finished(model_name: str, hold_out: HoldOut, arrays: tuple[Any, dict], epochs: int | None = None,
                run_root: Path | None = None, recipe_name: str = RECIPE, measured: list[dict] | None = None,
                seed: int = SEED) -> bool:
    """Tell whether the run of a model without a hold-out, on a loaded dataset and its external sets, is finished:
    its run folder is, or the measured rows (of reports/loso.json) hold its measurement."""
    from helpers.inputs.external import assemble_training_data

    settings = hold_out_settings(model_name, hold_out, epochs, seed, recipe_name=recipe_name)
    loaded = assemble_training_data(*arrays, True, settings.external_collections)
    identity = measurement_identity(model_name, hold_out, settings, loaded, arrays[1])
    return (any(row.get("measurement") == identity for row in measured or ())
            or _finished(run_directory(model_name, hold_out, run_root, seed, recipe_name), model_name, settings,
                         loaded))


def find_or_train(model_name: str, hold_out: HoldOut, data_dir: str | None, external_dir: str | None,
                  sets: tuple[config.ExternalSet, ...] = config.EXTERNAL_SETS, run_root: Path | None = None,
                  epochs: int | None = None, recipe_name: str = RECIPE,
                  arrays: tuple[Any, dict] | None = None, seed: int = SEED) -> Path:
    """Return the run folder of a model trained without a hold-out, training it unless it already exists; arrays
    (a loaded dataset and its external sets) stand in for the folders where given."""
    from helpers.inputs.external import assemble_training_data, load_training_data
    from helpers.modeling.training import train_model

    settings = hold_out_settings(model_name, hold_out, epochs, seed, recipe_name=recipe_name)
    if arrays is None:
        loaded = load_training_data(data_dir, settings.image_size, settings.preprocessing, True, external_dir,
                                    progress=False, sets=sets, collections=settings.external_collections)
    else:
        loaded = assemble_training_data(*arrays, True, settings.external_collections)
    directory = run_directory(model_name, hold_out, run_root, seed, recipe_name)
    if _finished(directory, model_name, settings, loaded):
        print(f"{model_name} without {hold_out.name}: reusing {config.shown_path(directory)}")
        return directory
    print(f"{model_name} without {hold_out.name}: training into {config.shown_path(directory)}", flush=True)
    train_model(model_name, loaded.training, loaded.validation, loaded.dataset.testing, directory, settings,
                data_fingerprint=loaded.dataset.fingerprint, overwrite=True,
                external_fingerprint=loaded.external_fingerprint, external=loaded.external)
    return directory


def measurement_identity(model_name: str, hold_out: HoldOut, settings, loaded, external: dict) -> str:
    """Return a digest of what a row measures: the model, its settings, the fingerprints of the data it trained on and
    of the held-out sets' test images among external (equal digests: the row can be reused without its run folder)."""
    import dataclasses
    import hashlib
    import json

    from helpers.inputs.external import external_fingerprint

    tests = {name: images for name, images in external.items() if images.spec.part == "test"}
    measured = {"model": model_name, "settings": dataclasses.asdict(settings), "data": loaded.dataset.fingerprint,
                "external": loaded.external_fingerprint,
                "held out": external_fingerprint(tests, hold_out.collections)}
    return hashlib.sha256(json.dumps(measured, sort_keys=True, default=str).encode()).hexdigest()


def evaluate_run(directory: Path, hold_out: HoldOut, external: dict, recipe_name: str = RECIPE,
                 identity: str | None = None) -> list[dict[str, Any]]:
    """Return one row per held-out source: a run's both-sides figures on that source's test parts, and its official
    test accuracy for reference (with the measurement's identity, where known)."""
    from helpers.inputs.sources import predict_sets, source_evaluation
    from helpers.modeling.run_folders import load_run

    run = load_run(directory)
    held_out = {name: images for name, images in external.items()
                if images.spec.part == "test" and images.spec.collection in hold_out.collections}
    test = run.predictions["test"]
    official = float((test["probabilities"].argmax(axis=1) == test["labels"]).mean())
    rows = []
    for source, summary in source_evaluation(predict_sets({"run": [run]}, held_out), held_out)["run"].items():
        row: dict[str, Any] = {"model": run.details["model"], "recipe": recipe_name, "held out": hold_out.name,
                                  "source": source,
                                  "seed": int(run.details["settings"]["seed"]),
                                  "run": config.shown_path(directory),
                                  "tumour images": summary["tumour_images"],
                                  "tumour-free images": summary["tumour_free_images"],
                                  "official test accuracy": official}
        if identity:
            row["measurement"] = identity
        for key in ("sensitivity", "specificity", "type_accuracy", "balanced_accuracy"):
            if key in summary:
                row[key.replace("_", " ")] = summary[key]["mean"]
                row[f"{key.replace('_', ' ')} ci"] = list(summary[key]["ci"])
        rows.append(row)
    return rows


def build_table(data_dir: str | None = None, external_dir: str | None = None, train: bool = True,
                models: tuple[str, ...] = MODELS, sets: tuple[config.ExternalSet, ...] = config.EXTERNAL_SETS,
                run_root: Path | None = None, epochs: int | None = None, only: tuple[str, ...] = (),
                recipe_name: str = RECIPE, measured: list[dict] | None = None,
                seeds: tuple[int, ...] = (SEED,)) -> list[dict]:
    """Train (or reuse) each model with each seed without each hold-out (all, or those named in only) and return the
    evaluated rows; rows measured before of the same model, settings and data (in measured) are reused without
    training or evaluating, and a run that was not trained (train=False and no folder) is left out."""
    from helpers.inputs.external import load_external_sets
    from helpers.modeling.recipes import recipe

    external = load_external_sets(external_dir, config.DEFAULT_IMAGE_SIZE, recipe(RECIPE).preprocessing, sets=sets,
                                  parts=("test",))
    rows = []
    for hold_out in hold_outs(sets):
        if only and hold_out.name not in only:
            continue
        for model_name in models:
            for seed in seeds:
                rows.extend(_measured_run(model_name, hold_out, seed, data_dir, external_dir, external, train, sets,
                                          run_root, epochs, recipe_name, measured))
    return rows


def _measured_run(model_name: str, hold_out: HoldOut, seed: int, data_dir: str | None, external_dir: str | None,
                  external: dict, train: bool, sets: tuple[config.ExternalSet, ...], run_root: Path | None,
                  epochs: int | None, recipe_name: str, measured: list[dict] | None) -> list[dict]:
    """Return the rows of one run without a hold-out: reused when measured before on the same settings and data, else
    evaluated from its run folder (trained first when train is set; none when there is no folder)."""
    from helpers.inputs.external import load_training_data

    settings = hold_out_settings(model_name, hold_out, epochs, seed, recipe_name=recipe_name)
    loaded = load_training_data(data_dir, settings.image_size, settings.preprocessing, True, external_dir,
                                progress=False, sets=sets, collections=settings.external_collections)
    identity = measurement_identity(model_name, hold_out, settings, loaded, external)
    earlier = [row for row in measured or () if row.get("measurement") == identity]
    if earlier:
        print(f"{model_name} seed {seed} without {hold_out.name}: reusing the rows measured on the same settings and "
              "data")
        return earlier
    directory = run_directory(model_name, hold_out, run_root, seed, recipe_name)
    if train:
        find_or_train(model_name, hold_out, data_dir, external_dir, sets, run_root, epochs, recipe_name,
                      arrays=(loaded.dataset, loaded.external), seed=seed)
    elif not directory.is_dir():
        return []
    matches = train or _finished(directory, model_name, settings, loaded)  # find_or_train made it match
    return evaluate_run(directory, hold_out, external, recipe_name, identity if matches else None)


def write_table(rows: list[dict], reports_dir: Path = config.REPORTS_DIR) -> Path:
    """Write the leave-one-source-out table with its provenance to reports/loso.json (atomically), keeping earlier
    rows of (model, hold-out) pairs not measured again, ordered by recipe, model and hold-out."""
    from helpers.provenance import provenance

    recipes = {name: index for index, name in enumerate(RECIPES)}
    held_out = {item.name: index for index, item in enumerate(hold_outs())}
    return write_measured_rows(reports_dir / LOSO_FILE, rows, ("model", "recipe", "held out", "seed"),
                               config.PROJECT_ROOT,
                               order=lambda row: (recipes.get(row["recipe"], len(recipes)), row["model"],
                                                  held_out.get(row["held out"], len(held_out)), row["seed"]),
                               seed=SEED, provenance=provenance(),
                               note="one row per run and source; each run trained without the held-out collections "
                                    "(train and test parts) and measured on their test parts")


def measured_rows(reports_dir: Path = config.REPORTS_DIR) -> list[dict]:
    """Return the rows of reports/loso.json as measured ([] when it was never written)."""
    return read_measured_rows(reports_dir / LOSO_FILE) or []


def load_table(reports_dir: Path = config.REPORTS_DIR):
    """Return the leave-one-source-out table (a DataFrame), or None when it was never measured."""
    import pandas as pd

    rows = read_measured_rows(reports_dir / LOSO_FILE)
    if rows is None:
        return None
    table = pd.DataFrame(rows)
    return table.drop(columns=[name for name in table.columns
                               if name in ("run", "measurement") or name.endswith(" ci")])


def _main(argv: list[str] | None = None) -> int:
    """Command line: train and measure each model without each source, writing reports/loso.json."""
    import argparse

    from helpers.inputs.images import DataError

    interrupts.command_started()
    parser = argparse.ArgumentParser(prog="python -m helpers.experiments.loso", description=_main.__doc__)
    commands.add_data_arguments(parser, external=True)
    parser.add_argument("--models", nargs="+", default=list(MODELS), help="models to train (default: %(default)s)")
    parser.add_argument("--hold-outs", nargs="+", default=(), choices=[item.name for item in hold_outs()],
                        help="default: every hold-out")
    parser.add_argument("--recipe", default=RECIPE, choices=RECIPES, help="training recipe (default: %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[SEED], help="training seeds (default: %(default)s)")
    parser.add_argument("--evaluate-only", action="store_true", help="measure the existing run folders, train none")
    arguments = parser.parse_args(argv)
    chosen = [item.name for item in hold_outs() if not arguments.hold_outs or item.name in arguments.hold_outs]
    try:
        for name in chosen:  # the table grows run by run, so that an interruption loses no finished figure
            for model_name in arguments.models:
                rows = build_table(arguments.data_dir, arguments.external_dir, train=not arguments.evaluate_only,
                                   models=(model_name,), only=(name,), recipe_name=arguments.recipe,
                                   measured=read_measured_rows(config.REPORTS_DIR / LOSO_FILE),
                                   seeds=tuple(arguments.seeds))
                print(f"{model_name} without {name}: written to {write_table(rows)}", flush=True)
    except (DataError, FileNotFoundError) as error:
        return commands.failed(error)
    except KeyboardInterrupt:
        return commands.stopped(commands.RUNS_KEPT)
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
