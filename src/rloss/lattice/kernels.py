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
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

_HASH_MULT = np.int64(-7046029254386353131)  # 0x9E3779B97F4A7C15 as int64 (golden-ratio mixing)
_HASH_MULT2 = np.int64(-4658895280553007687)  # 0xBF58476D1CE4E5B9 (splitmix64)
_BLOCK = 64  # pixels processed together (vectorized across pixels), and transposed at a time
_LANES = 8  # channels handled together by the filter (one or two SIMD registers)


# Vector helpers of the filter: operations on 8 consecutive elements of flat (1-D) arrays, emitted as
# LLVM vector instructions (Numba leaves LLVM's SLP vectorizer off, and the loop vectorizer does not
# handle the short channel loops well).


def _element_pointer(context, builder, array_type, array, index):
    data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [index], inbounds=True)


def _load(builder, pointer, vector_type):
    return builder.load(builder.bitcast(pointer, vector_type.as_pointer()), align=1)


def _store(builder, value, pointer, vector_type):
    builder.store(value, builder.bitcast(pointer, vector_type.as_pointer()), align=1)


def _broadcast(builder, scalar, vector_type):
    vector = ir.Constant(vector_type, ir.Undefined)
    for i in range(vector_type.count):
        vector = builder.insert_element(vector, scalar, ir.Constant(ir.IntType(32), i))
    return vector


@intrinsic
def _axpy(typingctx, dst, dst_index, w, src, src_index):
    """dst[dst_index : dst_index + 8] += w * src[src_index : src_index + 8] (1-D arrays)."""
    sig = types.void(dst, types.intp, dst.dtype, src, types.intp)

    def codegen(context, builder, sig, args):
        dst, dst_index, w, src, src_index = args
        vector_type = ir.VectorType(context.get_data_type(sig.args[0].dtype), _LANES)
        dst_pointer = _element_pointer(context, builder, sig.args[0], dst, dst_index)
        src_value = _load(builder, _element_pointer(context, builder, sig.args[3], src, src_index), vector_type)
        product = builder.fmul(_broadcast(builder, w, vector_type), src_value, flags=("fast",))
        total = builder.fadd(_load(builder, dst_pointer, vector_type), product, flags=("fast",))
        _store(builder, total, dst_pointer, vector_type)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _blur(typingctx, dst, src, index, a, b):
    """dst[i : i + 8] = src[i : i + 8] + (src[a : a + 8] + src[b : b + 8]) / 2 (1-D arrays)."""
    sig = types.void(dst, src, types.intp, types.intp, types.intp)

    def codegen(context, builder, sig, args):
        dst, src, index, a, b = args
        element_type = context.get_data_type(sig.args[0].dtype)
        vector_type = ir.VectorType(element_type, _LANES)
        center = _load(builder, _element_pointer(context, builder, sig.args[1], src, index), vector_type)
        left = _load(builder, _element_pointer(context, builder, sig.args[1], src, a), vector_type)
        right = _load(builder, _element_pointer(context, builder, sig.args[1], src, b), vector_type)
        half = _broadcast(builder, ir.Constant(element_type, 0.5), vector_type)
        sides = builder.fmul(half, builder.fadd(left, right, flags=("fast",)), flags=("fast",))
        value = builder.fadd(center, sides, flags=("fast",))
        _store(builder, value, _element_pointer(context, builder, sig.args[0], dst, index), vector_type)
        return context.get_dummy_value()

    return sig, codegen


def _row_pointer(context, builder, array_type, array, row, col):
    """Pointer to element (row, col) of a 2-D array (any strides)."""
    ary = context.make_array(array_type)(context, builder, array)
    stride0, stride1 = cgutils.unpack_tuple(builder, ary.strides, 2)
    offset = builder.add(builder.mul(row, stride0), builder.mul(col, stride1))
    byte_pointer = builder.bitcast(ary.data, ir.IntType(8).as_pointer())
    return builder.bitcast(builder.gep(byte_pointer, [offset]), ary.data.type)


