"""Cascade checkpoints: a directory with `cascade.json` and one safetensors file per stage.

    DIR/cascade.json            format, version, text encoder, stages sorted by image size
    DIR/<key>.safetensors       EMA weights of stage <key> ("base", "sr256", "sr1024", ...)
    DIR/<key>.train.safetensors raw weights, EMA weights and optimizer state for --resume

Loading never unpickles: weights are safetensors, everything else is JSON (the training
state's JSON rides in the safetensors metadata header). Writes are atomic (temporary file,
then os.replace), so a crash leaves the previous complete checkpoint. Every way a checkpoint
can be unusable raises `CheckpointError` with one message naming the file and what to do.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from .diffusion import Schedule

FORMAT = "imagen_ref.cascade"
VERSION = 1
MANIFEST = "cascade.json"
TRAIN_STATE_KEY = "imagen_ref.train_state"  # safetensors metadata key holding the JSON state
TEXT_ENCODER_FIELDS = ("name_or_path", "encoder_id", "max_length", "dim")
STAGE_FIELDS = ("key", "file", "sha256", "config", "schedule", "aug_schedule", "prediction")


class CheckpointError(Exception):
    """A checkpoint directory or file that cannot be used; the message says which and why."""


@dataclass
class StageSpec:
    """One stage as recorded in cascade.json, with its config and schedules rebuilt."""

    key: str                       # "base" or "sr{image_size}"
    file: str                      # weights file name inside the checkpoint directory
    sha256: str                    # hex digest of that file
    config: object                 # the U-Net config dataclass (configs.config_from_dict)
    schedule: Schedule             # diffusion process the stage was trained on
    aug_schedule: Schedule | None  # noise-augmentation process of the low-res input (SR only)
    prediction: str                # "eps" | "v"
    training: dict = field(default_factory=dict)      # step, images_seen, ema_decay, ...
    text_encoder: dict = field(default_factory=dict)  # the cascade's text encoder record


def stage_key(config) -> str:
    """"base" for a base model, "sr{image_size}" for a super-resolution model."""
    return "base" if getattr(config, "lowres_size", None) is None else f"sr{config.image_size}"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# atomic writes


def _tmp_path(final: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    return Path(name)


def _atomic_write_json(path: Path, obj) -> None:
    tmp = _tmp_path(path)
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_safetensors_tmp(path: Path, tensors: dict, metadata: dict | None = None) -> Path:
    """Write tensors to a temporary file next to `path`; the caller os.replace()s it."""
    tmp = _tmp_path(path)
    try:
        save_file(tensors, str(tmp), metadata=metadata)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


@contextlib.contextmanager
def _dir_lock(ckpt_dir: Path):
    """An exclusive flock on the directory itself, so two stages trained at once into the same
    directory never lose each other's cascade.json entry (POSIX; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    fd = os.open(ckpt_dir, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _cpu_tensors(state: dict, prefix: str = "") -> dict:
    """Detached, contiguous, unshared CPU copies (safetensors refuses shared storage)."""
    return {prefix + k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


# ---------------------------------------------------------------------------------------------
# manifest


def _fail_manifest(path: Path, why: str) -> CheckpointError:
    return CheckpointError(f"{path}: {why}; the checkpoint manifest is damaged - restore "
                           f"cascade.json from a copy of the checkpoint or retrain the stages")


def _validate_manifest(path: Path, data) -> dict:
    if not isinstance(data, dict):
        raise _fail_manifest(path, "expected a JSON object")
    if data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown format {data.get('format')!r} (expected "
                              f"{FORMAT!r}); this is not an imagen_ref cascade checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: unsupported version {data.get('version')!r} (this "
                              f"imagen_ref reads version {VERSION}); upgrade imagen_ref or "
                              "re-save the checkpoint")
    te = data.get("text_encoder")
    if not isinstance(te, dict) or any(k not in te for k in TEXT_ENCODER_FIELDS):
        raise _fail_manifest(path, f"'text_encoder' must have the keys {TEXT_ENCODER_FIELDS}")
    stages = data.get("stages")
    if not isinstance(stages, list):
        raise _fail_manifest(path, "'stages' must be a list")
    for i, st in enumerate(stages):
        missing = [k for k in STAGE_FIELDS if not isinstance(st, dict) or k not in st]
        if missing:
            raise _fail_manifest(path, f"stage #{i} lacks {missing}")
        if not isinstance(st["config"], dict) or not isinstance(st["schedule"], dict):
            raise _fail_manifest(path, f"stage #{i} ({st['key']!r}): config and schedule must "
                                       "be JSON objects")
    return data


def read_manifest(ckpt_dir: str | os.PathLike) -> dict:
    """Read and validate DIR/cascade.json.

    Args:
        ckpt_dir: the checkpoint directory.
    Returns: the manifest dict ({"format", "version", "text_encoder", "stages": [...]}).
    """
    d = Path(ckpt_dir)
    if not d.is_dir():
        raise CheckpointError(f"checkpoint directory {d} does not exist; pass the directory "
                              "that holds cascade.json (written by python -m imagen_ref.train)")
    path = d / MANIFEST
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; {d} is not a cascade checkpoint - train a "
                              "stage into it (python -m imagen_ref.train --out DIR) or pass the "
                              "right directory")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise _fail_manifest(path, f"not valid JSON (line {e.lineno}, column {e.colno}: "
                                   f"{e.msg})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} cannot be read ({e}); check the file's permissions") from None
    return _validate_manifest(path, data)


