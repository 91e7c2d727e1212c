"""bench.metrics.clip_score and bench.weights: raw cosines from open_clip, truncation counts,
and the offline rule (missing weights stop with one message naming the file and where it goes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch

from bench.metrics.clip_score import ClipScorer, clip_score
from bench.weights import (WeightsNotFoundError, check_weights, file_sha256, resolve_clip_weights)
from conftest import shape_items
from fakes import make_clip_dir, make_clip_weights

LONG = " ".join(["a very long caption about a red square and a green circle"] * 4)


pytestmark = pytest.mark.usefixtures("no_network")  # conftest.no_network: offline


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> tuple[str, Path]:
    return make_clip_weights(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def scorer(tiny_clip) -> ClipScorer:
    name, path = tiny_clip
    return ClipScorer(name, str(path))


@pytest.fixture(scope="module")
def batch():
    items = shape_items(6)
    images = torch.from_numpy(np.stack([np.asarray(im) for im, _ in items])).permute(0, 3, 1, 2).contiguous()
    return images, [im for im, _ in items], [text for _, text in items]


def test_cosines_are_the_raw_model_cosines(tiny_clip, scorer, batch):
    images, pil, texts = batch
    cos, n_trunc = scorer.cosines(images, texts)
    assert cos.shape == (6,) and cos.dtype == np.float64 and n_trunc == 0
    assert np.all(np.abs(cos) <= 1.0) and np.ptp(cos) > 0
    # independently: open_clip's own model, transform and tokenizer from the same file
    name, path = tiny_clip
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(path))
    model.eval()
    with torch.no_grad():
        img = model.encode_image(torch.stack([preprocess(im) for im in pil]))
        txt = model.encode_text(open_clip.get_tokenizer(name)(texts))
    expected = torch.nn.functional.cosine_similarity(img, txt).numpy()
    np.testing.assert_allclose(cos, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scorer.cosines(pil, texts)[0], cos, rtol=1e-6, atol=1e-7)  # PIL input
    np.testing.assert_allclose(scorer.cosines(images.flip(0), texts[::-1])[0], cos[::-1], rtol=1e-5, atol=1e-6)


def test_local_dir_model(tmp_path, scorer, batch):
    """open_clip's `local-dir:` schema (config + weights in a folder), same seed: same cosines."""
    images, _, texts = batch
    name = make_clip_dir(tmp_path / "tiny")
    local = ClipScorer(name, None)
    np.testing.assert_allclose(local.cosines(images, texts)[0], scorer.cosines(images, texts)[0], rtol=1e-6)
    assert local.protocol["weights_sha256"] == scorer.protocol["weights_sha256"]
    (tmp_path / "tiny" / "open_clip_pytorch_model.bin").unlink()
    with pytest.raises(WeightsNotFoundError, match="open_clip_pytorch_model.bin"):
        ClipScorer(name, None)


def test_score_is_100_mean_of_clamped_cosines():
    assert clip_score([0.3, -0.2, 0.1]) == pytest.approx(100 * (0.3 + 0.0 + 0.1) / 3)
    assert clip_score([-0.5, -0.1]) == 0.0
    with pytest.raises(ValueError):
        clip_score([])


def test_long_captions_are_truncated_and_counted(scorer, batch):
    images, _, texts = batch
    assert scorer.context_length == 16
    cos, n_trunc = scorer.cosines(images[:3], [texts[0], LONG, LONG + " more"])
    assert n_trunc == 2 and np.isfinite(cos).all()
    assert scorer.count_truncated(["short", "x " * 13, "x " * 14, "x " * 15]) == 1  # 14 + 2 = 16 fits


def test_protocol(tiny_clip, scorer):
    name, path = tiny_clip
    p = scorer.protocol
    assert p["library"] == "open_clip" and p["model"] == name and p["pretrained"] == path.name
    assert p["weights_sha256"] == file_sha256(path) and p["context_length"] == 16
    assert p["open_clip"] == open_clip.__version__ and p["score"] == "100*mean(max(cos,0))"


def test_missing_clip_weights_name_the_file(tmp_path):
    with pytest.raises(WeightsNotFoundError) as err:
        ClipScorer("ViT-L-14", "openai", cache_dir=str(tmp_path))
    msg = str(err.value)
    assert "timm/vit_large_patch14_clip_224.openai" in msg and "open_clip_model.safetensors" in msg
    assert str(tmp_path / "ViT-L-14.pt") in msg and "--clip-pretrained PATH" in msg
    with pytest.raises(WeightsNotFoundError, match="nowhere/clip.pt"):
        resolve_clip_weights("ViT-L-14", str(tmp_path / "nowhere" / "clip.pt"))
    with pytest.raises(ValueError, match="not an open_clip pretrained tag.*openai"):
        resolve_clip_weights("ViT-L-14", "no-such-tag")


def _fake_hf_file(cache: Path, repo_id: str, filename: str) -> Path:
    """A file laid out as huggingface_hub caches it (refs/main -> snapshots/<rev>/<file>)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    path = repo / "snapshots" / ("0" * 40) / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"weights")
    return path


def test_tags_resolve_from_the_local_caches(tmp_path):
    url_file = tmp_path / "ViT-L-14.pt"  # open_clip's URL cache layout
    url_file.write_bytes(b"weights")
    found = resolve_clip_weights("ViT-L-14", "openai", cache_dir=str(tmp_path))
    assert found.path == url_file and found.tag == "openai" and found.tag_cfg["quick_gelu"] is True
    hf = _fake_hf_file(tmp_path, "timm/vit_large_patch14_clip_224.openai", "open_clip_model.safetensors")
    assert resolve_clip_weights("ViT-L-14", "openai", cache_dir=str(tmp_path)).path == Path(hf)


def test_check_weights_lists_every_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsNotFoundError) as err:
        check_weights(clip_model="ViT-L-14", clip_pretrained="openai", clip_cache_dir=str(tmp_path / "clip"))
    lines = str(err.value).splitlines()
    assert len(lines) == 2
    inception = tmp_path / "torch" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    assert str(inception) in lines[0] and "--inception-weights PATH" in lines[0]
    assert "CLIP" in lines[1]
    with pytest.raises(WeightsNotFoundError, match="nope.pth"):
        check_weights(clip=False, inception_weights=str(tmp_path / "nope.pth"))


def test_check_weights_finds_what_is_there(tmp_path, monkeypatch, tiny_clip):
    inception = tmp_path / "torch" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth"
    inception.parent.mkdir(parents=True)
    inception.write_bytes(b"x")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name, path = tiny_clip
    found = check_weights(clip_model=name, clip_pretrained=str(path))
    assert found["inception"] == inception and found["clip"].path == path
