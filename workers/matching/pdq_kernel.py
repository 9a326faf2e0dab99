"""Compiled inner loops of the PDQ index (workers/index.py), with numba.

A multi-index hashing query is thousands of tiny table lookups and popcounts; in numpy each
step is a pass over a temporary array, which spends more time allocating and copying than
looking. These loops do the same work in one pass with the GIL released, so the index's
threads use both cores. The rules (pigeonhole layout, what counts as alive) stay in
workers/index.py; this module only builds and walks the arrays it is given.

Table layout ("slots"): for each table t and key k, slots[(t << bits) | k] holds two int32:
  (-1, -1)        an empty bucket
  (r, -1)         one row r
  (r, s), s >= 0  two rows r and s
  (r, -2 - p)     row r, then ovf[p] more rows at ovf[p + 1 : p + 1 + ovf[p]]
At 10 M hashes a bucket holds 1.2 rows on average, so most lookups find their rows in the
slot itself: one memory access where offsets plus a row list would take two.

Compiled on first use and cached beside this file (numba's cache; a few seconds once).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

EMPTY = -1
AHEAD = 16                      # probes prefetched ahead of the one being read


@intrinsic
def _popcount(typingctx, x):
    """The CPU's popcount on a uint64 (LLVM ctpop)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])
    return sig, codegen


@intrinsic
def _prefetch(typingctx, arr, row):
    """Ask the CPU to start loading arr[row] into cache (LLVM prefetch: read, keep)."""
    sig = types.void(arr, row)

    def codegen(context, builder, signature, args):
        aryty, rowty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        zero = context.get_constant(types.intp, 0)
        ptr = cgutils.get_item_pointer2(
            context, builder, data=ary.data, shape=cgutils.unpack_tuple(builder, ary.shape),
            strides=cgutils.unpack_tuple(builder, ary.strides), layout=aryty.layout,
            inds=[context.cast(builder, args[1], rowty, types.intp)] + [zero] * (aryty.ndim - 1),
            wraparound=False, boundscheck=False)
        i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32]), "llvm.prefetch.p0")
        builder.call(fn, [i8p, i32(0), i32(3), i32(1)])
        return context.get_dummy_value()
    return sig, codegen


@njit(inline="always")
def _distance(c64, row, a0, a1, a2, a3):
    return (_popcount(c64[row, 0] ^ a0) + _popcount(c64[row, 1] ^ a1)
            + _popcount(c64[row, 2] ^ a2) + _popcount(c64[row, 3] ^ a3))


@njit(nogil=True, cache=True)
def table_keys(codes, cols):
    """(codes, tables) keys: for table t the code's bits cols[t] (bit 0 = the first byte's
    most significant bit), the first of them the key's most significant bit."""
    n, tables, bits = codes.shape[0], cols.shape[0], cols.shape[1]
    out = np.empty((n, tables), np.int32)
    for i in range(n):
        for t in range(tables):
            key = 0
            for j in range(bits):
                c = cols[t, j]
                key = (key << 1) | ((codes[i, c >> 3] >> (7 - (c & 7))) & 1)
            out[i, t] = key
    return out


@njit(nogil=True, cache=True)
def _bucket_sizes(keys, t, size):
    counts = np.zeros(size, np.int32)
    for r in range(keys.shape[0]):
        counts[keys[r, t]] += 1
    return counts


@njit(nogil=True, cache=True)
def build_slots(keys, bits):
    """The slots and overflow arrays (see the module docstring) of rows with these keys
    (rows, tables), each bucket's rows in row order."""
    n, tables = keys.shape
    size = 1 << bits
    total = 0
    for t in range(tables):                 # first, how much overflow there will be
        counts = _bucket_sizes(keys, t, size)
        for k in range(size):
            if counts[k] > 2:
                total += counts[k]          # its count, then count - 1 rows
    slots = np.full((tables * size, 2), EMPTY, np.int32)
    ovf = np.zeros(total, np.int32)
    at = 0
    for t in range(tables):
        counts = _bucket_sizes(keys, t, size)
        for k in range(size):
            if counts[k] > 2:               # a bucket that overflows points at its list now
                slots[(t << bits) | k, 1] = -2 - at
                at += counts[k]
        for r in range(n):
            k = (t << bits) | keys[r, t]
            if slots[k, 0] == EMPTY:
                slots[k, 0] = r
            elif slots[k, 1] == EMPTY:
                slots[k, 1] = r
            else:
                p = -2 - slots[k, 1]
                ovf[p] += 1
                ovf[p + ovf[p]] = r
    return slots, ovf


@njit(nogil=True, cache=True)
def unlink(keys, rows, bits, slots, ovf, sentinel):
    """Point every table entry of these rows (keys: their (rows, tables) keys) at sentinel."""
    for i in range(rows.shape[0]):
        r = rows[i]
        for t in range(keys.shape[1]):
            k = (t << bits) | keys[i, t]
            if slots[k, 0] == r:
                slots[k, 0] = sentinel
            elif slots[k, 1] == r:
                slots[k, 1] = sentinel
            elif slots[k, 1] <= -2:
                p = -2 - slots[k, 1]
                for j in range(p + 1, p + 1 + ovf[p]):
                    if ovf[j] == r:
                        ovf[j] = sentinel