def _transpose8(builder, rows):
    """8 vectors of 8 lanes -> their transpose (unpack, shuffle, permute: 24 shuffles)."""
    def shuffle(a, b, mask):
        return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(ir.IntType(32), 8), mask))

    lo, hi = [0, 8, 1, 9, 4, 12, 5, 13], [2, 10, 3, 11, 6, 14, 7, 15]
    t = []
    for i in range(0, 8, 2):
        t += [shuffle(rows[i], rows[i + 1], lo), shuffle(rows[i], rows[i + 1], hi)]
    lo, hi = [0, 1, 8, 9, 4, 5, 12, 13], [2, 3, 10, 11, 6, 7, 14, 15]
    u = []
    for i in (0, 4):
        u += [shuffle(t[i], t[i + 2], lo), shuffle(t[i], t[i + 2], hi)]
        u += [shuffle(t[i + 1], t[i + 3], lo), shuffle(t[i + 1], t[i + 3], hi)]
    lo, hi = [0, 1, 2, 3, 8, 9, 10, 11], [4, 5, 6, 7, 12, 13, 14, 15]
    return [shuffle(u[i], u[i + 4], lo) for i in range(4)] + [shuffle(u[i], u[i + 4], hi) for i in range(4)]


def _vertex_terms(context, builder, sig_offsets, offsets, sig_weights, weights, n, r, stride, channel, element_type):
    """(index of the vertex's channel in the flat buffer, weight as element_type) of corner r of pixel n."""
    vertex = builder.load(_row_pointer(context, builder, sig_offsets, offsets, n, r))
    vertex = builder.add(builder.sext(vertex, n.type), ir.Constant(n.type, 1))
    index = builder.add(builder.mul(vertex, stride), channel)
    weight = builder.load(_row_pointer(context, builder, sig_weights, weights, n, r))
    if weight.type != element_type:
        weight = builder.fpext(weight, element_type)
    return index, weight


@intrinsic
def _splat8(typingctx, buf, stride, channel, values, n, last_row, offsets, weights):
    """Splat channels channel..channel+7 of pixels n..n+7 (values (C, N), unit-stride rows; rows past
    last_row repeat it, landing in padding lanes) onto buf, 1-D ((M + 1) * stride)."""
    sig = types.void(buf, types.intp, types.intp, values, types.intp, types.intp, offsets, weights)

    def codegen(context, builder, sig, args):
        buf, stride, channel, values, n, last_row, offsets, weights = args
        element_type = context.get_data_type(sig.args[0].dtype)
        vector_type = ir.VectorType(element_type, _LANES)
        rows = []
        for i in range(8):
            r = builder.add(channel, ir.Constant(channel.type, i))
            r = builder.select(builder.icmp_signed(">", r, last_row), last_row, r)
            rows.append(_load(builder, _row_pointer(context, builder, sig.args[3], values, r, n), vector_type))
        pixels = _transpose8(builder, rows)
        d1 = cgutils.unpack_tuple(builder, context.make_array(sig.args[6])(context, builder, offsets).shape, 2)[1]
        for j in range(8):
            nj = builder.add(n, ir.Constant(n.type, j))
            with cgutils.for_range(builder, d1) as loop:
                index, weight = _vertex_terms(
                    context, builder, sig.args[6], offsets, sig.args[7], weights, nj, loop.index, stride, channel,
                    element_type,
                )
                pointer = _element_pointer(context, builder, sig.args[0], buf, index)
                product = builder.fmul(_broadcast(builder, weight, vector_type), pixels[j], flags=("fast",))
                total = builder.fadd(_load(builder, pointer, vector_type), product, flags=("fast",))
                _store(builder, total, pointer, vector_type)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _slice8(typingctx, out, channel, n, n_rows, buf, stride, offsets, weights, scale):
    """out[channel + i, n + j] = scale * sum_r weights[n + j, r] * buf[vertex (n + j, r), channel + i]
    for i, j < 8 and channel + i < n_rows (out (C, N) with unit-stride rows; buf as in _splat8)."""
    sig = types.void(out, types.intp, types.intp, types.intp, buf, types.intp, offsets, weights, out.dtype)

    def codegen(context, builder, sig, args):
        out, channel, n, n_rows, buf, stride, offsets, weights, scale = args
        element_type = context.get_data_type(sig.args[0].dtype)
        vector_type = ir.VectorType(element_type, _LANES)
        d1 = cgutils.unpack_tuple(builder, context.make_array(sig.args[6])(context, builder, offsets).shape, 2)[1]
        accumulator = cgutils.alloca_once(builder, vector_type)
        pixels = []
        for j in range(8):
            nj = builder.add(n, ir.Constant(n.type, j))
            builder.store(ir.Constant(vector_type, None), accumulator)
            with cgutils.for_range(builder, d1) as loop:
                index, weight = _vertex_terms(
                    context, builder, sig.args[6], offsets, sig.args[7], weights, nj, loop.index, stride, channel,
                    element_type,
                )
                weight = builder.fmul(weight, scale, flags=("fast",))
                vertex = _load(builder, _element_pointer(context, builder, sig.args[4], buf, index), vector_type)
                product = builder.fmul(_broadcast(builder, weight, vector_type), vertex, flags=("fast",))
                builder.store(builder.fadd(builder.load(accumulator), product, flags=("fast",)), accumulator)
            pixels.append(builder.load(accumulator))
        for i, row in enumerate(_transpose8(builder, pixels)):
            r = builder.add(channel, ir.Constant(channel.type, i))
            with builder.if_then(builder.icmp_signed("<", r, n_rows), likely=True):
                _store(builder, row, _row_pointer(context, builder, sig.args[0], out, r, n), vector_type)
        return context.get_dummy_value()

    return sig, codegen


