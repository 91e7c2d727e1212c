"""Captioned image datasets for training: a COCO 2014 root or a folder of image + .txt pairs.

Preprocessing protocol (recorded with every trained stage, see `Preprocess.describe`):
- every image is decoded with PIL, EXIF-rotated, and made RGB (grayscale and CMYK converted,
  transparency composited over white);
- base stage: center square crop, then PIL bicubic resize to image_size;
- SR stage: PIL bicubic resize so the short side equals image_size, a random image_size crop,
  and the low-res conditioning made from that crop by PIL bicubic (antialiased) downsampling
  to lowres_size;
- pixels map to [-1, 1] as x / 127.5 - 1.

Randomness (caption choice, crop position, shuffling) is derived from (seed, epoch, index), so
an example never depends on the worker, batch or rank that produced it.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .device import derive_seed

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
COCO_SPLIT = "train2014"


class DataError(Exception):
    """Training data that cannot be used; the message names the file and what to do."""


@dataclass(frozen=True)
class Record:
    """One training image and its captions."""

    path: Path                 # image file
    captions: tuple[str, ...]  # one is drawn per epoch


# ---------------------------------------------------------------------------------------------
# finding data


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: cannot parse the COCO annotations ({e}); re-download "
                        "captions_train2014.json") from None


def load_coco(root: str | Path, split: str = COCO_SPLIT) -> list[Record]:
    """Records of a COCO root: annotations/captions_<split>.json + <split>/ images.

    Images without captions are left out; records are ordered by image id.
    """
    root = Path(root)
    ann_path = root / "annotations" / f"captions_{split}.json"
    data = _load_json(ann_path)
    try:
        files = {int(im["id"]): im["file_name"] for im in data["images"]}
        captions: dict[int, list[str]] = {}
        for ann in data["annotations"]:
            captions.setdefault(int(ann["image_id"]), []).append(str(ann["caption"]).strip())
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{ann_path}: not COCO caption annotations (missing or bad field {e}); "
                        "expected images[].id/file_name and annotations[].image_id/caption") from None
    image_dir = root / split
    if not image_dir.is_dir():
        raise DataError(f"{image_dir} is missing; put the COCO {split} images there "
                        f"(next to {ann_path.parent})")
    return [Record(image_dir / files[i], tuple(captions[i])) for i in sorted(files) if i in captions]


def _read_captions(path: Path) -> tuple[str, ...]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read the caption file ({e}); save it as UTF-8 text") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def scan_pairs(root: str | Path) -> list[Record]:
    """Records of a folder searched recursively for images with a same-stem .txt caption file
    (one caption per non-empty line; images without one are skipped)."""
    records = []
    for path in sorted(Path(root).rglob("*")):
        if path.suffix.lower() not in IMAGE_EXTS or not path.is_file():
            continue
        txt = path.with_suffix(".txt")
        if txt.is_file() and (captions := _read_captions(txt)):
            records.append(Record(path, captions))
    return records


def find_records(root: str | Path) -> tuple[list[Record], str]:
    """Records under `root` and the layout found ("coco" or "pairs").

    A root with annotations/captions_train2014.json is COCO; anything else is searched for
    image + .txt pairs.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist; pass a COCO root "
                        "(annotations/ + train2014/) or a folder of images with .txt captions")
    if (root / "annotations" / f"captions_{COCO_SPLIT}.json").is_file():
        records, layout = load_coco(root), "coco"
    else:
        records, layout = scan_pairs(root), "pairs"
    if not records:
        raise DataError(f"no captioned images found under {root}: expected COCO "
                        f"(annotations/captions_{COCO_SPLIT}.json + {COCO_SPLIT}/) or image "
                        f"files ({', '.join(IMAGE_EXTS)}) each with a same-stem .txt caption")
    return records, layout


