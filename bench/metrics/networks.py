"""One registry of feature networks: a name resolves to a loader, and a loaded network carries
its preprocessing and its protocol record.

A feature network is any object with

    name: str            the registry name; runs store its features as
                         metrics/features/<config_key>/<name>.npy
    dims: int            feature size
    device: torch.device where it runs
    resolution: int      the square size protocol step 1 brings every image to (reference
                         statistics are extracted at it too)
    protocol: dict       library, model, weights file and sha256, resize, input size, layer, dims:
                         recorded with every number and keyed into the reference caches
    __call__(images)     uint8 (B, 3, H, W) tensor or list of PIL images -> float32 (B, dims)

Built in (registered below): `inception` (torch-fidelity's InceptionV3 pool3, FID's network),
`clip` (open_clip image embeddings, L2-normalised; CMMD's network) and `dinov2` (DINOv2 CLS
features through transformers, as dgm-eval uses them). Other packages add theirs with
`register_network` from a plugin (bench.plugins): the calibration world registers its bundled
networks that way, so nothing here knows about it.

A network's `source` says where its weights are (a file, a folder, a model id in a local cache);
None is the network's default. `check(name, source)` resolves the weights without loading them,
so a command stops before any work with one message naming the missing file.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class NetworkEntry:
    """A registered feature network."""

    name: str
    load: Callable[..., object]                 # load(source, *, device) -> a feature network
    check: Callable[[str | None], None] | None  # check(source): raises WeightsNotFoundError
    help: str = ""                              # one line for --help and error messages
    default_source: str | None = None           # shown in --help


_REGISTRY: dict[str, NetworkEntry] = {}


def register_network(name: str, load: Callable[..., object], *, check: Callable | None = None,
                     help: str = "", default_source: str | None = None, replace: bool = False) -> None:
    """Add a feature network under `name` (letters, digits, '-' and '_').

    Raises:
        ValueError: the name is taken (unless `replace`) or malformed.
    """
    if not name or not all(c.isalnum() or c in "-_" for c in name):
        raise ValueError(f"feature network name {name!r}: use letters, digits, '-' and '_'")
    if name in _REGISTRY and not replace:
        raise ValueError(f"feature network {name!r} is already registered")
    _REGISTRY[name] = NetworkEntry(name, load, check, help, default_source)


def _inception_load(source, *, device, **options):
    from .fid import load_fid_extractor

    return load_fid_extractor(source, device=device, **options)


def _inception_check(source):
    from ..weights import resolve_inception_weights

    return resolve_inception_weights(source)


def _register_builtin() -> None:
    """inception (here), clip and dinov2 (bench.metrics.backbones); once."""
    if "inception" in _REGISTRY:
        return
    register_network("inception", _inception_load, check=_inception_check,
                     help="torch-fidelity InceptionV3 pool3 (FID); source: the weights file",
                     default_source="the torch.hub cache copy of pt_inception-2015-12-05")
    from .backbones import register_builtin

    register_builtin()


def _ready() -> None:
    from ..plugins import load_plugins

    _register_builtin()
    load_plugins()


def _entry(name: str) -> NetworkEntry:
    _ready()
    if name not in _REGISTRY:
        raise KeyError(f"unknown feature network {name!r} (registered: {', '.join(names())})")
    return _REGISTRY[name]


def names() -> list[str]:
    """Registered network names (plugins loaded)."""
    _ready()
    return sorted(_REGISTRY)


def entry(name: str) -> NetworkEntry:
    """The registry entry of `name`; KeyError naming the registered ones."""
    return _entry(name)


def check(name: str, source: str | None = None):
    """Resolve `name`'s weights without loading them; returns what its check resolved (a path,
    or None). Raises WeightsNotFoundError if they are missing."""
    e = _entry(name)
    return e.check(source) if e.check is not None else None


def load(name: str, source: str | None = None, *, device: str | torch.device = "cpu", **options):
    """The loaded feature network `name` with weights from `source` (None: its default).

    `options` go to the loader (inception: dims, network_input, resolution); a loader that does
    not take one raises ValueError.
    """
    try:
        net = _entry(name).load(source, device=torch.device(device), **options)
    except TypeError as e:
        if options and "unexpected keyword" in str(e):
            raise ValueError(f"feature network {name!r} takes no option "
                             f"{', '.join(sorted(options))}") from None
        raise
    if getattr(net, "name", None) != name:
        net.name = name
    return net


def column_suffix(name: str) -> str:
    """A network name as it appears in summary.csv columns ('dinov2', 'calibration_world')."""
    return name.replace("-", "_")
