"""FID (and KID on request) with torchmetrics on torch-fidelity's InceptionV3 pool features.

The preprocessing is one named protocol, recorded with every number and in the cached
reference statistics (STYLE 7):

1. `pil-bicubic-center-crop`: any image (grayscale, CMYK, palette, odd-sized) becomes RGB and is
   center-cropped to a square and resized to 256x256 with PIL bicubic (`ImageOps.fit`), then
   quantised to uint8. Images already 256x256 RGB pass unchanged.
2. `tf1-bilinear`: the network's own resize to 299x299, torch-fidelity's TF1-compatible
   bilinear (torchmetrics `antialias=False`; torchmetrics >= 1.8 defaults to antialiased
   resizing, which gives different numbers), then InceptionV3 up to the 2048-d pool.

Statistics are torchmetrics states: float64 feature sums and outer-product sums, reduced
across torch.distributed ranks, so memory is O(d^2), not O(N) (KID, which keeps every
feature, is the exception and is off by default).
"""
from __future__ import annotations

import contextlib
import importlib.metadata as md
import pickle
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageOps
from torch import nn

from .frechet import ReferenceRoot, frechet_distance  # noqa: F401  (re-exported)
from ..weights import OFFICIAL_INCEPTION_SHA256_PREFIX, file_sha256, resolve_inception_weights

RESOLUTION = 256                      # evaluation resolution (Imagen's COCO FID, §3)
RESIZE = "pil-bicubic-center-crop"    # step 1 above
NETWORK_RESIZE = "tf1-bilinear"       # step 2 above
NETWORK_INPUT = 299                   # InceptionV3's input size
FEATURE_DIMS = 2048                   # pool3 features


def to_eval_image(image: Image.Image, resolution: int = RESOLUTION) -> np.ndarray:
    """Step 1 of the protocol: RGB, center crop, PIL bicubic to `resolution`². Returns (R, R, 3) uint8."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (resolution, resolution):
        image = ImageOps.fit(image, (resolution, resolution), method=Image.Resampling.BICUBIC,
                             centering=(0.5, 0.5))
    return np.array(image, dtype=np.uint8)  # a writable copy (torch.from_numpy wants one)


def eval_batch(images, resolution: int) -> torch.Tensor:
    """Protocol step 1 of uint8 (B, 3, H, W) or PIL images: uint8 (B, 3, R, R).

    A tensor already at R x R is returned as is (on its device); anything else goes through
    bench.metrics.fid.to_eval_image on the CPU.
    Raises:
        ValueError: a tensor that is not uint8 (B, 3, H, W).
    """
    if isinstance(images, torch.Tensor):
        if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected uint8 images (B, 3, H, W), got {images.dtype} "
                             f"{tuple(images.shape)}")
        if images.shape[-2:] == (resolution, resolution):
            return images
        images = [Image.fromarray(x.permute(1, 2, 0).cpu().numpy()) for x in images]
    arrays = [to_eval_image(im, resolution) for im in images]
    if not arrays:
        return torch.empty(0, 3, resolution, resolution, dtype=torch.uint8)
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@contextlib.contextmanager
def _no_tf32():
    """Full fp32 convolutions on CUDA while extracting features (TF32 would move FID)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


