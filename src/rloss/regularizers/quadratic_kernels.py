"""Numba kernels for the affinity quadratic forms: one fused pass each, per image."""

from __future__ import annotations

import numpy as np
from numba import njit

from rloss.lattice.numba_cache import ensure_writable_numba_cache

ensure_writable_numba_cache()


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


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def quadratic_gradient(
    grad_a: np.ndarray, grad_q: np.ndarray, degree: np.ndarray, sym: np.ndarray, out: np.ndarray
) -> None:
    """out[k] = grad_a[k] * degree + grad_q[k] * sym[k] for sym (K, N) = (W + W^T) s, degree (N,)."""
    n_classes, n_points = sym.shape
    for k in range(n_classes):
        ga = grad_a[k]
        gq = grad_q[k]
        for n in range(n_points):
            out[k, n] = ga * degree[n] + gq * sym[k, n]