@njit(nogil=True, cache=True)
def probe(q64, keys, masks, nmasks, bits, slots, ovf, c64, alive, threshold, out_q, out_row, out_d):
    """Every live row within threshold of each query, through the multi-index tables.

    In table t a query visits the buckets of its key XOR each of masks[:nmasks[t]], and checks
    every row there by an exact popcount distance. A row close in several tables is reported
    once (each query's hits are deduplicated by row). Writes up to len(out_q) hits and returns
    how many there are in all: when that is more, the caller grows the buffers and asks again.

    The tables are far larger than the CPU's caches, so nearly every lookup waits on memory.
    Each query goes in passes that keep many loads in flight instead of one chain of dependent
    loads per bucket: the slots, prefetched AHEAD probes early and read into a buffer without
    branching on them; the rows they name, gathered; the rows' codes, prefetched AHEAD rows
    before each distance is taken."""
    tables = keys.shape[1]
    nprobe = 0
    for t in range(tables):
        nprobe += nmasks[t]
    kk = np.empty(nprobe + AHEAD, np.int64)
    spill = np.empty(nprobe, np.int64)
    sa = np.empty(nprobe, np.int32)
    sb = np.empty(nprobe, np.int32)
    cand = np.empty(4096, np.int32)
    n_out = 0
    for i in range(q64.shape[0]):
        j = 0
        for t in range(tables):
            base = t << bits
            key = keys[i, t]
            for m in range(nmasks[t]):
                kk[j] = base | (key ^ masks[m])
                j += 1
        for j in range(nprobe, nprobe + AHEAD):
            kk[j] = kk[nprobe - 1]
        for j in range(AHEAD):
            _prefetch(slots, kk[j])
        nc = 0
        ns = 0
        for j in range(nprobe):
            # Loads only: nothing here waits on a slot that is still on its way from memory
            # (a branch or an address that did would hold up the loads issued after it).
            _prefetch(slots, kk[j + AHEAD])
            sa[j] = slots[kk[j], 0]
            sb[j] = slots[kk[j], 1]
        if 2 * nprobe + AHEAD > cand.shape[0]:
            cand = _grow(cand, 2 * nprobe + AHEAD)
        for j in range(nprobe):                  # branch-free compaction of the slots
            a = sa[j]
            b = sb[j]
            cand[nc] = a
            nc += a >= 0
            cand[nc] = b
            nc += b >= 0
            spill[ns] = -2 - b
            ns += b < EMPTY
        for s in range(ns):                      # rows of the buckets that overflowed
            p = spill[s]
            m = ovf[p]
            if nc + m + AHEAD > cand.shape[0]:
                cand = _grow(cand, nc + m + AHEAD)
            cand[nc:nc + m] = ovf[p + 1:p + 1 + m]
            nc += m
        for c in range(min(nc, AHEAD)):
            _prefetch(c64, cand[c])
        cand[nc:nc + AHEAD] = cand[nc - 1] if nc else 0
        a0, a1, a2, a3 = q64[i, 0], q64[i, 1], q64[i, 2], q64[i, 3]
        first = n_out
        for c in range(nc):
            _prefetch(c64, cand[c + AHEAD])
            r = cand[c]
            d = _distance(c64, r, a0, a1, a2, a3)
            if d <= threshold and alive[r]:
                n_out = _hit(out_q, out_row, out_d, n_out, i, r, d)
        if n_out - first > 1 and n_out <= out_q.shape[0]:
            n_out = first + _dedup(out_q, out_row, out_d, first, n_out)
    return n_out


@njit(inline="always")
def _hit(out_q, out_row, out_d, n_out, i, r, d):
    """Write hit number n_out when the buffers hold it; count it either way."""
    if n_out < out_q.shape[0]:
        out_q[n_out] = i
        out_row[n_out] = r
        out_d[n_out] = d
    return n_out + 1


@njit(inline="always")
def _grow(a, need):
    out = np.empty(max(need, 2 * a.shape[0]), a.dtype)
    out[:a.shape[0]] = a
    return out


@njit(inline="always")
def _dedup(out_q, out_row, out_d, first, end):
    """Sort hits [first, end) by row and keep one of each; returns how many are left."""
    order = np.argsort(out_row[first:end], kind="mergesort")
    rows = out_row[first:end][order]
    dist = out_d[first:end][order]
    k = 0
    for j in range(len(rows)):
        if j == 0 or rows[j] != rows[j - 1]:
            out_row[first + k] = rows[j]
            out_d[first + k] = dist[j]
            k += 1
    return k            # out_q[first:end] is one query: its first k entries stay right


@njit(nogil=True, cache=True)
def scan(q64, c64, alive, threshold, out_q, out_row, out_d):
    """Every live row within threshold of each query by checking all rows (small segments).
    Same output convention as `probe`."""
    n_out = 0
    for i in range(q64.shape[0]):
        a0, a1, a2, a3 = q64[i, 0], q64[i, 1], q64[i, 2], q64[i, 3]
        for r in range(c64.shape[0]):
            d = _distance(c64, r, a0, a1, a2, a3)
            if d <= threshold and alive[r]:
                n_out = _hit(out_q, out_row, out_d, n_out, i, r, d)
    return n_out
