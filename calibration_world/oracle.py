"""The oracle: objects, colours, counts and positions read back from an image, with no learned model.

1. Background: the median colour of the image border.
2. Colour per pixel: each palette colour c spans the line from the background to c (an
   anti-aliased edge pixel is a mix of the two). A pixel's colour is the palette colour whose
   line passes closest to it; it belongs to an object when it lies at least halfway along that
   line (alpha >= 0.5) and within `max_residual` of it. Pixels near no line are ignored.
3. Objects: 8-connected components of each colour (scipy.ndimage.label); components with less
   than `min_area` of the image (in soft, alpha-weighted pixels) are noise.
4. Shape from alpha-weighted measures, so they hold at 32²: fill = area / (width x height) of
   the soft extent (square 1, circle pi/4, triangle and diamond 1/2), and the drop of the area
   centroid below the middle of the extent (1/6 of the height for an apex-up triangle, 0 else).
   Boxes stretched more than `max_aspect`, or too sparse, are "other".
5. Scoring a caption (`score`): per skill, as booleans (None where a skill does not apply).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .captions import AXIS, Requirement, parse_caption
from .scenes import COLORS, PALETTE

CHECKS = ("color", "count", "shape", "binding", "relation_axis", "relation_order", "relation",
          "all_right")


class OracleInputError(ValueError):
    """An image the oracle cannot read; the message says what was expected."""


@dataclass(frozen=True)
class Detection:
    """One object found in an image."""

    color: str     # a palette colour name
    shape: str     # circle | square | triangle | diamond | other
    x: float       # centroid, fraction of the width (0 = left)
    y: float       # centroid, fraction of the height (0 = top)
    area: float    # soft area, fraction of the image
    fill: float    # area / (width * height) of its soft extent
    drop: float    # (area centroid - extent middle) / height; ~1/6 for a triangle


def as_rgb_array(image) -> np.ndarray:
    """(H, W, 3) float64 in 0..255 from an RGB PIL image, a uint8 (H, W, 3) array, or a float
    (H, W, 3) array in [0, 1].

    Raises:
        OracleInputError: another PIL mode, another shape or dtype, NaN or values out of range.
    """
    if hasattr(image, "mode") and hasattr(image, "size"):  # a PIL image
        if image.mode != "RGB":
            raise OracleInputError(f"expected an RGB image, got PIL mode {image.mode!r}; "
                                   "convert it first with image.convert('RGB')")
        return np.asarray(image, dtype=np.float64)
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise OracleInputError(f"expected an (H, W, 3) RGB array, got shape {arr.shape}"
                               + ("; move channels last" if arr.ndim == 3 and arr.shape[0] == 3 else ""))
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise OracleInputError(f"image of {arr.shape[1]}x{arr.shape[0]} pixels is too small (8x8 at least)")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64)
    if not np.issubdtype(arr.dtype, np.floating):
        raise OracleInputError(f"expected uint8 or float pixels, got dtype {arr.dtype}")
    if not np.isfinite(arr).all():
        raise OracleInputError(f"image has {int((~np.isfinite(arr)).sum())} NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise OracleInputError(f"float pixels must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]; map a "
                               "[-1, 1] sample with (x + 1) / 2 and clip")
    return np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0


def background_color(img: np.ndarray) -> np.ndarray:
    """Median colour of a border a few pixels wide."""
    b = max(1, min(img.shape[:2]) // 32)
    border = np.concatenate([img[:b].reshape(-1, 3), img[-b:].reshape(-1, 3),
                             img[:, :b].reshape(-1, 3), img[:, -b:].reshape(-1, 3)])
    return np.median(border, axis=0)


class Oracle:
    """Reads calibration-world images back into objects and scores captions against them."""

    def __init__(self, *, min_area: float = 0.008, max_residual: float = 45.0,
                 min_alpha: float = 0.5, soft_floor: float = 0.2, max_aspect: float = 1.6,
                 min_fill: float = 0.3):
        self.min_area = min_area          # smallest object, fraction of the image
        self.max_residual = max_residual  # farthest a pixel may lie from a colour line (0..255)
        self.min_alpha = min_alpha        # how far along the line an object pixel must be
        self.soft_floor = soft_floor      # smaller alphas count as 0 in the extents (noise)
        self.max_aspect = max_aspect      # longer / shorter side beyond which a blob is "other"
        self.min_fill = min_fill          # sparser blobs are "other"
        self.colors = COLORS
        self._palette = np.asarray([PALETTE[c] for c in COLORS], dtype=np.float64)  # (K, 3)

    def _alpha(self, img: np.ndarray):
        """Per pixel and palette colour: position along the colour line (0 background, 1 the
        colour) and distance from the segment between them."""
        h, w, _ = img.shape
        bg = background_color(img)
        lines = self._palette - bg                                   # (K, 3)
        norm2 = np.maximum((lines ** 2).sum(axis=1), 1.0)            # (K,)
        v = img.reshape(-1, 3) - bg                                  # (N, 3)
        alpha = v @ lines.T / norm2                                  # (N, K), unclipped
        seg = np.clip(alpha, 0.0, 1.0)                               # nearest point of the segment
        resid = np.linalg.norm(v[:, None, :] - seg[:, :, None] * lines[None], axis=2)  # (N, K)
        return alpha.reshape(h, w, -1), resid.reshape(h, w, -1)

    def detect(self, image) -> list[Detection]:
        """Objects in the image, sorted by colour then position (top-left first)."""
        img = as_rgb_array(image)
        h, w, _ = img.shape
        alpha, resid = self._alpha(img)
        label = resid.argmin(axis=2)                                           # (H, W)
        best_alpha = np.take_along_axis(alpha, label[:, :, None], 2)[:, :, 0]
        best_resid = np.take_along_axis(resid, label[:, :, None], 2)[:, :, 0]
        fg = (best_alpha >= self.min_alpha) & (best_resid <= self.max_residual)
        out = []
        for k, color in enumerate(self.colors):
            mine = fg & (label == k)
            if not mine.any():
                continue
            soft = alpha[:, :, k]
            others = fg & ~mine
            comps, n = ndimage.label(mine, structure=np.ones((3, 3), bool))
            for idx, sl in enumerate(ndimage.find_objects(comps), start=1):
                det = self._measure(comps, idx, sl, soft, others, color, (h, w))
                if det is not None:
                    out.append(det)
        return sorted(out, key=lambda d: (d.color, round(d.y, 3), round(d.x, 3)))

    def _measure(self, comps, idx, sl, soft, others, color, hw) -> Detection | None:
        """Soft measures of component `idx` (bounding slices `sl`), or None for a speck."""
        h, w = hw
        ys = slice(max(sl[0].start - 1, 0), min(sl[0].stop + 1, h))
        xs = slice(max(sl[1].start - 1, 0), min(sl[1].stop + 1, w))
        region = ndimage.binary_dilation(comps[ys, xs] == idx, structure=np.ones((3, 3), bool))
        a = np.where(region & ~others[ys, xs], soft[ys, xs], 0.0)
        area = a.sum()
        if area < self.min_area * h * w:
            return None
        # alpha is left as it is in the area so that pixel noise averages out; the extents
        # ignore faint alphas (noise) and clip at 1
        ext = np.where(a >= self.soft_floor, np.minimum(a, 1.0), 0.0)
        rows, cols = ext.max(axis=1), ext.max(axis=0)
        height, width = rows.sum(), cols.sum()
        yy = np.arange(ys.start, ys.stop) + 0.5
        xx = np.arange(xs.start, xs.stop) + 0.5
        cy, cx = (a.sum(axis=1) * yy).sum() / area, (a.sum(axis=0) * xx).sum() / area
        middle = (rows * yy).sum() / height
        fill, drop = area / (height * width), (cy - middle) / height
        return Detection(color, self._shape(fill, drop, max(height, width) / min(height, width)),
                         float(cx / w), float(cy / h), float(area / (h * w)), float(fill), float(drop))

    def _shape(self, fill: float, drop: float, aspect: float) -> str:
        if aspect > self.max_aspect or fill < self.min_fill or fill > 1.15:
            return "other"
        if drop > 0.08:
            return "triangle"
        if drop < -0.08:
            return "other"          # an upside-down triangle: not a shape of this world
        if fill > 0.89:
            return "square"
        if fill > 0.72:
            return "circle"
        return "diamond"

    def score(self, image, caption: str | Requirement) -> dict:
        """Per-skill booleans for an image against a caption (or a parsed Requirement).

        Returns {color, count, shape, binding, relation_axis, relation_order, relation, all_right}:
        color / shape: the sets of colours / shapes found equal the caption's; count: as many
        objects as asked; binding: the set of (colour, shape) pairs equals the caption's;
        relation_axis: the two objects are apart mainly along the caption's axis; relation_order:
        they are in the caption's order along that axis (both None without a relation);
        all_right: exactly the asked objects, with the relation right where there is one.
        Raises:
            CaptionParseError: the caption is not in the world's grammar.
            OracleInputError: the image cannot be read.
        """
        req = caption if isinstance(caption, Requirement) else parse_caption(caption)
        return score_detections(self.detect(image), req)


def _find(dets: list[Detection], color: str, shape: str, taken: Detection | None):
    """The largest detection matching (colour, shape), else colour only, else shape only."""
    for match in (lambda d: d.color == color and d.shape == shape, lambda d: d.color == color,
                  lambda d: d.shape == shape):
        found = [d for d in dets if match(d) and d is not taken]
        if found:
            return max(found, key=lambda d: d.area)
    return None


def _relation_pair(dets: list[Detection], req: Requirement):
    """(subject, object, relation) detections of the caption's relation; None when either
    object is not found."""
    i, rel, j = req.relation
    a = _find(dets, req.groups[i].color, req.groups[i].shape, None)
    b = _find(dets, req.groups[j].color, req.groups[j].shape, a) if a is not None else None
    return None if a is None or b is None else (a, b, rel)


def _in_order(a: Detection, b: Detection, rel: str) -> bool:
    return {"left": a.x < b.x, "right": a.x > b.x, "above": a.y < b.y, "below": a.y > b.y}[rel]


def relation_checks(dets: list[Detection], req: Requirement) -> tuple[bool | None, bool | None]:
    """(axis right, order right) of the caption's relation, or (None, None) without one; both
    False when either object is missing."""
    if req.relation is None:
        return None, None
    pair = _relation_pair(dets, req)
    if pair is None:
        return False, False
    a, b, rel = pair
    dx, dy = a.x - b.x, a.y - b.y
    axis_ok = ("x" if abs(dx) >= abs(dy) else "y") == AXIS[rel]
    return axis_ok, _in_order(a, b, rel)


def relation_order(dets: list[Detection], req: Requirement) -> bool | None:
    """Whether the caption's two objects stand in its order along its axis; None without a
    relation or when either object is missing."""
    pair = _relation_pair(dets, req) if req.relation is not None else None
    return None if pair is None else _in_order(*pair)


def score_detections(dets: list[Detection], req: Requirement) -> dict:
    """`Oracle.score` on detections already found."""
    want = req.pairs()
    got = Counter((d.color, d.shape) for d in dets)
    axis_ok, order_ok = relation_checks(dets, req)
    relation = None if axis_ok is None else bool(axis_ok and order_ok)
    return {
        "color": {c for c, _ in got} == {c for c, _ in want},
        "count": sum(got.values()) == req.n_objects,
        "shape": {s for _, s in got} == {s for _, s in want},
        "binding": set(got) == set(want),
        "relation_axis": axis_ok,
        "relation_order": order_ok,
        "relation": relation,
        "all_right": got == want and relation is not False,
    }
