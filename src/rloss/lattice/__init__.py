"""Dense Gaussian (bilateral) affinities behind one interface: the Numba permutohedral lattice (host),
a torch permutohedral lattice (any device) and the exact brute-force reference."""

from rloss.lattice.backends import (
    BACKEND_NAMES,
    BACKENDS,
    bilateral_affinity,
    bilateral_filter,
    check_backend,
    gaussian_affinity,
    resolve_backend,
)
from rloss.lattice.base import Affinity
from rloss.lattice.exact import ExactAffinity, exact_gaussian_filter
from rloss.lattice.features import bilateral_features
from rloss.lattice.numba_lattice import NumbaLattice, get_num_threads, set_num_threads
from rloss.lattice.torch_lattice import TorchLattice

__all__ = [
    "Affinity",
    "BACKENDS",
    "BACKEND_NAMES",
    "ExactAffinity",
    "NumbaLattice",
    "TorchLattice",
    "bilateral_affinity",
    "bilateral_features",
    "bilateral_filter",
    "check_backend",
    "exact_gaussian_filter",
    "gaussian_affinity",
    "get_num_threads",
    "resolve_backend",
    "set_num_threads",
]
