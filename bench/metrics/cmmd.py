"""CMMD: the maximum mean discrepancy between CLIP embeddings (Jayasumana et al., CVPR 2024,
"Rethinking FID: Towards a Better Evaluation Metric for Image Generation", §4).

    MMD² = E k(x, x') + E k(y, y') - 2 E k(x, y),   k(a, b) = exp(-||a - b||² / (2σ²))

with generated embeddings x, reference embeddings y, σ = 10 and the value reported times 1000.
Embeddings are L2-normalised here (`normalize=True`): σ = 10 is meant for unit-length CLIP
embeddings (the PyTorch port sayakpaul/cmmd-pytorch normalises them explicitly).

Estimator. The reference implementation (google-research `cmmd/distance.py::mmd`) takes the
plain mean over the full n x n, m x m and n x m kernel matrices, diagonal included: the
biased, minimum-variance V-statistic of Gretton et al. 2012, Eq. 5. That is the default here
(`unbiased=False`), so values compare with published CMMDs:

    MMD²_b = 1/n² Σ_ij k(x_i, x_j) + 1/m² Σ_ij k(y_i, y_j) - 2/(nm) Σ_ij k(x_i, y_j).

`unbiased=True` gives the U-statistic (Gretton et al. 2012, Eq. 3): means over i ≠ j of the two
within-set terms, the cross term unchanged. The two differ by exactly 1000·(h̄_x/n + h̄_y/m) in
the reported unit, h̄ the mean of h = 1 - k over distinct pairs of a set; for unit vectors
h ≈ ||a - b||²/200, so h̄ = 0.01 (mean squared distance 2) gives a gap of 0.01 at n = m = 2000
and 0.0007 at 30,000, but 0.1 at n = m = 200.

Precision. k is within 2% of 1 for unit vectors (||a - b||² <= 4, 2σ² = 200), and MMD² is a
difference of such means of order 1e-3 or less, so every sum is kept as h = 1 - k =
-expm1(-||a - b||²/(2σ²)) (exact near 0, diagonal exactly 0) in float64; the 1s cancel
symbolically: MMD² = 2 mean h_xy - mean h_xx - mean h_yy. (The JAX reference runs in float32.)

Memory. Kernel sums run over block x block tiles (`block` rows and columns), so no n x n, m x m
or n x m matrix exists at once: O(block² + (n + m)·d + B·n) float64. Within-set sums use the
symmetry of K (only tiles j >= i, off-diagonal tiles counted twice). The reference term is
computed once per `CMMD` object and shared by every config and replicate scored against it.

Bootstrap (`CMMD.replicates`). A replicate is a multiset of the generated images: image i drawn
w_i times, W = Σ w_i. Its CMMD is the CMMD of the explicitly duplicated rows, computed without
duplicating them (H = 1 - K, zero diagonal, r = H_xy 1):

    within  = wᵀ H w / W²             (biased: all W² position pairs)
            = wᵀ H w / (W (W - 1))    (unbiased: the W(W-1) pairs of distinct positions; two
                                       copies of one image are distinct positions with h = 0,
                                       i.e. (wᵀ K w - Σ w_i K_ii) / (W (W - 1)) in terms of K)
    cross   = wᵀ r / (W m)
    MMD²    = 2 cross - within - (reference term)

All B replicates come from one blocked pass over X.
"""
from __future__ import annotations

import math

import numpy as np
import torch

SIGMA = 10.0
SCALE = 1000.0
BLOCK = 2048


# ------------------------------------------------------------------------------------ inputs

def check_features(x, name: str = "features", *, min_rows: int = 1, dims: int | None = None
                   ) -> np.ndarray:
    """`x` as a float64 (n, d) array; ValueError naming `name` when it is not one."""
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: not a numeric array ({e})") from None
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (n, d) array of embeddings, got shape {arr.shape}")
    if arr.shape[1] == 0:
        raise ValueError(f"{name}: the embeddings have 0 dimensions (shape {arr.shape})")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name}: {arr.shape[0]} rows; at least {min_rows} needed")
    if dims is not None and arr.shape[1] != dims:
        raise ValueError(f"{name}: {arr.shape[1]} dimensions, the reference has {dims}")
    if not np.isfinite(arr).all():
        bad = int((~np.isfinite(arr)).any(1).sum())
        raise ValueError(f"{name}: {bad} rows contain NaN or infinite values")
    return arr


