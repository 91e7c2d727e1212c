"""calibration_world.models and train_metrics: the bundled feature network and CLIP-style tower,
reached through the project's own FID and CLIP-score code paths, offline.

FID numbers are checked against an independent scipy computation on the same features; the
degradation ladder uses strengths far apart so the order holds at 200 images.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.linalg
import torch

from bench.metrics import networks
from bench.metrics.clip_score import make_clip_scorer
from bench.metrics.fid import FIDMetric, features_of
from bench.weights import check_weights, file_sha256
from calibration_world.bundled import bundled_clip_path, bundled_features_path
from calibration_world.models import (WorldClipScorer, WorldFeatureExtractor, load_clip_tower,
                                      load_feature_net)
from calibration_world import checks
from calibration_world.train_metrics import (CHECK_STREAM, corrupt, corrupt_images, degrade,
                                             fid_between, image_stat_targets, main, meaning,
                                             render_batch, world_scenes)
from calibration_world.captions import captions
from calibration_world.defaults import CALIBRATION_WORLD
from coco.reference import ReferenceStats

N = 200  # images per set: more than the 128 feature dims, so covariances are full rank


pytestmark = pytest.mark.usefixtures("no_network")  # conftest.no_network: offline


@pytest.fixture(scope="module")
def extractor() -> WorldFeatureExtractor:
    return networks.load(CALIBRATION_WORLD)


@pytest.fixture(scope="module")
def scorer() -> WorldClipScorer:
    return make_clip_scorer(CALIBRATION_WORLD)


@pytest.fixture(scope="module")
def sets():
    """Two disjoint sets of N real world images at 64²: (scenes_a, a, scenes_b, b)."""
    sa, sb = world_scenes(0, CHECK_STREAM, N), world_scenes(1, CHECK_STREAM, N)
    return sa, render_batch(sa, 64), sb, render_batch(sb, 64)


def scipy_fid(x: np.ndarray, y: np.ndarray) -> float:
    """Textbook FID in float64: numpy mean/cov and scipy's matrix square root."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((x.mean(0) - y.mean(0)) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


def test_bundled_weights_load_and_features_vary(extractor, sets):
    net, record = load_feature_net(bundled_features_path())
    assert record["kind"] == "features" and record["validation"]["background"] > 0.9
    tower, crecord = load_clip_tower(bundled_clip_path())
    assert crecord["kind"] == "clip" and crecord["config"]["text_encoder"] == "minilm-l6"
    feats = features_of(extractor, sets[1][:64]).numpy()
    assert feats.shape == (64, extractor.dims) and np.isfinite(feats).all()
    varying = (feats.std(axis=0) > 1e-3).mean()
    assert varying > 0.5, f"only {varying:.0%} of the feature dims vary across images"
    assert np.linalg.matrix_rank(feats - feats.mean(0), tol=1e-3) > 20


def test_protocol_names_the_network_and_its_hash(extractor, scorer):
    p = extractor.protocol
    assert "calibration-world" in p["feature_extractor"] and "not Inception" in p["feature_extractor"]
    assert p["weights_sha256"] == file_sha256(bundled_features_path())
    assert (p["resolution"], p["dims"], p["weights_official"]) == (64, extractor.dims, False)
    assert scorer.protocol["weights_sha256"] == file_sha256(bundled_clip_path())
    assert "not CLIP" in scorer.protocol["model"]


def test_fid_path_matches_scipy_and_self_is_zero(extractor, sets):
    _, a, _, b = sets
    fa, fb = features_of(extractor, a).numpy(), features_of(extractor, b).numpy()
    ref = ReferenceStats.from_features(fa, extractor.protocol)
    metric = FIDMetric(extractor, ref)
    metric.update(a)
    assert abs(metric.compute()) < 1e-3 * np.trace(ref.sigma)
    metric.reset()
    metric.update(b)
    ours, theirs = metric.compute(), scipy_fid(fa, fb)
    assert ours == pytest.approx(theirs, rel=1e-3, abs=1e-6)
    assert ours > 0