class FeatureExtractor:
    """torch-fidelity's InceptionV3 as torchmetrics builds it, plus the preprocessing protocol.

    Call it on uint8 images (B, 3, H, W) or a list of PIL images; returns float32 (B, dims).
    """

    name = feature_name = "inception"  # runs store its features as <config>/inception.npy

    def __init__(self, network: nn.Module, weights_path: Path, *, device: torch.device,
                 resolution: int = RESOLUTION, dims: int = FEATURE_DIMS):
        self.network = network.to(device).eval()
        self.weights_path = Path(weights_path)
        self.device = device
        self.resolution = resolution
        self.dims = dims
        sha = file_sha256(weights_path)
        self.protocol = {
            "library": "torchmetrics",
            "torchmetrics": md.version("torchmetrics"),
            "torch_fidelity": md.version("torch-fidelity"),
            "pillow": md.version("pillow"),
            "feature_extractor": "torch-fidelity inception-v3-compat",
            "feature_layer": "pool3" if dims == FEATURE_DIMS else f"pool-{dims}",
            "dims": dims,
            "weights_file": self.weights_path.name,
            "weights_sha256": sha,
            "weights_official": sha.startswith(OFFICIAL_INCEPTION_SHA256_PREFIX),
            "resolution": resolution,
            "resize": RESIZE,
            "network_input": int(network.INPUT_IMAGE_SIZE),
            "network_resize": NETWORK_RESIZE,
        }

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Protocol step 1 for one image: (R, R, 3) uint8."""
        return to_eval_image(image, self.resolution)

    def prepare(self, images) -> torch.Tensor:
        """uint8 (B, 3, R, R) on the CPU from uint8 (B, 3, H, W) or PIL images (protocol step 1)."""
        return eval_batch(images, self.resolution).cpu()

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        x = self.prepare(images).to(self.device)
        with _no_tf32():
            return self.network(x).float()  # (B, dims)


def load_fid_extractor(weights_path: str | Path | None = None, *, device: str | torch.device = "cpu",
                       resolution: int = RESOLUTION, dims: int = FEATURE_DIMS,
                       network_input: int = NETWORK_INPUT) -> FeatureExtractor:
    """The FID feature extractor with local weights (never downloads).

    Args:
        weights_path: torch-fidelity Inception weights; None looks in torch.hub's cache (other
            feature networks: bench.metrics.networks).
        device: where the network runs.
        resolution: the evaluation resolution of protocol step 1.
        dims: feature layer, 2048 (pool3, the FID standard) or 64/192/768 (tests: the
            d x d eigenvalue problem of FID at d=2048 takes about a minute on a small CPU).
        network_input: InceptionV3's input size; 299 always, except in tests (75, the smallest
            it takes, runs ~50x faster on a CPU). Both values are part of the protocol.
    Raises:
        WeightsNotFoundError: no weights file (message: which file and where to put it).
        ValueError: the file is not an InceptionV3 state dict for torch-fidelity.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    path = resolve_inception_weights(weights_path)
    try:
        network = FrechetInceptionDistance(feature=dims, feature_extractor_weights_path=str(path),
                                           antialias=False).inception
    except (RuntimeError, KeyError, EOFError, OSError, pickle.UnpicklingError) as e:  # not a state dict
        raise ValueError(f"{path}: not torch-fidelity InceptionV3 weights ({e})") from None
    if network_input != NETWORK_INPUT:
        network.INPUT_IMAGE_SIZE = int(network_input)
    return FeatureExtractor(network, path, device=torch.device(device), resolution=resolution, dims=dims)


class _Precomputed(nn.Module):
    """Identity 'feature network': the metrics receive features extracted once per batch."""

    def __init__(self, dims: int):
        super().__init__()
        self.num_features = dims

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.double()  # the FID result then stays float64


def kid_of(features, reference_features, *, subsets: int, subset_size: int, seed: int):
    """(KID mean, std over subsets) with torchmetrics, subsets clamped to the smaller set."""
    from torchmetrics.image.kid import KernelInceptionDistance

    fake = torch.as_tensor(np.array(features, dtype=np.float64))  # a copy: memmaps are read-only
    real = torch.as_tensor(np.asarray(reference_features), dtype=torch.float64)
    size = min(subset_size, len(fake), len(real))
    with warnings.catch_warnings():  # "will save all extracted features": it is meant to here
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        kid = KernelInceptionDistance(feature=_Precomputed(fake.shape[1]), subsets=subsets,
                                      subset_size=size, sync_on_compute=False)
    kid.update(fake, real=False)
    kid.update(real, real=True)
    with torch.random.fork_rng(devices=[]):  # the subsets use the global RNG: seed a fork
        torch.manual_seed(seed)
        mean, std = kid.compute()
    return float(mean), float(std)


def _rank() -> int:
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _distributed() -> bool:
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def protocol_mismatch(reference: dict, extractor: dict) -> list[str]:
    """The extractor protocol fields on which a reference's protocol differs ('key: ref != ours')."""
    return [f"{k}: {reference.get(k)!r} != {v!r}" for k, v in extractor.items()
            if reference.get(k) != v]


