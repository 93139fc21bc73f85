"""helpers.inputs.duplicates: planted exact and near duplicates are found, within and across splits."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from helpers.inputs import data
from helpers.inputs.duplicates import audit_duplicates, perceptual_hashes


def test_perceptual_hash_ignores_small_changes_but_not_other_images(phantom_root):
    dataset = data.load_dataset(phantom_root, progress=False)
    image = dataset.training.images[0]
    brighter = np.clip(image.astype(int) + 6, 0, 255).astype(np.uint8)
    first, second, other = perceptual_hashes(np.stack([image, brighter, dataset.training.images[150]]))
    assert np.bitwise_count(first ^ second) <= 4
    assert np.bitwise_count(first ^ other) > 4


def test_planted_duplicates_are_found_and_the_clean_test_set_excludes_them(small_phantom_root):
    root = small_phantom_root
    training_glioma = sorted((root / "Training" / "glioma").iterdir())
    testing_glioma = sorted((root / "Testing" / "glioma").iterdir())
    # an exact copy of a training image placed in Testing, under the same class
    exact_copy = root / "Testing" / "glioma" / ("Te-copy" + training_glioma[0].suffix)
    shutil.copy(training_glioma[0], exact_copy)
    # a re-encoded, slightly brighter and resized copy of a test image placed in Training (a near duplicate)
    with Image.open(testing_glioma[0]) as source:
        altered = ImageEnhance.Brightness(source.convert("L")).enhance(1.05).resize((200, 200))
    altered.save(root / "Training" / "glioma" / "Tr-near.jpg", quality=80)
    # an exact copy within Training, under another class (a label conflict)
    shutil.copy(training_glioma[1], root / "Training" / "notumor" / ("Tr-conflict" + training_glioma[1].suffix))

    dataset = data.load_dataset(root, progress=False)
    audit = audit_duplicates(dataset)
    summary = audit.summary.set_index(["kind", "scope"])
    assert summary.loc[("exact", "across splits"), "groups"] == 1
    assert summary.loc[("exact", "within Training"), "groups"] == 1
    assert summary.loc[("exact", "within Training"), "groups_with_conflicting_labels"] == 1
    assert summary.loc[("near", "across splits"), "groups"] >= 2

    clean = audit.clean_test_mask()
    assert clean.shape == (len(dataset.testing),)
    leaked = set(dataset.testing.paths[~clean])
    assert {"Testing/glioma/" + exact_copy.name, testing_glioma[0].relative_to(root).as_posix()} <= leaked
    assert clean.sum() >= len(dataset.testing) - 3


def test_distinct_files_are_never_exact_duplicates(phantom_root):
    # phantoms share one template on purpose, so some are near duplicates; none is an exact copy
    audit = audit_duplicates(data.load_dataset(phantom_root, progress=False))
    exact = audit.summary[audit.summary["kind"] == "exact"]
    assert exact["groups"].sum() == 0
    assert not audit.pairs["exact"].any()
    assert audit.images["file_hash"].is_unique


def test_clean_flags_follow_any_subset_of_test_paths_and_examples_pair_the_splits(small_phantom_root):
    root = small_phantom_root
    source = sorted((root / "Training" / "meningioma").iterdir())[0]
    shutil.copy(source, root / "Testing" / "meningioma" / ("Te-copy" + source.suffix))
    dataset = data.load_dataset(root, progress=False)
    audit = audit_duplicates(dataset)
    copied = [path for path in dataset.testing.paths if "Te-copy" in path][0]
    others = [path for path in dataset.testing.paths if path != copied][:3]
    assert audit.clean_test_flags(np.array([others[0], copied, *others[1:]])).tolist() == [True, False, True, True]
    pixels = np.concatenate([dataset.training.images, dataset.testing.images])
    images, captions = audit.cross_split_examples(pixels, count=1000)
    assert len(images) == len(captions) and all(caption.startswith("Training/") for caption in captions[::2])
    assert all(caption.startswith("Testing/") for caption in captions[1::2])
    position = [index for index, caption in enumerate(captions) if "Te-copy" in caption][0]
    assert position % 2 == 1 and np.array_equal(images[position - 1], images[position])
    with pytest.raises(KeyError, match="not a Testing image"):
        audit.clean_test_flags(np.array(["Training/glioma/nothing.jpg"]))


def test_near_copies_of_reference_images_are_found_and_others_are_not(phantom_root):
    from helpers.inputs.duplicates import has_near_duplicate

    images = data.load_dataset(phantom_root, progress=False).training.images
    brighter = np.clip(images[:5].astype(int) + 6, 0, 255).astype(np.uint8)  # a contrast-changed copy
    found = has_near_duplicate(np.concatenate([brighter, images[-3:]]), images[:50])
    assert found.tolist() == [True] * 5 + [False] * 3
