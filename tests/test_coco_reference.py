"""coco.reference: protocol-named reference statistics, their cache, odd and unreadable images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import coco.reference as reference
from bench.metrics.fid import RESOLUTION, FeatureExtractor, features_of, to_eval_image
from coco.reference import ImageReadError, ReferenceStats, reference_stats
from conftest import shape_image
from fakes import fake_fid_extractor, make_inception_weights

COLOURS = ("red", "green", "blue", "yellow")


def write_val2014(root: Path, n_plain: int = 9) -> Path:
    """<root>/val2014 with RGB JPEGs plus a grayscale, a CMYK and an odd-sized one."""
    folder = root / "val2014"
    folder.mkdir(parents=True)
    for i in range(n_plain):
        im = shape_image(COLOURS[i % 4], ("square", "circle")[i % 2], variant=i, size=64)
        im.save(folder / f"COCO_val2014_{i:012d}.jpg", quality=95)
    shape_image("red", "circle", 5, size=80).convert("L").save(folder / "COCO_val2014_000000000100.jpg")
    shape_image("blue", "square", 6, size=72).convert("CMYK").save(folder / "COCO_val2014_000000000101.jpg")
    shape_image("green", "circle", 7, size=120).resize((97, 41)).save(folder / "COCO_val2014_000000000102.jpg")
    (folder / "README.txt").write_text("not an image, ignored")
    return root


@pytest.fixture(scope="module")
def extractor(tmp_path_factory):
    weights = make_inception_weights(tmp_path_factory.mktemp("inception") / "inception.pth")
    return fake_fid_extractor(weights)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory) -> Path:
    return write_val2014(tmp_path_factory.mktemp("coco"))


def test_eval_image_modes():
    base = shape_image("red", "square", 3, size=90)
    for mode in ("L", "CMYK", "P", "RGBA", "I;16"):
        arr = to_eval_image(base.convert(mode))
        assert arr.shape == (RESOLUTION, RESOLUTION, 3) and arr.dtype == np.uint8
    gray = to_eval_image(base.convert("L"))
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 1] == gray[..., 2]).all()
    odd = to_eval_image(base.resize((97, 41)))
    assert odd.shape == (RESOLUTION, RESOLUTION, 3)
    ready = np.random.default_rng(0).integers(0, 256, (RESOLUTION, RESOLUTION, 3), dtype=np.uint8)
    assert (to_eval_image(Image.fromarray(ready)) == ready).all()  # already at the resolution: untouched


def test_center_crop_keeps_the_middle():
    """A wide image: the left and right thirds are cropped away, the middle fills the frame."""
    im = Image.new("RGB", (300, 100), (255, 0, 0))
    im.paste((0, 0, 255), (100, 0, 200, 100))
    arr = to_eval_image(im)
    assert (arr[..., 2] > 200).mean() > 0.99


def test_statistics_equal_an_independent_computation(coco_root, extractor, tmp_path):
    stats = reference_stats(coco_root, extractor, cache_dir=tmp_path, batch_size=4, progress=False)
    files = sorted((coco_root / "val2014").glob("*.jpg"))
    assert stats.n == len(files) == 12
    images = [Image.open(f) for f in files]
    feats = features_of(extractor, images, batch_size=5).numpy().astype(np.float64)
    assert feats.std(axis=0).mean() > 1e-3 * np.abs(feats).mean()  # stand-in features vary
    assert stats.mu.dtype == stats.sigma.dtype == np.float64
    np.testing.assert_allclose(stats.mu, feats.mean(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(stats.sigma, np.cov(feats, rowvar=False), rtol=1e-7, atol=1e-9)
    p = stats.protocol
    assert p["dataset"] == "coco2014" and p["split"] == "val2014" and p["n"] == 12
    assert p["resolution"] == RESOLUTION and p["resize"] == "pil-bicubic-center-crop"
    assert p["network_resize"] == "tf1-bilinear" and p["selection"] == "all"
    assert p["weights_sha256"] == extractor.protocol["weights_sha256"]
    assert {"torchmetrics", "torch_fidelity", "pillow", "files_sha256"} <= set(p)
    assert stats.features is None  # streamed: only the sums were kept
    (cache,) = tmp_path.glob("*.npz")
    assert cache.name.startswith("coco2014-val2014-n12-256px-")
    with np.load(cache, allow_pickle=False) as z:
        assert json.loads(str(z["protocol"])) == p


def test_cache_reused_when_protocol_matches(coco_root, extractor, tmp_path, monkeypatch):
    first = reference_stats(coco_root, extractor, cache_dir=tmp_path, progress=False)

    def boom(*a, **k):
        raise AssertionError("recomputed although the cache matches")

    monkeypatch.setattr(reference, "folder_stats", boom)
    again = reference_stats(coco_root, extractor, cache_dir=tmp_path, progress=False)
    np.testing.assert_array_equal(again.sigma, first.sigma)
    assert again.protocol == first.protocol and again.n == first.n


def test_cache_rebuilt_when_protocol_differs(coco_root, extractor, tmp_path, monkeypatch):
    full = reference_stats(coco_root, extractor, cache_dir=tmp_path, progress=False)
    part = reference_stats(coco_root, extractor, cache_dir=tmp_path, limit=5, progress=False)
    assert part.n == 5 and part.protocol["selection"] == "first 5 by file name"
    other = FeatureExtractor(extractor.network, extractor.weights_path, device=extractor.device,
                             resolution=128, dims=extractor.dims)  # same network, other protocol
    small = reference_stats(coco_root, other, cache_dir=tmp_path, progress=False)
    assert small.protocol["resolution"] == 128 and not np.allclose(small.mu, full.mu)
    assert len(list(tmp_path.glob("*.npz"))) == 3
    # a cache file whose stored protocol does not match (e.g. edited by hand) is rebuilt
    (path,) = [p for p in tmp_path.glob("*.npz") if "-n12-256px-" in p.name]
    ReferenceStats(full.mu + 1.0, full.sigma, full.n, {**full.protocol, "torchmetrics": "0.0"}).save(path)
    calls = []
    real = reference.folder_stats
    monkeypatch.setattr(reference, "folder_stats", lambda *a, **k: calls.append(1) or real(*a, **k))
    rebuilt = reference_stats(coco_root, extractor, cache_dir=tmp_path, progress=False)
    assert calls and np.allclose(rebuilt.mu, full.mu)


def test_keep_features_for_kid(coco_root, extractor, tmp_path):
    reference_stats(coco_root, extractor, cache_dir=tmp_path, progress=False)
    stats = reference_stats(coco_root, extractor, cache_dir=tmp_path, progress=False, keep_features=True)
    assert stats.features.shape == (12, extractor.dims) and stats.features.dtype == np.float32
    np.testing.assert_allclose(stats.features.mean(axis=0), stats.mu, rtol=1e-5, atol=1e-6)
    assert ReferenceStats.load(next(tmp_path.glob("*.npz"))).features is not None


def test_unreadable_image_is_named(tmp_path, extractor):
    root = write_val2014(tmp_path / "coco", n_plain=3)
    bad = root / "val2014" / "COCO_val2014_000000000050.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(ImageReadError, match="COCO_val2014_000000000050.jpg"):
        reference_stats(root, extractor, cache_dir=tmp_path / "cache", batch_size=2, progress=False)
    assert not list((tmp_path / "cache").glob("*.npz"))  # nothing cached


def test_missing_folder(tmp_path, extractor):
    with pytest.raises(FileNotFoundError, match="val2014"):
        reference_stats(tmp_path, extractor, cache_dir=tmp_path, progress=False)
