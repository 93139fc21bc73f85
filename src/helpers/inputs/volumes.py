"""DICOM files and series and NIfTI volumes as the 2-D greyscale slices brain-mri-predict classifies.

Training stays on 2-D images; these readers turn what people hold (DICOM, NIfTI) into 8-bit slices that then go
through the same preparation as any image file. A 3-D model, and series other than stacks of 2-D slices, are not
supported.
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from helpers.inputs.images import CorruptImageError

DICOM_SUFFIXES = (".dcm", ".dicom")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
# A robust window where a DICOM file gives none, and for NIfTI volumes: these percentiles of the nonzero pixels.
WINDOW_PERCENTILES = (1.0, 99.0)


@dataclass(frozen=True)
class Slice:
    """One 2-D slice to classify: its name ("file" or "file#index"), the series it belongs to (None for a plain
    image) and its 8-bit greyscale pixels."""

    name: str
    series: str | None
    image: Image.Image


def has_dicom_marker(path: Path) -> bool:
    """Tell whether a file carries the DICOM preamble's "DICM" marker at byte 128."""
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def is_dicom(path: str | os.PathLike) -> bool:
    """Tell whether a path names a DICOM file: a .dcm/.dicom suffix or the DICOM marker."""
    path = Path(path)
    return path.suffix.lower() in DICOM_SUFFIXES or (path.is_file() and has_dicom_marker(path))


def is_nifti(path: str | os.PathLike) -> bool:
    """Tell whether a path names a NIfTI volume (.nii or .nii.gz)."""
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def is_volume(path: str | os.PathLike) -> bool:
    """Tell whether a path is read by this module (DICOM or NIfTI) rather than as an image file."""
    return is_nifti(path) or is_dicom(path)


def to_eight_bits(pixels: np.ndarray, centre: float | None = None, width: float | None = None) -> np.ndarray:
    """Map pixel values to 0-255 through a window: the given centre and width, else the WINDOW_PERCENTILES of the
    nonzero pixels (all pixels when none is nonzero; one value alone maps to white)."""
    pixels = np.asarray(pixels, dtype=np.float64)
    if centre is not None and width is not None and width > 0:
        low, high = centre - width / 2.0, centre + width / 2.0
    else:
        values = pixels[pixels != 0] if np.any(pixels != 0) else pixels.ravel()
        low, high = np.percentile(values, WINDOW_PERCENTILES)
    if high <= low:
        low = high - 1.0
    return (np.clip((pixels - low) / (high - low), 0.0, 1.0) * 255.0).round().astype(np.uint8)


def _first(value) -> float | None:
    """Return the first number of a DICOM value that may hold several (window centre, width), or None."""
    if value is None:
        return None
    try:
        return float(value[0]) if not isinstance(value, (int, float)) and len(value) else float(value)
    except (TypeError, ValueError):
        return None


