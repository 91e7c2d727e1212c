"""Scenes of the calibration world: seeded vector descriptions of 1-4 flat shapes, rendered by PIL.

A scene is resolution-free (positions and sizes are fractions of the canvas), so the same scene
rendered at 32² and 64² shows the same objects in the same places. Each scene records the skill
its caption exercises (the DrawBench-like category) and, for "Positional" scenes, the relation.

Skills and what a scene of each holds:
    Colors        one object
    Counting      2-4 identical objects, or a group of 2-3 plus one other object (4 at most)
    Positional    two different objects side by side (left/right) or stacked (above/below)
    Binding       2-3 objects, all colours different and all shapes different
    Conflicting   1-2 objects in unusual colour-shape pairs (`UNUSUAL`), which every other skill
                  draws `UNUSUAL_WEIGHT` times as often as a usual pair (rare, not absent)

Randomness is an argument: every sampler takes a `numpy.random.Generator`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

# Well separated, saturated colours; all far from the backgrounds.
PALETTE = {"red": (215, 40, 40), "green": (40, 160, 70), "blue": (40, 90, 215),
           "yellow": (235, 210, 35), "purple": (135, 65, 190), "orange": (240, 125, 30)}
COLORS = tuple(PALETTE)
# Shapes told apart by fill ratio (square 1, circle 0.785, diamond and triangle 0.5) and by the
# triangle's low centroid (its apex points up; nothing is rotated).
SHAPES = ("circle", "square", "triangle", "diamond")
SKILLS = ("Colors", "Counting", "Positional", "Binding", "Conflicting")
# Caption mix of the training and validation splits: relations and binding well represented.
TRAIN_SKILL_WEIGHTS = {"Colors": 0.12, "Counting": 0.18, "Positional": 0.40, "Binding": 0.25,
                       "Conflicting": 0.05}
UNUSUAL = frozenset({("green", "circle"), ("orange", "square"), ("blue", "triangle"),
                     ("yellow", "diamond")})
UNUSUAL_WEIGHT = 0.05
RELATIONS = ("left", "right", "above", "below")  # subject <relation> object
# The world's backgrounds: mid-tone greys with faint tints, near the middle of the pixel range as a
# photograph's mean is. Guidance that overshoots then pushes the shapes' colours past the range
# rather than the background, so dynamic thresholding's percentile measures the shapes (Saharia et
# al. 2022, section 2.3). On light backgrounds the percentile is set by the background itself, and
# dividing by it greys the whole image: on the world's former light set dynamic thresholding did
# not beat none (issue 25). The cascade recipe still learns shapes and relations on the light set
# first, where they stand out most, before it moves to the world's own.
BACKGROUNDS = ((128, 128, 128), (140, 136, 126), (120, 128, 140), (136, 126, 116), (122, 136, 124))
LIGHT_BACKGROUNDS = ((236, 236, 236), (245, 243, 238), (232, 238, 244), (242, 236, 226),
                     (236, 242, 234))
BACKGROUND_SETS = {"mid": BACKGROUNDS, "light": LIGHT_BACKGROUNDS}
DEFAULT_BACKGROUNDS = "mid"   # the name of the world's own set (BACKGROUNDS)
TEXTURES = ("plain", "noise", "gradient")

MARGIN = 0.04        # free border around every object, fraction of the canvas
GAP = 0.07           # minimum free space between two objects' boxes
COLOR_JITTER = 8     # per-channel jitter of an object's colour around its palette value
SUPERSAMPLE = 4      # shapes are drawn at 4x and box-filtered down: exact coverage anti-aliasing


@dataclass(frozen=True)
class Obj:
    """One flat shape."""

    shape: str                   # one of SHAPES
    color: str                   # one of COLORS
    x: float                     # centre, fraction of the width (0 = left)
    y: float                     # centre, fraction of the height (0 = top)
    size: float                  # side of its square bounding box, fraction of the canvas
    rgb: tuple[int, int, int]    # the rendered colour (palette value + jitter)


@dataclass(frozen=True)
class Scene:
    """Objects on a background, with the skill its caption exercises."""

    objects: tuple[Obj, ...]
    skill: str                               # one of SKILLS
    relation: tuple[int, str, int] | None = None  # (subject index, RELATIONS item, object index)
    background: tuple[int, int, int] = BACKGROUNDS[0]
    texture: str = "plain"                   # one of TEXTURES
    texture_seed: int = 0                    # seeds the "noise" texture

    def to_dict(self) -> dict:
        """A JSON-ready description (the ground truth written per image)."""
        d = asdict(self)
        d["objects"] = [asdict(o) | {"rgb": list(o.rgb)} for o in self.objects]
        d["background"] = list(self.background)
        d["relation"] = list(self.relation) if self.relation else None
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        """Inverse of `to_dict`."""
        objects = tuple(Obj(o["shape"], o["color"], float(o["x"]), float(o["y"]),
                            float(o["size"]), tuple(o["rgb"])) for o in d["objects"])
        rel = d.get("relation")
        return cls(objects, d["skill"], (int(rel[0]), rel[1], int(rel[2])) if rel else None,
                   tuple(d["background"]), d.get("texture", "plain"), int(d.get("texture_seed", 0)))


# ---------------------------------------------------------------------------------------------
# sampling


def _pair(rng: np.random.Generator, *, unusual: bool | None = None,
          exclude_colors=(), exclude_shapes=(), exclude_pairs=()) -> tuple[str, str]:
    """A (colour, shape) pair; unusual=None: usual pairs weighted 1, unusual UNUSUAL_WEIGHT."""
    pairs, weights = [], []
    for c in COLORS:
        for s in SHAPES:
            if c in exclude_colors or s in exclude_shapes or (c, s) in exclude_pairs:
                continue
            odd = (c, s) in UNUSUAL
            if unusual is None:
                w = UNUSUAL_WEIGHT if odd else 1.0
            else:
                w = 1.0 if odd == unusual else 0.0
            pairs.append((c, s))
            weights.append(w)
    p = np.asarray(weights) / np.sum(weights)
    return pairs[int(rng.choice(len(pairs), p=p))]


def _jitter(rng: np.random.Generator, color: str) -> tuple[int, int, int]:
    base = np.asarray(PALETTE[color])
    return tuple(int(v) for v in np.clip(base + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, 3), 0, 255))


def _apart(a: tuple[float, float, float], b: tuple[float, float, float]) -> bool:
    """Whether two (x, y, size) boxes leave at least GAP between them on some axis."""
    half = (a[2] + b[2]) / 2 + GAP
    return abs(a[0] - b[0]) >= half or abs(a[1] - b[1]) >= half


def _place(rng: np.random.Generator, n: int) -> list[tuple[float, float, float]]:
    """n non-overlapping (x, y, size) boxes inside the margins (rejection sampling)."""
    lo, hi = {1: (0.30, 0.50), 2: (0.25, 0.36), 3: (0.24, 0.30)}.get(n, (0.23, 0.27))
    for _ in range(1000):
        boxes: list[tuple[float, float, float]] = []
        for _ in range(200):
            s = float(rng.uniform(lo, hi))
            x, y = rng.uniform(MARGIN + s / 2, 1 - MARGIN - s / 2, 2)
            box = (float(x), float(y), s)
            if all(_apart(box, b) for b in boxes):
                boxes.append(box)
                if len(boxes) == n:
                    return boxes
    raise RuntimeError(f"could not place {n} objects")  # not reached for n <= 4


def _place_relation(rng: np.random.Generator, relation: str) -> list[tuple[float, float, float]]:
    """Two boxes, the first `relation` the second: clearly apart on one axis, aligned on the other."""
    for _ in range(1000):
        sa, sb = rng.uniform(0.25, 0.34, 2)
        lo_a, lo_b = MARGIN + sa / 2, MARGIN + sb / 2
        pa, pb = rng.uniform(lo_a, 1 - lo_a), rng.uniform(lo_b, 1 - lo_b)  # along the axis
        if abs(pa - pb) < max(0.32, (sa + sb) / 2 + GAP):
            continue
        lo = MARGIN + max(sa, sb) / 2
        q = rng.uniform(lo, 1 - lo)                                        # across it
        qa, qb = np.clip(q + rng.uniform(-0.06, 0.06, 2), [lo_a, lo_b], [1 - lo_a, 1 - lo_b])
        first, second = (min(pa, pb), max(pa, pb))
        if relation in ("right", "below"):
            first, second = second, first
        if relation in ("left", "right"):
            return [(float(first), float(qa), float(sa)), (float(second), float(qb), float(sb))]
        return [(float(qa), float(first), float(sa)), (float(qb), float(second), float(sb))]
    raise RuntimeError("could not place a relation")  # not reached


def _pairs_for(rng: np.random.Generator, skill: str) -> list[tuple[str, str]]:
    """The (colour, shape) of each object of a scene of `skill`."""
    if skill == "Colors":
        return [_pair(rng)]
    if skill == "Counting":
        n = int(rng.integers(2, 5))
        group = _pair(rng)
        if n <= 3 and rng.random() < 0.3:  # "two red circles and a blue square"
            return [group] * n + [_pair(rng, exclude_pairs=[group])]
        return [group] * n
    if skill == "Positional":
        a = _pair(rng)
        return [a, _pair(rng, exclude_pairs=[a])]
    if skill == "Binding":
        out: list[tuple[str, str]] = []
        for _ in range(int(rng.integers(2, 4))):
            out.append(_pair(rng, exclude_colors=[c for c, _ in out], exclude_shapes=[s for _, s in out]))
        return out
    if skill == "Conflicting":
        a = _pair(rng, unusual=True)
        if rng.random() < 0.5:
            return [a]
        return [a, _pair(rng, exclude_colors=[a[0]], exclude_shapes=[a[1]])]
    raise ValueError(f"unknown skill {skill!r}; expected one of {', '.join(SKILLS)}")


def sample_scene(rng: np.random.Generator, skill: str | None = None,
                 skill_weights: dict[str, float] | None = None,
                 backgrounds: tuple = BACKGROUNDS) -> Scene:
    """One random scene of `skill` (else a skill drawn from `skill_weights`, default the train mix)
    on one of `backgrounds` (the world's own by default)."""
    if skill is None:
        weights = skill_weights or TRAIN_SKILL_WEIGHTS
        names = list(weights)
        p = np.asarray([weights[k] for k in names], dtype=float)
        skill = names[int(rng.choice(len(names), p=p / p.sum()))]
    pairs = _pairs_for(rng, skill)
    relation = None
    if skill == "Positional":
        rel = RELATIONS[int(rng.integers(len(RELATIONS)))]
        boxes, relation = _place_relation(rng, rel), (0, rel, 1)
    else:
        boxes = _place(rng, len(pairs))
    objects = tuple(Obj(s, c, x, y, size, _jitter(rng, c)) for (c, s), (x, y, size) in zip(pairs, boxes))
    background = backgrounds[int(rng.integers(len(backgrounds)))]
    texture = TEXTURES[int(rng.integers(len(TEXTURES)))]
    return Scene(objects, skill, relation, background, texture, int(rng.integers(2**31)))


def sample_scenes(n: int, rng: np.random.Generator, skills=None) -> list[Scene]:
    """n scenes; `skills` is None (the train mix), one skill name, a list cycled through, or a
    {skill: weight} dict."""
    if isinstance(skills, str):
        return [sample_scene(rng, skills) for _ in range(n)]
    if isinstance(skills, dict) or skills is None:
        return [sample_scene(rng, skill_weights=skills) for _ in range(n)]
    skills = list(skills)
    return [sample_scene(rng, skills[i % len(skills)]) for i in range(n)]


# ---------------------------------------------------------------------------------------------
# rendering


def _background(scene: Scene, size: int) -> np.ndarray:
    """(size, size, 3) float background: plain, faint grey noise, or a faint vertical gradient."""
    img = np.broadcast_to(np.asarray(scene.background, dtype=np.float64), (size, size, 3)).copy()
    if scene.texture == "noise":
        img += np.random.default_rng(scene.texture_seed).normal(0.0, 3.0, (size, size, 1))
    elif scene.texture == "gradient":
        ramp = (np.arange(size) + 0.5) / size - 0.5   # -0.5 .. 0.5, top to bottom
        sign = 1.0 if scene.texture_seed % 2 else -1.0
        img += sign * 14.0 * ramp[:, None, None]
    return img


def _draw(draw: ImageDraw.ImageDraw, obj: Obj, side: int) -> None:
    """Draw `obj` in white on a (side, side) mask."""
    cx, cy, h = obj.x * side, obj.y * side, obj.size * side / 2
    if obj.shape == "circle":
        draw.ellipse((cx - h, cy - h, cx + h, cy + h), fill=255)
    elif obj.shape == "square":
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=255)
    elif obj.shape == "triangle":
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=255)
    elif obj.shape == "diamond":
        draw.polygon([(cx, cy - h), (cx + h, cy), (cx, cy + h), (cx - h, cy)], fill=255)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; expected one of {', '.join(SHAPES)}")


def coverage(obj: Obj, size: int) -> np.ndarray:
    """(size, size) fraction of each pixel the object covers (4x supersampled, box filtered)."""
    side = size * SUPERSAMPLE
    mask = Image.new("L", (side, side), 0)
    _draw(ImageDraw.Draw(mask), obj, side)
    small = mask.resize((size, size), Image.Resampling.BOX)
    return np.asarray(small, dtype=np.float64) / 255.0


def render(scene: Scene, size: int = 64) -> Image.Image:
    """The scene as a size x size RGB image."""
    if size < 8:
        raise ValueError(f"image size must be at least 8 pixels, got {size}")
    img = _background(scene, size)
    for obj in scene.objects:
        a = coverage(obj, size)[:, :, None]
        img = img * (1.0 - a) + np.asarray(obj.rgb, dtype=np.float64) * a
    return Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8), "RGB")