def _empty_manifest(text_encoder_meta: dict) -> dict:
    return {"format": FORMAT, "version": VERSION, "text_encoder": dict(text_encoder_meta),
            "stages": []}


def _check_text_encoder(path: Path, manifest: dict, new: dict, key: str) -> None:
    old = manifest["text_encoder"]
    others = [s["key"] for s in manifest["stages"] if s["key"] != key]
    differ = {k: (old.get(k), new.get(k)) for k in TEXT_ENCODER_FIELDS if old.get(k) != new.get(k)}
    if differ and others:
        raise CheckpointError(
            f"{path}: the new stage's text encoder differs from the one stages {others} were "
            f"trained with ({', '.join(f'{k}: {a!r} vs {b!r}' for k, (a, b) in differ.items())}); "
            "every stage of a cascade must share one text encoder - train with the same "
            "--text-encoder/--max-length or write to a new checkpoint directory")


# ---------------------------------------------------------------------------------------------
# stages (EMA weights)


def save_stage(ckpt_dir: str | os.PathLike, key: str, model: torch.nn.Module, *,
               schedule: Schedule, aug_schedule: Schedule | None, text_encoder_meta: dict,
               training_meta: dict) -> Path:
    """Write `<key>.safetensors` and add or replace stage `key` in cascade.json, atomically.

    Args:
        ckpt_dir: checkpoint directory (created if missing).
        key: stage key, "base" or "sr{image_size}" (see `stage_key`).
        model: the network whose weights are saved (the EMA copy when training); needs `.config`.
        schedule, aug_schedule: the diffusion and noise-augmentation processes it was trained on.
        text_encoder_meta: {"name_or_path", "encoder_id", "max_length", "dim"}; must match the
            record of the stages already in the directory.
        training_meta: JSON-ready training facts (step, images_seen, ema_decay, ...).
    Returns: path of the weights file.
    """
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    missing = [k for k in TEXT_ENCODER_FIELDS if k not in text_encoder_meta]
    if missing:
        raise ValueError(f"text_encoder_meta lacks {missing}")
    config = model.config
    weights = d / f"{key}.safetensors"
    # One metadata key only: safetensors writes a header map in arbitrary order, and a
    # deterministic file gives equal weights an equal sha256.
    tmp = _write_safetensors_tmp(weights, _cpu_tensors(model.state_dict()),
                                 metadata={"format": "pt"})
    try:
        record = {
            "key": key, "file": weights.name, "sha256": sha256_file(tmp),
            "config": dataclasses.asdict(config),
            "schedule": schedule.to_dict(),
            "aug_schedule": aug_schedule.to_dict() if aug_schedule is not None else None,
            "prediction": getattr(config, "prediction", "eps"),
            "training": dict(training_meta),
        }
        with _dir_lock(d):
            path = d / MANIFEST
            manifest = read_manifest(d) if path.exists() else _empty_manifest(text_encoder_meta)
            _check_text_encoder(path, manifest, text_encoder_meta, key)
            manifest["text_encoder"] = dict(text_encoder_meta)
            stages = [s for s in manifest["stages"] if s["key"] != key] + [record]
            manifest["stages"] = sorted(stages, key=lambda s: s["config"].get("image_size", 0))
            os.replace(tmp, weights)
            _atomic_write_json(path, manifest)
    finally:
        tmp.unlink(missing_ok=True)
    return weights


