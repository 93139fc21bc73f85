"""Files to arrays: locate and validate a dataset, decode every image once to greyscale, cache, split."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from tqdm.auto import tqdm

from helpers import commands, config, interrupts
from helpers.files import write_atomically
from helpers.inputs.images import CorruptImageError, DataError, check_preprocessing, decode_image

CACHE_FORMAT_VERSION = 2  # 2: EXIF orientation applied while decoding


class DatasetNotFoundError(DataError):
    """No dataset where the project was told (or defaults) to look."""


class DatasetLayoutError(DataError):
    """A dataset folder does not have the Kaggle Training/Testing/<class> layout."""


@dataclass
class ImageSplit:
    """Images of one split as arrays: uint8 greyscale (N, size, size), label indices, relative paths, file hashes."""

    images: np.ndarray
    labels: np.ndarray
    paths: np.ndarray
    hashes: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, indices: np.ndarray) -> ImageSplit:
        """Return the images at the given indices as a new split."""
        return ImageSplit(self.images[indices], self.labels[indices], self.paths[indices], self.hashes[indices])

    def class_counts(self, class_names: tuple[str, ...] = config.CLASS_NAMES) -> dict[str, int]:
        """Return the number of images of each class, in label order."""
        counts = np.bincount(self.labels, minlength=len(class_names))
        return {name: int(count) for name, count in zip(class_names, counts)}


@dataclass
class MRIDataset:
    """The decoded dataset: the Training and Testing splits plus what identifies them."""

    training: ImageSplit
    testing: ImageSplit
    class_names: tuple[str, ...]
    image_size: int
    fingerprint: str
    root: Path
    skipped: list[tuple[str, str]] = field(default_factory=list)
    from_cache: bool = False
    load_seconds: float = 0.0
    preprocessing: str = "resize"
    hidden: list[str] = field(default_factory=list)  # entries whose names start with a dot: never read


# --------------------------------------------------------------------------- locating


def chosen_folder(argument: str | os.PathLike | None, variable: str, default: Path,
                  argument_name: str) -> tuple[Path, str]:
    """Return the folder a setting names (the argument, else $variable, else the default) and where it came from."""
    if argument is not None and str(argument) != "":
        return Path(argument).expanduser().resolve(), f"the {argument_name} argument"
    if os.environ.get(variable):
        return Path(os.environ[variable]).expanduser().resolve(), f"${variable}"
    return Path(default).expanduser().resolve(), "the default folder"


def locate_dataset(data_dir: str | os.PathLike | None = None) -> Path:
    """Return the dataset folder: the argument, else $BRAIN_MRI_DATA_DIR, else the repository's data/brain-tumor-mri."""
    candidate, source = chosen_folder(data_dir, config.DATA_DIR_VARIABLE, config.DEFAULT_DATA_DIR, "data_dir")
    if not candidate.is_dir():
        raise DatasetNotFoundError(
            f"{candidate}: no dataset folder (from {source}); set ${config.DATA_DIR_VARIABLE} to your copy of "
            f"{config.KAGGLE_URL}, or run `python -m helpers.inputs.data download` to fetch it into "
            f"{config.DEFAULT_DATA_DIR}"
        )
    return candidate


def download_dataset(destination: str | os.PathLike | None = None) -> Path:
    """Download the Kaggle dataset with kagglehub into destination (default: the repository's data folder)."""
    target = Path(destination or config.DEFAULT_DATA_DIR).expanduser().resolve()
    advice = (f"download it by hand from {config.KAGGLE_URL}, unzip it so that {target}/Training and "
              f"{target}/Testing exist (or anywhere, then set ${config.DATA_DIR_VARIABLE})")
    try:
        import kagglehub
    except ImportError:
        raise DatasetNotFoundError(f"{target}: cannot download, kagglehub is not installed "
                                   f"(pip install kagglehub); or {advice}") from None
    try:
        downloaded = Path(kagglehub.dataset_download(config.KAGGLE_DATASET, output_dir=str(target)))
    except Exception as error:  # kagglehub raises many kinds: network, credentials, HTTP
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetNotFoundError(f"{target}: download of {config.KAGGLE_DATASET} failed ({reason}); "
                                   f"{advice}") from None
    validate_layout(downloaded)
    return downloaded


# --------------------------------------------------------------------------- layout


