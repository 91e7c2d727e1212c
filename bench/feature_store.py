"""Per-image features of a run, stored so every statistic can be recomputed without a network.

    metrics/features/<config_key>/<network>.npy    float32 (N, d), rows in per_image.csv order
    metrics/features/<config_key>/<network>.json   rows, dims, the network's protocol, and the
                                                   sha256 of the row keys ("prompt_id/k" lines)

Writing streams: each rank writes its rows into a memory-mapped temporary `.npy` as batches come
(memory flat in N), fsyncs it and renames it to a rank part; rank 0 then copies the parts into
the final file in chunks, again through a temporary file and a rename, and removes the parts.
A crash leaves only temporary files, which the next attempt at that config removes first, so a
killed and rerun metric stage writes the same bytes as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .runs import atomic_write_json

CHUNK_ROWS = 4096


def features_dir(metrics_dir: Path, config_key: str) -> Path:
    return Path(metrics_dir) / "features" / config_key


def keys_sha256(keys: Sequence[tuple[str, int]]) -> str:
    """sha256 of the row keys, one 'prompt_id/k' line each: ties a feature file to its rows."""
    text = "".join(f"{p}/{int(k)}\n" for p, k in keys)
    return hashlib.sha256(text.encode()).hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


class RowWriter:
    """A float32 (rows, dims) `.npy` written in place through a memory map, then renamed."""

    def __init__(self, path: Path, rows: int, dims: int):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        if rows:
            self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.float32,
                                                   shape=(rows, dims))
        else:  # a rank with no rows: nothing to map
            self.array = np.zeros((0, dims), dtype=np.float32)

    def write(self, start: int, values) -> None:
        values = np.asarray(values, dtype=np.float32)
        self.array[start:start + len(values)] = values

    def close(self) -> Path:
        if isinstance(self.array, np.memmap):
            self.array.flush()
        else:
            with open(self.tmp, "wb") as f:
                np.save(f, self.array)
        del self.array
        _fsync_file(self.tmp)
        os.replace(self.tmp, self.path)
        return self.path


def clear_partial(folder: Path) -> None:
    """Remove temporary files and rank parts a crashed attempt left in a config's folder."""
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(".") or ".rank" in p.name:
                p.unlink(missing_ok=True)


def part_path(folder: Path, name: str, rank: int) -> Path:
    return folder / f"{name}.rank{rank}.npy"


def merge_parts(folder: Path, name: str, world_size: int, rows: int, dims: int,
                meta: dict) -> Path:
    """Rank 0: interleave the ranks' parts (rank r holds rows r, r + W, ...) into <name>.npy."""
    parts = [np.load(part_path(folder, name, r), mmap_mode="r") for r in range(world_size)]
    if sum(len(p) for p in parts) != rows:
        raise RuntimeError(f"{folder}: rank parts hold {sum(len(p) for p in parts)} rows, "
                           f"expected {rows}")
    out = RowWriter(folder / f"{name}.npy", rows, dims)
    for start in range(0, rows, CHUNK_ROWS):
        stop = min(rows, start + CHUNK_ROWS)
        idx = np.arange(start, stop)
        block = np.empty((len(idx), dims), dtype=np.float32)
        for r, part in enumerate(parts):
            mine = idx % world_size == r
            block[mine] = part[idx[mine] // world_size]
        out.write(start, block)
    del parts
    path = out.close()
    atomic_write_json(folder / f"{name}.json", meta)
    for r in range(world_size):
        part_path(folder, name, r).unlink(missing_ok=True)
    return path


def load_features(metrics_dir: Path, config_key: str, name: str,
                  keys: Sequence[tuple[str, int]]) -> np.ndarray:
    """The stored (N, d) features of a config (memory-mapped), checked against its rows.

    Raises:
        FileNotFoundError: the features were never stored (a run from before they were).
        ValueError: the file does not belong to these rows.
    """
    folder = features_dir(metrics_dir, config_key)
    path, meta_path = folder / f"{name}.npy", folder / f"{name}.json"
    if not path.is_file() or not meta_path.is_file():
        raise FileNotFoundError(f"{path}: no stored {name} features for config {config_key}")
    meta = json.loads(meta_path.read_text())
    array = np.load(path, mmap_mode="r")
    if array.shape != (meta["rows"], meta["dims"]) or meta["rows"] != len(keys) or \
            meta["keys_sha256"] != keys_sha256(keys):
        raise ValueError(f"{path}: its rows do not match metrics/per_image.csv of config "
                         f"{config_key}; delete the run's metrics/ folder to extract them again")
    return array