# Hash table: a (capacity + 1, words + 1) int64 array, one row per slot holding a packed key (``words``
# int64, the first d lattice coordinates, in fields sized from their range) and, in the last column, the vertex index
# (-1: empty, keys -1 too: packed keys are >= 0). Keys and indices side by side: a look-up that hits
# touches one cache line. The home slot of a key is the top ``bits`` bits of a multiplicative hash;
# linear probing; the load factor stays <= 1/4, so most keys sit in their home slot or the next one,
# which the fast path (1- or 2-word keys) checks without branches. Row ``capacity`` is always empty
# (index -2): the fast path reads it after the last slot and leaves wrapping around to the slow path.


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _hash(key: np.ndarray, row: int) -> np.int64:
    if key.shape[1] == 1:
        return key[row, 0] * _HASH_MULT
    h = (key[row, 0] * _HASH_MULT) ^ (key[row, 1] * _HASH_MULT2)
    for w in range(2, key.shape[1]):
        h = (h ^ key[row, w]) * _HASH_MULT
    return h


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _probe(table: np.ndarray, slot: int, key0: np.int64, key1: np.int64) -> np.int64:
    """Vertex index of the 2-word key (key0, key1) if it is in ``slot`` or the next one; -1 if absent
    (an empty slot comes first); -2 if undecided. Loads everything first, so it compiles to selects."""
    index0 = table[slot, 2]
    index1 = table[slot + 1, 2]
    hit0 = (table[slot, 0] == key0) & (table[slot, 1] == key1)
    hit1 = (table[slot + 1, 0] == key0) & (table[slot + 1, 1] == key1)
    later = np.int64(-1) if index1 == -1 else np.int64(-2)  # the padding row (index -2): undecided
    second = index1 if hit1 else later
    first = np.int64(-1) if index0 < 0 else second
    return index0 if hit0 else first


@njit(cache=True, nogil=True, inline="always", error_model="numpy")
def _probe1(table: np.ndarray, slot: int, key0: np.int64) -> np.int64:
    """_probe for 1-word keys."""
    index0 = table[slot, 1]
    index1 = table[slot + 1, 1]
    hit0 = table[slot, 0] == key0
    hit1 = table[slot + 1, 0] == key0
    later = np.int64(-1) if index1 == -1 else np.int64(-2)  # the padding row (index -2): undecided
    second = index1 if hit1 else later
    first = np.int64(-1) if index0 < 0 else second
    return index0 if hit0 else first


@njit(cache=True, nogil=True, error_model="numpy")
def _find_slot(table: np.ndarray, slot: int, key: np.ndarray, row: int) -> int:
    """The slot holding key[row] (``words`` int64), or the empty slot where it would go."""
    words = key.shape[1]
    mask = table.shape[0] - 2
    while table[slot, words] >= 0:
        same = True
        for w in range(words):
            if table[slot, w] != key[row, w]:
                same = False
        if same:
            return slot
        slot = (slot + 1) & mask
    return slot