def l2_normalize(x: np.ndarray, name: str = "features", *, inplace: bool = False) -> np.ndarray:
    """Rows of `x` scaled to unit length (in place when asked); ValueError on an all-zero row."""
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))[:, None]  # no (n, d) temporary
    if (norms == 0).any():
        raise ValueError(f"{name}: {int((norms == 0).sum())} all-zero rows cannot be normalised")
    if inplace:
        x /= norms
        return x
    return x / norms


def check_weights(weights, n: int) -> np.ndarray:
    """(B, n) non-negative integer image counts as int64 (a 1-D (n,) vector is one replicate)."""
    w = np.asarray(weights)
    if w.ndim == 1:
        w = w[None]
    if w.ndim != 2 or w.shape[1] != n:
        raise ValueError(f"weights: expected shape (B, {n}) (one count per image), "
                         f"got {np.shape(weights)}")
    if w.shape[0] == 0:
        raise ValueError("weights: no replicates (B = 0)")
    if not np.issubdtype(w.dtype, np.integer):
        wf = w.astype(np.float64)
        if not np.isfinite(wf).all() or (wf != np.round(wf)).any():
            raise ValueError("weights: image counts must be whole numbers")
    w = w.astype(np.int64)
    if (w < 0).any():
        raise ValueError("weights: image counts must be >= 0")
    return w


# ----------------------------------------------------------------------------- kernel sums

def _h_tile(a: torch.Tensor, b: torch.Tensor, a_sq: torch.Tensor, b_sq: torch.Tensor,
            gamma: float, diagonal: bool) -> torch.Tensor:
    """1 - k(a_i, b_j) for one tile, (len(a), len(b)); `diagonal`: a is b (zero diagonal)."""
    d2 = torch.addmm(a_sq[:, None], a, b.T, alpha=-2.0).add_(b_sq).clamp_(min=0.0)
    if diagonal:
        d2.fill_diagonal_(0.0)
    return d2.mul_(-gamma).expm1_().neg_()


def _starts(n: int, block: int) -> list[tuple[int, int]]:
    return [(s, min(s + block, n)) for s in range(0, n, block)]


def quadratic_forms(x: torch.Tensor, w: torch.Tensor, gamma: float, block: int) -> torch.Tensor:
    """(B,) w_bᵀ H w_b, H = 1 - K(x, x), for the rows of w (B, n), over the upper tiles."""
    sq = (x * x).sum(1)
    out = torch.zeros(w.shape[0], dtype=torch.float64, device=x.device)
    spans = _starts(len(x), block)
    for k, (i0, i1) in enumerate(spans):
        for j0, j1 in spans[k:]:
            h = _h_tile(x[i0:i1], x[j0:j1], sq[i0:i1], sq[j0:j1], gamma, i0 == j0)
            part = ((w[:, i0:i1] @ h) * w[:, j0:j1]).sum(1)              # (B,)
            out += part if i0 == j0 else 2.0 * part
    return out


def cross_row_sums(x: torch.Tensor, y: torch.Tensor, gamma: float, block: int) -> torch.Tensor:
    """(n,) Σ_j h(x_i, y_j), H = 1 - K(x, y), over block x block tiles."""
    x_sq, y_sq = (x * x).sum(1), (y * y).sum(1)
    out = torch.zeros(len(x), dtype=torch.float64, device=x.device)
    for i0, i1 in _starts(len(x), block):
        for j0, j1 in _starts(len(y), block):
            out[i0:i1] += _h_tile(x[i0:i1], y[j0:j1], x_sq[i0:i1], y_sq[j0:j1], gamma, False).sum(1)
    return out


# ------------------------------------------------------------------------------------- CMMD

