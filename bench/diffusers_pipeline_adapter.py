"""Any diffusers text-to-image pipeline (Stable Diffusion 1.x/2.x, SDXL, PixArt-α/Σ, SD3, FLUX,
...): the generic adapter behind `--model diffusers:PATH_OR_ID` (IF has its own mapping,
bench/diffusers_adapter.py).

A SamplingConfig maps onto the pipeline's call as follows:

    guidance w      -> the pipeline's guidance knob, the first of GUIDANCE_KNOBS that applies:
                       cfg (guidance_scale: eps_u + w (eps_c - eps_u), w = 1 is the conditional
                       model, as in the suite), true-cfg (FLUX without a guidance embedding:
                       true_cfg_scale, the negative prompt as the unconditional branch) or
                       distilled (FLUX-dev: guidance_scale is an input of the distilled
                       transformer, no unconditional pass); run.json records which
    steps           -> num_inference_steps
    sampler         -> a scheduler rebuilt from the pipeline's saved scheduler config (SCHEDULERS;
                       `native` keeps the saved class)
    thresholding    -> the scheduler's own x0 clipping: static = clip_sample (or thresholding with
                       sample_max_value=1), dynamic:P[:CAP] = thresholding=True,
                       dynamic_thresholding_ratio=P, sample_max_value=CAP (no cap: 1e9, the
                       paper's rule). It acts on the scheduler's x0, i.e. on latents for latent
                       models. A scheduler without it refuses every mode but `none`.
    aug_level       -> must be 0 (a one-stage pipeline has no noise augmentation)

Each image's initial noise (and any ancestral noise) comes from its own CPU torch.Generator seeded
with the item's seed, so an image does not depend on its batch or device.
"""
from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from imagen_ref.device import get_device, make_generators
from imagen_ref.thresholding import parse_mode

from .adapters import FLAGS, AdapterError, AdapterOptions
from .diffusers_adapter import UNCAPPED, Source, pipeline_class_name
from .sampling import SAMPLERS, SamplingConfig

# sampler name -> (diffusers scheduler class, config overrides); `native` keeps the saved one
SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "dpmpp": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpm": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver", "solver_order": 2}),
    "unipc": ("UniPCMultistepScheduler", {}),
    "deis": ("DEISMultistepScheduler", {}),
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-a": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    "flow-euler": ("FlowMatchEulerDiscreteScheduler", {}),
    "native": (None, {}),
}
FLOW_PREFIX = "FlowMatch"  # flow-matching schedulers (FLUX, SD3): only they can drive such models
# Schedulers whose thresholding acts only in one setting of theirs (else it is silently skipped)
THRESHOLDING_NEEDS = {"UniPCMultistepScheduler": ("predict_x0", True)}
DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".gguf", ".msgpack", ".onnx")
IMAGE_INPUTS = ("image", "control_image", "mask_image", "video")  # not text-to-image pipelines


@dataclass(frozen=True)
class GuidanceKnob:
    """Which call argument a guidance weight w drives, for the pipelines it applies to."""

    name: str                                      # recorded in run.json
    argument: str                                  # the pipeline call's keyword
    applies: Callable[[object, set], bool]         # (pipeline, its call's parameters)
    minimum: float                                 # smallest weight that means something
    negative: bool                                 # uses the negative prompt
    note: str


def _embedded_guidance(pipe, params: set) -> bool:
    config = getattr(getattr(pipe, "transformer", None), "config", {})
    return bool(getattr(config, "guidance_embeds", False)) and "guidance_scale" in params