@njit(cache=True, nogil=True, error_model="numpy")
def _rehash(keys: np.ndarray, count: int, bits: int) -> np.ndarray:
    """A table of 2**bits slots (plus the empty padding row) holding the first ``count`` keys."""
    words = keys.shape[1]
    capacity = 1 << bits
    table = np.full((capacity + 1, words + 1), -1, np.int64)
    table[capacity, words] = -2  # the probes' fast path must not take it for the end of the run
    for v in range(count):
        slot = _find_slot(table, (_hash(keys, v) >> (64 - bits)) & (capacity - 1), keys, v)
        for w in range(words):
            table[slot, w] = keys[v, w]
        table[slot, words] = v
    return table


@njit(cache=True, nogil=True, error_model="numpy")
def _insert_block(
    table: np.ndarray,
    bits: int,
    keys: np.ndarray,
    count: int,
    block_keys: np.ndarray,
    block_hash: np.ndarray,
    offsets: np.ndarray,
    start: int,
    m: int,
) -> int:
    """Find (inserting the new ones) the vertices of pixels start..start+m-1 into offsets.

    block_keys (d+1, words, _BLOCK) and block_hash (d+1, _BLOCK) as computed by build_lattice. The caller
    guarantees room for every key of the block in ``keys`` and ``table``. Returns the new count."""
    d1 = offsets.shape[1]
    words = keys.shape[1]
    mask = (1 << bits) - 1
    shift = 64 - bits
    key = np.empty((1, words), np.int64)
    for k in range(m):
        for r in range(d1):
            slot = (block_hash[r, k] >> shift) & mask
            entry = np.int64(-2)
            if words == 1:
                entry = _probe1(table, slot, block_keys[r, 0, k])
            elif words == 2:
                entry = _probe(table, slot, block_keys[r, 0, k], block_keys[r, 1, k])
            if entry < 0:  # a new vertex, or a key further from its home slot
                for w in range(words):
                    key[0, w] = block_keys[r, w, k]
                slot = _find_slot(table, slot, key, 0)
                entry = table[slot, words]
                if entry < 0:
                    for w in range(words):
                        keys[count, w] = key[0, w]
                        table[slot, w] = key[0, w]
                    table[slot, words] = count
                    entry = count
                    count += 1
            offsets[start + k, r] = entry
    return count


