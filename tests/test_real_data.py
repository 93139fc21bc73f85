"""The real dataset ($BRAIN_MRI_DATA_DIR): counts, labels, every original decodes, and the cache."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import config
from helpers.inputs import data

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def real_dataset(real_data_root, tmp_path_factory):
    """The real dataset at 64x64, decoded from the originals into a cache folder of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(config.CACHE_DIR_VARIABLE, str(tmp_path_factory.mktemp("real-data-cache")))
        yield data.load_dataset(real_data_root, image_size=64, progress=False)


def test_counts_and_label_order(real_dataset):
    assert len(real_dataset.training) == 5712 and len(real_dataset.testing) == 1311
    assert real_dataset.training.class_counts() == {"glioma": 1321, "meningioma": 1339, "notumor": 1595,
                                                     "pituitary": 1457}
    assert real_dataset.testing.class_counts() == {"glioma": 300, "meningioma": 306, "notumor": 405,
                                                    "pituitary": 300}
    assert real_dataset.class_names == config.CLASS_NAMES
    for split in (real_dataset.training, real_dataset.testing):
        folders = np.array([path.split("/")[1] for path in split.paths])
        assert (folders == np.array(config.CLASS_NAMES)[split.labels]).all()


def test_every_original_decodes_to_uint8_greyscale(real_dataset):
    assert not real_dataset.skipped
    assert real_dataset.training.images.shape == (5712, 64, 64)
    assert real_dataset.testing.images.shape == (1311, 64, 64)
    assert real_dataset.training.images.dtype == np.uint8
    # no image decoded to a blank: every one has contrast
    every = np.concatenate([real_dataset.training.images, real_dataset.testing.images])
    assert (every.reshape(len(every), -1).std(axis=1) > 5).all()


def test_the_cached_load_reads_no_image(real_dataset, real_data_root, monkeypatch):
    assert not real_dataset.from_cache

    def refuse(*args, **kwargs):
        raise AssertionError("the cached load decoded or re-hashed an image")

    monkeypatch.setattr(data, "_decode_all", refuse)
    monkeypatch.setattr(data, "_hash_file", refuse)
    cached = data.load_dataset(real_data_root, image_size=64, progress=False)
    assert cached.from_cache
    assert cached.fingerprint == real_dataset.fingerprint
    assert np.array_equal(cached.testing.images, real_dataset.testing.images)
