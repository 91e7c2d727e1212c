"""The flags every benchmark command shares (DESIGN: --model, --out, --guidance, --thresholding,
--aug-level, --sampler, --steps, --seed, --batch-size, --device, --clip-model, --clip-pretrained)."""
from __future__ import annotations

import argparse

from .sampling import SAMPLERS


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in the help; the description and examples keep their line breaks. A flag whose
    default is None (filled in after parsing, see `fill_defaults`) says its default itself."""

    def _get_help_string(self, action):
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def two_defaults(paper, world) -> str:
    """Help text of a flag whose default depends on the data: the paper's, or the embedded
    default's (a data-defaults plugin, bench.plugins)."""
    if world is None:
        return f" (default: {paper})"
    return f" (default: {paper}; on the embedded default data: {world})"


def fill_defaults(args: argparse.Namespace, values: dict) -> dict:
    """Set every flag of `values` that was left out (None) to its value; returns those set."""
    filled = {}
    for name, value in values.items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
            filled[name] = value
    return filled


def add_sampling_args(p: argparse.ArgumentParser, *, guidance: str | None,
                      thresholding: str | None, steps: int | None = 64, guidance_help: str = "",
                      thresholding_help: str = "", steps_help: str = "",
                      aug_help: str = "", sampler: str | None = "ddim",
                      sampler_help: str = "") -> argparse._ArgumentGroup:
    """The sampling grid: comma lists of guidance weights, modes and aug levels, and the sampler.

    A default of None leaves the flag to be filled in after parsing (`fill_defaults`); its
    `*_help` then says what the default is.
    """
    grid = p.add_argument_group("sampling grid (shared benchmark flags)")
    grid.add_argument("--guidance", default=guidance, metavar="W,...",
                      help="comma list of guidance weights; a/b gives per-stage weights (base/SR)"
                      + guidance_help)
    grid.add_argument("--thresholding", default=thresholding, metavar="MODE,...",
                      help="comma list of modes: none, static, dynamic:P, dynamic:P:CAP"
                      + thresholding_help)
    grid.add_argument("--aug-level", default="0", metavar="A,...",
                      help="comma list of SR noise-augmentation levels" + aug_help)
    grid.add_argument("--sampler", "--scheduler", dest="sampler", choices=SAMPLERS, default=sampler,
                      help="sampler of every stage (the paper: ancestral, DDIM for some models): "
                      "ddim or ddpm (ancestral) for imagen_ref and IF; any for a diffusers "
                      "pipeline (dpmpp = DPM-Solver++ 2M, euler-a = Euler ancestral, flow-* for "
                      "flow-matching pipelines such as FLUX, native = the pipeline's saved "
                      "scheduler)" + (sampler_help or ("" if sampler is None else f" (default: {sampler})")))
    grid.add_argument("--steps", type=int, default=steps, help="denoising steps per stage (not "
                      "stated in the paper)" + steps_help)
    grid.add_argument("--seed", type=int, default=0, help="base seed of the per-image seeds")
    return grid


