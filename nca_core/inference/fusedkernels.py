"""The numba kernels of the fused CPU engine (``nca_core.inference.fused`` drives them; needs numba).

The state is channel-major per X plane, (R, X, C, Y, Z), so that every row of a channel is
contiguous. Two sweeps per step over a batch of runs, parallel over (run, X plane) tasks:

* ``plane_moments``: the perception (own state + depthwise conv, reflect padding) of
  each plane, its mean and centred 2C x 2C scatter matrix (for the exact whole-volume
  BatchNorm statistics, merged per run by the driver). The conv's output is parked in the
  plane's slot of the other buffer, which the step has not written yet.
* ``plane_update``: for the cells that fire, fc0 with BatchNorm folded in (per run), ReLU,
  fc1 and the residual; the plane's slot of the other buffer then receives the new state.

Only the state's double buffer spans the volume; each task works in a few plane buffers.
Compiled at import for fixed signatures and cached on disk (``cache=True``).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

# Reassociation lets LLVM vectorise the sums; no NaN/Inf assumptions.
FLAGS = {"nsz", "arcp", "contract", "reassoc"}
_MASK32 = 0xFFFFFFFF
# Widths fixed at compile time (every preset's; other models run on the torch path): loops
# of known length unroll into whole vector registers.
CHANNELS = 16
HIDDEN = 64
WIDTH = 2 * CHANNELS

_STATE = "float32[:, :, :, :, ::1]"
_VEC_F = "float32[::1]"
_VEC_I = "int64[::1]"
_MOMENTS_SIG = (f"void({_STATE}, {_STATE}, {_VEC_I}, {_VEC_I}, {_VEC_I}, float32[:, :, :, ::1], {_VEC_F}, int64, "
                f"float64[:, ::1], float64[:, :, ::1])")
_UPDATE_SIG = (f"void({_STATE}, {_STATE}, float32[:, :, ::1], float32[:, ::1], float32[:, ::1], "
               f"int64[::1], int64)")


@njit("int64(int64)", cache=True, inline="always")
def _mix32(x):
    """``firing._mix32`` (lowbias32) on a value in [0, 2**32)."""
    x ^= x >> 16
    x = (x * 0x7FEB352D) & _MASK32
    x ^= x >> 15
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


@njit("boolean(int64, int64, int64)", cache=True, inline="always")
def fires(key, cell, threshold):
    """``firing.fire_mask`` for one cell index: whether that cell fires."""
    return _mix32(_mix32(cell ^ key) ^ (cell >> 32)) >= threshold


@njit(cache=True, fastmath=FLAGS, inline="always")
def _pad_plane(state, r, q, rx, ry, rz, pad, padded):
    """Padded plane ``q`` (X coordinate + pad) of run ``r`` into its ring slot ``padded[q % k]``
    (C, (Y+2p)*(Z+2p)): reflected at the volume's borders, rows of padded width."""
    ny, nz = state.shape[3], state.shape[4]
    wide = nz + 2 * pad
    sx = rx[q]
    slot = padded[q % padded.shape[0]]
    for c in range(CHANNELS):
        target = slot[c]
        for yp in range(ny + 2 * pad):
            source = state[r, sx, c, ry[yp]]
            row = yp * wide
            for z in range(nz):
                target[row + pad + z] = source[z]
            for zp in range(pad):
                target[row + zp] = source[rz[zp]]
                target[row + pad + nz + zp] = source[rz[pad + nz + zp]]


@njit(cache=True, fastmath=FLAGS, inline="always")
def _convolve(padded, x, c, weight, bias, wide, out):
    """``out`` (Y*(Z+2p) - 2p) = bias + the depthwise conv of plane ``x``, channel ``c``, from the
    ring of padded planes (``_pad_plane``), on rows of padded
    width (the last 2p values of each row are unused); each pass adds a row of k taps (all
    k*k taps of a source plane for k = 3) so that every pass is one contiguous loop."""
    k = weight.shape[1]
    count = out.shape[0]
    for m in range(count):
        out[m] = bias[c]
    for dx in range(k):
        rows = padded[(x + dx) % k, c]
        if k == 3:
            w = weight[c, dx]
            s0, s1, s2 = rows[0:count], rows[1:count + 1], rows[2:count + 2]
            s3, s4, s5 = rows[wide:wide + count], rows[wide + 1:wide + count + 1], rows[wide + 2:wide + count + 2]
            w2 = 2 * wide
            s6, s7, s8 = rows[w2:w2 + count], rows[w2 + 1:w2 + count + 1], rows[w2 + 2:w2 + count + 2]
            for m in range(count):
                out[m] += (w[0, 0] * s0[m] + w[0, 1] * s1[m] + w[0, 2] * s2[m]
                           + w[1, 0] * s3[m] + w[1, 1] * s4[m] + w[1, 2] * s5[m]
                           + w[2, 0] * s6[m] + w[2, 1] * s7[m] + w[2, 2] * s8[m])
            continue
        for dy in range(k):
            w = weight[c, dx, dy]
            base = dy * wide
            if k == 7:
                s0, s1, s2 = rows[base:base + count], rows[base + 1:base + count + 1], rows[base + 2:base + count + 2]
                s3, s4 = rows[base + 3:base + count + 3], rows[base + 4:base + count + 4]
                s5, s6 = rows[base + 5:base + count + 5], rows[base + 6:base + count + 6]
                for m in range(count):
                    out[m] += (w[0] * s0[m] + w[1] * s1[m] + w[2] * s2[m] + w[3] * s3[m]
                               + w[4] * s4[m] + w[5] * s5[m] + w[6] * s6[m])
                continue
            for dz in range(k):
                tap = w[dz]
                source = rows[base + dz:base + dz + count]
                for m in range(count):
                    out[m] += tap * source[m]


