"""Dense Gaussian (bilateral) filtering: a Numba permutohedral lattice and an exact reference."""

from rloss.lattice.exact import exact_bilateral_filter, exact_gaussian_filter
from rloss.lattice.features import bilateral_features
from rloss.lattice.permutohedral import (
    PermutohedralLattice,
    bilateral_filter,
    get_num_threads,
    set_num_threads,
)

__all__ = [
    "PermutohedralLattice",
    "bilateral_features",
    "bilateral_filter",
    "exact_bilateral_filter",
    "exact_gaussian_filter",
    "get_num_threads",
    "set_num_threads",
]
