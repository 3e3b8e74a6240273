"""Numba kernels of the permutohedral lattice (Adams, Baek & Davis, 2010).

One image at a time; the Python layer runs images of a batch on parallel threads (the kernels
release the GIL), which keeps Numba's own threading layer, and its fork hazards, out of the way.

Layout: ``features`` (N, d) float32 positions in units of the Gaussian's std; ``offsets`` (N, d+1)
int32 lattice vertex of each simplex corner (0-based); ``weights`` (N, d+1) float32 barycentric
weights; ``neighbors`` (d+1, M, 2) int32 the two blur neighbours of each vertex along each lattice
direction, stored +1 so that 0 points at an all-zero padding row of the vertex buffer.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_HASH_MULT = np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15 as int64 (golden-ratio mixing)
_KEY_BITS = 21  # bits per lattice coordinate in a packed key; three coordinates per int64 word
KEY_LIMIT = 1 << (_KEY_BITS - 1)  # |coordinate| must stay below this (checked by the caller)
_BLOCK = 64  # pixels processed together (vectorized across pixels), and transposed at a time


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _hash(key: np.ndarray) -> np.int64:
    h = np.int64(0)
    for i in range(key.shape[0]):
        h = (h ^ key[i]) * _HASH_MULT
        h ^= h >> np.int64(29)
    return h


@njit(cache=True, nogil=True, error_model="numpy")
def _find(table: np.ndarray, keys: np.ndarray, key: np.ndarray) -> int:
    """Index of the packed ``key`` among the lattice vertices, or -1."""
    mask = table.shape[0] - 1
    slot = _hash(key) & mask
    while True:
        entry = table[slot]
        if entry < 0:
            return -1
        same = True
        for i in range(key.shape[0]):
            if keys[entry, i] != key[i]:
                same = False
        if same:
            return entry
        slot = (slot + 1) & mask


@njit(cache=True, nogil=True, error_model="numpy")
def _grow(keys: np.ndarray, count: int):
    """Double the hash table: returns (keys with room for twice as many, rehashed table)."""
    capacity = 4 * keys.shape[0]
    grown = np.empty((capacity // 2, keys.shape[1]), np.int64)
    grown[:count] = keys[:count]
    table = np.full(capacity, -1, np.int32)
    for v in range(count):
        slot = _hash(grown[v]) & (capacity - 1)
        while table[slot] >= 0:
            slot = (slot + 1) & (capacity - 1)
        table[slot] = v
    return grown, table


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _pack(coords: np.ndarray, key: np.ndarray) -> None:
    """Pack d integer lattice coordinates into ceil(d / 3) int64 words (21 bits each)."""
    for w in range(key.shape[0]):
        key[w] = 0
    for i in range(coords.shape[0]):
        key[i // 3] += (coords[i] + KEY_LIMIT) << (_KEY_BITS * (i % 3))


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def build_lattice(features: np.ndarray):
    """Embed N points of dimension d in the lattice.

    Pixels are processed in blocks, with the arithmetic vectorized across the pixels of a block
    (fastmath: the caller checks that features are finite); vertices are found in a hash table of packed keys, skipping the look-up when a pixel's vertex
    of a given remainder is the one the previous pixel had.
    Returns (offsets (N, d+1) int32, weights (N, d+1) float32, neighbors (d+1, M, 2) int32).
    """
    n_points, d = features.shape
    d1 = d + 1
    inv_d1 = 1.0 / d1
    inv_std = np.sqrt(2.0 / 3.0) * d1
    scale = np.empty(d, np.float64)
    for i in range(d):
        scale[i] = inv_std / np.sqrt((i + 1.0) * (i + 2.0))

    offsets = np.empty((n_points, d1), np.int32)
    weights = np.empty((n_points, d1), np.float32)
    n_words = (d + 2) // 3
    table = np.full(1024, -1, np.int32)
    keys = np.empty((512, n_words), np.int64)
    count = 0

    elevated = np.empty((d1, _BLOCK), np.float64)
    residual = np.empty((d1, _BLOCK), np.float64)
    rem0 = np.empty((d1, _BLOCK), np.int64)
    rank = np.empty((d1, _BLOCK), np.int64)
    total = np.empty(_BLOCK, np.int64)
    bary = np.empty((d1, _BLOCK), np.float64)
    coords = np.empty(d, np.int64)
    key = np.empty(n_words, np.int64)
    perm = np.empty(d1, np.int64)
    word_of = np.empty(d, np.int64)
    shift_of = np.empty(d, np.int64)
    ones = np.zeros(n_words, np.int64)
    for i in range(d):
        word_of[i] = i // 3
        shift_of[i] = _KEY_BITS * (i % 3)
        ones[word_of[i]] += np.int64(1) << shift_of[i]
    prev_keys = np.full((d1, n_words), -1, np.int64)
    prev_index = np.zeros(d1, np.int32)

    for start in range(0, n_points, _BLOCK):
        m = min(_BLOCK, n_points - start)
        # Elevate onto the hyperplane sum(x) = 0 of R^(d+1).
        for k in range(m):
            elevated[0, k] = 0.0  # running sum of the scaled features
            total[k] = 0
        for j in range(d, 0, -1):
            for k in range(m):
                cf = features[start + k, j - 1] * scale[j - 1]
                elevated[j, k] = elevated[0, k] - j * cf
                elevated[0, k] += cf
        # Nearest remainder-0 lattice point and the rank of each coordinate's residual.
        for i in range(d1):
            for k in range(m):
                r0 = np.int64(np.rint(elevated[i, k] * inv_d1)) * d1
                rem0[i, k] = r0
                residual[i, k] = elevated[i, k] - r0
                total[k] += r0
        for k in range(m):
            total[k] //= d1
        for i in range(d1):
            for k in range(m):
                rank[i, k] = total[k]
            for j in range(i):
                for k in range(m):
                    rank[i, k] += np.int64(residual[j, k] >= residual[i, k])
            for j in range(i + 1, d1):
                for k in range(m):
                    rank[i, k] += np.int64(residual[j, k] > residual[i, k])
        for i in range(d1):
            for k in range(m):
                wrap = np.int64(rank[i, k] < 0) - np.int64(rank[i, k] > d)
                rank[i, k] += wrap * d1
                rem0[i, k] += wrap * d1
        for i in range(d1):
            for k in range(m):
                residual[i, k] = (elevated[i, k] - rem0[i, k]) * inv_d1
        # The d+1 simplex vertices: vertex r has coordinates rem0 + r, minus d+1 where rank >= d+1-r.
        # Packed keys are linear in the coordinates, so each vertex's key follows from the previous
        # one by two word updates.
        for k in range(m):
            n = start + k
            for w in range(n_words):
                key[w] = 0
            for i in range(d):
                key[word_of[i]] += (rem0[i, k] + KEY_LIMIT) << shift_of[i]
            for i in range(d1):
                perm[rank[i, k]] = i
            # Barycentric weights within the simplex (residuals sorted by rank).
            bary[0, k] = 1.0 + residual[perm[d], k] - residual[perm[0], k]
            for r in range(1, d1):
                bary[r, k] = residual[perm[d - r], k] - residual[perm[d - r + 1], k]
            for r in range(d1):
                if r > 0:
                    for w in range(n_words):
                        key[w] += ones[w]
                    moved = perm[d1 - r]
                    if moved < d:
                        key[word_of[moved]] -= np.int64(d1) << shift_of[moved]
                same = True
                for w in range(n_words):
                    if prev_keys[r, w] != key[w]:
                        same = False
                if not same:
                    for w in range(n_words):
                        prev_keys[r, w] = key[w]
                    mask = table.shape[0] - 1
                    slot = _hash(key) & mask
                    while True:
                        entry = table[slot]
                        if entry < 0:  # a new vertex
                            keys[count] = key
                            table[slot] = count
                            entry = count
                            count += 1
                            if 2 * count >= table.shape[0]:
                                keys, table = _grow(keys, count)
                            break
                        same = True
                        for w in range(n_words):
                            if keys[entry, w] != key[w]:
                                same = False
                        if same:
                            break
                        slot = (slot + 1) & mask
                    prev_index[r] = entry
                offsets[n, r] = prev_index[r]
                weights[n, r] = bary[r, k]

    neighbors = np.empty((d1, count, 2), np.int32)
    lower = np.empty(d, np.int64)
    upper = np.empty(d, np.int64)
    for v in range(count):
        # unpack the vertex's coordinates
        for i in range(d):
            coords[i] = ((keys[v, i // 3] >> (_KEY_BITS * (i % 3))) & ((1 << _KEY_BITS) - 1)) - KEY_LIMIT
        for j in range(d1):
            for i in range(d):
                lower[i] = coords[i] - 1
                upper[i] = coords[i] + 1
            if j < d:
                lower[j] = coords[j] + d
                upper[j] = coords[j] - d
            _pack(lower, key)
            neighbors[j, v, 0] = _find(table, keys, key) + 1
            _pack(upper, key)
            neighbors[j, v, 1] = _find(table, keys, key) + 1
    return offsets, weights, neighbors


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def filter_values(
    values: np.ndarray,
    offsets: np.ndarray,
    weights: np.ndarray,
    neighbors: np.ndarray,
    reverse: bool,
    scale: np.ndarray,
    out: np.ndarray,
) -> None:
    """out = scale[0] * slice(blur(splat(values))) for values and out of shape (C, N).

    ``scale`` is a 1-element array of the values' dtype (float32 or float64, the compute dtype).
    ``reverse`` blurs the lattice directions in reverse order, which applies the transpose of the
    forward operator (each 1-D blur is symmetric; only their order differs). fastmath: callers
    validate that inputs are finite.
    """
    n_channels, n_points = values.shape
    d1 = offsets.shape[1]
    n_vertices = neighbors.shape[1]
    buf = np.zeros((n_vertices + 1, n_channels), values.dtype)
    tmp = np.zeros((n_vertices + 1, n_channels), values.dtype)
    block = np.empty((_BLOCK, n_channels), values.dtype)
    for start in range(0, n_points, _BLOCK):
        stop = min(start + _BLOCK, n_points)
        for c in range(n_channels):
            for n in range(start, stop):
                block[n - start, c] = values[c, n]
        for n in range(start, stop):
            for r in range(d1):
                o = offsets[n, r] + 1
                w = weights[n, r]
                for c in range(n_channels):
                    buf[o, c] += w * block[n - start, c]
    half = np.float32(0.5)
    for step in range(d1):
        j = d1 - 1 - step if reverse else step
        for v in range(n_vertices):
            a = neighbors[j, v, 0]
            b = neighbors[j, v, 1]
            for c in range(n_channels):
                tmp[v + 1, c] = buf[v + 1, c] + half * (buf[a, c] + buf[b, c])
        buf, tmp = tmp, buf
    s = scale[0]
    for start in range(0, n_points, _BLOCK):
        stop = min(start + _BLOCK, n_points)
        for n in range(start, stop):
            for c in range(n_channels):
                block[n - start, c] = 0
            for r in range(d1):
                o = offsets[n, r] + 1
                w = weights[n, r] * s
                for c in range(n_channels):
                    block[n - start, c] += w * buf[o, c]
        for c in range(n_channels):
            for n in range(start, stop):
                out[c, n] = block[n - start, c]
