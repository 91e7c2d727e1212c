"""Stand-in weights for the metric tests, made on the spot (tests are offline).

- `make_inception_weights`: a random state dict of torch-fidelity's real InceptionV3. A bare
  random init gives degenerate features (every layer's BatchNorm expects unit-variance inputs
  the random convolutions do not produce, so the pool features collapse to ~1e-10), so the
  BatchNorm statistics are calibrated on random images first; tests check that the features
  vary across images.
- `make_clip_weights`: a tiny open_clip CLIP registered as an open_clip model config and saved
  with torch.save(state_dict), loaded through open_clip's own `pretrained=PATH` route.
- `fake_fid_extractor`: the extractor the tests use (64-d features, 75 px network input: fast).
"""
from __future__ import annotations

import json
from pathlib import Path
from unittest import mock

import torch

TINY_CLIP = "imagen-bench-test-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _random_inception(seed: int):
    """torch-fidelity's InceptionV3 with seeded random weights (its constructor's download skipped)."""
    import torch_fidelity.feature_extractor_inceptionv3 as tfi

    with mock.patch.object(tfi, "load_state_dict_from_url", return_value={}), \
            mock.patch.object(tfi.FeatureExtractorInceptionV3, "load_state_dict",
                              lambda self, *a, **k: None):
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
            elif isinstance(m, torch.nn.Linear):
                m.weight.copy_(0.01 * torch.randn(m.weight.shape, generator=g))
                m.bias.zero_()
    return net, g


_MADE: dict[int, Path] = {}


def make_inception_weights(path: str | Path, seed: int = 0) -> Path:
    """Save a random, non-degenerate torch-fidelity InceptionV3 state dict to `path` (or return
    the file this session already made with `seed`: it takes seconds)."""
    if seed in _MADE and _MADE[seed].is_file():
        return _MADE[seed]
    net, g = _random_inception(seed)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:  # cumulative averages over the calibration batch
        bn.reset_running_stats()
        bn.momentum = None
    # smooth random pictures: noise at 8x8, upsampled; small input keeps this fast
    low = torch.randint(0, 256, (16, 3, 8, 8), generator=g).float()
    images = torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear").to(torch.uint8)
    net.INPUT_IMAGE_SIZE = 75
    net.train()
    with torch.no_grad():
        net(images)
    net.eval()
    for bn in bns:
        bn.momentum = 0.1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    _MADE[seed] = path
    return path


def fake_fid_extractor(weights: str | Path, *, dims: int = 64, network_input: int = 75, **kw):
    """The FID extractor of the tests: random weights, small features and input (fast on a CPU)."""
    from bench.metrics.fid import load_fid_extractor

    return load_fid_extractor(weights, dims=dims, network_input=network_input, **kw)


def register_tiny_clip(folder: str | Path) -> str:
    """Register the tiny CLIP config with open_clip (its name is the JSON file's stem)."""
    import open_clip

    if TINY_CLIP not in open_clip.list_models():
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / f"{TINY_CLIP}.json"
        config.write_text(json.dumps(TINY_CLIP_CONFIG))
        open_clip.add_model_config(config)
    return TINY_CLIP


def make_clip_weights(folder: str | Path, seed: int = 0) -> tuple[str, Path]:
    """(model name, weights file) of a tiny random open_clip CLIP."""
    import open_clip

    Path(folder).mkdir(parents=True, exist_ok=True)
    name = register_tiny_clip(folder)
    with torch.random.fork_rng(devices=[]):  # open_clip initialises from the global RNG
        torch.manual_seed(seed)
        model = open_clip.create_model(name, pretrained=None)
    path = Path(folder) / "tiny-clip.pt"
    torch.save(model.state_dict(), path)
    return name, path


def make_clip_dir(folder: str | Path, seed: int = 0) -> str:
    """The tiny CLIP as an open_clip `local-dir:` model (config + weights in one folder), which
    any process can load by name: returns 'local-dir:<folder>'."""
    name, weights = make_clip_weights(folder, seed)
    folder = Path(folder)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG}))
    weights.rename(folder / "open_clip_pytorch_model.bin")
    return f"local-dir:{folder}"


def ddp_fid_worker(rank: int, world: int, init_file: str, data_file: str, out_file: str) -> None:
    """One torch.distributed (gloo) rank of the FID reduction test: its shard of the generated
    features goes into an FIDMetric; rank 0 writes FID and KID to `out_file` (JSON)."""
    from types import SimpleNamespace

    import numpy as np
    import torch.distributed as dist

    from bench.metrics.fid import FIDMetric
    from coco.reference import ReferenceStats

    torch.set_num_threads(1)  # a forked child: keep clear of the parent's thread pool
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        data = np.load(data_file)
        ref = ReferenceStats.from_features(data["real"])
        ref.features = data["real"].astype(np.float32)
        stub = SimpleNamespace(device=torch.device("cpu"), dims=data["real"].shape[1], protocol={})
        metric = FIDMetric(stub, ref, kid=True, kid_subsets=5)  # subsets clamp to the whole sets
        fake = torch.from_numpy(data["fake"])
        for part in torch.arange(len(fake))[rank::world].split(4 + 3 * rank):  # uneven batch counts
            metric.update_features(fake[part])
        fid, kid = metric.compute(), metric.compute_kid()
        if rank == 0:
            Path(out_file).write_text(json.dumps({"fid": fid, "kid": kid}))
    finally:
        dist.destroy_process_group()


def make_dinov2_dir(folder: Path, *, image_size: int, seed: int = 0, pos_scale: float = 0.0) -> Path:
    """A random 2-layer DINOv2 (hidden 32) saved with save_pretrained; `pos_scale` > 0 redraws the
    position embeddings with that std (the default init is small: resampling them barely shows)."""
    from transformers import Dinov2Config, Dinov2Model

    config = Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2,
                          patch_size=14, image_size=image_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Dinov2Model(config)
        if pos_scale:
            with torch.no_grad():
                model.embeddings.position_embeddings.normal_(0.0, pos_scale)
    model.save_pretrained(folder)
    return folder
