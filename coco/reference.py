"""Reference statistics of the COCO images: Inception mean and covariance, cached by protocol.

Imagen compares its 30K samples "with reference images from the full validation set" (arXiv
2205.11487 §3): by default every image of val2014 (40,504), each center-cropped and resized to
the evaluation resolution under the extractor's named resize protocol. The cache is one `.npz`
(`mu`, `sigma` float64, `n`, the protocol as a JSON string, `root` = sigma^½ for fast Fréchet
distances, optionally the features for KID),
named by a hash of the protocol and reused only when the stored protocol equals the current one.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .captions import CocoFormatError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
DATASET = "coco2014"


class ImageReadError(CocoFormatError):
    """An image of the reference set cannot be decoded; the message names it."""


@dataclass
class ReferenceStats:
    """Gaussian statistics of reference features under one protocol."""

    mu: np.ndarray                        # (d,) float64 mean
    sigma: np.ndarray                     # (d, d) float64 covariance (unbiased, n - 1)
    n: int                                # number of images
    protocol: dict = field(default_factory=dict)  # dataset, split, n, resize, extractor, versions
    features: np.ndarray | None = None    # (n, d) float32, only when kept for KID
    root: np.ndarray | None = None        # (d, d) float64 sigma^½, for fast Fréchet distances

    def with_root(self) -> "ReferenceStats":
        """Compute `root` (the symmetric square root of sigma) if missing; returns self."""
        if self.root is None:
            from bench.metrics.frechet import sqrt_psd

            self.root = sqrt_psd(self.sigma)
        return self

    @classmethod
    def from_features(cls, features, protocol: dict | None = None) -> "ReferenceStats":
        """Statistics of a feature matrix (N, d), in float64."""
        x = np.asarray(features, dtype=np.float64)
        return cls(x.mean(axis=0), np.cov(x, rowvar=False), len(x), dict(protocol or {}))

    def save(self, path: str | Path) -> Path:
        """Write the `.npz` atomically (temporary file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {"mu": self.mu, "sigma": self.sigma, "n": np.int64(self.n),
                  "protocol": np.array(json.dumps(self.protocol, sort_keys=True))}
        if self.features is not None:
            arrays["features"] = np.asarray(self.features, dtype=np.float32)
        if self.root is not None:
            arrays["root"] = np.asarray(self.root, dtype=np.float64)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> "ReferenceStats":
        """Read a `.npz` written by `save`."""
        with np.load(path, allow_pickle=False) as z:
            return cls(z["mu"], z["sigma"], int(z["n"]), json.loads(str(z["protocol"])),
                       z["features"] if "features" in z.files else None,
                       z["root"] if "root" in z.files else None)


def default_cache_dir() -> Path:
    """$IMAGEN_BENCH_CACHE/fid_stats, else ~/.cache/imagen_bench/fid_stats."""
    root = os.environ.get("IMAGEN_BENCH_CACHE") or Path.home() / ".cache" / "imagen_bench"
    return Path(root) / "fid_stats"


def list_images(folder: str | Path, limit: int | None = None) -> list[Path]:
    """Image files of `folder` sorted by name; the first `limit` when given."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such image folder (expected <coco-root>/<split>/*.jpg)")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    return files[:limit] if limit else files


def files_fingerprint(files: list[Path]) -> str:
    """sha256 over (name, size) of the files: a changed image set means new statistics."""
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}\t{p.stat().st_size}\n".encode())
    return h.hexdigest()


class _Images(torch.utils.data.Dataset):
    """Protocol-step-1 images; a decoding failure comes back as a message, not an exception,
    so the error names the file whether or not DataLoader workers are used."""

    def __init__(self, files: list[Path], resolution: int):
        self.files, self.resolution = files, resolution

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from bench.metrics.fid import to_eval_image

        try:
            with Image.open(self.files[i]) as im:
                arr = to_eval_image(im, self.resolution)
            error = ""
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            arr, error = np.zeros((self.resolution, self.resolution, 3), np.uint8), f"{type(e).__name__}: {e}"
        return torch.from_numpy(arr).permute(2, 0, 1), error  # (3, R, R) uint8


def folder_stats(files: list[Path], extractor, protocol: dict, *, batch_size: int = 50,
                 num_workers: int = 0, progress: bool = True, keep_features: bool = False
                 ) -> ReferenceStats:
    """Stream `files` through the extractor; float64 sums, so memory does not grow with N.

    Raises:
        ImageReadError: an image cannot be decoded (named in the message).
    """
    loader = torch.utils.data.DataLoader(_Images(files, extractor.resolution), batch_size=batch_size,
                                         num_workers=num_workers, shuffle=False)
    d, dev = extractor.dims, extractor.device
    total = torch.zeros(d, dtype=torch.float64, device=dev)
    outer = torch.zeros(d, d, dtype=torch.float64, device=dev)
    kept, n = [], 0
    with tqdm(total=len(files), desc="reference features", unit="img", disable=not progress) as bar:
        for images, errors in loader:
            bad = [(files[n + j], e) for j, e in enumerate(errors) if e]
            if bad:
                raise ImageReadError(f"cannot read image {bad[0][0]}: {bad[0][1]}")
            feats = extractor(images).to(torch.float64)  # (B, d)
            total += feats.sum(dim=0)
            outer += feats.T @ feats
            if keep_features:
                kept.append(feats.float().cpu())
            n += len(images)
            bar.update(len(images))
    if n < 2:
        raise ValueError(f"reference statistics need at least 2 images, got {n}")
    mu = total / n
    sigma = (outer - n * torch.outer(mu, mu)) / (n - 1)
    return ReferenceStats(mu.cpu().numpy(), sigma.cpu().numpy(), n, protocol,
                          torch.cat(kept).numpy() if keep_features else None)


def reference_protocol(files: list[Path], extractor, *, split: str, limit: int | None) -> dict:
    """What the statistics depend on: the image set, the preprocessing and the network."""
    return {"dataset": DATASET, "split": split, "n": len(files),
            "selection": f"first {limit} by file name" if limit else "all",
            "files_sha256": files_fingerprint(files), **extractor.protocol}


def cache_path(cache_dir: str | Path, protocol: dict) -> Path:
    """<cache>/coco2014-<split>-n<N>-<res>px-<protocol hash>.npz"""
    digest = hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:16]
    p = protocol
    return Path(cache_dir) / f"{p['dataset']}-{p['split']}-n{p['n']}-{p['resolution']}px-{digest}.npz"


def reference_stats(coco_root: str | Path, extractor, *, split: str = "val2014", limit: int | None = None,
                    cache_dir: str | Path | None = None, batch_size: int = 50, progress: bool = True,
                    keep_features: bool = False, num_workers: int | None = None) -> ReferenceStats:
    """Inception statistics of <coco_root>/<split>/, from the cache when its protocol matches.

    Args:
        coco_root: folder holding `val2014/` (and `annotations/`).
        extractor: a bench.metrics.fid.FeatureExtractor (its protocol goes into the cache).
        split: the image folder, `val2014` by default (the paper's full validation set).
        limit: only the first `limit` images by file name (for quick runs; recorded).
        cache_dir: where `.npz` files live (default: `default_cache_dir()`).
        batch_size: images per network call.
        keep_features: also keep the (N, d) features, which KID needs.
        num_workers: DataLoader decoding workers (default: up to 8 for large sets, else 0).
    Returns: ReferenceStats with `.protocol` (and `.features` when kept).
    Raises:
        FileNotFoundError: no image folder or no images.
        ImageReadError: an image cannot be decoded (named).
    """
    files = list_images(Path(coco_root) / split, limit)
    protocol = reference_protocol(files, extractor, split=split, limit=limit)
    path = cache_path(cache_dir or default_cache_dir(), protocol)
    if path.is_file():
        try:
            cached = ReferenceStats.load(path)
        except (OSError, ValueError, KeyError) as e:  # damaged cache: rebuild it
            cached = None
            tqdm.write(f"ignoring unreadable reference cache {path}: {e}")
        has_features = cached is not None and cached.features is not None
        if cached is not None and cached.protocol == protocol and (has_features or not keep_features):
            if cached.root is None:  # a cache from before roots were kept: add it once
                cached.with_root().save(path)
            return cached
    if num_workers is None:
        num_workers = min(8, max((os.cpu_count() or 1) - 1, 0)) if len(files) >= 1000 else 0
    stats = folder_stats(files, extractor, protocol, batch_size=batch_size, num_workers=num_workers,
                         progress=progress, keep_features=keep_features)
    stats.with_root().save(path)
    return stats
