"""The flags every benchmark command shares (DESIGN: --model, --out, --guidance, --thresholding,
--aug-level, --sampler, --steps, --seed, --batch-size, --device, --clip-model, --clip-pretrained)."""
from __future__ import annotations

import argparse


def add_sampling_args(p: argparse.ArgumentParser, *, guidance: str, thresholding: str,
                      guidance_help: str = "", aug_help: str = "") -> argparse._ArgumentGroup:
    """The sampling grid: comma lists of guidance weights, modes and aug levels, and the sampler."""
    grid = p.add_argument_group("sampling grid (shared benchmark flags)")
    grid.add_argument("--guidance", default=guidance, metavar="W,...",
                      help="comma list of guidance weights; a/b gives per-stage weights (base/SR)"
                      + guidance_help)
    grid.add_argument("--thresholding", default=thresholding, metavar="MODE,...",
                      help="comma list of modes: none, static, dynamic:P, dynamic:P:CAP")
    grid.add_argument("--aug-level", default="0", metavar="A,...",
                      help="comma list of SR noise-augmentation levels" + aug_help)
    grid.add_argument("--sampler", choices=["ddim", "ddpm"], default="ddim",
                      help="sampler of every stage (not stated in the paper)")
    grid.add_argument("--steps", type=int, default=64, help="denoising steps per stage (not stated "
                      "in the paper)")
    grid.add_argument("--seed", type=int, default=0, help="base seed of the per-image seeds")
    return grid


def add_execution_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """Batch size, device, precision, stages, embedding cache, progress."""
    run = p.add_argument_group("execution")
    run.add_argument("--batch-size", type=int, default=16, help="images per model / metric call")
    run.add_argument("--device", default=None,
                     help="cpu, cuda, cuda:N (default: cuda if available; "
                     "under torchrun cuda:LOCAL_RANK)")
    run.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                     help="sampling precision of the cascade")
    run.add_argument("--num-stages", type=int, default=None,
                     help="run only the first N stages of the cascade")
    run.add_argument("--embedding-cache", default=None, metavar="DIR",
                     help="text-embedding cache directory")
    run.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return run


def add_clip_args(group) -> None:
    """--clip-model and --clip-pretrained (open_clip)."""
    group.add_argument("--clip-model", default="ViT-L-14", metavar="NAME",
                       help="open_clip model name (or local-dir:DIR, hf-hub:ORG/REPO)")
    group.add_argument("--clip-pretrained", default="openai", metavar="TAG|PATH",
                       help="open_clip pretrained tag or a local weights file")
