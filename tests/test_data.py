"""helpers.inputs.data: locating, layout validation, decoding every mode and size, the cache, splits."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import config
from helpers.inputs import data
from helpers.inputs.images import CorruptImageError, decode_image


def test_locate_prefers_argument_then_environment_then_default(tmp_path, monkeypatch):
    argument, environment = tmp_path / "argument", tmp_path / "environment"
    argument.mkdir(), environment.mkdir()
    monkeypatch.setenv(config.DATA_DIR_VARIABLE, str(environment))
    assert data.locate_dataset(argument) == argument.resolve()
    assert data.locate_dataset() == environment.resolve()
    monkeypatch.delenv(config.DATA_DIR_VARIABLE)
    monkeypatch.setattr(config, "DEFAULT_DATA_DIR", tmp_path / "nowhere")
    with pytest.raises(data.DatasetNotFoundError, match="nowhere.*BRAIN_MRI_DATA_DIR"):
        data.locate_dataset()


def test_download_without_kagglehub_says_what_to_do(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def refuse_kagglehub(name, *args, **kwargs):
        if name == "kagglehub":
            raise ImportError("no kagglehub")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse_kagglehub)
    with pytest.raises(data.DatasetNotFoundError, match="kagglehub is not installed.*kaggle.com"):
        data.download_dataset(tmp_path / "target")


def test_download_failure_is_one_clear_message(tmp_path, monkeypatch):
    import kagglehub

    def fail(*args, **kwargs):
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(kagglehub, "dataset_download", fail)
    with pytest.raises(data.DatasetNotFoundError, match="download of .* failed \\(network is unreachable\\)"):
        data.download_dataset(tmp_path / "target")


def test_phantom_dataset_loads_with_counts_labels_and_uint8(phantom_root):
    dataset = data.load_dataset(phantom_root, image_size=64, progress=False)
    assert dataset.training.images.shape == (400, 64, 64)
    assert dataset.testing.images.shape == (120, 64, 64)
    assert dataset.training.images.dtype == np.uint8
    assert dataset.training.class_counts() == dict.fromkeys(config.CLASS_NAMES, 100)
    assert dataset.class_names == ("glioma", "meningioma", "notumor", "pituitary")
    # labels follow the folders: every path lies in its label's class folder
    for path, label in zip(dataset.testing.paths, dataset.testing.labels):
        assert path.split("/")[1] == config.CLASS_NAMES[label]
    assert not dataset.skipped


def test_phantom_files_mix_sizes_and_modes(phantom_root):
    modes, sizes = set(), set()
    for path in phantom_root.rglob("*.*"):
        with Image.open(path) as image:
            modes.add(image.mode)
            sizes.add(image.size)
    assert {"L", "RGB", "P", "RGBA"} <= modes
    assert len(sizes) >= 4


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "CMYK", "I;16", "I", "F", "1"])
def test_every_mode_decodes_to_the_same_greyscale(tmp_path, mode):
    gradient = np.tile(np.linspace(0, 255, 40).astype(np.uint8), (30, 1))
    source = Image.fromarray(gradient)
    if mode in ("I;16", "I", "F"):
        converted = Image.fromarray((gradient.astype(np.float64) * 257).astype(
            {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]))
        assert converted.mode == mode
        path = tmp_path / "image.tiff"
    else:
        converted = source.convert(mode)
        path = tmp_path / ("image.tiff" if mode in ("CMYK", "LA") else "image.png")
    converted.save(path)
    decoded = decode_image(path, 20)
    assert decoded.shape == (20, 20) and decoded.dtype == np.uint8
    expected = np.asarray(source.resize((20, 20), Image.Resampling.LANCZOS), dtype=np.int64)
    tolerance = 130 if mode == "1" else 3  # a 1-bit image keeps only black and white
    assert np.abs(decoded.astype(np.int64) - expected).max() <= tolerance


def test_resizing_is_antialiased(tmp_path):
    stripes = np.zeros((128, 128), np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: naive subsampling gives pure black or white
    Image.fromarray(stripes).save(tmp_path / "stripes.png")
    decoded = decode_image(tmp_path / "stripes.png", 32)
    assert 100 < decoded.mean() < 155 and decoded.std() < 20


def test_second_load_comes_from_cache_without_pickle(phantom_root):
    first = data.load_dataset(phantom_root, image_size=48, progress=False)
    second = data.load_dataset(phantom_root, image_size=48, progress=False)
    assert second.from_cache and second.fingerprint == first.fingerprint
    assert np.array_equal(first.training.images, second.training.images)
    cache_files = list(config.cache_dir().glob(f"mri-48px-{first.fingerprint[:20]}.npz"))
    assert len(cache_files) == 1
    with np.load(cache_files[0], allow_pickle=False) as stored:
        assert stored["images"].dtype == np.uint8
    assert not list(config.cache_dir().glob(".*.tmp"))  # nothing half-written left behind


def test_cache_is_rebuilt_when_a_file_changes(small_phantom_root):
    before = data.load_dataset(small_phantom_root, image_size=32, progress=False)
    target = small_phantom_root / before.testing.paths[0]
    with Image.open(target) as image:
        flipped = image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    flipped.save(target)
    os.utime(target, ns=(1, 1))  # a different stamp, even on a coarse-clock filesystem
    after = data.load_dataset(small_phantom_root, image_size=32, progress=False)
    assert not after.from_cache
    assert after.fingerprint != before.fingerprint
    assert not np.array_equal(after.testing.images[0], before.testing.images[0])


def test_missing_split_folder_is_named(small_phantom_root):
    shutil.rmtree(small_phantom_root / "Testing")
    with pytest.raises(data.DatasetLayoutError, match=r"Testing: missing split folder"):
        data.load_dataset(small_phantom_root, progress=False)


def test_missing_class_folder_is_named(small_phantom_root):
    shutil.rmtree(small_phantom_root / "Training" / "meningioma")
    with pytest.raises(data.DatasetLayoutError, match=r"Training/meningioma: missing class folder"):
        data.load_dataset(small_phantom_root, progress=False)


def test_empty_class_folder_is_named(small_phantom_root):
    for path in (small_phantom_root / "Testing" / "pituitary").iterdir():
        path.unlink()
    with pytest.raises(data.DatasetLayoutError, match=r"Testing/pituitary: class folder holds no images"):
        data.load_dataset(small_phantom_root, progress=False)


def test_unknown_class_folder_is_named(small_phantom_root):
    (small_phantom_root / "Training" / "astrocytoma").mkdir()
    with pytest.raises(data.DatasetLayoutError, match=r"Training/astrocytoma: unknown class folder"):
        data.load_dataset(small_phantom_root, progress=False)


def test_non_image_file_is_named_and_hidden_files_are_ignored(small_phantom_root):
    (small_phantom_root / "Training" / "glioma" / ".DS_Store").write_bytes(b"\0")
    data.validate_layout(small_phantom_root)
    (small_phantom_root / "Training" / "glioma" / "notes.txt").write_text("hello")
    with pytest.raises(data.DatasetLayoutError, match=r"glioma/notes.txt: not an image file"):
        data.load_dataset(small_phantom_root, progress=False)


def _corrupt(root: Path) -> Path:
    """Truncate one JPEG of a dataset and return its path."""
    victim = sorted((root / "Training" / "notumor").glob("*.jpg"))[0]
    victim.write_bytes(victim.read_bytes()[:300])
    return victim


def test_corrupt_image_is_an_error_naming_the_file(small_phantom_root):
    victim = _corrupt(small_phantom_root)
    with pytest.raises(CorruptImageError, match=rf"{victim.name}: cannot decode image"):
        data.load_dataset(small_phantom_root, progress=False)


def test_corrupt_image_can_be_skipped_and_is_reported(small_phantom_root):
    victim = _corrupt(small_phantom_root)
    dataset = data.load_dataset(small_phantom_root, on_error="skip", progress=False)
    assert [path for path, _ in dataset.skipped] == [victim.relative_to(small_phantom_root).as_posix()]
    assert len(dataset.training) == 15
    # the cached copy still refuses to load silently when errors are not to be skipped
    with pytest.raises(CorruptImageError, match=victim.name):
        data.load_dataset(small_phantom_root, progress=False)


def test_empty_file_is_an_error(small_phantom_root):
    victim = sorted((small_phantom_root / "Testing" / "glioma").iterdir())[0]
    victim.write_bytes(b"")
    with pytest.raises(CorruptImageError, match=victim.name):
        data.load_dataset(small_phantom_root, progress=False)


def test_bad_arguments_are_refused(phantom_root):
    with pytest.raises(ValueError, match="on_error"):
        data.load_dataset(phantom_root, on_error="ignore")
    with pytest.raises(ValueError, match="image_size"):
        data.load_dataset(phantom_root, image_size=0)


def test_validation_split_is_stratified_seeded_and_disjoint(phantom_root):
    dataset = data.load_dataset(phantom_root, progress=False)
    kept, validation = data.split_validation(dataset.training, fraction=0.25, seed=5)
    again_kept, again_validation = data.split_validation(dataset.training, fraction=0.25, seed=5)
    _, other_validation = data.split_validation(dataset.training, fraction=0.25, seed=6)
    assert len(kept) + len(validation) == len(dataset.training)
    assert not set(kept.paths) & set(validation.paths)
    assert validation.class_counts() == dict.fromkeys(config.CLASS_NAMES, 25)
    assert list(validation.paths) == list(again_validation.paths)
    assert list(validation.paths) != list(other_validation.paths)
    assert not set(validation.paths) & set(dataset.testing.paths)


def test_take_per_class_limits_each_class(phantom_root):
    dataset = data.load_dataset(phantom_root, progress=False)
    subset = data.take_per_class(dataset.training, 7, seed=1)
    assert subset.class_counts() == dict.fromkeys(config.CLASS_NAMES, 7)


def test_a_broken_link_in_a_class_folder_is_named(small_phantom_root):
    link = small_phantom_root / "Training" / "glioma" / "Tr-gl_9999.jpg"
    link.symlink_to(small_phantom_root / "gone.jpg")
    with pytest.raises(data.DatasetLayoutError, match=r"Tr-gl_9999.jpg: a broken link"):
        data.load_dataset(small_phantom_root, progress=False)


def test_a_link_loop_is_called_a_loop_not_a_broken_link(small_phantom_root):
    link = small_phantom_root / "Training" / "glioma" / "Tr-gl_9999.jpg"
    link.symlink_to(link)
    with pytest.raises(data.DatasetLayoutError, match=r"Tr-gl_9999.jpg: a link loop"):
        data.load_dataset(small_phantom_root, progress=False)


def test_a_test_class_folder_that_is_the_training_folder_is_refused(small_phantom_root):
    testing = small_phantom_root / "Testing" / "glioma"
    shutil.rmtree(testing)
    testing.symlink_to(small_phantom_root / "Training" / "glioma")
    with pytest.raises(data.DatasetLayoutError, match=r"Testing/glioma: resolves to .*Training/glioma.*separate"):
        data.load_dataset(small_phantom_root, progress=False)
    assert data._main(["check", "--data-dir", str(small_phantom_root)]) == 1


def test_check_command_reports_hidden_and_skipped_files_and_offers_to_skip(small_phantom_root, capsys):
    (small_phantom_root / "Training" / "glioma" / ".hidden.jpg").write_bytes(b"\0")
    victim = _corrupt(small_phantom_root)
    assert data._main(["check", "--data-dir", str(small_phantom_root)]) == 1
    printed = capsys.readouterr().err
    assert victim.name in printed and "--skip-corrupt" in printed and len(printed.strip().splitlines()) == 1
    assert data._main(["check", "--data-dir", str(small_phantom_root), "--skip-corrupt"]) == 0
    printed = capsys.readouterr().out
    assert "skipped 1 hidden entries" in printed and "skipped 1 undecodable images" in printed


def test_a_cache_folder_that_cannot_be_written_is_a_note_not_a_failure(small_phantom_root, tmp_path, monkeypatch,
                                                                       capsys):
    def refused(path, arrays):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setenv(config.CACHE_DIR_VARIABLE, str(tmp_path / "cache"))  # nothing cached yet: a write is tried
    monkeypatch.setattr(data, "_save_cache", refused)
    dataset = data.load_dataset(small_phantom_root, image_size=32, progress=False)
    assert len(dataset.training) == 16 and not dataset.from_cache
    assert "decoded images not cached (Permission denied)" in capsys.readouterr().err