@pytest.mark.parametrize("kind,weak,strong", [("blur", 1.0, 3.0), ("noise", 8, 64), ("color", 16, 96)])
def test_distance_grows_with_degradation(extractor, sets, kind, weak, strong):
    _, a, _, b = sets
    clean = fid_between(extractor, a, b)
    d_weak = fid_between(extractor, a, degrade(b, kind, weak))
    d_strong = fid_between(extractor, a, degrade(b, kind, strong))
    assert clean < d_weak < d_strong, (kind, clean, d_weak, d_strong)


def test_bundled_features_ladder_is_monotonic_at_every_strength(extractor, sets):
    """The ladder the demo report shows (checks.KINDS, each step of each kind), at N vs N."""
    images = np.concatenate([sets[1].numpy(), sets[3].numpy()]).transpose(0, 2, 3, 1)
    rows = checks.degradation_ladder(images, extractor, progress=False)
    for kind in checks.KINDS:
        d = [r["distance"] for r in rows if r["kind"] == kind]
        assert all(b > a for a, b in zip(d, d[1:])), (kind, d)


def test_training_corruptions_and_image_statistics():
    images = render_batch(world_scenes(0, CHECK_STREAM, 12), 32)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(corrupt_images(images, 0.0, gen), images)
    changed = corrupt_images(images, 1.0, gen)
    assert changed.dtype == torch.uint8 and changed.shape == images.shape
    assert sum(not torch.equal(a, b) for a, b in zip(changed, images)) >= 10
    stats = image_stat_targets(changed)
    assert stats.shape == (12, 36) and stats.dtype == torch.float32
    np.testing.assert_allclose(stats.numpy(), checks.simple_features(changed.numpy()), rtol=1e-6)
    blurred = torch.from_numpy(checks.degrade(images.permute(0, 2, 3, 1).numpy(), "blur", 2.0))
    grad = slice(30, 36)  # the gradient-energy statistics drop under blur
    assert (image_stat_targets(blurred.permute(0, 3, 1, 2))[:, grad] <
            image_stat_targets(images)[:, grad]).all()


def test_true_caption_beats_swapped_colour(scorer, sets):
    scenes, images = sets[0][:64], sets[1][:64]
    rng = np.random.default_rng(0)
    truth = [captions(s)[0] for s in scenes]
    wrong = [corrupt(t, "color", rng) for t in truth]
    cos_true, n_trunc = scorer.cosines(images, truth)
    cos_wrong, _ = scorer.cosines(images, wrong)
    assert n_trunc == 0 and cos_true.dtype == np.float64 and cos_true.shape == (64,)
    assert np.mean(cos_true > cos_wrong) > 0.8


def test_corruptions_change_the_meaning():
    rng = np.random.default_rng(0)
    for scene in world_scenes(0, CHECK_STREAM, 100):
        text = captions(scene)[-1]
        assert all(meaning(t) == meaning(text) for t in captions(scene))
        for kind in ("color", "shape", "relation", "count"):
            bad = corrupt(text, kind, rng)
            if bad is not None:
                assert meaning(bad) != meaning(text), (text, kind, bad)
        assert (corrupt(text, "relation", rng) is None) == (scene.relation is None)


