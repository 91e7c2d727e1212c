"""bench.metrics.backbones: the `clip` and `dinov2` feature networks on tiny random weights made
on the spot (offline), checked against the libraries' own forward passes on independently
preprocessed pixels, plus the offline rule (missing weights: one message naming what and where)."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from bench.metrics import backbones, networks
from bench.metrics.backbones import check_clip, check_dinov2, load_clip, load_dinov2
from bench.metrics.fid import to_eval_image
from bench.weights import WeightsNotFoundError, file_sha256
from conftest import shape_items
from fakes import make_clip_dir, make_clip_weights
from fakes import make_dinov2_dir as _tiny_dinov2

pytestmark = pytest.mark.usefixtures("no_network")  # conftest.no_network: offline

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


@pytest.fixture(scope="module")
def dino_dir(tmp_path_factory) -> Path:
    """A tiny DINOv2 whose position grid fits 224 px (16 x 16 patches of 14)."""
    return _tiny_dinov2(tmp_path_factory.mktemp("dinov2") / "tiny-dinov2", image_size=224)


@pytest.fixture(scope="module")
def dino(dino_dir):
    return load_dinov2(str(dino_dir))


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> tuple[str, Path]:
    return make_clip_weights(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def clip_net(tiny_clip):
    name, path = tiny_clip
    return load_clip(f"{name}@{path}")


@pytest.fixture(scope="module")
def batch():
    pil = [im for im, _ in shape_items(6)]  # 64 x 64 RGB
    tensor = torch.from_numpy(np.stack([np.asarray(im) for im in pil])).permute(0, 3, 1, 2).contiguous()
    return tensor, pil


def _reference_dinov2(folder: Path, pil: list[Image.Image]) -> torch.Tensor:
    """transformers' own Dinov2Model on pixels made with PIL and numpy: bicubic to 224, /255,
    ImageNet mean/std; the CLS token after the final layer norm."""
    from transformers import Dinov2Model

    arrays = [(np.asarray(im.resize((224, 224), Image.Resampling.BICUBIC), np.float32) / 255.0 - MEAN) / STD
              for im in pil]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    model = Dinov2Model.from_pretrained(str(folder)).float().eval()
    with torch.no_grad():
        out = model(pixel_values=x)
    return out.last_hidden_state[:, 0]


# ---------------------------------------------------------------------------------- dinov2
def test_dinov2_features_are_transformers_cls_after_layernorm(dino, dino_dir, batch):
    tensor, pil = batch
    feats = dino(tensor)
    assert feats.shape == (6, 32) and feats.dtype == torch.float32
    assert feats.std(dim=0).min() > 1e-4  # not degenerate: the images differ, so do the features
    np.testing.assert_allclose(feats.numpy(), _reference_dinov2(dino_dir, pil).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dino(pil).numpy(), feats.numpy(), rtol=1e-6, atol=1e-6)  # PIL input


def test_dinov2_pixels_are_dgm_evals_on_square_images(dino, batch):
    """dgm-eval's DINOv2 transform: torchvision Resize((224, 224), bicubic) on the PIL image,
    ToTensor, ImageNet Normalize; on square images our step 1 + normalisation is the same."""
    import torchvision.transforms as T

    _, pil = batch
    dgm = T.Compose([T.Resize((224, 224), T.InterpolationMode.BICUBIC), T.ToTensor(),
                     T.Normalize(MEAN.tolist(), STD.tolist())])
    expected = torch.stack([dgm(im) for im in pil])
    np.testing.assert_allclose(dino.pixels(pil).numpy(), expected.numpy(), rtol=1e-6, atol=1e-6)


def test_dinov2_is_batch_independent_and_center_crops(dino, batch):
    tensor, pil = batch
    feats = dino(tensor)
    np.testing.assert_allclose(dino(tensor[2:3]).numpy(), feats[2:3].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dino(tensor.flip(0)).numpy(), feats.flip(0).numpy(), rtol=1e-5, atol=1e-6)
    wide = Image.new("RGB", (96, 64), (0, 0, 255))
    wide.paste(pil[0], (16, 0))  # the square in the middle is what step 1 keeps
    cropped = torch.from_numpy(to_eval_image(wide, 224)).permute(2, 0, 1)[None]
    np.testing.assert_allclose(dino([wide]).numpy(), dino(cropped).numpy(), rtol=1e-6, atol=1e-6)
    # PIL's bicubic kernel reaches a few pixels past the crop box: close to the square, not equal
    assert (dino([wide]) - feats[:1]).abs().max() < 0.1
    assert dino([wide.convert("L")]).shape == (1, 32)  # any mode becomes RGB
    at_224 = torch.from_numpy(to_eval_image(pil[1], 224)).permute(2, 0, 1)[None]
    np.testing.assert_allclose(dino(at_224).numpy(), feats[1:2].numpy(), rtol=1e-5, atol=1e-6)


def test_dinov2_position_embeddings_resampled_as_the_original_dinov2(tmp_path, batch):
    """The released checkpoints' 37 x 37 position grid (518 px) on 16 x 16 patches: by default
    bicubic with scale (16 + 0.1) / 37 (the original DINOv2 code, dgm-eval's model);
    `transformers` resamples to size 16."""
    from transformers import Dinov2Config, Dinov2Model

    _, pil = batch
    small = _tiny_dinov2(tmp_path / "grid37", image_size=518, seed=1, pos_scale=1.0)
    ours = load_dinov2(str(small))(pil)
    as_transformers = load_dinov2(str(small), pos_interpolation="transformers")(pil)
    np.testing.assert_allclose(as_transformers.numpy(), _reference_dinov2(small, pil).numpy(),
                               rtol=1e-5, atol=1e-5)
    assert (ours - as_transformers).abs().max() > 1e-4  # 10x the tolerance of the checks here
    # independently: a 16 x 16 model whose position embeddings are resampled up front
    model = Dinov2Model.from_pretrained(str(small))
    pos = model.embeddings.position_embeddings.detach()
    grid = pos[:, 1:].reshape(1, 37, 37, 32).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(grid, scale_factor=(16.1 / 37, 16.1 / 37), mode="bicubic",
                                           align_corners=False)
    state = model.state_dict()
    state["embeddings.position_embeddings"] = torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], 1)
    big = Dinov2Model(Dinov2Config.from_pretrained(str(small), image_size=224))
    big.load_state_dict(state)
    big.save_pretrained(tmp_path / "resampled")
    np.testing.assert_allclose(ours.numpy(), _reference_dinov2(tmp_path / "resampled", pil).numpy(),
                               rtol=1e-5, atol=1e-5)


def test_dinov2_protocol(dino, dino_dir):
    import transformers

    p = dino.protocol
    assert p["library"] == "transformers" and p["transformers"] == transformers.__version__
    assert p["model"] == "tiny-dinov2" and p["weights_file"] == "model.safetensors"
    assert p["weights_sha256"] == file_sha256(dino_dir / "model.safetensors")
    assert p["config_sha256"] == file_sha256(dino_dir / "config.json")
    assert p["resolution"] == p["network_input"] == 224 and p["resize"] == "pil-bicubic-center-crop"
    assert p["feature_layer"] == "cls-after-layernorm" and p["dims"] == 32
    assert p["normalize"] == "imagenet-mean-std"
    assert (dino.name, dino.dims, dino.resolution, dino.device) == ("dinov2", 32, 224, torch.device("cpu"))


def _hf_cache_copy(hub: Path, repo_id: str, folder: Path) -> Path:
    """`folder`'s files laid out as huggingface_hub caches a repo (refs/main -> snapshots/<rev>/)."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    shutil.copytree(folder, snapshot)
    return snapshot


def test_dinov2_repo_ids_come_from_the_hf_cache_only(tmp_path, monkeypatch, dino_dir, dino, batch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    with pytest.raises(WeightsNotFoundError) as err:
        check_dinov2(None)
    msg = str(err.value)
    assert "facebook/dinov2-large" in msg and str(tmp_path / "hf" / "hub") in msg
    assert "hf download facebook/dinov2-large" in msg and "save_pretrained" in msg
    assert "huggingface-cli download facebook/dinov2-large" in msg
    with pytest.raises(WeightsNotFoundError, match="org/tiny-dinov2"):
        load_dinov2("org/tiny-dinov2")
    snapshot = _hf_cache_copy(tmp_path / "hf" / "hub", "org/tiny-dinov2", dino_dir)
    assert check_dinov2("org/tiny-dinov2").folder == snapshot
    net = load_dinov2("org/tiny-dinov2")
    assert net.protocol["model"] == "org/tiny-dinov2"
    assert net.protocol["weights_sha256"] == dino.protocol["weights_sha256"]
    np.testing.assert_allclose(net(batch[0]).numpy(), dino(batch[0]).numpy(), rtol=1e-6, atol=1e-7)


def test_dinov2_missing_or_incomplete_folders(tmp_path, dino_dir):
    with pytest.raises(WeightsNotFoundError, match="nowhere"):
        check_dinov2(str(tmp_path / "nowhere" / "dinov2"))
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(dino_dir / "config.json", partial / "config.json")
    with pytest.raises(WeightsNotFoundError, match="partial.*model.safetensors"):
        check_dinov2(str(partial))
    with pytest.raises(WeightsNotFoundError, match="is a file"):
        check_dinov2(str(partial / "config.json"))
    with pytest.raises(ValueError, match="pos_interpolation"):
        load_dinov2(str(dino_dir), pos_interpolation="nearest")


# ---------------------------------------------------------------------------------- clip
def test_clip_embeddings_are_open_clips_own(tiny_clip, clip_net, batch):
    tensor, pil = batch
    feats = clip_net(tensor)
    assert feats.shape == (6, 32) and feats.dtype == torch.float32
    np.testing.assert_allclose(feats.norm(dim=-1).numpy(), 1.0, rtol=1e-5)
    assert feats.std(dim=0).min() > 1e-4
    name, path = tiny_clip  # independently: open_clip's own model and eval transform, same file
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=str(path))
    model.eval()
    with torch.no_grad():
        expected = model.encode_image(torch.stack([preprocess(im) for im in pil]), normalize=True)
    np.testing.assert_allclose(feats.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(clip_net(pil).numpy(), feats.numpy(), rtol=1e-6, atol=1e-6)  # PIL input
    np.testing.assert_allclose(clip_net(tensor[3:4]).numpy(), feats[3:4].numpy(), rtol=1e-5, atol=1e-6)


def test_clip_protocol_and_sources(tmp_path, tiny_clip, clip_net, batch):
    name, path = tiny_clip
    p = clip_net.protocol
    assert p["library"] == "open_clip" and p["open_clip"] == open_clip.__version__
    assert p["model"] == name and p["pretrained"] == path.name and p["weights_sha256"] == file_sha256(path)
    assert p["image_size"] == p["resolution"] == 32 and p["resize"] == "pil-bicubic-center-crop"
    assert p["network_resize"] == "bicubic-shortest-32-center-crop-32"
    assert p["normalized"] is True and p["dims"] == 32
    assert (clip_net.name, clip_net.dims, clip_net.resolution) == ("clip", 32, 32)
    local = load_clip(make_clip_dir(tmp_path / "tiny"))  # open_clip's local-dir: names, same seed
    np.testing.assert_allclose(local(batch[0]).numpy(), clip_net(batch[0]).numpy(), rtol=1e-6, atol=1e-6)
    assert backbones.parse_clip_source(None) == ("ViT-L-14-336", "openai")
    assert backbones.parse_clip_source("hf-hub:org/repo") == ("hf-hub:org/repo", None)
    with pytest.raises(ValueError, match="MODEL@PRETRAINED"):
        check_clip("ViT-L-14")


def test_missing_clip_weights_name_the_file(tmp_path, tiny_clip):
    name, _ = tiny_clip
    with pytest.raises(WeightsNotFoundError, match="nowhere/clip.pt"):
        check_clip(f"{name}@{tmp_path / 'nowhere' / 'clip.pt'}")
    with pytest.raises(WeightsNotFoundError) as err:
        check_clip(None, cache_dir=str(tmp_path))
    msg = str(err.value)
    assert "ViT-L-14-336" in msg and "vit_large_patch14_clip_336.openai" in msg
    assert str(tmp_path / "ViT-L-14-336px.pt") in msg and "MODEL@PATH" in msg


# ---------------------------------------------------------------------------------- both
def test_check_resolves_without_building(tmp_path, monkeypatch, tiny_clip, dino_dir):
    import transformers

    def refuse(*a, **k):
        raise AssertionError("a model was built")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", refuse)
    monkeypatch.setattr(transformers.Dinov2Model, "from_pretrained", refuse)
    name, path = tiny_clip
    assert check_clip(f"{name}@{path}").path == path
    assert check_dinov2(str(dino_dir)).weights == (dino_dir / "model.safetensors",)
    with pytest.raises(WeightsNotFoundError, match="missing.pt"):
        load_clip(f"{name}@{tmp_path / 'missing.pt'}")
    with pytest.raises(WeightsNotFoundError, match="no-dinov2"):
        load_dinov2(str(tmp_path / "no-dinov2"))


def test_images_are_validated(dino, clip_net):
    for net in (dino, clip_net):
        with pytest.raises(ValueError, match=r"uint8 images \(B, 3, H, W\)"):
            net(torch.zeros(2, 3, 32, 32))
        with pytest.raises(ValueError, match=r"uint8 images \(B, 3, H, W\)"):
            net(torch.zeros(2, 1, 32, 32, dtype=torch.uint8))
        assert net([]).shape == (0, net.dims)


def test_registered_by_name(tmp_path, dino_dir):
    backbones.register_builtin()
    backbones.register_builtin()  # idempotent
    assert networks.entry("clip").default_source == "ViT-L-14-336@openai"
    assert networks.entry("dinov2").default_source == "facebook/dinov2-large"
    with pytest.raises(WeightsNotFoundError, match="no-dinov2"):
        networks.check("dinov2", str(tmp_path / "no-dinov2"))
    assert networks.load("dinov2", str(dino_dir)).name == "dinov2"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_features_match_the_cpu(dino_dir, tiny_clip, dino, clip_net, batch):
    name, path = tiny_clip
    tensor, _ = batch
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    for cpu, gpu in ((dino, load_dinov2(str(dino_dir), device="cuda")),
                     (clip_net, load_clip(f"{name}@{path}", device="cuda"))):
        feats = gpu(tensor.cuda())
        assert feats.device.type == "cuda" and feats.dtype == torch.float32
        np.testing.assert_allclose(feats.cpu().numpy(), cpu(tensor).numpy(), rtol=1e-4, atol=1e-4)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == tf32