@njit(cache=True, fastmath=FLAGS, inline="always")
def _scatter_block(plane, i, j, out):
    """out[i:i+4, j:j+4] (and its mirror) = dot products of rows i.. and j.. of ``plane``."""
    a00 = a01 = a02 = a03 = a10 = a11 = a12 = a13 = np.float32(0.0)
    a20 = a21 = a22 = a23 = a30 = a31 = a32 = a33 = np.float32(0.0)
    for n in range(plane.shape[1]):
        x0, x1, x2, x3 = plane[i, n], plane[i + 1, n], plane[i + 2, n], plane[i + 3, n]
        y0, y1, y2, y3 = plane[j, n], plane[j + 1, n], plane[j + 2, n], plane[j + 3, n]
        a00 += x0 * y0
        a01 += x0 * y1
        a02 += x0 * y2
        a03 += x0 * y3
        a10 += x1 * y0
        a11 += x1 * y1
        a12 += x1 * y2
        a13 += x1 * y3
        a20 += x2 * y0
        a21 += x2 * y1
        a22 += x2 * y2
        a23 += x2 * y3
        a30 += x3 * y0
        a31 += x3 * y1
        a32 += x3 * y2
        a33 += x3 * y3
    block = ((a00, a01, a02, a03), (a10, a11, a12, a13), (a20, a21, a22, a23), (a30, a31, a32, a33))
    for p in range(4):
        for q in range(4):
            out[i + p, j + q] = block[p][q]
            out[j + q, i + p] = block[p][q]


@njit(cache=True, fastmath=FLAGS, inline="always")
def _plane_moments(state, parked, r, x, padded, weight, bias, wide, filtered, plane, mean, scatter):
    """The moments of plane ``x`` of run ``r`` into ``mean`` and ``scatter``; its filtered
    channels into ``parked[r, x]``."""
    ny, nz = state.shape[3], state.shape[4]
    cells = ny * nz
    for c in range(CHANNELS):
        _convolve(padded, x, c, weight, bias, wide, filtered)
        own, seen, target = plane[c], plane[CHANNELS + c], parked[r, x, c]
        source = state[r, x, c]
        for y in range(ny):
            for z in range(nz):
                own[y * nz + z] = source[y, z]
                seen[y * nz + z] = filtered[y * wide + z]
                target[y, z] = filtered[y * wide + z]
    for i in range(WIDTH):
        total = 0.0
        for n in range(cells):
            total += plane[i, n]
        mean[i] = total / cells
        centre = np.float32(total / cells)
        for n in range(cells):
            plane[i, n] -= centre
    for i in range(0, WIDTH, 4):
        for j in range(i, WIDTH, 4):
            _scatter_block(plane, i, j, scatter)


@njit(_MOMENTS_SIG, parallel=True, cache=True, fastmath=FLAGS)
def plane_moments(state, parked, rx, ry, rz, weight, bias, planes_per_task, means, scatters):
    """Per plane (run r, x): ``means[r * X + x]`` (2C) and ``scatters[r * X + x]`` (2C, 2C), the
    plane's perception mean and centred scatter matrix (float32 sums per plane, float64 out);
    its filtered channels go to ``parked[r, x]`` for ``plane_update``. A task takes
    ``planes_per_task`` planes in a row, padding each source plane once."""
    runs, nx, _, ny, nz = state.shape
    k = weight.shape[1]
    pad = k // 2
    wide = nz + 2 * pad
    cells = ny * nz
    chunks = (nx + planes_per_task - 1) // planes_per_task
    for task in prange(runs * chunks):
        r = task // chunks
        first = (task - r * chunks) * planes_per_task
        padded = np.empty((k, CHANNELS, (ny + 2 * pad) * wide), np.float32)
        filtered = np.empty(ny * wide - 2 * pad, np.float32)
        plane = np.empty((WIDTH, cells), np.float32)
        for q in range(first, first + k - 1):
            _pad_plane(state, r, q, rx, ry, rz, pad, padded)
        for x in range(first, min(first + planes_per_task, nx)):
            _pad_plane(state, r, x + k - 1, rx, ry, rz, pad, padded)
            _plane_moments(state, parked, r, x, padded, weight, bias, wide, filtered, plane, means[r * nx + x],
                           scatters[r * nx + x])


