"""bench.metrics.fid: torchmetrics FID against reference statistics, checked independently.

The stand-in Inception is random (tests/fakes.py) with 64-d features and a 75 px network input:
the FID math and glue are the same as at 2048-d / 299 px, but the d x d eigenvalue problem
takes milliseconds instead of a minute. One test runs the default 2048-d / 299 px extractor.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image

from bench.metrics.fid import FIDMetric, features_of, frechet_distance, load_fid_extractor
from coco.reference import ReferenceStats
from conftest import shape_image, shape_items
from fakes import ddp_fid_worker, fake_fid_extractor, make_inception_weights

N = 80  # more images than feature dims (64): full-rank covariances for scipy's sqrtm


def scipy_fid(real: np.ndarray, fake: np.ndarray) -> float:
    """The textbook computation, float64: numpy mean/cov and scipy's matrix square root."""
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    mu1, mu2 = real.mean(axis=0), fake.mean(axis=0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def as_batch(images: list[Image.Image]) -> torch.Tensor:
    return torch.from_numpy(np.stack([np.asarray(im) for im in images])).permute(0, 3, 1, 2).contiguous()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return make_inception_weights(tmp_path_factory.mktemp("inception") / "inception.pth")


@pytest.fixture(scope="module")
def extractor(weights):
    return fake_fid_extractor(weights)


@pytest.fixture(scope="module")
def real_images() -> list[Image.Image]:
    return [im for im, _ in shape_items(N)]


@pytest.fixture(scope="module")
def fake_images() -> list[Image.Image]:
    colours, shapes = ("red", "green", "blue", "yellow"), ("square", "circle")
    return [shape_image(colours[i % 4], shapes[(i // 4) % 2], variant=3 * i + 1).rotate(90)
            for i in range(N)]


@pytest.fixture(scope="module")
def real_features(extractor, real_images) -> np.ndarray:
    feats = features_of(extractor, real_images, batch_size=16).numpy()
    # a random network can collapse features; then every FID below would pass vacuously
    assert (feats.std(axis=0) > 1e-3 * np.abs(feats).mean()).mean() > 0.9
    return feats


def test_default_extractor(weights):
    """The real protocol (2048-d pool3, 256 px PIL bicubic, TF1 bilinear to 299 px), and its
    stand-in pool3 features vary across images."""
    ext = load_fid_extractor(weights)
    p = ext.protocol
    assert (p["dims"], p["feature_layer"], p["network_input"], p["resolution"]) == (2048, "pool3", 299, 256)
    assert (p["resize"], p["network_resize"]) == ("pil-bicubic-center-crop", "tf1-bilinear")
    assert p["weights_official"] is False and len(p["weights_sha256"]) == 64
    ext.network.INPUT_IMAGE_SIZE = 75  # a 299 px pool3 pass takes seconds per image on a small CPU
    feats = ext([shape_image("red", "square", 0), shape_image("blue", "circle", 5)]).numpy()
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    assert np.abs(feats[0] - feats[1]).mean() > 1e-3 * np.abs(feats).mean()


def test_fid_of_a_set_against_itself_is_zero(extractor, real_images, real_features):
    ref = ReferenceStats.from_features(real_features, extractor.protocol)
    metric = FIDMetric(extractor, ref)
    for i in range(0, N, 32):  # uint8 batches at 64 px: the metric applies the resize protocol
        metric.update(as_batch(real_images[i:i + 32]))
    assert metric.n == N
    assert abs(metric.compute()) < 1e-6 * np.trace(ref.sigma)


def test_fid_equals_scipy_on_the_same_features(extractor, real_features, fake_images):
    ref = ReferenceStats.from_features(real_features, extractor.protocol)
    metric = FIDMetric(extractor, ref)
    seen = []
    hook = extractor.network.register_forward_hook(lambda m, i, out: seen.append(out.detach().clone()))
    try:
        for i in range(0, N, 24):
            metric.update(fake_images[i:i + 24])  # PIL images this time
    finally:
        hook.remove()
    fake = torch.cat(seen).numpy()
    assert fake.shape == (N, 64)
    expected = scipy_fid(real_features, fake)
    assert expected > 1e-3 * np.trace(ref.sigma)  # the sets differ: not a vacuous comparison
    assert metric.compute() == pytest.approx(expected, rel=1e-6)
    assert frechet_distance(ref.mu, ref.sigma, fake.mean(0), np.cov(fake.astype(np.float64), rowvar=False)) \
        == pytest.approx(expected, rel=1e-6)


def test_states_are_fixed_size_float64_sums(extractor, real_features, fake_images):
    """Streaming: the states are sums whose size does not depend on the number of images."""
    metric = FIDMetric(extractor, ReferenceStats.from_features(real_features, extractor.protocol))
    metric.update(fake_images[:8])
    shapes = {name: tuple(getattr(metric.fid, name).shape) for name in metric.fid._defaults}
    metric.update(fake_images[8:40])
    assert shapes == {name: tuple(getattr(metric.fid, name).shape) for name in metric.fid._defaults}
    assert metric.fid.fake_features_cov_sum.dtype == torch.float64
    assert metric.kid is None


def test_reference_of_another_protocol_is_refused(extractor, real_features):
    ref = ReferenceStats.from_features(real_features, {**extractor.protocol, "resolution": 512})
    with pytest.raises(ValueError, match="resolution: 512 != 256"):
        FIDMetric(extractor, ref)


def numpy_kid(real: np.ndarray, fake: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (x·y/d + 1)³ over the whole sets."""
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    d, m = real.shape[1], len(real)
    k = lambda a, b: (a @ b.T / d + 1.0) ** 3  # noqa: E731
    kxx, kyy, kxy = k(real, real), k(fake, fake), k(real, fake)
    off = lambda a: (a.sum() - np.trace(a)) / (m * (m - 1))  # noqa: E731
    return float(off(kxx) + off(kyy) - 2.0 * kxy.mean())


def test_kid_on_request(extractor, real_features, fake_images):
    ref = ReferenceStats.from_features(real_features, extractor.protocol)
    with pytest.raises(ValueError, match="keep_features"):
        FIDMetric(extractor, ref, kid=True)
    ref.features = real_features
    metric = FIDMetric(extractor, ref, kid=True, kid_subsets=3)  # subset size clamps to N: whole sets
    seen = []
    hook = extractor.network.register_forward_hook(lambda m, i, out: seen.append(out.detach().clone()))
    try:
        metric.update(fake_images)
    finally:
        hook.remove()
    mean, std = metric.compute_kid()
    assert mean == pytest.approx(numpy_kid(real_features, torch.cat(seen).numpy()), rel=1e-6)
    assert std == pytest.approx(0.0, abs=1e-9 * abs(mean))
    subsets = []
    for seed in (0, 0, 1):
        sub = FIDMetric(extractor, ref, kid=True, kid_subsets=10, kid_subset_size=40, seed=seed)
        sub.update_features(torch.cat(seen))
        subsets.append(sub.compute_kid())
    assert subsets[0] == subsets[1] != subsets[2]  # the subsets follow the seed alone


def test_ranks_reduce_to_the_single_process_value(tmp_path, real_features):
    """Two gloo ranks with uneven shards give the single-process FID and KID."""
    rng = np.random.default_rng(0)
    fake = (real_features[rng.permutation(N)] * rng.uniform(0.8, 1.2, real_features.shape[1])
            ).astype(np.float32)
    np.savez(tmp_path / "data.npz", real=real_features, fake=fake)
    torch.multiprocessing.start_processes(
        ddp_fid_worker, args=(2, str(tmp_path / "init"), str(tmp_path / "data.npz"), str(tmp_path / "out.json")),
        nprocs=2, join=True, start_method="fork")  # fork: the children need not re-import
    result = json.loads((tmp_path / "out.json").read_text())
    assert result["fid"] == pytest.approx(scipy_fid(real_features, fake), rel=1e-6)
    from types import SimpleNamespace

    ref = ReferenceStats.from_features(real_features)
    ref.features = real_features
    stub = SimpleNamespace(device=torch.device("cpu"), dims=real_features.shape[1], protocol={})
    single = FIDMetric(stub, ref, kid=True, kid_subsets=5)
    single.update_features(torch.from_numpy(fake))
    assert result["fid"] == pytest.approx(single.compute(), rel=1e-9)
    assert result["kid"][0] == pytest.approx(single.compute_kid()[0], rel=1e-9)
