"""Sharded, resumable generation of a run's images (DESIGN.md "Run directory").

The work of a run is every (config, prompt, k) item, in a fixed order: configs first, then
prompts, then k. Item i belongs to rank i mod world_size, so the split never depends on what is
already done. Each image's seed is `derive_seed(base_seed, prompt_id, k)` — the same for every
config, so configs are compared on identical noise — and the sampler makes an image independent
of its batch, so one process and N processes write the same files.

Images are written atomically (temporary name, then rename) and logged only after the rename;
a rerun after a crash or kill skips every logged image whose file exists and redoes the rest.
Under `torchrun`, ranks meet at barriers (torch.distributed, gloo on CPU, nccl on CUDA).

"The same files" assumes the same kernels: on a CPU the U-Nets' last bits change with the
number of threads (torchrun gives each worker OMP_NUM_THREADS=1), which can move a pixel by one
level; the thread count is recorded in run.json.
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import io
import itertools
import os
import signal
import time
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch.distributed as tdist
from tqdm.auto import tqdm

from imagen_ref.device import derive_seed

from .runs import RunDir, append_jsonl, atomic_write_bytes
from .sampling import SamplingConfig

# Test hook: a process SIGKILLs itself after logging this many images (a crash between images).
KILL_AFTER_ENV = "IMAGEN_BENCH_KILL_AFTER"


@dataclass(frozen=True)
class WorkItem:
    """One image of a run."""

    config_key: str   # SamplingConfig.config_key
    prompt_id: str    # prompts.jsonl id
    text: str         # the prompt
    k: int            # sample index of this prompt (0..images_per_prompt-1)
    seed: int         # derive_seed(base_seed, prompt_id, k), the same for every config

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.config_key, self.prompt_id, self.k)


def plan_items(configs: Sequence[SamplingConfig], prompts: Sequence[dict], images_per_prompt: int,
               base_seed: int) -> list[WorkItem]:
    """Every image of a run in its fixed order (configs, then prompts, then k)."""
    return [WorkItem(c.config_key, p["prompt_id"], p["text"], k,
                     derive_seed(base_seed, p["prompt_id"], k))
            for c in configs for p in prompts for k in range(images_per_prompt)]


# ---------------------------------------------------------------------------------------------
# torch.distributed


@dataclass(frozen=True)
class Dist:
    """This process's place among the ranks (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            tdist.barrier()

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order (on every rank)."""
        if not self.active:
            return [obj]
        out = [None] * self.world_size
        tdist.all_gather_object(out, obj)
        return out


@contextlib.contextmanager
def distributed(device_type: str = "cpu") -> Iterator[Dist]:
    """Join the torchrun process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Dist()
        return
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        import torch

        torch.cuda.set_device(local_rank)  # nccl collectives run on the current device
    created = not tdist.is_initialized()
    if created:
        # Long timeout: ranks wait at barriers while rank 0 builds reference statistics;
        # torchrun stops the others if one rank fails.
        tdist.init_process_group("nccl" if device_type == "cuda" else "gloo",
                                 timeout=datetime.timedelta(hours=12))
    try:
        yield Dist(tdist.get_rank(), tdist.get_world_size(), local_rank)
    finally:
        if created:
            tdist.destroy_process_group()


def shard(items: Sequence, dist: Dist) -> list:
    """Items whose index is this rank's modulo the world size."""
    return list(items[dist.rank::dist.world_size])


# ---------------------------------------------------------------------------------------------
# generation


def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) -> PNG bytes (deterministic: no timestamps)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _batches(items: Sequence[WorkItem], batch_size: int) -> Iterator[list[WorkItem]]:
    """Consecutive items of one config, at most batch_size at a time."""
    for _, group in itertools.groupby(items, key=lambda it: it.config_key):
        group = list(group)
        for i in range(0, len(group), batch_size):
            yield group[i:i + batch_size]


def _kill_after() -> int | None:
    value = os.environ.get(KILL_AFTER_ENV, "").strip()
    return int(value) if value else None


@dataclass
class GenerationStats:
    """What one call of `generate` did."""

    total: int       # images of the run
    skipped: int     # already done when it started (all ranks)
    generated: int   # written by this rank
    seconds: float   # wall time of this rank


def generate(run: RunDir, adapter, configs: Sequence[SamplingConfig], items: Sequence[WorkItem], *,
             batch_size: int, dist: Dist = Dist(), progress: bool = True) -> GenerationStats:
    """Generate this rank's missing images, log them, and merge the logs when all ranks are done.

    Args:
        run: the run directory.
        adapter: a ModelAdapter (bench.adapters).
        configs: the grid; items: `plan_items(...)` of the whole run (every rank passes all).
        batch_size: images per adapter call.
        dist: this process's rank (from `distributed()`).
        progress: show a progress bar (rank 0) over all images of the run.
    Returns: GenerationStats; samples.jsonl holds every image when it returns.
    """
    start = time.perf_counter()
    by_key = {c.config_key: c for c in configs}
    done = run.finished()
    todo = [it for it in shard(items, dist) if it.key not in done]
    skipped = sum(it.key in done for it in items)
    kill_after, written = _kill_after(), 0
    bar = tqdm(total=len(items), initial=skipped, desc="generate", unit="img", dynamic_ncols=True,
               disable=not progress or dist.rank != 0)
    log = run.rank_log(dist.rank)
    for batch in _batches(todo, batch_size):
        t0 = time.perf_counter()
        images = adapter.generate(batch, by_key[batch[0].config_key])
        if len(images) != len(batch):
            raise RuntimeError(f"{adapter.kind} adapter returned {len(images)} images for "
                               f"{len(batch)} prompts")
        per_image = (time.perf_counter() - t0) / len(batch)
        for item, image in zip(batch, images):
            _save(run, log, item, image, per_image)
            written += 1
            if kill_after is not None and written >= kill_after:
                os.kill(os.getpid(), signal.SIGKILL)
        # rank 0 sees only its own shard; the others advance at about the same pace
        bar.update(min(len(batch) * dist.world_size, bar.total - bar.n))
    dist.barrier()
    bar.update(bar.total - bar.n)
    bar.close()
    if dist.rank == 0:
        run.merge_samples([it.key for it in items])
    dist.barrier()
    return GenerationStats(len(items), skipped, written, time.perf_counter() - start)


def _save(run: RunDir, log, item: WorkItem, image: np.ndarray, seconds: float) -> None:
    """Write one image atomically, then log it."""
    data = png_bytes(image)
    path = atomic_write_bytes(run.image_path(item.config_key, item.prompt_id, item.k), data)
    append_jsonl(log, {"config_key": item.config_key, "prompt_id": item.prompt_id, "k": item.k,
                       "seed": item.seed, "path": run.relative(path),
                       "sha256": hashlib.sha256(data).hexdigest(), "seconds": round(seconds, 4)})
