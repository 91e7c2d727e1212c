"""Reference implementation of the Imagen cascade (Saharia et al., 2022)."""
import os

# MKL's CPU kernels may give other last bits for the same inputs at another memory alignment
# (seen on a 2-core AMD EPYC: a prompt's image differed by ~4e-6 alone and in a batch, depending
# on what the process had allocated before). Strict conditional numerical reproducibility makes
# them alignment-independent; MKL reads it at its first call, so it must be set before that.
# A user's own MKL_CBWR wins.
os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

from .thresholding import parse_mode, threshold  # noqa: E402

__all__ = ["threshold", "parse_mode"]
__version__ = "0.1.0"
