"""DICOM files and series and NIfTI volumes as input to prediction (helpers.inputs.volumes), with files the tests
write."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel
import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, MRImageStorage, generate_uid

from helpers.inputs import volumes
from helpers.inputs.images import CorruptImageError, decode_image
from helpers.modeling import predict


def write_dicom(path: Path, pixels: np.ndarray, *, instance: int = 1, series: str = "1.2.3", slope: float = 1.0,
                intercept: float = 0.0, window: tuple[float, float] | None = None, photometric: str = "MONOCHROME2",
                syntax=ExplicitVRLittleEndian) -> Path:
    """Write an MR DICOM file of 16-bit pixels (one frame, or several along the first axis)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = syntax
    dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    dataset.SOPClassUID, dataset.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
    dataset.Modality, dataset.SeriesInstanceUID, dataset.SeriesNumber = "MR", series, 7
    dataset.InstanceNumber = instance
    frames = pixels if pixels.ndim == 3 else pixels[np.newaxis]
    if pixels.ndim == 3:
        dataset.NumberOfFrames = len(frames)
    dataset.Rows, dataset.Columns = frames.shape[1:]
    dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, photometric
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit, dataset.PixelRepresentation = 16, 16, 15, 0
    dataset.RescaleSlope, dataset.RescaleIntercept = slope, intercept
    if window is not None:
        dataset.WindowCenter, dataset.WindowWidth = window
    if syntax.is_compressed:  # a codestream no decoder accepts
        dataset.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 60])
        dataset["PixelData"].VR = "OB"
    else:
        dataset.PixelData = np.asarray(pixels, dtype=np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return path


def test_window_rescale_and_monochrome1_follow_the_file(tmp_path):
    ramp = np.tile(np.arange(0, 400, 4, dtype=np.uint16), (100, 1))  # 0..396
    plain = volumes.dicom_slices(write_dicom(tmp_path / "a.dcm", ramp, slope=2.0, intercept=-100.0,
                                             window=(300.0, 200.0)))
    values = np.asarray(plain[0].image, dtype=float)[0]  # stored 0..396 -> -100..692 -> window 200..400
    rescaled = ramp[0].astype(int) * 2 - 100
    assert values[rescaled <= 200].max() == 0 and values[rescaled >= 400].min() == 255
    inside = (rescaled > 210) & (rescaled < 390)
    assert np.all(np.diff(values[inside]) > 0)
    inverted = volumes.dicom_slices(write_dicom(tmp_path / "b.dcm", ramp, window=(200.0, 400.0),
                                                photometric="MONOCHROME1"))
    assert np.asarray(inverted[0].image)[0, 0] == 255 and np.asarray(inverted[0].image)[0, -1] < 10
    no_window = volumes.dicom_slices(write_dicom(tmp_path / "c.dcm", ramp))
    assert np.asarray(no_window[0].image).max() == 255 and plain[0].name == str(tmp_path / "a.dcm")


def test_a_multi_frame_file_is_one_slice_per_frame_and_a_nifti_volume_one_per_axial_slice(tmp_path):
    frames = np.random.default_rng(0).integers(0, 1000, (3, 32, 32)).astype(np.uint16)
    slices = volumes.dicom_slices(write_dicom(tmp_path / "multi.dcm", frames))
    assert [piece.name for piece in slices] == [f"{tmp_path / 'multi.dcm'}#{index}" for index in range(3)]
    assert {piece.series for piece in slices} == {str(tmp_path / "multi.dcm")}
    volume = np.zeros((40, 48, 5), dtype=np.float32)
    volume[10:20, 5:15, 2] = 100.0
    nibabel.save(nibabel.Nifti1Image(volume, np.eye(4)), tmp_path / "head.nii.gz")
    axial = volumes.read_slices(tmp_path / "head.nii.gz")
    assert len(axial) == 5 and axial[2].name.endswith("head.nii.gz#2")
    assert axial[2].image.size == (40, 48) and np.asarray(axial[2].image).max() == 255
    assert np.asarray(axial[0].image).max() == 0


def test_unreadable_volumes_end_in_one_line_naming_the_file(tmp_path):
    (tmp_path / "fake.dcm").write_bytes(b"not dicom at all")
    with pytest.raises(CorruptImageError, match=r"fake.dcm: not a readable DICOM file"):
        volumes.read_slices(tmp_path / "fake.dcm")
    compressed = write_dicom(tmp_path / "j2k.dcm", np.zeros((8, 8), np.uint16), syntax=JPEG2000Lossless)
    with pytest.raises(CorruptImageError, match=r"j2k.dcm: cannot decode its pixel data \(JPEG 2000"):
        volumes.read_slices(compressed)
    (tmp_path / "bad.nii").write_bytes(b"\0" * 10)
    with pytest.raises(CorruptImageError, match=r"bad.nii: not a readable NIfTI volume"):
        volumes.read_slices(tmp_path / "bad.nii")
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 2, 3), np.float32), np.eye(4)), tmp_path / "four.nii")
    with pytest.raises(CorruptImageError, match=r"four.nii: a 4-D NIfTI image"):
        volumes.read_slices(tmp_path / "four.nii")