class CMMD:
    """CMMD of generated embeddings against one reference set, whose term is computed once."""

    def __init__(self, reference, *, sigma: float = SIGMA, scale: float = SCALE,
                 block: int = BLOCK, device: str | torch.device = "cpu", normalize: bool = True,
                 unbiased: bool = False):
        """Args:
            reference: (m, d) reference embeddings (CLIP image embeddings of real images).
            sigma: RBF bandwidth σ (the paper's 10, for unit-length embeddings).
            scale: factor of the reported value (the paper's 1000).
            block: rows and columns of one kernel tile (memory ~ block² float64).
            device: where the tiles are computed (a GPU helps at n, m ~ 30,000).
            normalize: L2-normalise every embedding first (the CMMD protocol; turn off only
                for embeddings that are already unit length or for another feature space).
            unbiased: the U-statistic (means over i != j) instead of the reference code's
                V-statistic (module doc).
        """
        if not (sigma > 0 and math.isfinite(sigma)):
            raise ValueError(f"sigma must be a positive number, got {sigma}")
        if int(block) < 1:
            raise ValueError(f"block must be >= 1, got {block}")
        self.sigma, self.scale, self.block = float(sigma), float(scale), int(block)
        self.gamma = 1.0 / (2.0 * self.sigma ** 2)
        self.normalize, self.unbiased = bool(normalize), bool(unbiased)
        self.device = torch.device(device)
        y = self._tensor(reference, "reference", None)
        self.m, self.d = y.shape
        self.y = y
        ones = torch.ones(1, self.m, dtype=torch.float64, device=self.device)
        h_yy = float(quadratic_forms(y, ones, self.gamma, self.block)[0])
        self.ref_term = h_yy / self._pairs(self.m)                       # mean h over y pairs

    @property
    def min_rows(self) -> int:
        return 2 if self.unbiased else 1

    def _pairs(self, total: float) -> float:
        return total * (total - 1) if self.unbiased else total * total

    def _tensor(self, x, name: str, dims: int | None) -> torch.Tensor:
        """Checked float64 embeddings on the device, normalised when asked (the caller's array
        is never modified; a float64 copy made by the check is normalised in place)."""
        arr = check_features(x, name, min_rows=self.min_rows, dims=dims)
        if self.normalize:
            arr = l2_normalize(arr, name, inplace=not np.may_share_memory(arr, x))
        return torch.as_tensor(arr, dtype=torch.float64, device=self.device)

    def value(self, x) -> float:
        """CMMD (x scale) of generated embeddings `x` (n, d) against the reference."""
        xt = self._tensor(x, "x", self.d)
        return float(self._replicates(xt, np.ones((1, len(xt)), dtype=np.int64))[0])

    def replicates(self, x, weights) -> np.ndarray:
        """(B,) CMMD of B weighted multisets of `x`: image i counted weights[b, i] times.

        Args:
            x: (n, d) generated embeddings.
            weights: (B, n) non-negative integer counts (bench.metrics.resample's prompt counts
                mapped to images). A row with fewer than 2 images (1 when biased) gives NaN.
        Returns:
            (B,) float64 values, each the CMMD of its explicitly duplicated rows (module doc).
        """
        xt = self._tensor(x, "x", self.d)
        return self._replicates(xt, check_weights(weights, len(xt)))

    def _replicates(self, xt: torch.Tensor, w: np.ndarray) -> np.ndarray:
        wt = torch.as_tensor(w, dtype=torch.float64, device=self.device)
        within = quadratic_forms(xt, wt, self.gamma, self.block).cpu().numpy()
        r = cross_row_sums(xt, self.y, self.gamma, self.block)
        cross = (wt @ r).cpu().numpy()
        total = w.sum(1).astype(np.float64)
        out = np.full(len(w), np.nan)
        ok = total >= self.min_rows
        t = total[ok]
        mmd2 = 2.0 * cross[ok] / (t * self.m) - within[ok] / self._pairs(t) - self.ref_term
        out[ok] = self.scale * mmd2
        return out


def cmmd(x, y, **kwargs) -> float:
    """CMMD of generated embeddings `x` against reference embeddings `y` (CMMD's keywords)."""
    return CMMD(y, **kwargs).value(x)