def validate_layout(root: Path) -> list[tuple[str, int, Path]]:
    """Check the Training/Testing/<class> layout and return (split, label, path) for every image, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root}: dataset folder does not exist")
    expected = ", ".join(config.CLASS_NAMES)
    records: list[tuple[str, int, Path]] = []
    for split in config.SPLIT_NAMES:
        split_dir = root / split
        if not split_dir.is_dir():
            raise DatasetLayoutError(f"{split_dir}: missing split folder; a dataset holds Training/ and Testing/, "
                                     f"each with the class folders {expected}")
        for entry in sorted(split_dir.iterdir()):
            if entry.name.startswith("."):
                continue
            if not entry.is_dir():
                raise DatasetLayoutError(f"{entry}: unexpected file in a split folder; expected only class folders "
                                         f"{expected}")
            if entry.name not in config.CLASS_NAMES:
                raise DatasetLayoutError(f"{entry}: unknown class folder {entry.name!r}; expected {expected}")
        for label, class_name in enumerate(config.CLASS_NAMES):
            class_dir = split_dir / class_name
            if not class_dir.is_dir():
                raise DatasetLayoutError(f"{class_dir}: missing class folder; every split needs {expected}")
            records.extend((split, label, path) for path in image_files(class_dir, "class folder"))
    _check_splits_apart(root)
    return records


def _check_splits_apart(root: Path) -> None:
    """Fail when a class folder of one split is, through a link, the other split's folder (or inside it)."""
    resolved = {(split, name): (root / split / name).resolve() for split in config.SPLIT_NAMES
                for name in config.CLASS_NAMES}
    for (split, name), folder in resolved.items():
        for (other_split, other_name), other in resolved.items():
            if split < other_split and (folder == other or folder.is_relative_to(other)
                                        or other.is_relative_to(folder)):
                raise DatasetLayoutError(f"{root / split / name}: resolves to {folder}, which is also "
                                         f"{root / other_split / other_name}; Training and Testing must be "
                                         f"separate folders")


def image_files(folder: Path, kind: str, error: type[DataError] = DatasetLayoutError) -> list[Path]:
    """Return the image files of a folder, sorted, skipping hidden entries; fail naming a broken link, anything that
    is not an image, or an empty folder (kind names the folder in the messages, e.g. "class folder")."""
    images = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if not entry.exists():
            raise error(f"{entry}: {_link_problem(entry)}; remove it or restore the file it points to")
        if entry.is_dir() or entry.suffix.lower() not in config.IMAGE_EXTENSIONS:
            raise error(f"{entry}: not an image file; a {kind} may hold only "
                        f"{', '.join(sorted(config.IMAGE_EXTENSIONS))} files")
        images.append(entry)
    if not images:
        raise error(f"{folder}: {kind} holds no images")
    return images


def _link_problem(entry: Path) -> str:
    """Return why an entry that exists in a listing cannot be reached: a link loop or a broken link."""
    try:
        os.stat(entry)
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a link loop (the link leads back to itself)"
    return "a broken link (its target does not exist)"


def hidden_files(root: str | os.PathLike) -> list[Path]:
    """Return the files and folders whose names start with a dot inside the split and class folders (never read)."""
    root = Path(root)
    found: list[Path] = []
    for split in config.SPLIT_NAMES:
        for folder in [root / split, *[root / split / name for name in config.CLASS_NAMES]]:
            if folder.is_dir():
                found.extend(entry for entry in sorted(folder.iterdir()) if entry.name.startswith("."))
    return found


def image_properties(root: str | os.PathLike, relative_paths: list[str] | None = None) -> pd.DataFrame:
    """Return split, class, width, height and colour mode of each image file, read from the file headers only."""
    root = Path(root)
    if relative_paths is None:
        relative_paths = [path.relative_to(root).as_posix() for _, _, path in validate_layout(root)]
    rows = []
    for relative in relative_paths:
        split, class_name = Path(relative).parts[:2]
        try:
            with Image.open(root / relative) as image:
                width, height, mode = image.width, image.height, image.mode
        except (OSError, SyntaxError) as error:
            raise CorruptImageError(f"{root / relative}: cannot read the image header ({error})") from None
        rows.append({"split": split, "class_name": class_name, "width": width, "height": height, "mode": mode,
                     "path": relative})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- fingerprint


def _hash_file(path: Path) -> str:
    """Return the SHA-1 of a file's bytes."""
    return hashlib.sha1(path.read_bytes()).hexdigest()


