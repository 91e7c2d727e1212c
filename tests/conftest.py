"""Shared fixtures: tiny generated captioned-image datasets (no downloads).

`make_shapes` draws coloured squares and circles on a white background, deterministically,
and writes them either as image + .txt pairs or in the COCO 2014 caption layout.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 60, 220),
           "yellow": (235, 200, 30)}
SHAPES = ("square", "circle")


def shape_image(colour: str, shape: str, variant: int, size: int = 64) -> Image.Image:
    """One RGB picture of a `colour` `shape`; `variant` moves and resizes it."""
    im = Image.new("RGB", (size, size), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    side = size // 2 + (variant % 3) * size // 8        # 1/2 .. 3/4 of the image
    x0 = (variant * 7) % (size - side + 1)
    y0 = (variant * 11) % (size - side + 1)
    box = (x0, y0, x0 + side - 1, y0 + side - 1)
    (draw.rectangle if shape == "square" else draw.ellipse)(box, fill=COLOURS[colour])
    return im


def shape_items(n: int = 64, size: int = 64) -> list[tuple[Image.Image, str]]:
    """n (image, caption) pairs cycling through every colour and shape."""
    combos = [(c, s) for c in COLOURS for s in SHAPES]
    return [(shape_image(*combos[i % len(combos)], variant=i // len(combos), size=size),
             f"a {combos[i % len(combos)][0]} {combos[i % len(combos)][1]}") for i in range(n)]


def make_shapes(root: Path, *, n: int = 64, size: int = 64, layout: str = "pairs") -> Path:
    """Write the shapes dataset under `root` as "pairs" (nested folders of .png + .txt) or
    "coco" (annotations/captions_train2014.json + train2014/*.jpg, two captions per image)."""
    root.mkdir(parents=True, exist_ok=True)
    items = shape_items(n, size)
    if layout == "pairs":
        for i, (im, caption) in enumerate(items):
            folder = root / f"part{i % 2}"           # nested: the scan must be recursive
            folder.mkdir(exist_ok=True)
            im.save(folder / f"img{i:03d}.png")
            (folder / f"img{i:03d}.txt").write_text(caption + "\n")
        return root
    if layout != "coco":
        raise ValueError(layout)
    (root / "train2014").mkdir(exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    images, annotations = [], []
    for i, (im, caption) in enumerate(items):
        image_id = 1000 + i
        name = f"COCO_train2014_{image_id:012d}.jpg"
        im.save(root / "train2014" / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        for j, text in enumerate((caption, caption + " on a white background")):
            annotations.append({"id": 10 * image_id + j, "image_id": image_id, "caption": text})
    data = {"info": {}, "images": images, "annotations": annotations, "licenses": []}
    (root / "annotations" / "captions_train2014.json").write_text(json.dumps(data))
    return root


@pytest.fixture(scope="session")
def shapes_pairs(tmp_path_factory) -> Path:
    """64 coloured shapes, 64x64, as image + .txt caption pairs."""
    return make_shapes(tmp_path_factory.mktemp("shapes_pairs"), layout="pairs")


@pytest.fixture(scope="session")
def shapes_coco(tmp_path_factory) -> Path:
    """The same 64 shapes in the COCO 2014 caption layout."""
    return make_shapes(tmp_path_factory.mktemp("shapes_coco"), layout="coco")


@pytest.fixture(scope="session")
def embedding_cache(tmp_path_factory) -> Path:
    """A caption-embedding cache directory shared by the whole test session."""
    return tmp_path_factory.mktemp("embedding_cache")


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test (modules that must stay offline use this with
    `pytestmark = pytest.mark.usefixtures("no_network")`)."""
    def refuse(*a, **k):
        raise AssertionError("a test tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """A test that changes torch's CPU thread count must not change it for the next ones:
    CPU kernels' last bits depend on it (tests/test_pipeline.py batch invariance)."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server of the test session, started by rater.pgserver in a temporary folder
    (as an unprivileged user when run as root) and stopped at the end; skips only where no
    PostgreSQL server binaries exist."""
    from rater.pgserver import TempPostgres, find_bindir

    if find_bindir() is None:
        pytest.skip("no PostgreSQL server binaries (initdb, pg_ctl, postgres): install Debian's "
                    "postgresql-15, or point $RATER_PG_BIN at their folder")
    server = TempPostgres().start()   # a failure to start is an error, not a skip
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server, request):
    """SQLAlchemy URL of a fresh, empty database on the session's PostgreSQL server."""
    import hashlib

    name = "t_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    pg_server.create_database(name)
    return pg_server.url(name)
