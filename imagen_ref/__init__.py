"""Reference implementation of the Imagen cascade (Saharia et al., 2022)."""
from .thresholding import parse_mode, threshold

__all__ = ["threshold", "parse_mode"]
__version__ = "0.1.0"
