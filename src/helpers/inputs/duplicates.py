"""Duplicate audit: exact (identical files) and near (perceptual-hash) duplicates within and across the splits."""

from __future__ import annotations

from dataclasses import dataclass

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from helpers import commands, interrupts
from helpers.inputs.data import MRIDataset

# Two images whose 64-bit perceptual hashes differ in at most this many bits count as near-duplicates.
DEFAULT_NEAR_THRESHOLD = 4
SCOPES = ("within Training", "within Testing", "across splits")


@dataclass
class DuplicateAudit:
    """The audit's results: one row per image, one row per near-duplicate pair, and a summary table."""

    images: pd.DataFrame
    pairs: pd.DataFrame
    summary: pd.DataFrame
    threshold: int

    def clean_test_mask(self) -> np.ndarray:
        """Return a boolean mask over Testing (in dataset order): True where no near-duplicate is in Training."""
        testing = self.images[self.images["split"] == "Testing"]
        leaked = set(self.pairs.loc[self.pairs["scope"] == "across splits", "test_index"])
        return ~testing["index_in_split"].isin(leaked).to_numpy()

    def clean_test_flags(self, paths: np.ndarray) -> np.ndarray:
        """Return, for the given Testing paths (any subset, any order), True where no near-duplicate is in Training."""
        testing = self.images[self.images["split"] == "Testing"]
        clean = dict(zip(testing["path"], self.clean_test_mask()))
        unknown = [path for path in paths if path not in clean]
        if unknown:
            raise KeyError(f"{unknown[0]}: not a Testing image of the audited dataset")
        return np.array([clean[path] for path in paths], dtype=bool)

    def cross_split_examples(self, pixels: np.ndarray, count: int = 6,
                             seed: int = 0) -> tuple[np.ndarray, list[str]]:
        """Return images and captions of randomly chosen Training/Testing near-duplicate pairs, side by side.

        pixels: the audited images in audit order (Training, then Testing).
        """
        across = self.pairs[self.pairs["scope"] == "across splits"]
        chosen = across.sample(n=min(count, len(across)), random_state=seed) if len(across) else across
        images, captions = [], []
        for _, pair in chosen.iterrows():
            for column in ("first", "second"):
                images.append(pixels[pair[column]])
                path = self.images.at[pair[column], "path"]
                captions.append(f"{path.split('/')[0]}/{path.split('/')[-1]}\ndistance {pair['distance']}")
        return np.array(images), captions


def perceptual_hashes(images: np.ndarray) -> np.ndarray:
    """Return the 64-bit DCT perceptual hash (imagehash.phash) of each greyscale image as uint64."""
    weights = np.uint64(1) << np.arange(63, -1, -1, dtype=np.uint64)
    hashes = np.empty(len(images), dtype=np.uint64)
    for index, image in enumerate(images):
        bits = imagehash.phash(Image.fromarray(image)).hash.reshape(-1).astype(np.uint64)
        hashes[index] = np.bitwise_or.reduce(bits * weights)
    return hashes


def has_near_duplicate(queries: np.ndarray, references: np.ndarray,
                       threshold: int = DEFAULT_NEAR_THRESHOLD) -> np.ndarray:
    """Return, per query image, whether a reference image's perceptual hash lies within threshold bits of its own."""
    query_hashes, reference_hashes = perceptual_hashes(queries), perceptual_hashes(references)
    found = np.zeros(len(query_hashes), dtype=bool)
    for start in range(0, len(query_hashes), 256):
        block = query_hashes[start:start + 256, np.newaxis] ^ reference_hashes[np.newaxis, :]
        found[start:start + 256] = (np.bitwise_count(block) <= threshold).any(axis=1)
    return found