GUIDANCE_KNOBS = (
    GuidanceKnob("distilled", "guidance_scale", _embedded_guidance, 0.0, False,
                 "w is the guidance strength the transformer was distilled to take as an input "
                 "(guidance-distilled models such as FLUX-dev): no unconditional pass, w = 1 is "
                 "not the conditional model"),
    GuidanceKnob("true-cfg", "true_cfg_scale", lambda pipe, params: "true_cfg_scale" in params,
                 1.0, True, "classifier-free guidance with the negative prompt (empty unless "
                 "--negative-prompt) as the unconditional branch; w = 1 is the conditional model"),
    GuidanceKnob("cfg", "guidance_scale", lambda pipe, params: "guidance_scale" in params, 1.0,
                 True, "classifier-free guidance eps_u + w (eps_c - eps_u); w = 1 is the "
                 "conditional model"),
)


def thresholding_support(scheduler_cls, config: dict) -> tuple[bool, bool]:
    """(static, dynamic): which clipping of x0 this scheduler (with this config) can do."""
    params = inspect.signature(scheduler_cls.__init__).parameters
    dynamic = "thresholding" in params and hasattr(scheduler_cls, "_threshold_sample")
    need = THRESHOLDING_NEEDS.get(scheduler_cls.__name__)
    if need and config.get(need[0], params[need[0]].default) != need[1]:
        dynamic = False
    return dynamic or "clip_sample" in params, dynamic


def _thresholds(scheduler_cls, config: dict, kind: str) -> bool:
    static, dynamic = thresholding_support(scheduler_cls, config)
    return static if kind == "static" else dynamic


def threshold_overrides(mode: str, scheduler_cls) -> dict:
    """The scheduler config values of a thresholding mode (the schedulers' own x0 clipping)."""
    params = inspect.signature(scheduler_cls.__init__).parameters
    out = {"thresholding": False} if "thresholding" in params else {}
    if "clip_sample" in params:
        out["clip_sample"] = False  # DDPM clips by default: `none` must mean none
    m = parse_mode(mode)
    if m.kind == "static" and "clip_sample" in params:
        out.update(clip_sample=True, clip_sample_range=1.0)
    elif m.kind == "static":  # s = clamp(quantile, 1, 1) = 1: clip to [-1, 1]
        out.update(thresholding=True, sample_max_value=1.0)
    elif m.kind == "dynamic":
        cap = UNCAPPED if m.cap == float("inf") else float(m.cap)
        out.update(thresholding=True, dynamic_thresholding_ratio=float(m.percentile),
                   sample_max_value=cap)
    return out


def file_sha256(path: Path) -> str:
    """sha256 of a file; a Hugging Face cache blob is named by it already (LFS files)."""
    blob = path.resolve()
    if path.is_symlink() and len(blob.name) == 64 and blob.parent.name == "blobs":
        return blob.name
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def component_hashes(folder: Path) -> dict:
    """{component: {"class": "library.Class", "weights": {file: sha256}}} from model_index.json."""
    index = json.loads((folder / "model_index.json").read_text())
    out = {}
    for name, value in sorted(index.items()):
        if name.startswith("_") or not isinstance(value, list) or None in value:
            continue
        files = sorted(p for p in (folder / name).rglob("*")
                       if p.is_file() and p.suffix in WEIGHT_SUFFIXES) if (folder / name).is_dir() \
            else []
        out[name] = {"class": ".".join(value),
                     "weights": {p.relative_to(folder).as_posix(): file_sha256(p) for p in files}}
    return out


def configs_sha256(folder: Path) -> str:
    """sha256 over the folder's JSON and text files (configs, tokenizers), names and contents."""
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix in (".json", ".txt", ".model"):
            h.update(f"{path.relative_to(folder).as_posix()}\0".encode() + path.read_bytes())
    return h.hexdigest()