@njit(cache=True, nogil=True, error_model="numpy")
def _find_neighbors(table: np.ndarray, bits: int, keys: np.ndarray, count: int, ones: np.ndarray, steps: np.ndarray):
    """neighbors (d+1, count, 2): +1 indices of each vertex's two neighbours along each direction j,
    whose coordinates are the vertex's -1 (+1), except coordinate j: +d (-d); steps[j] is the packed
    (d+1) e_j (zero for j = d)."""
    d1 = steps.shape[0]
    words = keys.shape[1]
    mask = (1 << bits) - 1
    shift = 64 - bits
    neighbors = np.empty((d1, count, 2), np.int32)
    key = np.empty((1, words), np.int64)
    for v in range(count):
        for j in range(d1):
            for side in range(2):
                for w in range(words):
                    if side == 0:
                        key[0, w] = keys[v, w] - ones[w] + steps[j, w]
                    else:
                        key[0, w] = keys[v, w] + ones[w] - steps[j, w]
                slot = (_hash(key, 0) >> shift) & mask
                entry = np.int64(-2)
                if words == 1:
                    entry = _probe1(table, slot, key[0, 0])
                elif words == 2:
                    entry = _probe(table, slot, key[0, 0], key[0, 1])
                if entry == -2:
                    entry = table[_find_slot(table, slot, key, 0), words]
                neighbors[j, v, side] = entry + 1
    return neighbors


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def build_lattice(features: np.ndarray, scale: np.ndarray, coord_lo: np.ndarray, width: np.ndarray):
    """Embed N points of dimension d in the lattice.

    Pixels are processed in blocks, with the arithmetic (elevation, rounding, ranks, barycentric
    weights, packed vertex keys and their hashes) vectorized across the pixels of a block (fastmath:
    the caller checks that features are finite); then vertices are found in a hash table of packed
    keys, one look-up per simplex corner.
    ``scale`` (d,) float64: elevation scale of each feature (``geometry.elevation_scales``);
    ``coord_lo``, ``width`` (d,) int64: the packed-key fields (``geometry.key_fields``), packed
    greedily into 63-bit words (keys stay >= 0): one word when the range allows.
    Returns (offsets (N, d+1) int32, weights (N, d+1) float32, neighbors (d+1, M, 2) int32).
    """
    n_points, d = features.shape
    d1 = d + 1
    inv_d1 = 1.0 / d1

    # One allocation for both (fewer fresh pages to fault in when malloc maps new memory)
    storage = np.empty(2 * n_points * d1, np.int32)
    offsets = storage[: n_points * d1].reshape((n_points, d1))
    weights = storage[n_points * d1 :].view(np.float32).reshape((n_points, d1))
    word_of = np.empty(d, np.int64)
    shift_of = np.empty(d, np.int64)
    words = 1
    used = 0
    for i in range(d):
        if used + width[i] > 63:
            words += 1
            used = 0
        word_of[i] = words - 1
        shift_of[i] = used
        used += width[i]
    bits = 12
    table = _rehash(np.empty((0, words), np.int64), 0, bits)
    keys = np.empty((1 << (bits - 2), words), np.int64)
    count = 0

    elevated = np.empty((d1, _BLOCK), np.float64)
    residual = np.empty((d1, _BLOCK), np.float64)
    rem0 = np.empty((d1, _BLOCK), np.int64)
    rank = np.empty((d1, _BLOCK), np.int64)
    total = np.empty(_BLOCK, np.int64)
    ranked = np.empty((d1, _BLOCK), np.float64)
    bary = np.empty((d1, _BLOCK), np.float64)
    base = np.empty((words, _BLOCK), np.int64)
    block_keys = np.empty((d1, words, _BLOCK), np.int64)
    block_hash = np.empty((d1, _BLOCK), np.int64)
    ones = np.zeros(words, np.int64)
    steps = np.zeros((d1, words), np.int64)
    for i in range(d):
        ones[word_of[i]] += np.int64(1) << shift_of[i]
        steps[i, word_of[i]] = np.int64(d1) << shift_of[i]

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
        # rank_i = total + #(j < i: residual_j >= residual_i) + #(j > i: residual_j > residual_i),
        # one comparison per pair
        for i in range(d1):
            for k in range(m):
                rank[i, k] = total[k]
        for i in range(d1):
            for j in range(i + 1, d1):
                for k in range(m):
                    above = np.int64(residual[j, k] > residual[i, k])
                    rank[i, k] += above
                    rank[j, k] += 1 - above
        for i in range(d1):
            for k in range(m):
                wrap = np.int64(rank[i, k] < 0) - np.int64(rank[i, k] > d)
                rank[i, k] += wrap * d1
                rem0[i, k] += wrap * d1
        # Barycentric weights within the simplex (residuals sorted by rank).
        for i in range(d1):
            for k in range(m):
                residual[i, k] = (elevated[i, k] - rem0[i, k]) * inv_d1
        for k in range(m):
            for i in range(d1):
                ranked[rank[i, k], k] = residual[i, k]
        for k in range(m):
            bary[0, k] = 1.0 + ranked[d, k] - ranked[0, k]
        for r in range(1, d1):
            for k in range(m):
                bary[r, k] = ranked[d - r, k] - ranked[d - r + 1, k]
        for k in range(m):
            for r in range(d1):
                weights[start + k, r] = bary[r, k]
        # The d+1 simplex vertices: vertex r has coordinates rem0 + r, minus d+1 where
        # rank >= d+1-r. Packed keys are linear in the coordinates.
        for w in range(words):
            for k in range(m):
                base[w, k] = 0
        for i in range(d):
            w = word_of[i]
            s = shift_of[i]
            for k in range(m):
                base[w, k] += (rem0[i, k] - coord_lo[i]) << s
        for r in range(d1):
            key_words = block_keys[r]
            for w in range(words):
                for k in range(m):
                    key_words[w, k] = base[w, k] + r * ones[w]
            for i in range(d):
                w = word_of[i]
                step = np.int64(d1) << shift_of[i]
                for k in range(m):
                    key_words[w, k] -= step * np.int64(rank[i, k] >= d1 - r)
            if words == 1:
                for k in range(m):
                    block_hash[r, k] = key_words[0, k] * _HASH_MULT
            else:
                for k in range(m):
                    block_hash[r, k] = (key_words[0, k] * _HASH_MULT) ^ (key_words[1, k] * _HASH_MULT2)
            for w in range(2, words):
                for k in range(m):
                    block_hash[r, k] = (block_hash[r, k] ^ key_words[w, k]) * _HASH_MULT
        # Room for every key of the block (load factor <= 1/4), then the look-ups.
        if 4 * (count + d1 * m) > (1 << bits):
            while 4 * (count + d1 * m) > (1 << bits):
                bits += 1
            grown = np.empty((1 << (bits - 2), words), np.int64)
            grown[:count] = keys[:count]
            keys = grown
            table = _rehash(keys, count, bits)
        count = _insert_block(table, bits, keys, count, block_keys, block_hash, offsets, start, m)

    neighbors = _find_neighbors(table, bits, keys, count, ones, steps)
    return offsets, weights, neighbors