def near_pairs(hashes: np.ndarray, threshold: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (first, second, distance) for every pair first < second whose hashes differ in <= threshold bits."""
    firsts, seconds, distances = [], [], []
    for start in range(0, len(hashes), chunk):
        block = hashes[start:start + chunk, np.newaxis] ^ hashes[np.newaxis, :]
        distance = np.bitwise_count(block)
        rows, columns = np.nonzero(distance <= threshold)
        keep = columns > rows + start
        firsts.append(rows[keep] + start)
        seconds.append(columns[keep])
        distances.append(distance[rows[keep], columns[keep]])
    return (np.concatenate(firsts), np.concatenate(seconds), np.concatenate(distances).astype(np.int64))


def _groups(size: int, firsts: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Return a connected-component id per image, for the graph whose edges are the given pairs."""
    graph = coo_matrix((np.ones(len(firsts)), (firsts, seconds)), shape=(size, size))
    return connected_components(graph, directed=False)[1]


def _scope(splits: pd.Series) -> str:
    """Name where a group of images lies: within one split or across both."""
    present = set(splits)
    return "across splits" if len(present) > 1 else f"within {present.pop()}"


def audit_duplicates(dataset: MRIDataset, threshold: int = DEFAULT_NEAR_THRESHOLD) -> DuplicateAudit:
    """Hash every image of both splits and tabulate exact and near-duplicate groups within and across splits."""
    images = pd.DataFrame({
        "split": ["Training"] * len(dataset.training) + ["Testing"] * len(dataset.testing),
        "index_in_split": np.concatenate([np.arange(len(dataset.training)), np.arange(len(dataset.testing))]),
        "path": np.concatenate([dataset.training.paths, dataset.testing.paths]),
        "label": np.concatenate([dataset.training.labels, dataset.testing.labels]),
        "file_hash": np.concatenate([dataset.training.hashes, dataset.testing.hashes]),
    })
    images["class_name"] = [dataset.class_names[label] for label in images["label"]]
    hashes = perceptual_hashes(np.concatenate([dataset.training.images, dataset.testing.images]))
    images["perceptual_hash"] = [f"{value:016x}" for value in hashes]

    firsts, seconds, distances = near_pairs(hashes, threshold)
    pairs = pd.DataFrame({"first": firsts, "second": seconds, "distance": distances})
    pairs["first_path"] = images["path"].to_numpy()[firsts]
    pairs["second_path"] = images["path"].to_numpy()[seconds]
    pairs["exact"] = images["file_hash"].to_numpy()[firsts] == images["file_hash"].to_numpy()[seconds]
    pairs["same_label"] = images["label"].to_numpy()[firsts] == images["label"].to_numpy()[seconds]
    first_split, second_split = images["split"].to_numpy()[firsts], images["split"].to_numpy()[seconds]
    pairs["scope"] = np.where(first_split != second_split, "across splits", "within " + first_split)
    # Rows are ordered Training, then Testing, and first < second: a cross-split pair's Testing member is second.
    pairs["test_index"] = np.where(pairs["scope"] == "across splits", images["index_in_split"].to_numpy()[seconds], -1)

    exact_codes = pd.factorize(images["file_hash"])[0]
    images["exact_group"] = exact_codes
    images["near_group"] = _groups(len(images), firsts, seconds)
    rows = []
    for kind, column in (("exact", "exact_group"), ("near", "near_group")):
        sizes = images.groupby(column)["path"].transform("size")
        grouped = images[sizes > 1].groupby(column)
        scopes = grouped["split"].agg(_scope)
        conflicts = grouped["label"].nunique() > 1
        members = grouped.size()
        for scope in SCOPES:
            chosen = scopes == scope
            rows.append({"kind": kind, "scope": scope, "groups": int(chosen.sum()),
                         "images_in_groups": int(members[chosen].sum()),
                         "groups_with_conflicting_labels": int((conflicts & chosen).sum())})
    summary = pd.DataFrame(rows)
    return DuplicateAudit(images=images, pairs=pairs, summary=summary, threshold=threshold)


def _main(argv: list[str] | None = None) -> int:
    """Command line: audit a dataset for duplicates and print the summary table and the clean-test count."""
    import argparse

    from helpers.inputs.data import load_dataset
    from helpers.inputs.images import DataError

    interrupts.command_started()
    parser = argparse.ArgumentParser(prog="python -m helpers.inputs.duplicates", description=_main.__doc__)
    commands.add_data_arguments(parser)
    parser.add_argument("--threshold", type=int, default=DEFAULT_NEAR_THRESHOLD,
                        help="largest perceptual-hash distance (bits of 64) counted as a near duplicate")
    arguments = parser.parse_args(argv)
    try:
        dataset = load_dataset(arguments.data_dir)
    except DataError as error:
        return commands.failed(error)
    audit = audit_duplicates(dataset, arguments.threshold)
    print(audit.summary.to_string(index=False))
    clean = audit.clean_test_mask()
    print(f"Testing images with no near duplicate (distance <= {audit.threshold}) in Training: "
          f"{int(clean.sum())} of {len(clean)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