class DiffusersPipelineAdapter:
    """One diffusers text-to-image pipeline, sampled per SamplingConfig (see the module doc)."""

    kind = "diffusers"

    def __init__(self, source: Source, options: AdapterOptions):
        import diffusers

        if options.num_stages is not None:
            raise AdapterError(f"{FLAGS['num_stages']} applies to cascades (imagen_ref, IF); "
                               f"{source.folder} holds a one-stage pipeline")
        self.source, self.options = source, options
        self.class_name = pipeline_class_name(source.folder)
        cls = getattr(diffusers, self.class_name, None)
        if cls is None:
            raise AdapterError(f"{source.folder / 'model_index.json'}: pipeline class "
                               f"{self.class_name} is not in diffusers {diffusers.__version__}")
        self.params = set(inspect.signature(cls.__call__).parameters)
        if "prompt" not in self.params or self.params & set(IMAGE_INPUTS):
            raise AdapterError(f"{self.class_name} ({source.folder}) is not a text-to-image "
                               "pipeline (it takes no prompt, or an image); pass a text-to-image "
                               "pipeline such as StableDiffusionXLPipeline or FluxPipeline")
        if options.precision == "fp16" and get_device(options.device).type != "cuda":
            raise AdapterError("--precision fp16 needs a CUDA device; use fp32 or bf16 on a CPU")
        if options.cpu_offload and get_device(options.device).type != "cuda":
            raise AdapterError("--cpu-offload moves models to a GPU while they run: it needs a "
                               "CUDA --device")
        self.components = component_hashes(source.folder)
        digest = hashlib.sha256(configs_sha256(source.folder).encode())
        for name, c in self.components.items():
            digest.update(f"{name}\0{json.dumps(c['weights'], sort_keys=True)}".encode())
        self.digest = digest.hexdigest()
        self._pipe = self._knob = self._saved = None
        self.schedulers: dict[str, object] = {}  # config_key -> the scheduler built for it

    @property
    def model_id(self) -> str:
        if self.source.repo_id:
            return f"diffusers:{self.source.repo_id}@{self.source.revision[:12]}"
        return f"diffusers:{self.source.folder.resolve().name}@{self.digest[:12]}"

    def spec_fields(self) -> dict:
        o = self.options
        return {"pipeline_class": self.class_name, "precision": o.precision,
                "resolution": list(o.resolution) if o.resolution else None,
                "negative_prompt": o.negative_prompt}

    def describe(self) -> dict:
        saved = self._saved
        return {"kind": self.kind, "model_id": self.model_id, **self.source.describe(),
                "pipeline_class": self.class_name, "folder_sha256": self.digest,
                "components": self.components,
                "dtype": DTYPES[self.options.precision], "cpu_offload": self.options.cpu_offload,
                "resolution": (list(self.options.resolution) if self.options.resolution
                               else "the pipeline's default"),
                "negative_prompt": self.options.negative_prompt,
                "guidance": self._knob and {"knob": self._knob.name,
                                            "argument": self._knob.argument,
                                            "note": self._knob.note},
                "scheduler": {"saved": saved and _scheduler_record(saved),
                              "per_config": {k: _scheduler_record(s)
                                             for k, s in self.schedulers.items()}},
                "fixed_call_arguments": self.fixed_arguments(),
                "noise": "one CPU torch.Generator per image, seeded with its seed"}

    # -----------------------------------------------------------------------------------------

    def load(self):
        """Load the pipeline now (in the --precision dtype, on --device); AdapterError on any
        problem."""
        if self._pipe is None:
            import torch
            from diffusers import DiffusionPipeline
            from diffusers.utils import deprecation_utils

            # recent diffusers renamed torch_dtype to dtype; older releases know only torch_dtype
            renamed = hasattr(deprecation_utils, "_resolve_dtype")
            dtype = {"dtype" if renamed else "torch_dtype":
                     getattr(torch, DTYPES[self.options.precision])}
            try:
                with quiet_loading():
                    pipe = DiffusionPipeline.from_pretrained(self.source.folder,
                                                             local_files_only=True, **dtype)
            except (OSError, ValueError, TypeError, KeyError, ImportError) as e:
                raise AdapterError(f"cannot load the {self.class_name} in {self.source.folder}: "
                                   f"{type(e).__name__}: {e}") from None
            pipe.set_progress_bar_config(disable=True)
            device = get_device(self.options.device)
            if self.options.cpu_offload:
                try:
                    pipe.enable_model_cpu_offload(device=device)
                except (ImportError, RuntimeError, ValueError) as e:
                    raise AdapterError(f"--cpu-offload: {e}") from None
            else:
                pipe.to(device)
            knobs = [k for k in GUIDANCE_KNOBS if k.applies(pipe, self.params)]
            self._pipe, self._knob = pipe, (knobs[0] if knobs else None)
        return self._pipe

    def saved_scheduler(self):
        """The pipeline's saved scheduler (loaded alone: no weights), which every config's
        scheduler is rebuilt from."""
        if self._saved is None:
            import diffusers

            library, name = json.loads((self.source.folder / "model_index.json").read_text()
                                       ).get("scheduler", [None, None])
            cls = getattr(diffusers, name or "", None)
            if cls is None:
                raise AdapterError(f"{self.source.folder / 'model_index.json'} names no diffusers "
                                   f"scheduler (scheduler: {library}.{name})")
            try:
                self._saved = cls.from_pretrained(self.source.folder, subfolder="scheduler",
                                                  local_files_only=True)
            except (OSError, ValueError) as e:
                raise AdapterError(f"cannot load the scheduler of {self.source.folder}: {e}"
                                   ) from None
        return self._saved

    def fixed_arguments(self) -> dict:
        """Call arguments that are the same for every config (recorded in run.json)."""
        out = {}
        if "clean_caption" in self.params:
            out["clean_caption"] = False  # its default depends on installed packages (bs4, ftfy)
        if self.options.resolution:
            out["height"], out["width"] = self.options.resolution
        return out

    def scheduler(self, config: SamplingConfig):
        """The pipeline's scheduler rebuilt for this config's sampler and thresholding;
        AdapterError if the sampler cannot drive this model or cannot threshold as asked."""
        import diffusers

        saved = self.saved_scheduler()
        saved_name = type(saved).__name__
        name, overrides = SCHEDULERS[config.sampler]
        cls = type(saved) if name is None else getattr(diffusers, name)
        if saved_name.startswith(FLOW_PREFIX) != cls.__name__.startswith(FLOW_PREFIX):
            fitting = [s for s, (n, _) in SCHEDULERS.items()
                       if n and n.startswith(FLOW_PREFIX) == saved_name.startswith(FLOW_PREFIX)]
            raise AdapterError(f"--sampler {config.sampler} ({cls.__name__}) cannot drive "
                               f"{self.class_name}, whose saved scheduler is {saved_name}; use "
                               f"one of {', '.join(fitting + ['native'])}")
        base = {**dict(saved.config), **overrides}
        mode = parse_mode(config.thresholding)
        if mode.kind != "none" and not _thresholds(cls, base, mode.kind):
            flow = saved_name.startswith(FLOW_PREFIX)
            able = [s for s, (n, o) in SCHEDULERS.items() if n and n.startswith(FLOW_PREFIX) == flow
                    and _thresholds(getattr(diffusers, n), o, mode.kind)]
            can = (f"the samplers that can, for {self.class_name}: {', '.join(able)}" if able else
                   f"no sampler that can drive {self.class_name} can; use --thresholding none")
            raise AdapterError(f"--thresholding {config.thresholding}: --sampler {config.sampler} "
                               f"({cls.__name__}) has no {mode.kind} thresholding; {can}")
        return cls.from_config(base, **threshold_overrides(config.thresholding, cls))

    def check(self, items: Sequence, config: SamplingConfig) -> None:
        """Everything that can be wrong with this config, before any image is made."""
        if config.aug_level != 0:
            raise AdapterError(f"config {config.config_key}: --aug-level {config.aug_level:g}: "
                               f"{self.class_name} is one stage, with no noise augmentation; "
                               "use --aug-level 0")
        if len(config.guidance) > 1:
            raise AdapterError(f"config {config.config_key}: per-stage guidance "
                               f"{config.guidance_label} is for cascades; {self.class_name} has "
                               "one stage: give one weight per config (e.g. --guidance 1,3,5)")
        self.schedulers[config.config_key] = self.scheduler(config)  # before loading weights
        pipe = self.load()
        w, knob = config.guidance[0], self._knob
        if knob is None and w != 1:
            raise AdapterError(f"{self.class_name} takes no guidance weight; use --guidance 1")
        if knob is not None and w < knob.minimum:
            raise AdapterError(f"config {config.config_key}: guidance {w:g} < {knob.minimum:g} "
                               f"is not supported by {self.class_name} ({knob.argument}: "
                               f"{knob.note})")
        if self.options.negative_prompt is not None and not (
                knob and knob.negative and "negative_prompt" in self.params):
            raise AdapterError(f"--negative-prompt: {self.class_name} uses no negative prompt "
                               + (f"(its guidance is {knob.name}: {knob.note})" if knob else ""))
        if self.options.resolution:
            unit = 2 * int(getattr(pipe, "vae_scale_factor", 8))
            if any(s % unit for s in self.options.resolution):
                raise AdapterError(f"--resolution {self.options.resolution[1]}x"
                                   f"{self.options.resolution[0]}: {self.class_name} needs "
                                   f"multiples of {unit}")

    def call_arguments(self, items: Sequence, config: SamplingConfig) -> dict:
        """The pipeline call of one batch (without the scheduler, which is set on the pipe)."""
        knob, neg = self._knob, self.options.negative_prompt
        kwargs = dict(prompt=[it.text for it in items], num_inference_steps=config.steps,
                      generator=make_generators([it.seed for it in items], "cpu"),
                      output_type="np", **self.fixed_arguments())
        if knob is not None:
            kwargs[knob.argument] = config.guidance[0]
            if knob.negative and (neg is not None or knob.name == "true-cfg"):
                kwargs["negative_prompt"] = [neg or ""] * len(items)
        return kwargs

    def generate(self, items: Sequence, config: SamplingConfig) -> list[np.ndarray]:
        import torch

        pipe = self.load()
        if config.config_key not in self.schedulers:
            self.check(items, config)
        pipe.scheduler = self.schedulers[config.config_key]
        with torch.no_grad():
            images = pipe(**self.call_arguments(items, config)).images  # (B, H, W, 3) in [0, 1]
        images = np.asarray(images, dtype=np.float32)
        want = self.options.resolution
        if want and images.shape[1:3] != tuple(want):
            raise RuntimeError(f"{self.class_name} made {images.shape[2]}x{images.shape[1]} "
                               f"images for --resolution {want[1]}x{want[0]}")
        return list((np.clip(images, 0.0, 1.0) * 255.0).round().astype(np.uint8))


@contextlib.contextmanager
def quiet_loading():
    """No loading progress bars or advice (accelerate, ...) from diffusers and transformers
    while a pipeline loads: the command's own output stays readable."""
    from diffusers.utils import logging as dlog
    from transformers.utils import logging as tlog

    levels = dlog.get_verbosity(), tlog.get_verbosity()
    dlog.disable_progress_bar()
    tlog.disable_progress_bar()
    dlog.set_verbosity_error()
    tlog.set_verbosity_error()
    try:
        yield
    finally:
        dlog.enable_progress_bar()
        tlog.enable_progress_bar()
        dlog.set_verbosity(levels[0])
        tlog.set_verbosity(levels[1])


def _scheduler_record(scheduler) -> dict:
    """A scheduler's class and config, JSON-ready."""
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    return {"class": type(scheduler).__name__,
            "config": json.loads(json.dumps(config, default=lambda v: repr(v)))}


assert set(SCHEDULERS) == set(SAMPLERS), "every sampler name maps to a scheduler"
