"""Numba kernel of the affinity quadratic forms: one fused reduction pass per image (the Numba
lattice's faster version of :meth:`Affinity.quadratic_forms`)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def quadratic_sums(
    s: np.ndarray, ws: np.ndarray, wts: np.ndarray, degree: np.ndarray, a: np.ndarray, q: np.ndarray
) -> None:
    """For s, ws = W s, wts = W^T s of shape (K, N) and degree (N,) = W m:
    a[k] = s_k . degree and q[k] = s_k . (W s_k), accumulated in float64 into a, q (K,);
    and wts += ws in place, leaving (W + W^T) s there (the gradient of q)."""
    n_classes, n_points = s.shape
    for k in range(n_classes):
        acc_a = 0.0
        acc_q = 0.0
        for n in range(n_points):
            value = np.float64(s[k, n])
            acc_a += value * degree[n]
            acc_q += value * ws[k, n]
            wts[k, n] += ws[k, n]
        a[k] = acc_a
        q[k] = acc_q