def file_hashes(paths: list[Path]) -> list[str]:
    """Return the SHA-1 of each file, reusing a memo keyed by (path, size, mtime) so unchanged files are not re-read."""
    memo_path = config.cache_dir() / "file-hashes.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    hashes, changed = [], False
    for path in paths:
        status = path.stat()
        key = str(path.resolve())
        stamp = [status.st_size, status.st_mtime_ns]
        entry = memo.get(key)
        if entry is None or entry[:2] != stamp:
            entry = stamp + [_hash_file(path)]
            memo[key], changed = entry, True
        hashes.append(entry[2])
    if changed:
        write_atomically(memo_path, lambda temporary: temporary.write_text(json.dumps(memo)))
    return hashes


def dataset_fingerprint(relative_paths: list[str], hashes: list[str]) -> str:
    """Return a SHA-256 over every (relative path, content hash) pair: changes whenever any file does."""
    digest = hashlib.sha256()
    for relative, content in zip(relative_paths, hashes):
        digest.update(f"{relative}\t{content}\n".encode())
    return digest.hexdigest()


def _decode_all(paths: list[Path], image_size: int, progress: bool,
                preprocessing: str = "resize") -> list[np.ndarray | CorruptImageError]:
    """Decode every path on a thread pool (Pillow releases the GIL while decoding); errors are returned, not raised."""

    def decode_or_error(path: Path) -> np.ndarray | CorruptImageError:
        try:
            return decode_image(path, image_size, preprocessing)
        except CorruptImageError as error:
            return error

    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(decode_or_error, paths, chunksize=64)
        return list(tqdm(results, total=len(paths), desc=f"decoding images at {image_size}px",
                         disable=not progress, unit="img"))


# --------------------------------------------------------------------------- cache


def _cache_path(fingerprint: str, image_size: int, preprocessing: str = "resize") -> Path:
    """Return the cache file for a dataset fingerprint, image size and preprocessing."""
    kind = "" if preprocessing == "resize" else f"{preprocessing}-"
    return config.cache_dir() / f"mri-{image_size}px-{kind}{fingerprint[:20]}.npz"


def _save_cache(path: Path, arrays: dict[str, Any]) -> None:
    """Write the decoded arrays to an uncompressed .npz atomically."""

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)

    write_atomically(path, write)