def test_metric_code_paths_accept_the_name(tmp_path):
    """The plugin's registrations reach the commands' code paths by name alone."""
    from bench import coco_fid

    found = check_weights(fid=False, networks={CALIBRATION_WORLD: None},
                          clip_model=CALIBRATION_WORLD, clip_pretrained="openai")
    assert found["clip"] == bundled_clip_path() and CALIBRATION_WORLD in found
    args = coco_fid.build_parser().parse_args(
        ["--coco-root", str(tmp_path), "--fid-network", CALIBRATION_WORLD,
         "--clip-model", CALIBRATION_WORLD, "--cmmd-network", f"{CALIBRATION_WORLD}-clip",
         "--prdc-features", CALIBRATION_WORLD, "--metrics", "fid,cmmd,clip_score"])
    args.metric_plan = coco_fid.metric_plan(args)
    loaded, scorer = coco_fid._metrics(args, torch.device("cpu"))
    assert isinstance(loaded[CALIBRATION_WORLD], WorldFeatureExtractor)
    assert isinstance(scorer, WorldClipScorer)
    clip_images = loaded[f"{CALIBRATION_WORLD}-clip"]
    feats = clip_images(render_batch(world_scenes(0, CHECK_STREAM, 4), 64))
    assert torch.allclose(feats.norm(dim=-1), torch.ones(4), atol=1e-5)   # unit embeddings
    assert float(feats.std(dim=0).max()) > 0                                # they vary
    with pytest.raises(ValueError, match="fid-dims"):
        networks.load(CALIBRATION_WORLD, dims=64)


def test_recipe_commands_train_toy_models(tmp_path, capsys):
    trunk = {"resolution": 32, "widths": [8, 8, 16], "groups": 4}
    common = {"seed": 3, "n_train": 32, "n_val": 16, "steps": 3, "batch_size": 8, "lr": 0.002}
    recipes = {"features": {"kind": "features", **common, "corrupt_fraction": 0.5,
                            "image_stats_weight": 10.0,
                            "model": {"trunk": trunk, "dims": 16, "image_stats": 36}},
               "clip": {"kind": "clip", **common, "negatives": 2,
                        "model": {"trunk": trunk, "embed": 16, "text_width": 16, "text_heads": 2}}}
    for kind, recipe in recipes.items():
        (tmp_path / f"{kind}.json").write_text(json.dumps(recipe))
        out = tmp_path / f"{kind}.safetensors"
        assert main([kind, "--recipe", str(tmp_path / f"{kind}.json"), "--out", str(out),
                     "--no-progress"]) == 0
        record = json.loads(out.with_suffix(".json").read_text())
        assert record["seed"] == 3 and record["recipe"] == recipe and record["train_seconds"] > 0
    extractor = WorldFeatureExtractor(tmp_path / "features.safetensors")
    assert extractor(render_batch(world_scenes(0, CHECK_STREAM, 4), 32)).shape == (4, 16)
    scorer = make_clip_scorer(CALIBRATION_WORLD, str(tmp_path / "clip.safetensors"))
    assert scorer.protocol["weights_sha256"] == file_sha256(tmp_path / "clip.safetensors")
    wrong_kind = ["features", "--recipe", str(tmp_path / "clip.json"),
                  "--out", str(tmp_path / "x.safetensors")]
    assert main(wrong_kind) == 2
    assert "expected 'features'" in capsys.readouterr().err
    bad = dict(recipes["features"], model={"trunk": trunk, "dims": 16, "image_stats": 5})
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    assert main(["features", "--recipe", str(tmp_path / "bad.json"),
                 "--out", str(tmp_path / "y.safetensors")]) == 2
    assert "image_stats must be 0 or 36" in capsys.readouterr().err


def test_training_text_embeddings_equal_the_scorers():
    """encode_captions (training, padded per batch, float16) matches FrozenTextEncoder (scoring)."""
    from calibration_world.train_metrics import encode_captions
    from imagen_ref.text_encoder import FrozenTextEncoder

    texts = ["a red circle", "a green triangle to the left of a yellow circle",
             "two blue squares and an orange diamond"]
    emb, mask = encode_captions(texts, 24, progress=False)
    ref, ref_mask = FrozenTextEncoder("minilm-l6", max_length=24, device="cpu").encode(texts)
    assert torch.equal(mask, ref_mask)
    assert torch.allclose(emb.float(), ref, atol=5e-3)