def test_empty_all_nan_and_damaged_nifti_volumes_are_refused_in_one_line(tmp_path):
    nibabel.save(nibabel.Nifti1Image(np.zeros((64, 64, 0), np.float32), np.eye(4)), tmp_path / "empty.nii")
    with pytest.raises(CorruptImageError, match=r"empty.nii: an empty NIfTI volume \(shape \(64, 64, 0\)\)"):
        volumes.read_slices(tmp_path / "empty.nii")
    nibabel.save(nibabel.Nifti1Image(np.full((8, 8, 3), np.nan, np.float32), np.eye(4)), tmp_path / "nan.nii")
    with pytest.raises(CorruptImageError, match=r"nan.nii: a NIfTI volume with no finite values"):
        volumes.read_slices(tmp_path / "nan.nii")
    partly = np.arange(8 * 8 * 2, dtype=np.float32).reshape(8, 8, 2)
    partly[0, 0, 0] = np.nan
    nibabel.save(nibabel.Nifti1Image(partly, np.eye(4)), tmp_path / "partly.nii")
    assert len(volumes.read_slices(tmp_path / "partly.nii")) == 2  # a few NaN voxels are read as background
    nibabel.save(nibabel.Nifti1Image(np.ones((8, 8, 2), np.float32), np.eye(4)), tmp_path / "whole.nii.gz")
    damaged = bytearray((tmp_path / "whole.nii.gz").read_bytes())
    damaged[-8] ^= 0xFF  # the stored checksum no longer matches the data
    (tmp_path / "damaged.nii.gz").write_bytes(bytes(damaged))
    assert len(volumes.read_slices(tmp_path / "whole.nii.gz")) == 2
    with pytest.raises(CorruptImageError, match=r"damaged.nii.gz: not a readable NIfTI volume"):
        volumes.read_slices(tmp_path / "damaged.nii.gz")


def test_a_volume_that_fails_is_one_error_entry_and_the_other_files_are_predicted(saved_run, phantom_root, tmp_path,
                                                                                   monkeypatch):
    image = sorted((phantom_root / "Testing" / "glioma").iterdir())[0]
    nibabel.save(nibabel.Nifti1Image(np.zeros((64, 64, 0), np.float32), np.eye(4)), tmp_path / "empty.nii")
    empty, predicted = predict.predict_files([tmp_path / "empty.nii", image], saved_run.directory)
    assert "an empty NIfTI volume" in empty.error and predicted.error is None
    monkeypatch.setattr(volumes, "to_eight_bits", lambda pixels: pixels[99])  # a reader's own unexpected failure
    nibabel.save(nibabel.Nifti1Image(np.ones((8, 8, 2), np.float32), np.eye(4)), tmp_path / "ones.nii")
    failed, predicted = predict.predict_files([tmp_path / "ones.nii", image], saved_run.directory)
    assert failed.error.startswith(f"{tmp_path / 'ones.nii'}: cannot read (IndexError") and predicted.error is None


def test_a_dicom_series_folder_is_predicted_in_instance_order_with_a_summary(saved_run, phantom_root, tmp_path,
                                                                              capsys):
    series = tmp_path / "series"
    series.mkdir()
    phantoms = sorted((phantom_root / "Testing" / "glioma").iterdir())[:4]
    for instance, name in zip((3, 1, 4, 2), ("a", "b", "c", "d")):  # file names out of instance order
        pixels = decode_image(phantoms[instance - 1], 64).astype(np.uint16) * 4
        write_dicom(series / f"{name}.dcm", pixels, instance=instance)
    (series / "IM0005").write_bytes((series / "a.dcm").read_bytes())  # no suffix: found by its DICOM marker
    assert predict.main([str(series), "--model", str(saved_run.directory), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [Path(item["file"]).name for item in printed["predictions"]] == ["b.dcm", "d.dcm", "IM0005", "a.dcm",
                                                                            "c.dcm"]
    summary, = printed["series"]
    assert summary["slices"] == 5 and sum(summary["slices_per_class"].values()) == 5
    assert summary["at_slice"] in [item["file"] for item in printed["predictions"]]
    other = write_dicom(series / "other.dcm", np.zeros((64, 64), np.uint16) + 40, series="1.2.99")
    assert predict.main([str(series / "b.dcm"), str(other), "--model", str(saved_run.directory)]) == 0
    summaries = [line for line in capsys.readouterr().out.splitlines() if line.startswith("series ")]
    assert len(summaries) == 2 and "UID …1.2.99" in summaries[1], "two series of one folder are told apart"


def test_a_nifti_volume_gives_one_row_per_slice_named_by_index(saved_run, phantom_root, tmp_path, capsys):
    stack = np.stack([decode_image(file, 64) for file in sorted((phantom_root / "Testing" / "notumor")
                                                                         .iterdir())[:3]], axis=-1)
    nibabel.save(nibabel.Nifti1Image(np.rot90(stack, -1).astype(np.float32), np.eye(4)), tmp_path / "scan.nii.gz")
    results = predict.predict_files(tmp_path / "scan.nii.gz", saved_run.directory)
    assert [result.file for result in results] == [f"{tmp_path / 'scan.nii.gz'}#{index}" for index in range(3)]
    assert all(result.error is None and result.series == str(tmp_path / "scan.nii.gz") for result in results)
    assert predict.main([str(tmp_path / "scan.nii.gz"), "--model", str(saved_run.directory)]) == 0
    table = capsys.readouterr().out
    assert "scan.nii.gz#2" in table and "3 slices" in table