def add_execution_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Batch size, device, precision, stages, embedding cache, progress, and the model options
    of diffusers pipelines and python callables (resolution, negative prompt, CPU offload)."""
    run = p.add_argument_group("execution")
    run.add_argument("--batch-size", type=int, default=16, help="images per model / metric call")
    run.add_argument("--device", default=None,
                     help="cpu, cuda, cuda:N (default: cuda if available; "
                     "under torchrun cuda:LOCAL_RANK)")
    run.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                     help="sampling precision: autocast of an imagen_ref or IF cascade (fp32, "
                     "bf16); the weights' dtype of a diffusers pipeline (fp16: CUDA only)")
    run.add_argument("--num-stages", type=int, default=None,
                     help="run only the first N stages of the cascade")
    run.add_argument("--embedding-cache", default=None, metavar="DIR",
                     help="text-embedding cache directory")
    run.add_argument("--resolution", default=None, metavar="SIZE|WxH",
                     help="image size of a diffusers pipeline or python callable, e.g. 1024 or "
                     "1216x832 (width x height) (default: the model's own)")
    run.add_argument("--negative-prompt", default=None, metavar="TEXT",
                     help="negative prompt of a diffusers pipeline or python callable: the "
                     "unconditional branch of guidance (default: the pipeline's own, usually the "
                     "empty prompt)")
    run.add_argument("--cpu-offload", action="store_true",
                     help="diffusers: keep the pipeline's models on the CPU and move each to the "
                     "GPU while it runs (large models on small GPUs; needs accelerate)")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return run


def parse_resolution(text: str | None) -> tuple[int, int] | None:
    """--resolution '1024' -> (1024, 1024); '1216x832' (width x height) -> (832, 1216), as
    (height, width); ValueError naming the flag."""
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        sizes = []
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise ValueError(f"--resolution {text!r}: expected a positive size (1024) or WIDTHxHEIGHT "
                         "(1216x832)")
    width, height = sizes[0], sizes[-1]
    return height, width


def adapter_options(args: argparse.Namespace, device=None):
    """bench.adapters.AdapterOptions from the flags of `add_execution_args`; ValueError if bad."""
    from .adapters import AdapterOptions

    return AdapterOptions(device=device, precision=args.precision, num_stages=args.num_stages,
                          embedding_cache=args.embedding_cache,
                          resolution=parse_resolution(args.resolution),
                          negative_prompt=args.negative_prompt, cpu_offload=args.cpu_offload)


def add_clip_args(group, *, model: str | None = "ViT-L-14", model_help: str = "") -> None:
    """--clip-model and --clip-pretrained (open_clip, or a scorer a plugin registered)."""
    group.add_argument("--clip-model", default=model, metavar="NAME",
                       help="open_clip model name (or local-dir:DIR, hf-hub:ORG/REPO), or the name "
                       "of a scorer registered by a plugin (bench.metrics.clip_score)" + model_help)
    group.add_argument("--clip-pretrained", default="openai", metavar="TAG|PATH",
                       help="open_clip pretrained tag or a local weights file (a plugin's scorer: "
                       "its weights file, else its default)")


def add_statistics_args(group, *, bootstrap: int = 200, fid: bool = True) -> None:
    """The uncertainty flags (bench.statistics): bootstrap size and seed, reference config, FID∞."""
    group.add_argument("--bootstrap", "--bootstrap-samples", dest="bootstrap", type=int,
                       default=bootstrap, metavar="B",
                       help="bootstrap replicates over prompts for every 95%% interval and paired "
                       "comparison (0 turns the intervals off)")
    group.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap draws")
    group.add_argument("--reference-config", default=None, metavar="KEY",
                       help="config every other is compared with in metrics/comparisons.csv "
                       "(default: w = 1 of the same thresholding mode when present)")
    if fid:
        group.add_argument("--fid-inf-points", type=int, default=15, metavar="K",
                           help="subset sizes between N/5 and N of FID-infinity (Chong & Forsyth "
                           "2020; 0 turns it off)")
        group.add_argument("--fid-inf-bootstrap", type=int, default=50, metavar="B",
                           help="bootstrap replicates of FID-infinity's interval (at most "
                           "--bootstrap; each costs one FID per subset size)")


def statistics_options(args: argparse.Namespace, device: str = "cpu"):
    """bench.statistics.StatsOptions from the flags of `add_statistics_args`; ValueError if bad."""
    from .statistics import StatsOptions

    for flag in ("bootstrap", "fid_inf_points", "fid_inf_bootstrap"):
        if getattr(args, flag, 0) < 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be 0 or more")
    return StatsOptions(bootstrap=args.bootstrap, seed=args.bootstrap_seed,
                        fid_inf_points=getattr(args, "fid_inf_points", 0),
                        fid_inf_bootstrap=getattr(args, "fid_inf_bootstrap", 0),
                        reference_config=args.reference_config,
                        kid=bool(getattr(args, "kid", False)), device=str(device),
                        prdc_samples=int(getattr(args, "prdc_samples", 10000)))
