"""Gaussian (bilateral) affinities behind one interface: the dense ones (the Numba permutohedral
lattice on the host, a torch permutohedral lattice on any device, the exact brute-force reference)
and the local-window one of the gated CRF loss.

A dense back-end is one module with a :class:`GaussianAffinity` subclass declaring ``name``, plus its
import line below (the import registers it in :data:`BACKENDS`).
"""

from rloss.lattice.backends import (
    backend_names,
    bilateral_affinity,
    bilateral_filter,
    check_backend,
    gaussian_affinity,
    resolve_backend,
)
from rloss.lattice.base import BACKENDS, Affinity, GaussianAffinity
from rloss.lattice.exact import ExactAffinity, exact_gaussian_filter
from rloss.lattice.features import bilateral_features
from rloss.lattice.local_window import LocalWindowAffinity
from rloss.lattice.numba_lattice import NumbaLattice, get_num_threads, set_num_threads
from rloss.lattice.torch_lattice import TorchLattice

__all__ = [
    "Affinity",
    "BACKENDS",
    "ExactAffinity",
    "GaussianAffinity",
    "LocalWindowAffinity",
    "NumbaLattice",
    "TorchLattice",
    "backend_names",
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