def _load_cache(path: Path) -> dict[str, np.ndarray] | None:
    """Read a cache file without pickle; return None when it is missing, unreadable or of another format."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, KeyError):
        return None
    if int(arrays.get("format_version", -1)) != CACHE_FORMAT_VERSION:
        return None
    return arrays


# --------------------------------------------------------------------------- loading


def load_dataset(data_dir: str | os.PathLike | None = None, image_size: int = config.DEFAULT_IMAGE_SIZE,
                 on_error: str = "raise", use_cache: bool = True, progress: bool = True,
                 preprocessing: str = "resize") -> MRIDataset:
    """Load Training and Testing as uint8 greyscale arrays, decoding only when no cache matches the files.

    on_error="raise" (default) stops at the first undecodable image with its path;
    on_error="skip" leaves such images out and lists them in the result's `skipped`.
    """
    config.check_choice("on_error", on_error, ("raise", "skip"))
    if not isinstance(image_size, int) or not 8 <= image_size <= 1024:
        raise ValueError(f"image_size must be an integer between 8 and 1024, not {image_size!r}")
    check_preprocessing(preprocessing)
    started = time.perf_counter()
    root = locate_dataset(data_dir)
    records = validate_layout(root)
    paths = [path for _, _, path in records]
    relative = [path.relative_to(root).as_posix() for path in paths]
    hashes = file_hashes(paths)
    fingerprint = dataset_fingerprint(relative, hashes)
    cache_file = _cache_path(fingerprint, image_size, preprocessing)

    arrays = _load_cache(cache_file) if use_cache else None
    from_cache = arrays is not None
    if arrays is None:
        decoded = _decode_all(paths, image_size, progress, preprocessing)
        keep = [i for i, item in enumerate(decoded) if not isinstance(item, CorruptImageError)]
        failures = [(relative[i], str(item)) for i, item in enumerate(decoded) if isinstance(item, CorruptImageError)]
        empty = np.zeros((0, image_size, image_size), np.uint8)
        arrays = {
            "format_version": np.array(CACHE_FORMAT_VERSION),
            "images": np.stack([item for item in decoded if isinstance(item, np.ndarray)]) if keep else empty,
            "labels": np.array([records[i][1] for i in keep], dtype=np.uint8),
            "is_test": np.array([records[i][0] == "Testing" for i in keep], dtype=bool),
            "paths": np.array([relative[i] for i in keep], dtype=str),
            "hashes": np.array([hashes[i] for i in keep], dtype=str),
            "skipped_paths": np.array([path for path, _ in failures], dtype=str),
            "skipped_reasons": np.array([reason for _, reason in failures], dtype=str),
        }
        if use_cache:
            try:
                _save_cache(cache_file, arrays)
            except OSError as error:  # the cache only saves time: a read-only or full cache folder is a note
                print(f"note: {cache_file.parent}: decoded images not cached ({error.strerror or error})",
                      file=sys.stderr)

    skipped = list(zip(arrays["skipped_paths"].tolist(), arrays["skipped_reasons"].tolist()))
    if skipped and on_error == "raise":
        more = (f" (and {len(skipped) - 1} more undecodable images)" if len(skipped) > 1 else "")
        raise CorruptImageError(f"{skipped[0][1]}{more}; `python -m helpers.inputs.data check --skip-corrupt` lists "
                                f"them all; training's --skip-corrupt (load_dataset(on_error='skip')) leaves them out")

    def split(mask: np.ndarray) -> ImageSplit:
        return ImageSplit(arrays["images"][mask], arrays["labels"][mask].astype(np.int64),
                          arrays["paths"][mask], arrays["hashes"][mask])

    is_test = arrays["is_test"]
    return MRIDataset(training=split(~is_test), testing=split(is_test), class_names=config.CLASS_NAMES,
                      image_size=image_size, fingerprint=fingerprint, root=root, skipped=skipped,
                      from_cache=from_cache, load_seconds=time.perf_counter() - started, preprocessing=preprocessing,
                      hidden=[path.relative_to(root).as_posix() for path in hidden_files(root)])


# --------------------------------------------------------------------------- splits


def split_validation(training: ImageSplit, fraction: float = config.DEFAULT_VALIDATION_FRACTION,
                     seed: int = config.DEFAULT_SEED) -> tuple[ImageSplit, ImageSplit]:
    """Carve a seeded, stratified validation split out of Training; Testing is never touched."""
    from sklearn.model_selection import train_test_split  # imported here: the prediction command needs none

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction must be between 0 and 1, not {fraction!r}")
    indices = np.arange(len(training))
    kept, held_out = train_test_split(indices, test_size=fraction, random_state=seed, stratify=training.labels)
    return training.take(np.sort(kept)), training.take(np.sort(held_out))


def take_per_class(split: ImageSplit, per_class: int, seed: int = config.DEFAULT_SEED) -> ImageSplit:
    """Return a seeded random subset of at most per_class images of each class (for quick profiles)."""
    generator = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(split.labels):
        members = np.flatnonzero(split.labels == label)
        chosen.append(generator.choice(members, size=min(per_class, len(members)), replace=False))
    return split.take(np.sort(np.concatenate(chosen)))


def _main(argv: list[str] | None = None) -> int:
    """Command line: `download` fetches the Kaggle dataset; `check` loads a dataset and prints its counts."""
    import argparse

    interrupts.command_started()
    parser = argparse.ArgumentParser(prog="python -m helpers.inputs.data", description=_main.__doc__)
    parser.add_argument("action", choices=["download", "check"])
    commands.add_data_arguments(parser)
    parser.add_argument("--image-size", type=int, default=config.DEFAULT_IMAGE_SIZE)
    parser.add_argument("--skip-corrupt", action="store_true",
                        help="leave undecodable images out (listed) instead of stopping at the first")
    arguments = parser.parse_args(argv)
    try:
        if arguments.action == "download":
            print(download_dataset(arguments.data_dir))
            return 0
        dataset = load_dataset(arguments.data_dir, arguments.image_size, progress=sys.stderr.isatty(),
                               on_error="skip" if arguments.skip_corrupt else "raise")
    except DataError as error:
        return commands.failed(error)
    except KeyboardInterrupt:
        return commands.stopped("the cache was left as it was")
    print(f"{dataset.root}  fingerprint {dataset.fingerprint[:16]}  "
          f"{'cache' if dataset.from_cache else 'decoded'} in {dataset.load_seconds:.2f} s")
    for name, split in (("Training", dataset.training), ("Testing", dataset.testing)):
        print(f"{name:9s} {len(split):5d}  {split.class_counts()}")
    hidden = hidden_files(dataset.root)
    if hidden:
        print(f"skipped {len(hidden)} hidden entries (names starting with '.'), e.g. {hidden[0]}")
    if dataset.skipped:
        print(f"skipped {len(dataset.skipped)} undecodable images, e.g. {dataset.skipped[0][1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
