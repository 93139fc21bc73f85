"""Images unlike any training image that the project makes itself, offline: noise, gradients, photographs and
non-brain medical slices that ship inside installed packages (scikit-image, pydicom)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from helpers.inputs.images import prepare_image

# Photographs that ship inside scikit-image (skimage/data); the Shepp-Logan head phantom stands for a CT-like slice.
PHOTOGRAPHS = ("astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
               "gravel.png", "horse.png", "hubble_deep_field.jpg", "moon.png", "motorcycle_left.png", "page.png",
               "rocket.jpg", "text.png", "clock_motion.png", "color.png", "logo.png")
CT_HEAD_PHANTOM = "phantom.png"
# Uncompressed single-frame slices that ship inside pydicom (pydicom/data/test_files).
DICOM_SLICES = {"CT slice (chest)": "CT_small.dcm", "MR slice (not brain)": "MR_small.dcm"}


def _noise(kind: str) -> Callable[[np.random.Generator, int], np.ndarray]:
    """Return a maker of one noise image of a kind: uniform, Gaussian, or salt and pepper."""
    def make(generator: np.random.Generator, size: int) -> np.ndarray:
        if kind == "uniform":
            return generator.integers(0, 256, (size, size))
        if kind == "gaussian":
            centre, spread = generator.uniform(60, 190), generator.uniform(10, 60)
            return np.clip(generator.normal(centre, spread, (size, size)), 0, 255)
        return np.where(generator.random((size, size)) < generator.uniform(0.05, 0.5), 255, 0)
    return make


def _gradient(generator: np.random.Generator, size: int) -> np.ndarray:
    """Return one linear or radial intensity gradient at a random angle or centre."""
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    if generator.random() < 0.5:
        angle = generator.uniform(0, 2 * np.pi)
        ramp = np.cos(angle) * x + np.sin(angle) * y
    else:
        centre = generator.uniform(0.2, 0.8, 2)
        ramp = -np.hypot(x - centre[0], y - centre[1])
    return (ramp - ramp.min()) / (ramp.max() - ramp.min()) * 255


def _variants(image: Image.Image, generator: np.random.Generator, count: int) -> list[Image.Image]:
    """Return the image and random crops (half to the whole side), flips and quarter turns of it."""
    variants = [image]
    while len(variants) < count:
        side = int(min(image.size) * generator.uniform(0.5, 1.0))
        left = int(generator.integers(0, image.width - side + 1))
        top = int(generator.integers(0, image.height - side + 1))
        crop = image.crop((left, top, left + side, top + side)).rotate(90 * int(generator.integers(0, 4)))
        variants.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if generator.random() < 0.5 else crop)
    return variants


def _dicom_image(path: Path) -> Image.Image:
    """Return a DICOM slice stretched from its minimum to its maximum as 8-bit greyscale."""
    import pydicom

    pixels = pydicom.dcmread(path).pixel_array.astype(np.float64)
    pixels = (pixels - pixels.min()) / max(float(np.ptp(pixels)), 1e-9) * 255
    return Image.fromarray(pixels.astype(np.uint8))


def outlier_images(per_kind: int = 40, seed: int = 0) -> dict[str, list[Image.Image]]:
    """Return greyscale PIL images of every outlier kind: noise (three kinds), gradients, photographs, a CT-like head
    phantom and non-brain DICOM slices (the bundled images with random crops, turns and flips)."""
    import pydicom
    import skimage

    generator = np.random.default_rng(seed)
    kinds: dict[str, list[Image.Image]] = {}
    for kind in ("uniform", "gaussian", "salt and pepper"):
        make = _noise(kind)
        kinds[f"{kind} noise"] = [Image.fromarray(make(generator, 256).astype(np.uint8)) for _ in range(per_kind)]
    kinds["gradients"] = [Image.fromarray(_gradient(generator, 256).astype(np.uint8)) for _ in range(per_kind)]
    bundled = Path(skimage.__file__).parent / "data"
    photographs = [Image.open(bundled / name).convert("L") for name in PHOTOGRAPHS if (bundled / name).is_file()]
    kinds["photographs"] = [variant for photograph in photographs
                            for variant in _variants(photograph, generator, max(1, per_kind // len(photographs)))]
    kinds["CT-like head phantom"] = _variants(Image.open(bundled / CT_HEAD_PHANTOM).convert("L"), generator, per_kind)
    test_files = Path(pydicom.__file__).parent / "data" / "test_files"
    for kind, name in DICOM_SLICES.items():
        kinds[kind] = _variants(_dicom_image(test_files / name), generator, per_kind)
    return kinds


def outlier_sets(image_size: int, preprocessing: str, per_kind: int = 40, seed: int = 0) -> dict[str, np.ndarray]:
    """Return every outlier kind as model inputs: (N, size, size) uint8 made by the training preprocessing."""
    return {kind: np.stack([prepare_image(image, image_size, preprocessing)[0] for image in images])
            for kind, images in outlier_images(per_kind, seed).items()}
