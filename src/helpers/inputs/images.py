"""One image file to the models' input: decode (EXIF orientation, large JPEGs in draft), greyscale, the head's crop
and intensity standardisation, resize."""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from helpers import config


class DataError(ValueError):
    """Base class of every data problem the project reports."""


class CorruptImageError(DataError):
    """An image file that cannot be decoded."""


def to_greyscale(image: Image.Image) -> Image.Image:
    """Return an 8-bit greyscale copy of an image of any mode (transparency composited onto black)."""
    if image.mode == "L":
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        return Image.fromarray(np.round(scaled).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("L")
    return image.convert("L")


# How an image file becomes the models' input. "resize": greyscale, resized with Lanczos antialiasing (the study's
# first models). "standardised": greyscale, its intensities stretched so that the head's 1st and 99th percentiles
# become 0 and 255, cropped to the head's bounding box (made square), then resized. The second removes acquisition
# cues (framing, field of view, contrast window) that tell the dataset's sources apart (notebook 06).
PREPROCESSINGS = ("resize", "standardised")
# A pixel belongs to the head when it is brighter than this share of the image's 99th percentile.
HEAD_THRESHOLD = 0.12
# Rows (columns) count towards the head's box when this share of their pixels is head: ignores thin text and lines.
HEAD_LINE_SHARE = 0.02
HEAD_MARGIN = 0.03


def check_preprocessing(preprocessing: str) -> None:
    """Fail naming the known preprocessings unless preprocessing is one of them."""
    config.check_choice("preprocessing", preprocessing, PREPROCESSINGS)


def head_box(pixels: np.ndarray) -> tuple[int, int, int, int]:
    """Return the square (left, top, right, bottom) box around the head in a greyscale array (may exceed the image)."""
    height, width = pixels.shape
    bright = pixels > HEAD_THRESHOLD * max(float(np.percentile(pixels, 99)), 1.0)
    rows = np.flatnonzero(bright.sum(axis=1) > HEAD_LINE_SHARE * width)
    columns = np.flatnonzero(bright.sum(axis=0) > HEAD_LINE_SHARE * height)
    if len(rows) == 0 or len(columns) == 0:
        return 0, 0, width, height
    top, bottom, left, right = rows[0], rows[-1] + 1, columns[0], columns[-1] + 1
    side = max(bottom - top, right - left) * (1 + 2 * HEAD_MARGIN)
    centre_y, centre_x = (top + bottom) / 2, (left + right) / 2
    return (int(round(centre_x - side / 2)), int(round(centre_y - side / 2)),
            int(round(centre_x + side / 2)), int(round(centre_y + side / 2)))


def standardise_intensity(pixels: np.ndarray) -> np.ndarray:
    """Return uint8 pixels stretched so the head's 1st and 99th percentiles map to 0 and 255 (background stays 0)."""
    values = pixels.astype(np.float32)
    head = values[values > HEAD_THRESHOLD * max(float(np.percentile(values, 99)), 1.0)]
    if head.size < 16:
        return pixels
    low, high = np.percentile(head, (1, 99))
    if high <= low:
        return pixels
    return np.clip((values - low) * (255.0 / (high - low)), 0, 255).round().astype(np.uint8)


def prepare_image(grey: Image.Image, image_size: int,
                  preprocessing: str = "resize") -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Turn a greyscale image into the models' (size, size) uint8 input; return it with the box it was cut from.

    This is the one function training, evaluation and brain-mri-predict use; an annotation mask cut with the same
    box (prepare_mask) lines up with the image.
    """
    check_preprocessing(preprocessing)
    box = (0, 0, grey.width, grey.height)
    if preprocessing == "standardised":
        pixels = np.asarray(grey, dtype=np.uint8)
        box = head_box(pixels)
        grey = Image.fromarray(standardise_intensity(pixels)).crop(box)
    resized = grey.resize((image_size, image_size), Image.Resampling.LANCZOS)
    return np.asarray(resized, dtype=np.uint8), box


def prepare_mask(mask: np.ndarray, box: tuple[int, int, int, int], image_size: int) -> np.ndarray:
    """Cut a full-size boolean mask with an image's box and resize it like the image: a (size, size) boolean mask."""
    cropped = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255).crop(box)
    resized = cropped.resize((image_size, image_size), Image.Resampling.BILINEAR)
    return np.asarray(resized) >= 128


def open_greyscale(path: str | os.PathLike) -> Image.Image:
    """Open an image file as 8-bit greyscale, upright as its EXIF orientation says; refuse multi-frame files and
    images over MAXIMUM_PIXELS. A large JPEG is decoded at a reduced scale (no side below DECODED_SIDE), so memory
    stays bounded whatever the file's size.

    Fails with a CorruptImageError that names the file."""
    try:
        with warnings.catch_warnings():  # the size is checked below, with a message that names the file
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened as image:
            frames = getattr(image, "n_frames", 1)
            if frames > 1:
                raise CorruptImageError(f"{path}: a multi-frame image ({frames} frames); save the slice to classify "
                                        f"as a single-frame file")
            width, height = image.size
            if image.format == "JPEG":
                image.draft(image.mode, (DECODED_SIDE, DECODED_SIDE))
            elif width * height > MAXIMUM_PIXELS:
                raise CorruptImageError(f"{path}: too large to decode ({width} x {height} pixels; the limit is "
                                        f"{MAXIMUM_PIXELS:,} pixels outside JPEG): save a smaller copy")
            image.load()
            return to_greyscale(ImageOps.exif_transpose(image))
    except CorruptImageError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as error:
        reason = (str(error) or type(error).__name__).replace(f" {str(path)!r}", "")  # the path leads the message
        raise CorruptImageError(f"{path}: cannot decode image ({reason})") from None


# A JPEG larger than this on both sides is decoded at 1/2, 1/4 or 1/8 scale, never below it (the dataset's largest
# side is 1,920 pixels, so its images decode at full scale); other formats over MAXIMUM_PIXELS are refused.
DECODED_SIDE = 2048
MAXIMUM_PIXELS = 64_000_000


def decode_image(path: str | os.PathLike, image_size: int, preprocessing: str = "resize") -> np.ndarray:
    """Decode one image file to the models' uint8 greyscale (image_size, image_size) input."""
    return prepare_image(open_greyscale(path), image_size, preprocessing)[0]
