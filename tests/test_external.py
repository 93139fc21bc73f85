"""External sets, the shared preprocessing, the partial-label loss, saliency and the pointing score (issue 12)."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from helpers import config, evaluation
from helpers.analysis import explain
from helpers.inputs import data, external
from helpers.inputs.images import decode_image, prepare_image, prepare_mask
from helpers.inputs.synthetic import make_phantom_external_sets
from helpers.modeling import losses, models, predict, recipes, run_folders, training


@pytest.fixture(scope="module")
def external_root(tmp_path_factory):
    """Generated stand-ins of the external sets: 12 images per part of each set, glioma patients of 5 slices."""
    return make_phantom_external_sets(tmp_path_factory.mktemp("external") / "sets", per_part=12, seed=5)


def test_external_folder_is_found_from_argument_then_variable_and_absent_means_not_evaluated(
        external_root, tmp_path, monkeypatch):
    monkeypatch.setattr(config, "DEFAULT_EXTERNAL_DIR", tmp_path / "absent")
    monkeypatch.delenv(config.EXTERNAL_DIR_VARIABLE, raising=False)
    assert external.locate_external() is None and external.load_external_sets() == {}
    monkeypatch.setenv(config.EXTERNAL_DIR_VARIABLE, str(external_root))
    assert external.locate_external() == external_root
    assert external.locate_external(tmp_path) == tmp_path.resolve()
    with pytest.raises(external.ExternalSetError, match="no-such-folder: no external-data folder"):
        external.locate_external(tmp_path / "no-such-folder")


def test_generated_external_sets_load_with_aligned_masks_labels_and_patients(external_root):
    sets = external.load_external_sets(external_root, 64, "standardised", sets=config.PHANTOM_EXTERNAL_SETS)
    assert sorted(sets) == sorted(spec.name for spec in config.PHANTOM_EXTERNAL_SETS)
    tumour, glioma = sets["phantom-tumour/train"], sets["phantom-glioma/test"]
    assert tumour.images.shape == (12, 64, 64) and tumour.masks.shape == (12, 64, 64)
    assert set(tumour.labels) == {config.ANY_TUMOUR_LABEL} and set(glioma.labels) == {0}
    assert all(mask.any() for mask in tumour.masks) and all(mask.any() for mask in glioma.masks)
    assert len(set(glioma.groups)) == 3 and len(set(tumour.groups)) == 12
    brightness_inside = np.mean([image[mask].mean() for image, mask in zip(glioma.images, glioma.masks)])
    assert brightness_inside > glioma.images[glioma.images > 0].mean(), "the masks sit on the (bright) tumours"
    kept, held_out = external.split_external(sets["phantom-glioma/train"], fraction=0.34)
    assert not set(kept.groups) & set(held_out.groups) and len(kept) + len(held_out) == 12
    with pytest.raises(ValueError, match="only train parts"):
        external.split_external(glioma)
    first = external.load_external_sets(external_root, 64, "standardised", sets=config.PHANTOM_EXTERNAL_SETS, first=5)
    for name, images in first.items():  # a quick profile decodes only the images it takes
        taken = sets[name].take(np.arange(5))
        assert len(images) == 5 and np.array_equal(images.images, taken.images), name
        assert np.array_equal(images.masks, taken.masks) and list(images.paths) == list(taken.paths), name


def test_external_layout_problems_name_the_path(external_root, tmp_path):
    spec = config.ExternalSet("broken/train", "broken/train", config.ANY_TUMOUR, "train", "broken/outlines.json", "x")
    (tmp_path / "broken" / "train").mkdir(parents=True)
    with pytest.raises(external.ExternalSetError, match="outlines.json: tumour outlines of broken/train not found"):
        external.load_external_set(spec, tmp_path)
    (tmp_path / "broken" / "outlines.json").write_text("[1, 2]")
    (tmp_path / "broken" / "train" / "notes.txt").write_text("x")
    with pytest.raises(external.ExternalSetError, match="notes.txt: not an image file"):
        external.load_external_set(spec, tmp_path)
    (tmp_path / "broken" / "train" / "notes.txt").unlink()
    (external_root / "phantom-tumour" / "train" / "ytrain000.jpg").read_bytes()
    (tmp_path / "broken" / "train" / "a.jpg").write_bytes(
        (external_root / "phantom-tumour" / "train" / "ytrain000.jpg").read_bytes())
    with pytest.raises(external.ExternalSetError, match="not a VGG Image Annotator file"):
        external.load_external_set(spec, tmp_path)
    with pytest.raises(ValueError, match="part must be 'train' or 'test'"):
        config.ExternalSet("x", "x", "glioma", "validation", "x", "x")


@pytest.mark.slow
def test_prediction_and_training_turn_a_file_into_the_same_array(phantom_root, tmp_path):
    dataset = data.load_dataset(phantom_root, image_size=64, progress=False, preprocessing="standardised")
    paths = [phantom_root / relative for relative in dataset.testing.paths[:6]]
    direct = np.stack([decode_image(path, 64, "standardised") for path in paths])
    assert np.array_equal(direct, dataset.testing.images[:6])
    assert not np.array_equal(direct, np.stack([decode_image(path, 64) for path in paths]))
    model = models.build_model("rnn", 64, augmentation="robust", seed=1)
    model.save(tmp_path / "model.keras")
    (tmp_path / "model.json").write_text(json.dumps({"class_names": list(config.CLASS_NAMES), "image_size": 64,
                                                     "preprocessing": "standardised"}))
    predicted = predict.predict_files(paths, tmp_path / "model.keras")
    expected = model.predict(dataset.testing.images[:6, ..., None], verbose=0)
    assert np.allclose([[item.probabilities[name] for name in config.CLASS_NAMES] for item in predicted], expected,
                       atol=1e-6)


def test_head_crop_fills_the_frame_and_standardises_intensity():
    pixels = np.zeros((200, 300), np.uint8)
    pixels[50:150, 100:180] = np.linspace(40, 120, 80).astype(np.uint8)  # a dim "head" off centre, in a wide frame
    pixels[90:110, 130:150] = 200
    image, box = prepare_image(data.Image.fromarray(pixels), 32, "standardised")
    assert box[2] - box[0] == box[3] - box[1] and box[0] <= 100 and box[2] >= 180
    assert image.max() == 255 and (image > 0).mean() > 0.5
    mask = np.zeros_like(pixels, bool)
    mask[90:110, 130:150] = True
    cut = prepare_mask(mask, box, 32)
    assert cut.sum() > 4 and image[cut].mean() > image[~cut & (image > 0)].mean() + 80, "the mask is on the block"


def test_partial_label_loss_and_accuracy_accept_any_tumour_class():
    probabilities = np.array([[0.7, 0.1, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6], [0.1, 0.1, 0.7, 0.1]], np.float32)
    labels = np.array([0, config.ANY_TUMOUR_LABEL, config.ANY_TUMOUR_LABEL])
    loss = losses.PartialLabelCrossentropy(reduction=None)(labels, probabilities)
    assert np.allclose(keras.ops.convert_to_numpy(loss), -np.log([0.7, 0.8, 0.3]), atol=1e-5)
    assert np.allclose(keras.ops.convert_to_numpy(losses.partial_label_metric(labels, probabilities)), [1, 1, 0])
    # saved models name the metric as they always did
    assert keras.saving.get_registered_object("helpers>partial_label_accuracy") is losses.partial_label_metric
    assert evaluation.partial_label_accuracy(labels, probabilities) == pytest.approx(2 / 3)


def test_both_sides_summary_gives_sensitivity_specificity_type_and_balanced_accuracy():
    no_tumour = config.CLASS_NAMES.index("notumor")
    tumours = [np.eye(4)[[0, 0, 1, no_tumour]], np.eye(4)[[0, no_tumour, 0, no_tumour]]]
    free = [np.eye(4)[[no_tumour, 0]], np.eye(4)[[no_tumour, no_tumour]]]
    summary = evaluation.both_sides_summary(tumours, free, "glioma", resamples=200)
    assert summary["sensitivity"]["per_seed"] == [0.75, 0.5] and summary["sensitivity"]["mean"] == pytest.approx(0.625)
    assert summary["type_accuracy"]["per_seed"] == [0.5, 0.5]
    assert summary["specificity"]["per_seed"] == [0.5, 1.0]
    assert summary["balanced_accuracy"]["per_seed"] == [0.625, 0.75]
    low, high = summary["balanced_accuracy"]["ci"]
    assert 0 <= low <= 0.6875 <= high <= 1 and summary["seeds"] == 2
    assert summary["tumour_free_predicted_share"]["glioma"] == pytest.approx(0.25)
    one_side = evaluation.both_sides_summary(tumours[:1], None, config.ANY_TUMOUR, resamples=10)
    assert "type_accuracy" not in one_side and "specificity" not in one_side and "balanced_accuracy" not in one_side
    per_image = evaluation.both_sides_summary(tumours[:1], None, np.array([0, 1, 1, 3]), resamples=10)
    assert per_image["type_accuracy"]["per_seed"] == [0.5]


def test_pointing_score_on_masks_with_a_known_answer():
    masks = np.zeros((4, 16, 16), bool)
    masks[:, 4:8, 4:8] = True
    masks[3] = False  # no outline: left out
    maps = np.zeros((4, 16, 16))
    maps[0, 5, 5] = 1.0  # inside
    maps[1, 12, 12] = 1.0  # outside
    maps[2, 7, 7] = 1.0  # inside, on the edge
    score = explain.pointing_score(maps, masks)
    assert score == {"images": 3, "pointing_score": pytest.approx(2 / 3), "chance": pytest.approx(16 / 256)}


def test_occlusion_finds_the_region_a_model_reads():
    images = np.full((3, 32, 32), 100, np.uint8)

    def predict(batch):  # the tumour score is the brightness of one patch
        score = batch[:, 20:28, 4:12, 0].mean(axis=(1, 2)) / 255.0
        return np.stack([score / 3, score / 3, 1 - score, score / 3], axis=1)

    maps = explain.occlusion_maps(predict, images, patch=8, stride=4)
    mask = np.zeros((3, 32, 32), bool)
    mask[:, 20:28, 4:12] = True
    assert maps.shape == (3, 32, 32) and explain.pointing_score(maps, mask)["pointing_score"] == 1.0


def test_occlusion_sends_its_copies_in_few_calls_with_the_same_maps():
    images = np.random.default_rng(2).integers(0, 255, (3, 32, 32), dtype=np.uint8)
    calls = []

    def predict(batch):  # a tumour score that depends on every pixel, differently per position
        calls.append(len(batch))
        score = (batch[..., 0].astype(np.float64) * np.linspace(0, 1, 32 * 32).reshape(32, 32)).mean(axis=(1, 2))
        return np.stack([score, score, 255 - score, score], axis=1) / (255 + 2 * score[:, None])

    one_at_a_time = explain.occlusion_maps(predict, images, images_per_call=3)
    assert calls == [3] + [3] * 49, "the original images, then one corner (3 copies) per call"
    calls.clear()
    batched = explain.occlusion_maps(predict, images, images_per_call=60)
    assert calls == [3] + [60] * 2 + [27], "49 corners, 20 per call"
    assert np.array_equal(batched, one_at_a_time)


def test_grad_cam_maps_a_convolutional_model_and_refuses_the_row_reader():
    cnn = models.build_model("cnn", 32, seed=0)
    maps = explain.grad_cam(cnn, np.random.default_rng(0).integers(0, 255, (2, 32, 32), dtype=np.uint8))
    assert maps.shape == (2, 32, 32) and maps.min() >= 0 and maps.max() <= 1
    assert explain.last_convolution_layer(models.build_model("rnn", 32)) is None
    with pytest.raises(ValueError, match="no 2-D convolution"):
        explain.grad_cam(models.build_model("rnn", 32), np.zeros((1, 32, 32)))


def test_acquisition_augmentation_changes_images_only_in_training():
    layer = models.RandomAcquisition(seed=3)
    images = np.random.default_rng(1).integers(0, 255, (4, 16, 16, 1)).astype("float32")
    assert np.array_equal(keras.ops.convert_to_numpy(layer(images, training=False)), images)
    changed = keras.ops.convert_to_numpy(layer(images, training=True))
    assert not np.allclose(changed, images) and changed.min() >= 0 and changed.max() <= 255


def test_plane_estimate_and_source_probe_on_clear_cases():
    generator = np.random.default_rng(0)
    symmetric = generator.integers(0, 255, (6, 32, 16)).astype(np.uint8)
    symmetric = np.concatenate([symmetric, symmetric[:, :, ::-1]], axis=2)
    symmetric = np.concatenate([symmetric[:, :16], symmetric[:, :16][:, ::-1]], axis=1)
    lopsided = np.zeros((6, 32, 32), np.uint8)
    lopsided[:, :, :10] = 200
    assert list(explain.estimate_planes(symmetric)) == ["axial"] * 6
    assert list(explain.estimate_planes(lopsided)) == ["sagittal"] * 6
    probe = explain.source_probe({"dark": generator.integers(0, 60, (30, 32, 32)),
                                  "bright": generator.integers(150, 255, (30, 32, 32))}, folds=3)
    assert probe["balanced_accuracy"] == 1.0 and probe["chance"] == 0.5


@pytest.mark.slow
def test_robust_recipe_trains_on_the_external_train_parts_and_selects_on_them(phantom_root, external_root, tmp_path):
    settings = recipes.recipe("robust", "rnn", epochs=1, batch_size=64, image_size=64, verbose=0)
    loaded = external.load_training_data(phantom_root, 64, "standardised", True, external_root, progress=False,
                                         sets=config.PHANTOM_EXTERNAL_SETS, collections=settings.external_collections)
    from_external = np.char.startswith(loaded.training.paths.astype(str), external.PATH_PREFIX)
    held_out = np.char.startswith(loaded.validation.paths.astype(str), external.PATH_PREFIX)
    assert from_external.sum() + held_out.sum() == 24 and held_out.sum() > 0
    assert config.ANY_TUMOUR_LABEL in loaded.training.labels and "test" not in "".join(loaded.training.paths[
        from_external])
    run = training.train_model("rnn", loaded.training, loaded.validation, None, tmp_path / "run", settings,
                               data_fingerprint=loaded.dataset.fingerprint,
                               external_fingerprint=loaded.external_fingerprint)
    reloaded = run_folders.load_run(run.directory)
    assert reloaded.details["external_fingerprint"] == loaded.external_fingerprint
    assert json.loads((run.directory / "labels.json").read_text())["preprocessing"] == "standardised"
    validation = reloaded.predictions["validation"]
    assert run.history["val_accuracy"].max() == pytest.approx(
        evaluation.partial_label_accuracy(validation["labels"], validation["probabilities"]), abs=1e-6)
    with pytest.raises(external.ExternalSetError, match="none were found"):
        external.load_training_data(phantom_root, 64, "standardised", True, external_root, progress=False)
