"""Control trials: a set of images from the tasks against a heavily corrupted copy of itself.

The answer is known (the original is better), so a rater's share of correct control answers
measures attention; raters under 80% correct are flagged, as in the Imagen COCO study (§3:
"interleaved control trials, raters kept only if >= 80% correct"). Controls are interleaved
into each rater's own seeded order of screens at a configurable rate, and look like any other
screen to the rater.
"""
from __future__ import annotations

import hashlib
import io
import random

import numpy as np

from .tasks import Question, Screen, Side

QUESTION_ID = "control"
ORIGINAL, CORRUPTED = "control:original", "control:corrupted"   # the store's system strings
THRESHOLD = 0.8
TEXT = {"sets": "Which set of images is of higher quality?",
        "single": "Which image is more photorealistic (looks more real)?"}


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "big")


def corrupt(data: bytes, seed: int) -> bytes:
    """A PNG of the image made unmistakably worse: 8x pixelated, strong noise, JPEG quality 5."""
    from PIL import Image

    img = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = img.size
    small = img.resize((max(2, w // 8), max(2, h // 8)), Image.BILINEAR)
    blocky = np.asarray(small.resize((w, h), Image.NEAREST), dtype=np.float64)
    rng = np.random.default_rng(seed)
    noisy = np.clip(blocky + rng.normal(0.0, 60.0, blocky.shape), 0, 255).astype(np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(noisy).save(jpeg, format="JPEG", quality=5)
    out = io.BytesIO()
    Image.open(jpeg).convert("RGB").save(out, format="PNG")
    return out.getvalue()


def control_screen(source: Screen, side: Side, variant: int = 0) -> Screen:
    """A control made from one side of a task screen; its ids do not depend on the rater."""
    cid = hashlib.sha256(f"{source.screen_id}|{side.label}|{variant}".encode()).hexdigest()[:16]
    single = source.k == 1 or len(side.images) == 1
    question = Question(f"c-{cid}", QUESTION_ID, TEXT["single" if single else "sets"])
    return Screen(f"sc-{cid}", source.prompt_id, source.category, source.caption, source.k,
                  (Side("original", ORIGINAL, side.images), Side("corrupted", CORRUPTED, side.images)),
                  [question], is_control=True)


def build_schedule(screens: list[Screen], rater_id: str, control_rate: float = 0.1,
                   seed: int = 0) -> list[Screen]:
    """A rater's order of screens: task screens shuffled, control screens interleaved.

    Deterministic in (screens, rater_id, control_rate, seed), so a rater who comes back gets
    the same order.

    Args:
        control_rate: share of the rater's screens that are controls, in [0, 1).
    """
    if not 0 <= control_rate < 1:
        raise ValueError(f"control rate {control_rate} is not in [0, 1)")
    rng = random.Random(_seed("schedule", seed, rater_id))
    order = list(screens)
    rng.shuffle(order)
    real = [s for s in order if not s.is_control]
    n_controls = round(control_rate * len(real) / (1 - control_rate)) if real else 0
    sources: list[Screen] = []
    while len(sources) < n_controls:  # without replacement while screens last
        sources += rng.sample(real, min(len(real), n_controls - len(sources)))
    used: dict[tuple, int] = {}
    controls = []
    for src in sources:
        side = src.sides[rng.randrange(2)]
        variant = used.get((src.screen_id, side.label), 0)
        used[(src.screen_id, side.label)] = variant + 1
        controls.append(control_screen(src, side, variant))
    total = len(order) + len(controls)
    positions = sorted(rng.sample(range(total), len(controls)))
    out, it_real, it_ctrl = [], iter(order), iter(controls)
    pos = set(positions)
    for i in range(total):
        out.append(next(it_ctrl) if i in pos else next(it_real))
    return out


def control_accuracy(votes, threshold: float = THRESHOLD):
    """Per rater: controls answered, correct, accuracy, flagged (accuracy < threshold).

    Args:
        votes: VoteStore.votes() (latest votes); an indifferent answer counts as wrong.
    Returns:
        DataFrame with columns rater_id, n_controls, n_correct, accuracy, flagged.
    """
    import pandas as pd

    ctrl = votes[votes["is_control"].astype(bool)]
    rows = []
    for rater, g in ctrl.groupby("rater_id", sort=True):
        n = len(g)
        correct = int((g["choice"] == g["control_expected"]).sum())
        rows.append({"rater_id": rater, "n_controls": n, "n_correct": correct,
                     "accuracy": correct / n, "flagged": correct / n < threshold})
    return pd.DataFrame(rows, columns=["rater_id", "n_controls", "n_correct", "accuracy",
                                       "flagged"])


def flagged_raters(votes, threshold: float = THRESHOLD) -> set[str]:
    """Raters whose control accuracy is under the threshold."""
    acc = control_accuracy(votes, threshold)
    return set(acc.loc[acc["flagged"], "rater_id"])