@njit(cache=True, nogil=True, fastmath=True, error_model="numpy")
def filter_values(
    values: np.ndarray,
    offsets: np.ndarray,
    weights: np.ndarray,
    neighbors: np.ndarray,
    reverse: np.ndarray,
    scale: np.ndarray,
    out: np.ndarray,
) -> None:
    """out[i] = scale[0] * slice(blur_i(splat(values))) for values (C, N) and out (len(reverse), C, N).

    The splat is shared; each output gets its own blur, in lattice-direction order or, where
    ``reverse[i]``, in reverse order, which applies the transpose of the forward operator (each 1-D
    blur is symmetric; only their order differs). ``scale`` is a 1-element array of the values'
    dtype (float32 or float64, the compute dtype). fastmath: callers validate that inputs are finite.

    The vertex buffers are (M + 1, Cp), channels padded to a multiple of 8 so that every channel
    loop is a fixed number of full SIMD operations; blocks of pixels are transposed to and from
    the (C, N) layout.
    """
    n_channels, n_points = values.shape
    d1 = offsets.shape[1]
    n_vertices = neighbors.shape[1]
    cp = (n_channels + _LANES - 1) // _LANES * _LANES
    splatted = np.zeros((n_vertices + 1) * cp, values.dtype)
    tmp = np.zeros((n_vertices + 1) * cp, values.dtype)
    block = np.zeros(_LANES * cp, values.dtype)
    # Groups of 8 pixels x 8 channels are transposed in registers (needs unit-stride rows); the rest
    # (the last N % 8 pixels, or all of them for strided rows) goes through a transposed block.
    vector_in = values.strides[1] == values.itemsize
    n8 = n_points // 8 * 8 if vector_in else 0
    for n in range(0, n8, 8):
        for c in range(0, cp, _LANES):
            _splat8(splatted, cp, c, values, n, n_channels - 1, offsets, weights)
    for start in range(n8, n_points, _LANES):
        m = min(_LANES, n_points - start)
        for c in range(n_channels):
            for k in range(m):
                block[k * cp + c] = values[c, start + k]
        for k in range(m):
            for r in range(d1):
                o = (offsets[start + k, r] + 1) * cp
                w = weights[start + k, r]
                for c in range(0, cp, _LANES):
                    _axpy(splatted, o + c, w, block, k * cp + c)
    s = scale[0]
    for i in range(reverse.shape[0]):
        buf = splatted if i == reverse.shape[0] - 1 else splatted.copy()  # the last blur consumes it
        for step in range(d1):
            j = d1 - 1 - step if reverse[i] else step
            for v in range(n_vertices):
                a = neighbors[j, v, 0] * cp
                b = neighbors[j, v, 1] * cp
                o = (v + 1) * cp
                for c in range(0, cp, _LANES):
                    _blur(tmp, buf, o + c, a + c, b + c)
            buf, tmp = tmp, buf
        target = out[i]
        n8_out = n8 if target.strides[1] == target.itemsize else 0
        for n in range(0, n8_out, 8):
            for c in range(0, cp, _LANES):
                _slice8(target, c, n, n_channels, buf, cp, offsets, weights, s)
        for start in range(n8_out, n_points, _LANES):
            m = min(_LANES, n_points - start)
            block[:] = 0
            for k in range(m):
                for r in range(d1):
                    o = (offsets[start + k, r] + 1) * cp
                    w = weights[start + k, r] * s
                    for c in range(0, cp, _LANES):
                        _axpy(block, k * cp + c, w, buf, o + c)
            for c in range(n_channels):
                for k in range(m):
                    target[c, start + k] = block[k * cp + c]
        tmp = buf  # keep a scratch buffer of the right size for the next blur
