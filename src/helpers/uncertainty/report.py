"""The uncertainty sentences of README and the model card, from notebook 07's record in metrics.json."""

from __future__ import annotations

from helpers.metrics_record import Uncertainty
from helpers.uncertainty.conformal import GUARANTEE, NO_FIT_LEVEL
from helpers.uncertainty.fitting import judged_targets
from helpers.uncertainty.novelty import VALIDATION_FLAG_RATE

FALLBACK_CHECKS = ("a flag means \"look twice\", its absence proves nothing: this model ships no uncertainty record "
                   "(notebook 07 was not run), so only the size, contrast and confidence checks apply.")


def measured_figures(metrics: dict, model_name: str) -> dict | None:
    """Return notebook 07's figures of one shipped model, or None when they were not measured."""
    return Uncertainty.read(metrics).models.get(model_name)


def _far_and_near(measured: dict) -> tuple[str, str]:
    """Return the outlier kinds' flagged shares as text: all kinds, and the kind flagged least ("" when every kind is
    flagged alike)."""
    outliers = sorted(measured["outliers"], key=lambda row: row["flagged"])
    every = ", ".join(f"{row['kind']} {row['flagged']:.0%}" for row in measured["outliers"])
    return every, "" if outliers[0]["flagged"] == outliers[-1]["flagged"] else outliers[0]["kind"]


def _statistics_clause(measured: dict) -> str:
    """Return the image-statistics detector's part of the flag's definition ("" for figures measured without it)."""
    threshold = measured.get("statistics threshold")
    return "" if threshold is None else (f", or a mean distance of the input's image statistics (intensity histogram, "
                                         f"radial profile, gradients and their orientation) to its five nearest "
                                         f"training images' over {threshold:.1f}")


def temperature_kept(measured: dict) -> bool:
    """Tell whether a model ships its fitted temperature (a record written before the check always did)."""
    return measured.get("calibration", {}).get("kept", True)


def calibration_sentence(measured: dict) -> str:
    """Return how the shipped probabilities were calibrated: the temperature kept, or the identity and why."""
    if temperature_kept(measured):
        return (f"Probabilities are temperature-scaled (temperature {measured['temperature']:.2f}, fitted on the "
                f"dataset's own validation images).")
    calibration = measured["calibration"]
    return (f"Probabilities ship uncalibrated: the temperature fitted on validation "
            f"({calibration['fitted temperature']:.2f}) made the calibration error on the other validation half worse "
            f"({calibration['validation ece before']:.1%} → {calibration['validation ece after']:.1%}).")


def input_checks_markdown(metrics: dict, model_name: str) -> str:
    """Return the model card's "Input checks" section body for the default model, from measured figures."""
    measured = measured_figures(metrics, model_name)
    basic = ("`brain-mri-predict` flags an input (a `flags` field in its JSON, a column in its table; exit status 3 "
             "with `--strict`) when it is smaller than 32 pixels on a side, nearly constant, unlike the training "
             "images, or fits no class of its prediction set; its answer is then withheld. ")
    if measured is None:
        return basic + FALLBACK_CHECKS
    official = measured["rows"][0]
    external = "; ".join(f"{row['images']} {row['unfamiliar']:.0%}" for row in measured["rows"][1:])
    every, least = _far_and_near(measured)
    sets = ", ".join(f"{key[len('coverage '):]} {value:.1%}" for key, value in official.items()
                     if key.startswith("coverage "))
    return (basic + f"\"Unlike the training images\" means a {measured['method']} novelty score (on the penultimate "
            f"features of `{model_name}`) over {measured['threshold']:.1f}{_statistics_clause(measured)}, "
            f"thresholds set on validation images so that together they flag at most {VALIDATION_FLAG_RATE:.0%} of "
            f"images like them (with {GUARANTEE:.0%} probability over the validation draw). Measured: "
            f"{official['unfamiliar']:.1%} of the official Testing images flagged as unlike the training images; "
            f"external test parts: {external or 'none'}; generated outliers: {every}"
            f"{f' (the least caught: {least})' if least else ''}.\n\n"
            f"{calibration_sentence(measured)} The expected calibration error on official Testing goes from "
            f"{official['ece before']:.1%} to {official['ece after']:.1%}. Each answer comes with a "
            f"{measured['level']:.0%} conformal prediction set (class-conditional, calibrated on the dataset's own "
            f"validation images used for nothing else, each class reaching the level on nine calibration draws in "
            f"ten; `--level` changes it) that always holds the predicted class: "
            f"on official Testing it holds the true class for {official['coverage']:.1%} of the images (per class: "
            f"{sets}), {official['mean set size']:.2f} classes on average; an image no class fits "
            f"(an empty set even at the {NO_FIT_LEVEL:.0%} level: {official['empty sets']:.1%}) is flagged. On other "
            f"sources the images are not exchangeable with the calibration images and coverage falls (per source: "
            f"`reports/{Uncertainty.NOTEBOOK}.html`). "
            f"A flagged answer is shown withheld (`(class?)` in the table, `answer_withheld` in the JSON). "
            f"A flag means \"look twice\"; its absence proves nothing.\n\nUncertainty targets: "
            + "; ".join(f"{row['target']}: {row['measured']}, {'met' if row['met'] else 'missed'}"
                        for row in judged_targets(measured)) + ".")


def readme_sentence(metrics: dict, model_name: str) -> str:
    """Return README's one paragraph on what a user gains by honouring the flags and sets, or "" if not measured."""
    measured = measured_figures(metrics, model_name)
    if measured is None:
        return ""
    official = measured["rows"][0]
    curve = {round(point["coverage"], 2): point["accuracy"] for point in official["risk coverage"]}
    return (f"**Uncertainty** (`{model_name}`, official Testing; `reports/{Uncertainty.NOTEBOOK}.html`): calibrated "
            f"probabilities{'' if temperature_kept(measured) else ' (left uncalibrated)'} "
            f"(calibration error {official['ece before']:.1%} → {official['ece after']:.1%}); a "
            f"{measured['level']:.0%} prediction set holds the true class for {official['coverage']:.1%} of images "
            f"({official['mean set size']:.2f} classes on average, always holding the answer); "
            f"{official['flagged']:.1%} are flagged (unlike the training images, or no class fits) and their answer "
            f"withheld. Answering only the 90% most confident images raises accuracy from "
            f"{curve[1.0]:.1%} to {curve[0.9]:.1%}.")