@njit(cache=True, fastmath=FLAGS, inline="always")
def _dense_block(inputs, weight, first, bias, relu, outputs):
    """Rows ``first``..``first+3`` of ``outputs`` (n_out, n) = weight^T f(inputs) + bias, where
    ``inputs`` (n_in, n) and f is ReLU if ``relu``, else the identity. Four outputs and four
    inputs per pass over the cells (more streams and LLVM stops vectorising the loop)."""
    count = inputs.shape[1]
    o0, o1, o2, o3 = outputs[first], outputs[first + 1], outputs[first + 2], outputs[first + 3]
    for j in range(count):
        o0[j] = bias[first]
        o1[j] = bias[first + 1]
        o2[j] = bias[first + 2]
        o3[j] = bias[first + 3]
    zero = np.float32(0.0)
    for i in range(0, inputs.shape[0], 4):
        a0, a1, a2, a3 = inputs[i], inputs[i + 1], inputs[i + 2], inputs[i + 3]
        w0, w1, w2, w3 = weight[i], weight[i + 1], weight[i + 2], weight[i + 3]
        for j in range(count):
            v0, v1, v2, v3 = a0[j], a1[j], a2[j], a3[j]
            if relu:
                v0, v1, v2, v3 = max(v0, zero), max(v1, zero), max(v2, zero), max(v3, zero)
            o0[j] += w0[first] * v0 + w1[first] * v1 + w2[first] * v2 + w3[first] * v3
            o1[j] += w0[first + 1] * v0 + w1[first + 1] * v1 + w2[first + 1] * v2 + w3[first + 1] * v3
            o2[j] += w0[first + 2] * v0 + w1[first + 2] * v1 + w2[first + 2] * v2 + w3[first + 2] * v3
            o3[j] += w0[first + 3] * v0 + w1[first + 3] * v1 + w2[first + 3] * v2 + w3[first + 3] * v3


@njit(_UPDATE_SIG, parallel=True, cache=True, fastmath=FLAGS)
def plane_update(state, out, folded, shift, w1t, keys, threshold):
    """``out`` = ``state`` advanced by one step; ``out`` holds the filtered channels that
    ``plane_moments`` parked there. Cells that fire (all when ``threshold`` is 0) get
    state + fc1(relu(folded^T perception + shift)); the others are copied.

    ``folded`` (R, 2C, H) and ``shift`` (R, H) hold fc0 with each run's BatchNorm folded in;
    ``w1t`` (H, C) is fc1 transposed with the pinned image channels' columns zero.
    """
    runs, nx, _, ny, nz = state.shape
    cells = ny * nz
    for task in prange(runs * nx):
        r = task // nx
        x = task - r * nx
        fired = np.empty(cells, np.int64)
        count = 0
        first = x * cells
        for n in range(cells):
            if threshold == 0 or fires(keys[r], first + n, threshold):
                fired[count] = n
                count += 1
        rows = np.empty((WIDTH, count), np.float32)
        for c in range(CHANNELS):
            own, seen = state[r, x, c].ravel(), out[r, x, c].ravel()
            for j in range(count):
                rows[c, j] = own[fired[j]]
                rows[CHANNELS + c, j] = seen[fired[j]]
        hidden = np.empty((HIDDEN, count), np.float32)
        for h in range(0, HIDDEN, 4):
            _dense_block(rows, folded[r], h, shift[r], False, hidden)
        delta = np.empty((CHANNELS, count), np.float32)
        no_bias = np.zeros(CHANNELS, np.float32)
        for c in range(0, CHANNELS, 4):
            _dense_block(hidden, w1t, c, no_bias, True, delta)
        for c in range(CHANNELS):
            source = state[r, x, c].ravel()
            target = out[r, x, c].ravel()
            for n in range(cells):
                target[n] = source[n]
            changes = delta[c]
            for j in range(count):
                target[fired[j]] += changes[j]