def _read_dicom(path: Path, pixels: bool = True):
    """Read a DICOM file, failing with one line naming it when it is not DICOM."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=not pixels)
    except (InvalidDicomError, OSError, ValueError, EOFError) as error:
        raise CorruptImageError(f"{path}: not a readable DICOM file ({str(error) or type(error).__name__})") from None


def series_label(path: Path, dataset) -> str:
    """Return how a DICOM slice's series is named in the summary (and told apart from the others): its folder, its
    modality and series description or number, and the end of its series UID."""
    description = str(dataset.get("SeriesDescription", "") or "").strip()
    number = dataset.get("SeriesNumber", None)
    tag = description or (f"series {number}" if number is not None else "series")
    modality = str(dataset.get("Modality", "") or "").strip()
    uid = str(dataset.get("SeriesInstanceUID", "") or "")
    return f"{path.parent}/ ({' '.join(filter(None, [modality, tag]))}{f', UID …{uid[-6:]}' if uid else ''})"


def dicom_slices(path: str | os.PathLike) -> list[Slice]:
    """Return a DICOM file's slices: rescale slope and intercept applied, the file's window (else a robust
    percentile window), MONOCHROME1 inverted; each frame of a multi-frame file is a slice of its own."""
    from pydicom.pixels import apply_modality_lut

    path = Path(path)
    dataset = _read_dicom(path)
    if "PixelData" not in dataset:
        raise CorruptImageError(f"{path}: a DICOM file without an image ({dataset.get('Modality', 'unknown')} "
                                f"object)")
    try:
        pixels = dataset.pixel_array
    except Exception as error:  # pydicom raises several kinds when no installed plugin decodes the pixel data
        syntax = getattr(dataset.file_meta.get("TransferSyntaxUID", None), "name", "unknown transfer syntax")
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CorruptImageError(f"{path}: cannot decode its pixel data ({syntax}): {reason}; a pydicom pixel-data "
                                f"plugin for it (pylibjpeg, gdcm) must be installed") from None
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    colour = int(dataset.get("SamplesPerPixel", 1) or 1) > 1
    stack = pixels if frames > 1 else pixels[np.newaxis]
    centre, width = _first(dataset.get("WindowCenter")), _first(dataset.get("WindowWidth"))
    inverted = str(dataset.get("PhotometricInterpretation", "")) == "MONOCHROME1"
    slices = []
    for index, frame in enumerate(stack):
        if colour:
            grey = Image.fromarray(to_eight_bits(frame)).convert("L")
        else:
            eight = to_eight_bits(apply_modality_lut(frame, dataset), centre, width)
            grey = Image.fromarray(255 - eight if inverted else eight)
        name = f"{path}#{index}" if frames > 1 else str(path)
        slices.append(Slice(name, str(path) if frames > 1 else series_label(path, dataset), grey))
    return slices


def check_gzip_stream(path: Path) -> None:
    """Read a gzip file to its end, so that a damaged or truncated one fails (its checksum is at the end) before any
    of it is used as data."""
    with gzip.open(path, "rb") as stream:
        while stream.read(1 << 22):
            pass


def nifti_slices(path: str | os.PathLike) -> list[Slice]:
    """Return a NIfTI volume's axial slices (reoriented to RAS, anterior at the top), windowed together at the
    WINDOW_PERCENTILES of the volume's nonzero voxels; a 2-D image is one slice."""
    import nibabel
    from nibabel.filebasedimages import ImageFileError

    path = Path(path)
    try:
        if str(path).lower().endswith(".gz"):
            check_gzip_stream(path)
        volume = nibabel.as_closest_canonical(nibabel.load(path))
        data = np.asarray(volume.get_fdata(dtype=np.float32))
    except (ImageFileError, OSError, ValueError, EOFError, zlib.error) as error:
        raise CorruptImageError(f"{path}: not a readable NIfTI volume ({str(error) or type(error).__name__})") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise CorruptImageError(f"{path}: a {data.ndim}-D NIfTI image of shape {data.shape}; give one 3-D volume")
    if 0 in data.shape:
        raise CorruptImageError(f"{path}: an empty NIfTI volume (shape {data.shape}): no slice to classify")
    finite = np.isfinite(data)
    if not finite.any():
        raise CorruptImageError(f"{path}: a NIfTI volume with no finite values (every voxel NaN or infinite)")
    eight = to_eight_bits(np.where(finite, data, 0.0))
    return [Slice(f"{path}#{index}", str(path), Image.fromarray(np.ascontiguousarray(np.rot90(eight[:, :, index]))))
            for index in range(data.shape[2])]


def read_slices(path: str | os.PathLike) -> list[Slice]:
    """Return the slices of a DICOM file or NIfTI volume."""
    return nifti_slices(path) if is_nifti(path) else dicom_slices(path)


def instance_order(files: list[Path]) -> list[Path]:
    """Return DICOM files ordered by series, then instance number (then file name); unreadable files keep their
    place at the end, to be reported when they are read."""
    keys = {}
    for file in files:
        try:
            dataset = _read_dicom(file, pixels=False)
            keys[file] = (str(dataset.get("SeriesInstanceUID", "")), int(dataset.get("InstanceNumber", 0) or 0),
                          file.name)
        except CorruptImageError:
            keys[file] = ("\uffff", 0, file.name)
    return sorted(files, key=lambda file: keys[file])


def series_summaries(rows: list[dict], class_names: tuple[str, ...], no_tumour: str) -> list[dict]:
    """Return one summary per series of predicted slices (rows with "file", "series", "probabilities"): slices per
    predicted class, and the highest tumour probability (1 - no tumour) with the slice it was found on."""
    summaries: dict[str, dict] = {}
    for row in rows:
        if row.get("series") is None or row.get("probabilities") is None:
            continue
        summary = summaries.setdefault(row["series"], {"series": row["series"], "slices": 0,
                                                       "slices_per_class": dict.fromkeys(class_names, 0),
                                                       "highest_tumour_probability": -1.0, "at_slice": None})
        summary["slices"] += 1
        summary["slices_per_class"][row["predicted_class"]] += 1
        tumour = 1.0 - row["probabilities"][no_tumour]
        if tumour > summary["highest_tumour_probability"]:
            summary["highest_tumour_probability"], summary["at_slice"] = tumour, row["file"]
    return list(summaries.values())