class FIDMetric:
    """FID of generated images against cached reference statistics (torchmetrics states).

    The reference enters the metric's real-feature sums on rank 0 only, so the sum-reduction
    across ranks counts it once; every rank then computes the same value.
    """

    def __init__(self, extractor: FeatureExtractor, reference, *, kid: bool = False,
                 kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0):
        """Args:
            extractor: the feature extractor (its protocol must match the reference's).
            reference: a coco.reference.ReferenceStats (with `.features` when kid=True).
            kid: also accumulate KID (stores every generated feature).
            kid_subsets, kid_subset_size: KID's subset sampling (torchmetrics defaults).
            seed: seed of KID's subset sampling.
        """
        from torchmetrics.image.fid import FrechetInceptionDistance
        from torchmetrics.image.kid import KernelInceptionDistance

        bad = protocol_mismatch(reference.protocol, extractor.protocol)
        if bad:
            raise ValueError("reference statistics were made under another protocol: " + "; ".join(bad))
        if kid and getattr(reference, "features", None) is None:
            raise ValueError("KID needs the reference features: build the reference with keep_features=True")
        self.extractor, self.reference, self.seed = extractor, reference, seed
        dev = extractor.device
        self.fid = FrechetInceptionDistance(feature=_Precomputed(extractor.dims),
                                            reset_real_features=False).to(dev)
        if _rank() == 0:
            self._load_reference()
        self.kid, self.kid_subset_size = None, kid_subset_size
        if kid:
            self.kid = KernelInceptionDistance(feature=_Precomputed(extractor.dims), subsets=kid_subsets,
                                               subset_size=kid_subset_size, sync_on_compute=False).to(dev)

    def _load_reference(self) -> None:
        """Write the reference mean/covariance into the real-feature sums, in float64."""
        ref, fid = self.reference, self.fid
        dev = fid.real_features_sum.device
        n = int(ref.n)
        mu = torch.as_tensor(ref.mu, dtype=torch.float64, device=dev)
        sigma = torch.as_tensor(ref.sigma, dtype=torch.float64, device=dev)
        fid.real_features_sum = n * mu
        fid.real_features_cov_sum = (n - 1) * sigma + n * torch.outer(mu, mu)
        fid.real_features_num_samples = torch.tensor(n, dtype=torch.long, device=dev)

    def update(self, images) -> None:
        """Add generated images: uint8 (B, 3, H, W) or a list of PIL images."""
        self.update_features(self.extractor(images))

    def update_features(self, features: torch.Tensor) -> None:
        """Add already extracted features (B, dims) of generated images."""
        features = features.to(self.extractor.device)
        self.fid.update(features, real=False)
        if self.kid is not None:
            self.kid.update(features, real=False)

    @property
    def n(self) -> int:
        """Generated images seen by this rank."""
        return int(self.fid.fake_features_num_samples)

    def compute(self) -> float:
        """FID over every rank's images (torchmetrics reduces the sums), by the fast exact route
        of bench.metrics.frechet with the reference's cached covariance root."""
        fid = self.fid
        with fid.sync_context(should_sync=_distributed()):
            n = int(fid.fake_features_num_samples)
            if n < 2:
                raise RuntimeError("FID needs at least 2 generated images")
            total = fid.fake_features_sum.double().cpu().numpy()
            outer = fid.fake_features_cov_sum.double().cpu().numpy()
        mu = total / n
        sigma = (outer - n * np.outer(mu, mu)) / (n - 1)
        return self._root().distance(mu, sigma, rank=n - 1)

    def _root(self) -> ReferenceRoot:
        if getattr(self, "_reference_root", None) is None:
            self._reference_root = ReferenceRoot.of(self.reference)
        return self._reference_root

    def compute_kid(self) -> tuple[float, float]:
        """(KID mean, std over subsets), subsets drawn with `seed`."""
        if self.kid is None:
            raise RuntimeError("KID was not requested (FIDMetric(..., kid=True))")
        kid, dims = self.kid, self.extractor.dims
        # one tensor per rank, so ranks with different batch counts make the same collectives
        local = kid.fake_features
        kid.fake_features = [torch.cat(local) if local else torch.empty(0, dims, dtype=torch.float64,
                                                                       device=self.extractor.device)]
        synced = _distributed()
        if synced:
            kid.sync()
        kid.real_features = [torch.as_tensor(self.reference.features, dtype=torch.float64,
                                             device=self.extractor.device)]
        # small runs: subsets as large as the smaller set allows (torchmetrics would refuse)
        kid.subset_size = min(self.kid_subset_size, len(self.reference.features),
                              sum(len(f) for f in kid.fake_features))
        try:
            with torch.random.fork_rng(devices=[]):  # the subsets use the global RNG: seed a fork
                torch.manual_seed(self.seed)
                mean, std = kid.compute()
        finally:  # compute() restores the local states itself, unless it failed
            if synced and getattr(kid, "_is_synced", False):
                kid.unsync()
            kid.real_features = []
        return float(mean), float(std)

    def reset(self) -> None:
        """Forget the generated images (the reference stays)."""
        self.fid.reset()
        if self.kid is not None:
            self.kid.reset()


def features_of(extractor: FeatureExtractor, images: Sequence, batch_size: int = 32) -> torch.Tensor:
    """Features of images (uint8 tensor or PIL list) in batches: float32 (N, dims) on the CPU."""
    out = [extractor(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
    return torch.cat(out).cpu()