def _spec_from_record(record: dict, text_encoder: dict, manifest_path: Path) -> StageSpec:
    from .configs import config_from_dict

    try:
        config = config_from_dict(dict(record["config"]))
        schedule = Schedule(**record["schedule"])
        aug = record["aug_schedule"]
        aug_schedule = Schedule(**aug) if aug is not None else None
    except (TypeError, ValueError, KeyError) as e:
        raise CheckpointError(f"{manifest_path}: stage {record['key']!r} has a config or schedule "
                              f"this imagen_ref cannot build ({e}); upgrade imagen_ref or retrain "
                              "the stage") from None
    return StageSpec(key=record["key"], file=record["file"], sha256=record["sha256"],
                     config=config, schedule=schedule, aug_schedule=aug_schedule,
                     prediction=record["prediction"], training=dict(record.get("training", {})),
                     text_encoder=dict(text_encoder))


def stage_spec(ckpt_dir: str | os.PathLike, key: str) -> StageSpec:
    """The recorded spec of stage `key` (no weights are read)."""
    manifest = read_manifest(ckpt_dir)
    path = Path(ckpt_dir) / MANIFEST
    for record in manifest["stages"]:
        if record["key"] == key:
            return _spec_from_record(record, manifest["text_encoder"], path)
    have = [s["key"] for s in manifest["stages"]]
    raise CheckpointError(f"{path} has no stage {key!r} (stages: {have}); train it with "
                          "python -m imagen_ref.train --out DIR or pick one of those")


_CONFIG_HINT = ("match the stage's config in cascade.json", "the weights belong to a different "
                "model - re-save the stage or restore the matching cascade.json")