# ---------------------------------------------------------------------------------------------
# decoding and preprocessing


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode.startswith("I") or im.mode == "F":
        # 16/32-bit grayscale: PIL's convert("RGB") clips at 255, so rescale first.
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / peak * 255.0, 0, 255).round().astype(np.uint8))
    return im.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode an image as RGB; DataError naming the file when it cannot be read."""
    try:
        with Image.open(path) as im:
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read the image ({type(e).__name__}: {e}); replace or "
                        "remove the file (and its caption)") from None


def to_tensor(im: Image.Image) -> torch.Tensor:
    """RGB PIL image -> float (3, H, W) in [-1, 1]."""
    arr = torch.from_numpy(np.array(im, dtype=np.uint8))  # (H, W, 3)
    return arr.permute(2, 0, 1).float() / 127.5 - 1.0


def center_crop_resize(im: Image.Image, size: int) -> Image.Image:
    """Center square crop, then PIL bicubic resize to size x size."""
    w, h = im.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return im.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BICUBIC)


def resize_short_side(im: Image.Image, size: int) -> Image.Image:
    """PIL bicubic resize so the short side is exactly `size` (aspect ratio kept)."""
    w, h = im.size
    scale = size / min(w, h)
    new = (max(size, round(w * scale)), max(size, round(h * scale)))
    return im if new == (w, h) else im.resize(new, Image.Resampling.BICUBIC)


def random_crop(im: Image.Image, size: int, generator: torch.Generator) -> Image.Image:
    """A size x size crop at a position drawn from `generator`."""
    w, h = im.size
    left = int(torch.randint(0, w - size + 1, (1,), generator=generator))
    top = int(torch.randint(0, h - size + 1, (1,), generator=generator))
    return im.crop((left, top, left + size, top + size))


@dataclass(frozen=True)
class Preprocess:
    """What a stage trains on: the target size and, for SR stages, the conditioning size."""

    image_size: int                 # side of the training image
    lowres_size: int | None = None  # SR stages: side of the low-res conditioning image

    def describe(self) -> str:
        """The protocol as a string recorded with the checkpoint."""
        if self.lowres_size is None:
            return f"rgb; center-crop; pil-bicubic {self.image_size}; [-1,1]"
        return (f"rgb; pil-bicubic short-side {self.image_size}; random-crop {self.image_size}; "
                f"lowres pil-bicubic {self.lowres_size}; [-1,1]")


# ---------------------------------------------------------------------------------------------
# dataset and sampler


class CaptionedImages(torch.utils.data.Dataset):
    """Items are dicts {"image": (3, S, S), "caption": str} plus "lowres": (3, s, s) for SR.

    Index `epoch * len(self) + i` gives record i as seen in that epoch (its caption and crop
    are drawn from a generator seeded by (seed, epoch, i)); plain indices are epoch 0.
    """

    def __init__(self, records: list[Record], preprocess: Preprocess, seed: int = 0):
        if not records:
            raise DataError("no records to train on")
        self.records, self.preprocess, self.seed = list(records), preprocess, seed

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int) -> dict:
        epoch, i = divmod(int(key), len(self.records))
        rec, pp = self.records[i], self.preprocess
        pick = random.Random(derive_seed(self.seed, "caption", epoch, i))
        item = {"caption": rec.captions[pick.randrange(len(rec.captions))]}
        im = load_rgb(rec.path)
        if pp.lowres_size is None:
            item["image"] = to_tensor(center_crop_resize(im, pp.image_size))
            return item
        gen = torch.Generator().manual_seed(derive_seed(self.seed, "crop", epoch, i))
        crop = random_crop(resize_short_side(im, pp.image_size), pp.image_size, gen)
        low = crop.resize((pp.lowres_size,) * 2, Image.Resampling.BICUBIC)
        item["image"], item["lowres"] = to_tensor(crop), to_tensor(low)
        return item


class ShardedSampler(torch.utils.data.Sampler):
    """Endless, resumable, per-rank order over a CaptionedImages dataset.

    Each epoch is a permutation seeded by (seed, epoch), padded by wrapping to a multiple of
    world_size, and rank r takes every world_size-th entry from r, so ranks see disjoint
    shards of equal length. Yields `epoch * n + i`. `start` skips that many of this rank's
    samples (the data position saved for --resume).
    """

    def __init__(self, n: int, *, seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, start: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.shuffle, self.start = shuffle, start
        self.per_rank = math.ceil(n / world_size)

    def epoch_order(self, epoch: int) -> list[int]:
        """This rank's record indices in `epoch`."""
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, "shuffle", epoch))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.n))[:total]
        return order[self.rank::self.world_size]

    def __iter__(self):
        epoch, pos = divmod(self.start, self.per_rank)
        while True:
            for i in self.epoch_order(epoch)[pos:]:
                yield epoch * self.n + i
            epoch, pos = epoch + 1, 0
