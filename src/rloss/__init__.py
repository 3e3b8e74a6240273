"""rloss: weakly-supervised semantic segmentation with regularized losses."""

__version__ = "0.1.0"
