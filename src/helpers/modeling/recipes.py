"""Training recipes: the settings of one run, the named recipes and where a model departs from its recipe."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from helpers import config
from helpers.inputs.images import check_preprocessing
from helpers.modeling.callbacks import DATASET_VALIDATION_METRIC
from helpers.modeling.models import AUGMENTATION_WORDS, AUGMENTATIONS

# Compute precisions (Keras dtype policies). mixed_bfloat16 runs convolutions at about twice the speed on CPUs with
# AVX512-BF16 and on recent GPUs; mixed_float16 suits GPUs without bfloat16.
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def check_precision(precision: str) -> None:
    """Fail naming the known precisions unless precision is one of them."""
    config.check_choice("precision", precision, PRECISIONS)


SCHEDULES = ("plateau", "cosine")


@dataclass(frozen=True)
class TrainingSettings:
    """A training recipe; the defaults are the specification's (docs/design.md), see RECIPES for the project's."""

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 1e-3
    early_stopping_patience: int = 5
    early_stopping_metric: str = "val_loss"
    reduce_learning_rate_factor: float = 0.5
    reduce_learning_rate_patience: int = 3
    minimum_learning_rate: float = 1e-6
    checkpoint_metric: str = "val_accuracy"
    augmentation: str = "layers"  # "layers": the specified three Keras layers; "fused": one transform (models.py)
    image_size: int | None = None  # input pixels per side; None: the size of the data it is given
    precision: str = "float32"  # a Keras dtype policy of PRECISIONS: mixed_* computes in 16 bits, keeps float32 weights
    seed: int = config.DEFAULT_SEED
    verbose: int = 2
    # The mitigations against the source shortcut and the cosine schedule; the defaults keep the specification's.
    preprocessing: str = "resize"  # a PREPROCESSINGS name (helpers.inputs.images), alike in training and prediction
    external_training: bool = False  # the external sets' train parts join training and validation (split by patient)
    schedule: str = "plateau"  # "plateau": Adam, ReduceLROnPlateau, early stopping; "cosine": AdamW, warm-up, cosine
    weight_decay: float = 0.0  # AdamW's decoupled weight decay (cosine schedule only)
    clipnorm: float | None = None  # gradient clipping by norm
    label_smoothing: float = 0.0
    warmup_fraction: float = 0.05  # share of the steps with a linear warm-up (cosine schedule)
    ema_momentum: float = 0.0  # momentum of a moving average of the weights that is validated and saved (0: none)
    # The external collections whose train parts join training when external_training is on (docs/decisions.md)
    external_collections: tuple[str, ...] = config.TUMOUR_COLLECTIONS
    source_balance: bool = False  # weight each image so that every (source, tumour or not) group counts alike
    source_adversary: float = 0.0  # gradient-reversal strength of a class-conditional source adversary (0: none)
    outline_supervision: float = 0.0  # weight of the outline loss on images with a known outline (0: none)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            raise ValueError(f"epochs and batch_size must be >= 1 and learning_rate > 0: {self}")
        if not 0 <= self.ema_momentum < 1:
            raise ValueError(f"ema_momentum must be in [0, 1) (0: no moving average), not {self.ema_momentum}")
        check_precision(self.precision)
        check_preprocessing(self.preprocessing)
        config.check_choice("schedule", self.schedule, SCHEDULES)
        config.check_choice("augmentation", self.augmentation, AUGMENTATIONS)


# The recipes by name; why each is as it is, with its evidence: docs/decisions.md ("Recipes").
SPECIFIED_RECIPE = TrainingSettings()  # the specification's: the reference the benchmark compares against
PROJECT_RECIPE = dataclasses.replace(SPECIFIED_RECIPE, batch_size=128, learning_rate=2e-3, early_stopping_patience=10,
                                     early_stopping_metric="val_accuracy")
# Head crop and intensity standardisation, source-breaking augmentation, the external train parts mixed into training
# (30% of them, by patient, in validation), AdamW on a 5% warm-up and cosine decay, label smoothing 0.1.
ROBUST_RECIPE = dataclasses.replace(SPECIFIED_RECIPE, epochs=40, batch_size=64, learning_rate=2e-3,
                                    schedule="cosine", weight_decay=1e-4, clipnorm=1.0, label_smoothing=0.1,
                                    early_stopping_metric="val_accuracy", augmentation="robust",
                                    preprocessing="standardised", external_training=True)
DEMO_RECIPE = dataclasses.replace(ROBUST_RECIPE, epochs=12, batch_size=16, learning_rate=5e-4, augmentation="layers")
# Every external source on both sides of the decision, with source-balanced sample weights.
BOTH_SIDES_RECIPE = dataclasses.replace(ROBUST_RECIPE, external_collections=config.ALL_COLLECTIONS,
                                        source_balance=True)
# Every external source on both sides (no sample weights) and outline supervision: the study's recipe.
OUTLINED_RECIPE = dataclasses.replace(ROBUST_RECIPE, external_collections=config.ALL_COLLECTIONS,
                                      outline_supervision=1.0)
# The outlined recipe with each training image's texture randomised by a random convolution first: a candidate against
# the source shortcut, judged by leave-one-source-out (docs/decisions.md, "Random convolutions").
RANDOMISED_RECIPE = dataclasses.replace(OUTLINED_RECIPE, augmentation="randomised")
# The robust recipe's preprocessing and schedule with the specified augmentation, on the dataset's own images only, for
# 100 epochs, its checkpoint chosen on the dataset's own validation images: the rnn as specified trained on its own
# (docs/decisions.md, "Recipes").
DATASET_ONLY_RECIPE = dataclasses.replace(ROBUST_RECIPE, epochs=100, augmentation="layers", external_training=False,
                                          checkpoint_metric=DATASET_VALIDATION_METRIC)
# The demo's benchmark protocol: the demo recipe on the generated dataset's own images only, 8 epochs so that
# `make demo` stays near five minutes with both recipes (docs/decisions.md, "`make demo` in about five minutes").
DEMO_DATASET_ONLY_RECIPE = dataclasses.replace(DEMO_RECIPE, epochs=8, external_training=False,
                                               checkpoint_metric=DATASET_VALIDATION_METRIC)
RECIPES: dict[str, TrainingSettings] = {"specified": SPECIFIED_RECIPE, "project": PROJECT_RECIPE,
                                        "robust": ROBUST_RECIPE, "demo": DEMO_RECIPE, "both-sides": BOTH_SIDES_RECIPE,
                                        "outlined": OUTLINED_RECIPE, "randomised": RANDOMISED_RECIPE,
                                        "dataset-only": DATASET_ONLY_RECIPE,
                                        "demo-dataset-only": DEMO_DATASET_ONLY_RECIPE}
# Where one model departs from its recipe (docs/decisions.md, "Recipes"); the randomised recipe is the outlined one's
# variant and departs alike.
OUTLINED_CHANGES: dict[str, dict[str, Any]] = {"hybrid": {"precision": "mixed_bfloat16"}}
MODEL_CHANGES: dict[str, dict[str, dict[str, Any]]] = {
    "specified": {}, "project": {"cnn": {"batch_size": 64, "learning_rate": 1e-3}}, "robust": {}, "demo": {},
    "both-sides": {}, "outlined": OUTLINED_CHANGES, "randomised": OUTLINED_CHANGES, "dataset-only": {},
    "demo-dataset-only": {}}


def recipe(name: str, model_name: str | None = None, **changes: object) -> TrainingSettings:
    """Return a named recipe (specified, project), with the model's own departures and the given fields changed."""
    config.check_choice("recipe", name, RECIPES)
    return dataclasses.replace(RECIPES[name], **{**MODEL_CHANGES[name].get(model_name or "", {}), **changes})


