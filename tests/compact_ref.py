"""The compact storage formats and their rounding, rewritten in NumPy from the
description in csrc/compact.c (not from its code paths): the tests model the
kernels' rounding with these and compare bits."""
import numpy as np

QBLOCK = 256
FMAX = np.float32(1.875)
M64 = (1 << 64) - 1


def mix(x):
    """splitmix64's finaliser on a Python int."""
    x &= M64
    x ^= x >> 30
    x = (x * 0xbf58476d1ce4e5b9) & M64
    x ^= x >> 27
    x = (x * 0x94d049bb133111eb) & M64
    x ^= x >> 31
    return x


def rng_key(seed, index):
    return mix(mix(seed) ^ index)


def block_key(key, step, pair, e_hi):
    return mix(key ^ mix((step & M64) ^ mix(((e_hi << 8) | pair) & M64))) & 0xFFFFFFFF


def draw(counter):
    """32 uniform bits per uint32 counter (uint32 arithmetic)."""
    x = counter.astype(np.uint32)
    x ^= x >> np.uint32(16)
    x *= np.uint32(0x7feb352d)
    x ^= x >> np.uint32(15)
    x *= np.uint32(0x846ca68b)
    x ^= x >> np.uint32(16)
    return x


def draws(key, step, stream, first, n):
    """The 16 random bits (as the top half of a uint32) that stream ``stream``
    (0: the param, 1 + k: state k) of elements first .. first + n - 1 of a
    param rounds with: the param the low half of pair 0's draw, state k the
    low (even k) or high (odd k) half of pair 1 + k // 2's."""
    pair = 0 if stream == 0 else 1 + (stream - 1) // 2
    high = stream > 0 and (stream - 1) % 2 == 1
    e = np.arange(first, first + n, dtype=np.uint64)
    out = np.empty(n, dtype=np.uint32)
    for hi in np.unique(e >> np.uint64(32)):
        sel = (e >> np.uint64(32)) == hi
        kb = np.uint32(block_key(key, step, pair, int(hi)))
        out[sel] = draw((e[sel] & np.uint64(0xFFFFFFFF)).astype(np.uint32) ^ kb)
    if high:
        return out & np.uint32(0xFFFF0000)
    return out << np.uint32(16)


def _mini_encode(y, mant, bias, kmax, r, subnormals=True, below=0):
    """Magnitude codes of float32 y >= 0 in a float format with ``mant``
    mantissa bits and exponent bias ``bias``; r: draws (None: to nearest).
    Without subnormals a value below the normal range has code ``below``."""
    y = y.astype(np.float32)
    # exact: value = (1 + f) * 2**e for normal codes, k * 2**(1 - bias - mant) below
    sub_unit = np.float64(2.0) ** (1 - bias - mant)
    thr = np.float64(2.0) ** (1 - bias)
    y64 = y.astype(np.float64)
    out = np.zeros(y.shape, dtype=np.int64)
    normal = y64 >= thr
    e = np.floor(np.log2(np.where(normal, y64, 1.0))).astype(np.int64)
    # the exact position of y between codes, in units of the code step
    step = np.where(normal, np.float64(2.0) ** (e - mant), sub_unit)
    pos = y64 / step                      # exact: a power-of-two scaling
    low = np.floor(pos)
    frac = pos - low
    if r is None:
        up = (frac > 0.5) | ((frac == 0.5) & (low % 2 == 1))
    else:
        drop = 23 - mant
        # stochastic: up when the dropped bits plus the draw's top bits (16,
        # or all the dropped bits if fewer) carry; below the normal range the
        # fraction is compared with 16 bits of the draw
        top = (r >> np.uint32(16)).astype(np.float64)
        rn = top / 2.0 ** 16 if drop >= 16 else np.floor(top / 2.0 ** (16 - drop)) / 2.0 ** drop
        up = np.where(normal, frac + rn >= 1.0, frac > top / 2.0 ** 16)
    code_low = np.where(normal, (e + bias) * (1 << mant) + (low.astype(np.int64) - (1 << mant)),
                        low.astype(np.int64))
    out = code_low + up.astype(np.int64)
    if not subnormals:
        out = np.where(normal, out, below)
    return np.minimum(out, kmax)


def _mini_decode(k, mant, bias, subnormals=True):
    k = k.astype(np.int64)
    e = k >> mant
    f = k & ((1 << mant) - 1)
    normal = (1.0 + f / 2.0 ** mant) * np.float64(2.0) ** (e - bias)
    sub = k * np.float64(2.0) ** (1 - bias - mant) if subnormals else 0.0
    return np.where(e > 0, normal, sub).astype(np.float32)


def q8_encode(x, signed, key, step, stream, first=0):
    """int8 blocks (absmax, codes) of float32 x, as structured rows."""
    x = np.asarray(x, dtype=np.float32).ravel()
    n = x.size
    nb = (n + QBLOCK - 1) // QBLOCK
    absmax = np.zeros(nb, dtype=np.float32)
    codes = np.zeros((nb, QBLOCK), dtype=np.uint8)
    r = draws(key, step, stream, first, n)
    for b in range(nb):
        xs = x[b * QBLOCK:(b + 1) * QBLOCK]
        rs = r[b * QBLOCK:(b + 1) * QBLOCK]
        a = np.abs(xs)
        if not np.isfinite(a).all():
            absmax[b] = np.nan
            continue
        amax = a.max() if a.size else np.float32(0)
        absmax[b] = amax
        inv = FMAX / amax if amax > 0 else np.float32(0)
        y = (a * np.float32(inv)).astype(np.float32)
        if signed:
            k = _mini_encode(y, 3, 15, 127, rs, subnormals=False)
            codes[b, :xs.size] = k | np.where(np.signbit(xs), 0x80, 0)
        else:
            # a positive value below the range is the smallest normal code
            k = _mini_encode(y, 3, 31, 255, rs, subnormals=False, below=np.where(y > 0, 8, 0))
            codes[b, :xs.size] = k
    return absmax, codes


def q8_decode(absmax, codes, signed, n):
    d = (absmax / FMAX).astype(np.float32)[:, None]
    if signed:
        v = _mini_decode(codes & 0x7f, 3, 15, subnormals=False) * d
        v = np.where(codes & 0x80, -v, v)
    else:
        v = _mini_decode(codes, 3, 31, subnormals=False) * d
    return v.astype(np.float32).ravel()[:n]


def half_encode(x, fmt, stochastic, key, step, stream, first=0):
    """uint16 bits of float32 x as bfloat16 ("bf16") or float16 ("f16")."""
    x = np.asarray(x, dtype=np.float32).ravel()
    r = draws(key, step, stream, first, x.size) if stochastic else None
    if fmt == "bf16":
        bits = x.view(np.uint32).astype(np.uint64)
        if r is None:
            add = np.uint64(0x7fff) + ((bits >> np.uint64(16)) & np.uint64(1))
        else:
            add = (r >> np.uint32(16)).astype(np.uint64)
        out = ((bits + add) >> np.uint64(16)).astype(np.uint16)
        nan = np.isnan(x)
        out[nan] = (x[nan].view(np.uint32) >> np.uint32(16)).astype(np.uint16) | 0x40
        return out
    mag = np.abs(x)
    k = _mini_encode(np.minimum(np.where(np.isnan(mag), 0, mag), 65536.0), 10, 15, 0x7c00, r)
    k = np.where(np.isnan(x), 0x7e00, k)
    return (k | np.where(np.signbit(x), 0x8000, 0)).astype(np.uint16)