def check_state_dict(model: torch.nn.Module, state: dict, path: Path, what: str,
                     hint: tuple[str, str] = _CONFIG_HINT) -> None:
    """Raise CheckpointError when `state`'s keys or shapes do not fit `model`."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != expected[k])
    if not (missing or unexpected or wrong):
        return
    parts = []
    for name, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            parts.append(f"{len(keys)} {name} keys (e.g. {keys[:3]})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} shape mismatches (e.g. {k}: file {tuple(state[k].shape)} "
                     f"vs config {expected[k]})")
    raise CheckpointError(f"{path}: the {what} do not {hint[0]} ({'; '.join(parts)}); {hint[1]}")


def _read_tensors(path: Path) -> dict:
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it is corrupt "
                              "or truncated - re-copy the checkpoint or retrain the stage") from None


def load_stage(ckpt_dir: str | os.PathLike, key: str,
               device: torch.device | str = "cpu") -> tuple[torch.nn.Module, StageSpec]:
    """Rebuild stage `key` from its recorded config and load its (EMA) weights.

    Args:
        ckpt_dir: the checkpoint directory.
        key: stage key ("base", "sr256", ...).
        device: where the returned model lives.
    Returns: (model in eval mode, StageSpec).
    """
    from .configs import build_unet

    spec = stage_spec(ckpt_dir, key)
    path = Path(ckpt_dir) / spec.file
    if not path.is_file():
        raise CheckpointError(f"{path} is missing (stage {key!r} in cascade.json points to it); "
                              "copy the whole checkpoint directory or retrain the stage")
    digest = sha256_file(path)
    if digest != spec.sha256:
        raise CheckpointError(f"{path} is corrupt or truncated: its sha256 {digest[:12]}... "
                              f"differs from {spec.sha256[:12]}... recorded in cascade.json; "
                              "re-copy the checkpoint or retrain the stage")
    state = _read_tensors(path)
    model = build_unet(spec.config)
    check_state_dict(model, state, path, "weights")
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), spec


# ---------------------------------------------------------------------------------------------
# training state (for --resume)

TRAIN_FORMAT = "imagen_ref.train_state"


def train_state_path(ckpt_dir: str | os.PathLike, key: str) -> Path:
    """DIR/<key>.train.safetensors."""
    return Path(ckpt_dir) / f"{key}.train.safetensors"


def _payload_sha256(tensors: dict) -> str:
    """A digest over names, dtypes, shapes and bytes, stored in the header to catch bit rot."""
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # buffer protocol, no copy
    return h.hexdigest()


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict, dict, list]:
    """(tensors "optim/<param index>/<name>", non-tensor state, JSON param groups)."""
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for idx, entry in sd["state"].items():
        for name, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"optim/{idx}/{name}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()}
              for g in sd["param_groups"]]
    return tensors, scalars, groups


def save_train_state(ckpt_dir: str | os.PathLike, key: str, *, model: torch.nn.Module,
                     ema_model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict,
                     rng: dict[str, torch.Tensor] | None = None) -> Path:
    """Write DIR/<key>.train.safetensors atomically: raw and EMA weights, optimizer state, RNG
    states, and `meta` (JSON: step, data position, seeds, ...) in the metadata header.

    Args:
        model: the raw (non-EMA) network; ema_model: its EMA copy.
        optimizer: any torch optimizer; its state tensors are stored under stable keys.
        meta: JSON-ready training metadata; "step" is required.
        rng: named uint8 generator states (torch.Generator.get_state()).
    Returns: path of the file.
    """
    if "step" not in meta:
        raise ValueError("meta needs 'step'")
    opt_tensors, scalars, groups = _flatten_optimizer(optimizer)
    tensors = {**_cpu_tensors(model.state_dict(), "model/"),
               **_cpu_tensors(ema_model.state_dict(), "ema/"), **opt_tensors,
               **{f"rng/{k}": v.detach().to("cpu", copy=True) for k, v in (rng or {}).items()}}
    header = {"format": TRAIN_FORMAT, "version": VERSION, "key": key, **meta,
              "optimizer": {"kind": type(optimizer).__name__, "param_groups": groups,
                            "scalar_state": scalars},
              "payload_sha256": _payload_sha256(tensors)}
    path = train_state_path(ckpt_dir, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _write_safetensors_tmp(path, tensors, {TRAIN_STATE_KEY: json.dumps(header)})
    os.replace(tmp, path)
    return path


def _read_train_state(ckpt_dir, key: str, remedy: str, with_tensors: bool) -> tuple[dict, dict]:
    path = train_state_path(ckpt_dir, key)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing; there is no training state to resume - "
                              "run without --resume or pass the --out of the earlier run")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})[TRAIN_STATE_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"{path} is not a readable training state ({type(e).__name__}: "
                              f"{e}); it is corrupt or truncated - {remedy}") from None
    if header.get("format") != TRAIN_FORMAT or header.get("version") != VERSION:
        raise CheckpointError(f"{path}: unknown training-state format {header.get('format')!r} "
                              f"version {header.get('version')!r} - {remedy}")
    if with_tensors and _payload_sha256(tensors) != header.get("payload_sha256"):
        raise CheckpointError(f"{path} is corrupt: its tensors do not match the digest in its "
                              f"header - {remedy}")
    return header, tensors


def read_train_state(ckpt_dir: str | os.PathLike, key: str, *,
                     remedy: str = "resume from a copy or run without --resume") -> tuple[dict, dict]:
    """(JSON header, tensors) of DIR/<key>.train.safetensors, integrity-checked; `remedy` ends
    the message of a file that exists but cannot be used."""
    return _read_train_state(ckpt_dir, key, remedy, with_tensors=True)


def read_train_state_header(ckpt_dir: str | os.PathLike, key: str, *,
                            remedy: str = "resume from a copy or run without --resume") -> dict:
    """The JSON header of DIR/<key>.train.safetensors (step, args, ...) without reading its
    tensors; their integrity is checked when the state is loaded."""
    return _read_train_state(ckpt_dir, key, remedy, with_tensors=False)[0]


def _group_like(saved: dict, current: dict) -> dict:
    """A saved (JSON) param group with tuples restored where the live optimizer has tuples."""
    return {k: (tuple(v) if isinstance(current.get(k), tuple) and isinstance(v, list) else v)
            for k, v in saved.items()}


def _restore_optimizer(optimizer: torch.optim.Optimizer, header: dict, tensors: dict,
                       path: Path) -> None:
    saved = header["optimizer"]
    if saved["kind"] != type(optimizer).__name__:
        raise CheckpointError(f"{path} holds {saved['kind']} state but the run uses "
                              f"{type(optimizer).__name__}; resume with the same --optimizer")
    current = optimizer.state_dict()["param_groups"]
    sizes = [len(g["params"]) for g in saved["param_groups"]]
    if sizes != [len(g["params"]) for g in current]:
        raise CheckpointError(f"{path}: optimizer parameter groups {sizes} do not match the "
                              "model; resume with the same --config")
    state: dict = {}
    for name, value in tensors.items():
        if name.startswith("optim/"):
            _, idx, field_name = name.split("/", 2)
            state.setdefault(int(idx), {})[field_name] = value
    for idx, entry in saved["scalar_state"].items():
        state.setdefault(int(idx), {}).update(entry)
    groups = [_group_like(s, c) for s, c in zip(saved["param_groups"], current)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def load_train_state(ckpt_dir: str | os.PathLike, key: str, *, model: torch.nn.Module,
                     ema_model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """Restore raw weights, EMA weights and optimizer state in place from a training state.

    Returns: the JSON header (step, data position, seeds, ...) with "rng": {name: uint8 tensor}.
    """
    path = train_state_path(ckpt_dir, key)
    header, tensors = read_train_state(ckpt_dir, key)
    for prefix, module, what in (("model/", model, "raw weights"),
                                 ("ema/", ema_model, "EMA weights")):
        state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
        check_state_dict(module, state, path, what, ("match the model built from the run's config",
                                                      "resume with the same --config"))
        module.load_state_dict(state, strict=True)
    _restore_optimizer(optimizer, header, tensors, path)
    header["rng"] = {k[4:]: v for k, v in tensors.items() if k.startswith("rng/")}
    return header


def read_raw_weights(ckpt_dir: str | os.PathLike, key: str) -> tuple[dict, dict]:
    """(JSON header, raw weights) of another run's DIR/<key>.train.safetensors, for a run that
    starts from them (--init-from) with a fresh optimizer."""
    path = train_state_path(ckpt_dir, key)
    if not path.is_file():
        raise CheckpointError(f"{path} is missing: --init-from needs the checkpoint directory "
                              f"of a run that trained stage {key}")
    header, tensors = read_train_state(
        ckpt_dir, key, remedy="re-copy that run's checkpoint or start without --init-from")
    return header, {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}


def check_compatible(ckpt_dir: str | os.PathLike, key: str, text_encoder_meta: dict) -> None:
    """Raise CheckpointError now if saving stage `key` with this text encoder into `ckpt_dir`
    would fail later (a training run calls this before its first step)."""
    path = Path(ckpt_dir) / MANIFEST
    if path.exists():
        _check_text_encoder(path, read_manifest(ckpt_dir), text_encoder_meta, key)