def described(name: str) -> str:
    """Return a recipe's name with the images it trains on, as the reports write it."""
    images = "external train parts included" if RECIPES[name].external_training else "the dataset's images only"
    return f"`{name}` ({images})"


def recipes_sentence(profile: config.Profile) -> str:
    """Return which recipe each model of a profile trains with, and on which images (README's results)."""
    own = "".join(f"; the {model}: {described(name)}" for model, name in profile.model_recipes)
    return f"Recipe: {described(profile.recipe)}{own}."


def training_data_sentence(settings: dict) -> str:
    """Return what a run trained on and how, in words, from its run.json settings (the model card's Data section)."""
    from helpers.inputs.external import EXTERNAL_VALIDATION_FRACTION

    augmentation = AUGMENTATION_WORDS.get(settings["augmentation"], settings["augmentation"])
    epochs = settings["epochs"]
    sentence = f"Trained {epochs} epoch{'' if epochs == 1 else 's'} ({augmentation}) on the dataset's Training images"
    if not settings.get("external_training"):
        return sentence + " only."
    chosen = set(settings["external_collections"])
    real = [spec for spec in config.EXTERNAL_SETS if spec.part == "train" and spec.collection in chosen]
    sets = real or [spec for spec in config.PHANTOM_EXTERNAL_SETS if spec.part == "train" and spec.collection in chosen]
    labels = "; ".join(f"`{spec.collection}` ({spec.source_name}) as "
                       f"{'any tumour' if spec.truth == config.ANY_TUMOUR else spec.truth}" for spec in sets)
    extras = [f"an outline loss (weight {settings['outline_supervision']:g}) on every image with a tumour outline"
              if settings.get("outline_supervision") else "",
              "source-balanced sample weights" if settings.get("source_balance") else "",
              f"a source adversary (strength {settings['source_adversary']:g})" if settings.get("source_adversary")
              else ""]
    return (sentence + f" and the train parts of independent sets ({EXTERNAL_VALIDATION_FRACTION:.0%} of their "
            f"patients kept for validation): {labels}" + "".join(f"; {extra}" for extra in extras if extra)
            + ". No test part was trained on.")

