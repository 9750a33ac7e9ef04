# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""fastopt's only compiled module.

It validates every array before anything is written, caches raw pointers,
releases the GIL and calls the C engine in ``csrc/``.  The C side cannot
fail during a step, so all errors are raised here.
"""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int8_t, int32_t, int64_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.math cimport INFINITY, isfinite, sqrt
from libc.string cimport memcpy, memset

import math as _math
import weakref as _weakref

cnp.import_array()
# The fork handler is registered at import, before any library can start a
# libgomp team in this process (see fo_init in csrc/driver.c).
fo_init()

# A param or a state array must keep these flags for as long as the kernel
# may touch it.
cdef int _REQUIRED_FLAGS = (cnp.NPY_ARRAY_C_CONTIGUOUS | cnp.NPY_ARRAY_ALIGNED |
                            cnp.NPY_ARRAY_WRITEABLE)

cdef extern from *:
    """
    /* Index of the first array of the list `arrays` whose buffer, size, dtype,
     * byte order or flags differ from what was recorded when it was bound, or
     * -1.  Runs before every step, so it is one C loop over borrowed items. */
    static Py_ssize_t fo_first_changed(PyObject *arrays, void *const *data,
                                       const int64_t *size, const int *type, int required)
    {
        const Py_ssize_t n = PyList_GET_SIZE(arrays);
        for (Py_ssize_t j = 0; j < n; j++) {
            PyArrayObject *a = (PyArrayObject *)PyList_GET_ITEM(arrays, j);
            const npy_intp *dims = PyArray_DIMS(a);
            int64_t count = 1;
            for (int k = 0; k < PyArray_NDIM(a); k++)
                count *= dims[k];
            if (PyArray_DATA(a) != data[j] || count != size[j] || PyArray_TYPE(a) != type[j]
                    || !PyArray_ISNOTSWAPPED(a) || (PyArray_FLAGS(a) & required) != required)
                return j;
        }
        return -1;
    }
    """
    Py_ssize_t fo_first_changed(list arrays, void **data, int64_t *size, int *type,
                                int required)
_MaskedArray = np.ma.MaskedArray

SIMD_NAMES = tuple(fo_simd_name(i).decode() for i in range(FO_SIMD_COUNT))
KERNELS = {fo_kernel(i).name.decode(): i for i in range(FO_NKERNELS)}
NSCALARS = FO_NSCALARS
CHUNK = FO_CHUNK
NRED = FO_NRED
MAX_STATE = FO_MAX_STATE
# Compact storage (csrc/compact.c): the storage format codes, the block of
# int8 state and the dtype holding one (its float32 absmax, then its codes).
QBLOCK = FO_QBLOCK
FMT_NATIVE, FMT_BF16, FMT_F16, FMT_Q8S, FMT_Q8U = (FO_FMT_NATIVE, FO_FMT_BF16, FO_FMT_F16,
                                                   FO_FMT_Q8S, FO_FMT_Q8U)
Q8_DTYPE = np.dtype([("absmax", "<f4"), ("codes", "u1", (FO_QBLOCK,))])
ROUNDINGS = {"nearest": FO_ROUND_NEAREST, "stochastic": FO_ROUND_STOCHASTIC}
# host values a kernel may keep per tensor (FO_KERNEL_AUX)
cdef enum:
    _NAUX = 2


def simd_supported():
    """Names of the SIMD variants this CPU (and this build) can run."""
    return [SIMD_NAMES[i] for i in range(FO_SIMD_COUNT) if fo_simd_supported(i)]


def simd_best():
    return SIMD_NAMES[fo_simd_best()]


def get_simd():
    """Name of the SIMD variant the kernels use now."""
    return SIMD_NAMES[fo_simd_get()]


def set_simd(name):
    """Force a SIMD variant: 'baseline', 'avx2', 'avx512' or 'auto'."""
    if name == "auto":
        fo_simd_set(fo_simd_best())
        return
    if name not in SIMD_NAMES:
        raise ValueError(f"SIMD variant must be one of {', '.join(SIMD_NAMES)} or 'auto'; "
                         f"got {name!r}")
    if fo_simd_set(SIMD_NAMES.index(name)) != FO_OK:
        raise ValueError(f"SIMD variant {name!r} is not supported on this CPU; "
                         f"supported: {', '.join(simd_supported())}")


def openmp():
    """True when the C engine was built with OpenMP."""
    return bool(fo_openmp())


def max_threads():
    """OpenMP's current default team size (honours OMP_NUM_THREADS and threadpoolctl)."""
    return fo_max_threads()


def max_team():
    """Most threads a step uses, whatever is asked: 4 per available processor,
    at most OMP_THREAD_LIMIT."""
    return fo_max_team()


def team_seen():
    """The most threads any driver call of this process (a step, a norm, a
    finite check) actually ran with since the previous call: 1 when all stayed
    on the calling thread, 0 when there was none.  Reading it starts anew."""
    return fo_team_seen()


def parallel_threshold():
    """Work below which a step runs on the calling thread only: active elements
    times the kernel's cost (SGD 1, kernels with a divide or square root 2)."""
    return fo_parallel_threshold()


def set_parallel_threshold(int64_t n):
    fo_set_parallel_threshold(n)


def kernel_hp(str name):
    """The hyper-parameters kernel ``name``'s scalar function reads, in the
    order it reads them (FO_KERNEL_HP in csrc/kernels/<name>.c)."""
    return tuple(fo_kernel(KERNELS[name]).hp.decode().split())


def kernel_reduces(str name):
    """Whether kernel ``name`` has a reduction pass whose per-tensor sums its
    finish function turns into the tensor's scalars (Lamb's trust ratio)."""
    return fo_kernel(KERNELS[name]).finish != NULL


def kernel_factored(str name):
    """Whether kernel ``name`` has a row/column pass (factored state of a
    matrix: Adafactor)."""
    return fo_kernel(KERNELS[name]).rowcol[0][0] != NULL


# Threads of a step whose optimizer has no num_threads of its own (0: OpenMP's
# default); fastopt.set_num_threads sets it.
cdef int _default_threads = 0


def set_default_threads(n):
    global _default_threads
    _default_threads = 0 if n is None else n


# The measured team (TeamTuner).  Each team runs in runs of RUN steps: the
# first period of a run is dropped (it pays the switch: workers that slept
# while one thread ran must be woken), the others are samples.  A team's first
# run is RUN_FIRST steps and gives its shortest period (a new optimizer's first
# steps still fault in pages, start threads and fill caches); later samples
# move its estimate by ALPHA, one above twice the estimate counting as twice (a
# pause between steps, a collection).  After a run of each, the better team
# runs and the other gets a run after FIRST steps, then after GROW times as
# many each time the run confirms the choice, up to LAST steps: a retry costs
# RUN steps of the slower team and one switch back (a wake-up), so retries are
# rare.
cdef double _TUNE_ALPHA = 0.25
cdef int _TUNE_RUN = 3, _TUNE_RUN_FIRST = 5
cdef int64_t _TUNE_FIRST = 16, _TUNE_GROW = 4, _TUNE_LAST = 1024


cdef class TeamTuner:
    """The team of a step at the default thread count: one thread or OpenMP's
    whole default team, whichever has been giving the shorter period from one
    step's start to the next.  The period holds the step and what its waiting
    workers cost the work between steps: beside BLAS or torch threads, in a
    second process on the same cores, or where waking a sleeping worker takes
    longer than the split saves (a small step after a forward and backward
    pass), one thread wins; on a quiet machine, large steps take the team.
    The team size never changes a result (every kernel and reduction is
    bit-identical at any thread count), so the choice is free to follow
    timing."""
    cdef readonly int most           # the team the estimates are for (0: none yet)
    cdef double ema[2]               # estimated period, ns: [one thread, the team]
    cdef int64_t count[2]
    cdef int64_t last                # start of the previous step (0: none)
    cdef readonly int arm            # what the previous step ran: 0 one thread, 1 the team
    cdef int run                     # steps of the current run of `arm`, the previous included
    cdef int64_t since, interval     # steps since the other team's last run; the gap to its next
    cdef bint exploring              # the current run tries the other team
    cdef int best_before

    def __cinit__(self):
        self._reset(0)

    cdef void _reset(self, int most) noexcept:
        self.most = most
        self.ema[0] = self.ema[1] = 0.0
        self.count[0] = self.count[1] = 0
        self.last = 0
        self.arm = -1
        self.run = 0
        self.since = 0
        self.interval = _TUNE_FIRST
        self.exploring = False
        self.best_before = 1

    cdef inline int _best(self) noexcept:
        return 0 if self.ema[0] < self.ema[1] else 1

    cdef int pick(self, int most, int64_t now) noexcept:
        """Threads for a step starting at ``now`` (ns) when ``most`` is the
        default team; the period since the previous start is its sample."""
        cdef int a = self.arm
        cdef double x, e
        if most <= 1:
            self._reset(0)
            return 1
        if most != self.most:
            self._reset(most)
            a = -1
        if a >= 0 and self.run >= 2 and now > self.last:
            x = <double>(now - self.last)
            e = self.ema[a]
            if self.count[a] == 0:
                self.ema[a] = x
            elif self.count[a] < _TUNE_RUN_FIRST - 1:
                self.ema[a] = x if x < self.ema[a] else self.ema[a]    # the first run: its best
            else:
                self.ema[a] = e + _TUNE_ALPHA * ((x if x < 2.0 * e else 2.0 * e) - e)
            self.count[a] += 1
        self.last = now
        if a < 0:
            a = 1                                   # the first run: the team
        elif self.run < (_TUNE_RUN if self.count[a] >= _TUNE_RUN_FIRST - 1 else _TUNE_RUN_FIRST):
            pass                                    # a run goes on
        elif self.count[0] == 0 or self.count[1] == 0:
            a = 1 - a                               # each team's first run
            self.run = 0
        elif self.exploring:
            self.exploring = False                  # the other team's run is over
            a = self._best()
            self.interval = (_TUNE_FIRST if a != self.best_before
                             else min(_TUNE_GROW * self.interval, _TUNE_LAST))
            self.since = 0
            self.run = 0
        else:
            a = self._best()
            self.since += 1
            if a != self.arm:                       # the running team got slower
                self.interval = _TUNE_FIRST
                self.since = 0
            elif self.since >= self.interval:
                self.exploring = True
                self.best_before = a
                a = 1 - a
                self.run = 0
        if a != self.arm:
            self.run = 0
        if self.run < _TUNE_RUN_FIRST:
            self.run += 1
        self.arm = a
        return most if a else 1

    def pick_at(self, int most, int64_t now_ns):
        """:meth:`pick` with the clock given (for tests)."""
        return self.pick(most, now_ns)

    def estimates(self):
        """The estimated periods (s) of one thread and of the team (None
        before a second sample), and the steps until the other is tried."""
        return {"one thread": self.ema[0] * 1e-9 if self.count[0] > 1 else None,
                "team": self.ema[1] * 1e-9 if self.count[1] > 1 else None,
                "team size": self.most, "retry interval": self.interval}


cdef str _describe(obj):
    if isinstance(obj, np.ndarray):
        return f"a {obj.dtype} array of shape {obj.shape}"
    return f"an object of type {type(obj).__name__}"


cdef inline bint _native_float(cnp.ndarray a):
    cdef int tn = cnp.PyArray_TYPE(a)
    return (tn == cnp.NPY_FLOAT or tn == cnp.NPY_DOUBLE) and cnp.PyArray_ISNOTSWAPPED(a)


cdef int _half(object dtype):
    """FO_FMT_BF16 or FO_FMT_F16 for a native 16-bit float dtype (bfloat16
    is ml_dtypes'), else 0."""
    if dtype.itemsize != 2 or not dtype.isnative:
        return 0
    if dtype.kind == "f":
        return FO_FMT_F16
    return FO_FMT_BF16 if dtype.name == "bfloat16" else 0


def storage_format(dtype):
    """The storage code of a param or grad dtype: FMT_NATIVE for native
    float32/float64, FMT_BF16, FMT_F16, or -1."""
    dtype = np.dtype(dtype)
    if dtype.isnative and dtype in (np.float32, np.float64):
        return FO_FMT_NATIVE
    return _half(dtype) or -1


def rng_key(seed, index):
    """The rounding stream of the param at ``index`` of an optimizer seeded
    with ``seed`` (see csrc/compact.c)."""
    return int(fo_rng_key(<uint64_t>(seed & 0xFFFFFFFFFFFFFFFF), <uint64_t>index))


def compact_encode(int fmt, str rounding, x, int64_t first, uint64_t key, int64_t step,
                   int stream):
    """Encode float32 ``x`` (elements ``first ..`` of a param) in storage
    ``fmt`` as the kernels do: a uint16 array, or int8 blocks (Q8_DTYPE)."""
    cdef cnp.ndarray src = np.ascontiguousarray(x, dtype=np.float32).ravel()
    cdef int64_t n = src.shape[0]
    if fmt in (FO_FMT_Q8S, FO_FMT_Q8U):
        if first % FO_QBLOCK:
            raise ValueError(f"first must be a multiple of {FO_QBLOCK}; got {first}")
        out = np.zeros((n + FO_QBLOCK - 1) // FO_QBLOCK, dtype=Q8_DTYPE)
    elif fmt in (FO_FMT_BF16, FO_FMT_F16):
        out = np.zeros(n, dtype=np.uint16)
    else:
        raise ValueError(f"fmt must be a compact format; got {fmt}")
    fo_compact_encode(fmt, ROUNDINGS[rounding], <const float *>cnp.PyArray_DATA(src),
                      cnp.PyArray_DATA(<cnp.ndarray>out), first, n, key, step, stream)
    return out


def compact_decode(int fmt, data, int64_t n):
    """The float32 values of ``n`` elements held in storage ``fmt``."""
    cdef cnp.ndarray src = np.ascontiguousarray(data)
    if fmt in (FO_FMT_Q8S, FO_FMT_Q8U):
        if src.dtype != Q8_DTYPE or src.size * FO_QBLOCK < n:
            raise ValueError("expected int8 blocks for n elements")
    elif fmt in (FO_FMT_BF16, FO_FMT_F16):
        if src.dtype.itemsize != 2 or src.size < n:
            raise ValueError("expected 16-bit values for n elements")
    else:
        raise ValueError(f"fmt must be a compact format; got {fmt}")
    out = np.empty(n, dtype=np.float32)
    fo_compact_decode(fmt, cnp.PyArray_DATA(src), <float *>cnp.PyArray_DATA(<cnp.ndarray>out),
                      0, n)
    return out


cdef class RowGrad:
    """The gradient of some rows of a 2-D parameter (an embedding table).

    Pass it to ``step`` in place of the dense gradient of a ``(rows, dim)``
    parameter: only the rows named are read and written, in the parameter
    and in its optimizer state.  Both arrays are checked against the
    parameter at the step (as a dense gradient is) and read during it, not
    copied.

    Parameters
    ----------
    indices : ndarray of int32 or int64, shape (n,)
        Row indices in ``[0, rows)``, in any order; repeats allowed.
    values : ndarray, shape (n, dim)
        C-contiguous, in the parameter's dtype: row ``k`` is the gradient of
        row ``indices[k]``.

    Notes
    -----
    The step first sums the rows of every index given more than once, in
    the order given (a stable sort of the indices, then a sum in index
    order), so the result is the same for any thread count; with ``G`` the
    summed rows, a row ``r`` in ``indices`` is updated by the optimizer's
    rule with gradient ``G[r]``, and every other row and its state stay as
    they are.  Norms (``clipnorm``, ``global_clipnorm``) are those of
    ``G``; the step count is the optimizer's.

    Examples
    --------
    >>> import numpy as np, fastopt as fo
    >>> table = np.zeros((3, 2))
    >>> opt = fo.SGD([table], learning_rate=0.5)
    >>> opt.step([fo.RowGrad(np.array([2, 0, 2]), np.ones((3, 2)))])
    >>> table
    array([[-0.5, -0.5],
           [ 0. ,  0. ],
           [-1. , -1. ]])
    """
    cdef readonly object indices
    cdef readonly object values

    def __init__(self, indices, values):
        self.indices = indices
        self.values = values

    def __reduce__(self):
        return (RowGrad, (self.indices, self.values))

    def __repr__(self):
        return f"RowGrad(indices={_describe(self.indices)}, values={_describe(self.values)})"


cdef class Engine:
    """The arrays of one optimizer and the C work list over them.

    ``Engine(kernel, params, states)``: ``params`` is a list of ndarrays that
    are updated in place, ``states[i]`` the list of state arrays of
    ``params[i]`` (each of the param's shape and dtype; for a kernel with
    factored state and a param of two or more axes, exactly two: one value
    per row, of shape ``shape[:-1]``, and one per column of each matrix, of
    shape ``shape[:-2] + shape[-1:]``).  Per step:
    ``set_grads(grads)`` validates and binds the gradients (raising before
    anything is written), optional reductions read them, ``run(rows,
    nthreads)`` applies the kernel with the scalar rows and unbinds them.
    A :class:`RowGrad` is checked like a dense grad, then its repeated rows
    are summed into the Engine's own buffers (the only writes before the
    kernel) and the tensor is bound as a row list: the kernel, the norms
    and the finite check see only its rows.

    The Engine caches raw pointers, so before each step it checks that every
    param and state array still has the buffer, size, dtype and flags it had
    when bound (a ``resize(refcheck=False)``, ``__setstate__`` or a param made
    read-only since is refused), and that every tensor has the state arrays
    the kernel reads with this step's scalars.  It cannot see two mappings of
    one file as the same memory: a grad that aliases its param through a
    second ``np.memmap`` of the same file is not detected.
    """
    cdef fo_tensor *tensors
    cdef const fo_kernel_info *info
    cdef fo_plan plan
    cdef bint planned
    cdef int32_t *nstates
    cdef int32_t min_nstate     # fewest state arrays any tensor has
    cdef Py_ssize_t nrows       # scalar rows loaded by the last _load_rows
    cdef list arrays            # every param and state array, in the order of adata
    cdef void **adata           # the buffer, size and dtype each had when bound
    cdef int64_t *asize
    cdef int *atype
    cdef list adtypes           # the dtype each had when bound, for messages
    cdef int32_t *aowner        # params[i] that array j belongs to
    cdef int32_t *aslot         # -1: the param itself; k: its state array k
    cdef readonly int32_t n
    cdef readonly int32_t kernel
    cdef readonly list params
    cdef readonly list states
    cdef int *typenums
    cdef int *ndims
    cdef cnp.npy_intp *shapes
    cdef int64_t *shape_at
    cdef uintptr_t *rlo
    cdef uintptr_t *rhi
    cdef int32_t *rowner
    cdef int64_t nranges
    cdef const void **pending
    cdef double *rows
    cdef int64_t rows_cap
    cdef int32_t max_row
    cdef double *dscratch
    cdef int64_t *iscratch
    cdef double *work           # factored tensors' work arrays, one block
    cdef double *rcscratch      # the row/column pass's column sums per block of rows
    cdef bint factored          # the kernel keeps factored state (a row/column pass)
    cdef bint multipass         # more than one pass over a tensor (a reduction or rows/columns)
    cdef object held
    # row gradients: per tensor, the distinct rows, their gradients and the
    # sums of repeated rows of the RowGrad bound now (grown, never shrunk)
    cdef int64_t **rg_rows
    cdef const void ***rg_ptr
    cdef char **rg_sums
    cdef int64_t *rg_cap
    cdef int64_t *rg_scratch
    cdef int64_t rg_scratch_cap
    cdef readonly int32_t nrowgrads     # RowGrads bound now
    # compact storage: a tensor is compact with any state, its param or a
    # master copy stored compactly (fixed), or a 16-bit grad (per step)
    cdef bint *fixed_compact
    cdef int8_t *pending_gfmt
    cdef readonly list masters

    def __cinit__(self):
        self.tensors = NULL
        self.planned = False
        self.rg_rows = NULL
        self.rg_ptr = NULL
        self.rg_sums = NULL
        self.rg_cap = NULL
        self.rg_scratch = NULL
        self.rg_scratch_cap = 0
        self.nrowgrads = 0
        self.work = NULL
        self.rcscratch = NULL
        self.fixed_compact = NULL
        self.pending_gfmt = NULL

    def __init__(self, str kernel, list params, list states, formats=None, masters=None,
                 keys=None, bases=None, rounding=None):
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; known: {sorted(KERNELS)}")
        self.kernel = KERNELS[kernel]
        self.info = fo_kernel(self.kernel)
        self.factored = self.info.rowcol[0][0] != NULL
        cdef int32_t nstate_max = self.info.nstate
        cdef Py_ssize_t n = len(params), i, j, k, total_dims = 0
        if len(states) != n:
            raise ValueError(f"expected {n} state lists; got {len(states)}")
        for i in range(n):
            _check_param(params[i], i)
            total_dims += cnp.PyArray_NDIM(<cnp.ndarray>params[i])
            if len(states[i]) > nstate_max:
                raise ValueError(f"kernel {kernel!r} takes at most {nstate_max} state arrays; "
                                 f"params[{i}] has {len(states[i])}")
        self.n = <int32_t>n
        self.params = list(params)
        self.states = [list(st) for st in states]
        cdef Py_ssize_t ntot = n
        for i in range(n):
            ntot += len(self.states[i]) + (masters is not None and masters[i] is not None)
        self.tensors = <fo_tensor *>_alloc(max(n, 1) * sizeof(fo_tensor))
        self.typenums = <int *>_alloc(max(n, 1) * sizeof(int))
        self.ndims = <int *>_alloc(max(n, 1) * sizeof(int))
        self.shapes = <cnp.npy_intp *>_alloc(max(total_dims, 1) * sizeof(cnp.npy_intp))
        self.shape_at = <int64_t *>_alloc((n + 1) * sizeof(int64_t))
        self.pending = <const void **>_alloc(max(n, 1) * sizeof(void *))
        self.rlo = <uintptr_t *>_alloc(max(ntot, 1) * sizeof(uintptr_t))
        self.rhi = <uintptr_t *>_alloc(max(ntot, 1) * sizeof(uintptr_t))
        self.rowner = <int32_t *>_alloc(max(ntot, 1) * sizeof(int32_t))
        self.nstates = <int32_t *>_alloc(max(n, 1) * sizeof(int32_t))
        self.adata = <void **>_alloc(max(ntot, 1) * sizeof(void *))
        self.asize = <int64_t *>_alloc(max(ntot, 1) * sizeof(int64_t))
        self.atype = <int *>_alloc(max(ntot, 1) * sizeof(int))
        self.aowner = <int32_t *>_alloc(max(ntot, 1) * sizeof(int32_t))
        self.aslot = <int32_t *>_alloc(max(ntot, 1) * sizeof(int32_t))
        self.rg_rows = <int64_t **>_calloc(max(n, 1), sizeof(int64_t *))
        self.rg_ptr = <const void ***>_calloc(max(n, 1), sizeof(void **))
        self.rg_sums = <char **>_calloc(max(n, 1), sizeof(char *))
        self.rg_cap = <int64_t *>_calloc(max(n, 1), sizeof(int64_t))
        memset(self.tensors, 0, max(n, 1) * sizeof(fo_tensor))
        self.fixed_compact = <bint *>_calloc(max(n, 1), sizeof(bint))
        self.pending_gfmt = <int8_t *>_calloc(max(n, 1), sizeof(int8_t))
        self.arrays = []
        self.adtypes = []
        self.masters = [None] * n if masters is None else list(masters)
        for name, given in (("formats", formats), ("keys", keys), ("bases", bases),
                            ("rounding", rounding)):
            if given is not None and len(given) != n:
                raise ValueError(f"expected {n} {name}; got {len(given)}")
        if len(self.masters) != n:
            raise ValueError(f"expected {n} masters; got {len(self.masters)}")
        multipass = self.multipass = self.factored or self.info.reduce[0][0] != NULL

        cdef cnp.ndarray p, s
        cdef int64_t at = 0, nwork = 0
        ranges = []
        for i in range(n):
            p = <cnp.ndarray>self.params[i]
            self.typenums[i] = cnp.PyArray_TYPE(p)
            self.ndims[i] = cnp.PyArray_NDIM(p)
            self.shape_at[i] = at
            for j in range(self.ndims[i]):
                self.shapes[at] = cnp.PyArray_DIMS(p)[j]
                at += 1
            self.tensors[i].param = cnp.PyArray_DATA(p)
            self.tensors[i].grad = NULL
            self.tensors[i].size = cnp.PyArray_SIZE(p)
            self.tensors[i].pfmt = _half((<object>p).dtype)
            self.tensors[i].dtype = (FO_FLOAT32 if self.typenums[i] == cnp.NPY_FLOAT
                                     or self.tensors[i].pfmt else FO_FLOAT64)
            self.tensors[i].key = 0 if keys is None else <uint64_t>keys[i]
            self.tensors[i].base = 0 if bases is None else bases[i]
            self.tensors[i].rounding = (FO_ROUND_STOCHASTIC if rounding is None
                                        else ROUNDINGS[rounding[i]])
            fmts = [FO_FMT_NATIVE] * len(self.states[i]) if formats is None else list(formats[i])
            if len(fmts) != len(self.states[i]):
                raise ValueError(f"params[{i}]: {len(self.states[i])} state arrays but "
                                 f"{len(fmts)} formats")
            self.fixed_compact[i] = (self.tensors[i].pfmt != FO_FMT_NATIVE
                                     or self.masters[i] is not None
                                     or fmts.count(FO_FMT_NATIVE) != len(fmts))
            if self.fixed_compact[i] and multipass:
                raise ValueError(f"params[{i}]: kernel {kernel!r} makes more than one pass "
                                 f"over a tensor, so it takes float32/float64 params and state "
                                 f"only")
            if self.fixed_compact[i] and self.tensors[i].base % FO_QBLOCK:
                raise ValueError(f"params[{i}]: a compact tensor starts at a multiple of "
                                 f"{FO_QBLOCK} elements of its param; got base "
                                 f"{self.tensors[i].base}")
            self.tensors[i].compact = self.fixed_compact[i]
            self.tensors[i].row = 0
            self.tensors[i].frows = 0
            self.tensors[i].fcols = 0
            self.tensors[i].work = NULL
            self.nstates[i] = <int32_t>len(self.states[i])
            shapes_of_state = [(<object>p).shape] * len(self.states[i])
            if self.factored and self.ndims[i] >= 2:
                shp = (<object>p).shape
                if len(self.states[i]) != 2:
                    raise ValueError(f"kernel {kernel!r} keeps factored state: params[{i}] of "
                                     f"shape {shp} needs 2 state arrays; got "
                                     f"{len(self.states[i])}")
                nd = len(shp)      # (wraparound is off: no negative indices)
                shapes_of_state = [shp[:nd - 1], shp[:nd - 2] + (shp[nd - 1],)]
                self.tensors[i].frows = shp[nd - 2]
                self.tensors[i].fcols = shp[nd - 1]
                nwork += fo_work_size(self.tensors[i].size, shp[nd - 2], shp[nd - 1])
            self._track(p, i, -1)
            if cnp.PyArray_NBYTES(p) > 0:
                ranges.append((<uintptr_t>cnp.PyArray_DATA(p), cnp.PyArray_NBYTES(p), i, -1))
            master = self.masters[i]
            if master is not None:
                if (not isinstance(master, np.ndarray) or master.dtype != np.float32
                        or master.shape != (<object>p).shape
                        or (cnp.PyArray_FLAGS(<cnp.ndarray>master) & _REQUIRED_FLAGS)
                        != _REQUIRED_FLAGS):
                    raise ValueError(f"the master copy of params[{i}] must be a writeable, "
                                     f"aligned, C-contiguous float32 ndarray of shape "
                                     f"{(<object>p).shape}; got {_describe(master)}")
                if not self.tensors[i].pfmt:
                    raise ValueError(f"params[{i}] is {(<object>p).dtype}: a master copy is "
                                     f"for bfloat16 or float16 params")
                self.tensors[i].master = <float *>cnp.PyArray_DATA(<cnp.ndarray>master)
                self._track(<cnp.ndarray>master, i, -2)
                if master.nbytes > 0:
                    ranges.append((<uintptr_t>cnp.PyArray_DATA(<cnp.ndarray>master),
                                   master.nbytes, i, -2))
            compute = np.float32 if self.tensors[i].pfmt else (<object>p).dtype
            for k in range(len(self.states[i])):
                obj = self.states[i][k]
                if not isinstance(obj, np.ndarray):
                    raise ValueError(f"state {k} of params[{i}] must be an ndarray; got "
                                     f"{_describe(obj)}")
                s = <cnp.ndarray>obj
                f = fmts[k]
                if f == FO_FMT_NATIVE:
                    want, wshape = np.dtype(compute), shapes_of_state[k]
                elif f == FO_FMT_Q8S or f == FO_FMT_Q8U:
                    want = Q8_DTYPE
                    wshape = ((self.tensors[i].size + FO_QBLOCK - 1) // FO_QBLOCK,)
                elif f == FO_FMT_BF16 or f == FO_FMT_F16:
                    want, wshape = None, (<object>p).shape
                else:
                    raise ValueError(f"params[{i}]: unknown format {f!r} of state {k}")
                if f != FO_FMT_NATIVE and compute != np.float32:
                    raise ValueError(f"params[{i}]: compact state is for float32, bfloat16 and "
                                     f"float16 params; params[{i}] is {(<object>p).dtype}")
                ok_dtype = (_half(obj.dtype) == f) if want is None else (obj.dtype == want)
                if (not ok_dtype or obj.shape != wshape or not cnp.PyArray_ISNOTSWAPPED(s)
                        or (cnp.PyArray_FLAGS(s) & _REQUIRED_FLAGS) != _REQUIRED_FLAGS):
                    kind = ({FO_FMT_BF16: "bfloat16", FO_FMT_F16: "float16"}.get(f)
                            or str(want))
                    raise ValueError(f"state {k} of params[{i}] must be a writeable, aligned, "
                                     f"C-contiguous ndarray of dtype {kind} (native byte "
                                     f"order) and of shape {wshape}; got {_describe(obj)}")
                self.tensors[i].fmt[k] = f
                self.tensors[i].state[k] = cnp.PyArray_DATA(s)
                self._track(s, i, k)
                if cnp.PyArray_NBYTES(s) > 0:
                    ranges.append((<uintptr_t>cnp.PyArray_DATA(s), cnp.PyArray_NBYTES(s), i, k))
        self.shape_at[n] = at
        self.min_nstate = min([self.nstates[i] for i in range(n)], default=nstate_max)
        ranges.sort()
        overlaps = []       # reported in the order of the params, not of the addresses
        for k in range(1, len(ranges)):
            a, b = ranges[k - 1], ranges[k]
            if a[0] + a[1] > b[0]:
                overlaps.append((*sorted((a[2], b[2])), a[3] == -1 and b[3] == -1))
        if overlaps:
            ia, ib, both_params = min(overlaps)
            if both_params:
                raise ValueError(
                    f"params[{ia}] and params[{ib}] share memory (the same array passed twice, "
                    f"or overlapping views of one buffer); pass each parameter once")
            raise ValueError(f"optimizer state overlaps params[{ia}] or params[{ib}]")
        self.nranges = len(ranges)
        for k in range(self.nranges):
            self.rlo[k] = ranges[k][0]
            self.rhi[k] = ranges[k][0] + ranges[k][1]
            self.rowner[k] = ranges[k][2]
        if fo_plan_init(&self.plan, self.tensors, self.n) != FO_OK:
            raise MemoryError("could not allocate the work list")
        self.planned = True
        self.work = <double *>_alloc(max(nwork, 1) * sizeof(double))
        memset(self.work, 0, max(nwork, 1) * sizeof(double))
        at = 0
        for i in range(n):
            if self.tensors[i].fcols > 0:
                self.tensors[i].work = self.work + at
                at += fo_work_size(self.tensors[i].size, self.tensors[i].frows,
                                   self.tensors[i].fcols)
        self.rcscratch = <double *>_alloc(max(fo_rowcol_scratch(&self.plan), 1) * sizeof(double))
        self.dscratch = <double *>_alloc(max(self.plan.nchunks, 1) * FO_NRED * sizeof(double))
        self.iscratch = <int64_t *>_alloc(max(self.plan.nchunks, 1) * sizeof(int64_t))
        self.rows_cap = 0
        self.rows = NULL
        self.max_row = 0
        self.held = None

    cdef void _track(self, cnp.ndarray a, Py_ssize_t owner, Py_ssize_t slot):
        cdef Py_ssize_t j = len(self.arrays)
        self.arrays.append(a)
        self.adtypes.append((<object>a).dtype)
        self.adata[j] = cnp.PyArray_DATA(a)
        self.asize[j] = cnp.PyArray_SIZE(a)
        self.atype[j] = cnp.PyArray_TYPE(a)
        self.aowner[j] = <int32_t>owner
        self.aslot[j] = <int32_t>slot

    cdef int _check_arrays(self) except -1:
        """Refuse the step if a bound array changed since it was bound: the
        kernel would write through a stale pointer (use after free) or into
        an array its owner made read-only."""
        cdef Py_ssize_t j = fo_first_changed(self.arrays, self.adata, self.asize, self.atype,
                                             _REQUIRED_FLAGS)
        if j >= 0:
            raise ValueError(self._changed_message(j))
        return 0

    cdef str _changed_message(self, Py_ssize_t j):
        cdef cnp.ndarray a = <cnp.ndarray>self.arrays[j]
        cdef Py_ssize_t i = self.aowner[j]
        what = (f"params[{i}]" if self.aslot[j] == -1
                else f"the master copy of params[{i}]" if self.aslot[j] == -2
                else f"state array {self.aslot[j]} of params[{i}]")
        if not cnp.PyArray_ISWRITEABLE(a):
            return (f"{what} was made read-only after the optimizer was built, and fastopt "
                    f"updates it in place. Make it writeable again (a.flags.writeable = True), "
                    f"or build a new optimizer; nothing was changed")
        if cnp.PyArray_DATA(a) != self.adata[j] or cnp.PyArray_SIZE(a) != self.asize[j]:
            return (f"{what} no longer holds the memory the optimizer was built over: it was "
                    f"resized or given a new buffer in place (resize(refcheck=False), "
                    f"__setstate__) and writing to the old one would corrupt memory. Build a "
                    f"new optimizer over the array as it is now; nothing was changed")
        return (f"{what} changed dtype, byte order or layout in place since the optimizer was "
                f"built (expected an aligned C-contiguous native "
                f"{self.adtypes[j]} "
                f"array; got {_describe(a)}, strides {(<object>a).strides}). Restore it, or "
                f"build a new optimizer; nothing was changed")

    cdef int _check_state_counts(self) except -1:
        """Every tensor that is stepped has the state arrays its kernel reads
        with the tensor's scalar row (a kernel never sees a missing array)."""
        cdef Py_ssize_t i, r
        cdef int32_t need = 0
        for r in range(self.nrows):     # rows are few: one per group, usually
            need = max(need, self.info.nstate_used(self.rows + r * FO_NSCALARS))
        if need <= self.min_nstate:
            return 0
        for i in range(self.n):
            if self.tensors[i].grad == NULL:
                continue
            need = self.info.nstate_used(self.rows + <int64_t>self.tensors[i].row * FO_NSCALARS)
            if need > self.nstates[i]:
                self._unbind()
                raise ValueError(f"params[{i}]: kernel {self.info.name.decode()!r} reads {need} "
                                 f"state arrays with this step's hyper-parameters; "
                                 f"{self.nstates[i]} were bound. A hyper-parameter that decides "
                                 f"the state changed after construction: build a new optimizer")
        return 0

    def __dealloc__(self):
        cdef Py_ssize_t i
        if self.planned:
            fo_plan_free(&self.plan)
        if self.rg_cap != NULL:
            for i in range(self.n):
                free(self.rg_rows[i])
                free(self.rg_ptr[i])
                free(self.rg_sums[i])
        free(self.rg_rows)
        free(self.rg_ptr)
        free(self.rg_sums)
        free(self.rg_cap)
        free(self.rg_scratch)
        free(self.tensors)
        free(self.fixed_compact)
        free(self.pending_gfmt)
        free(self.nstates)
        free(self.adata)
        free(self.asize)
        free(self.atype)
        free(self.aowner)
        free(self.aslot)
        free(self.typenums)
        free(self.ndims)
        free(self.shapes)
        free(self.shape_at)
        free(self.pending)
        free(self.rlo)
        free(self.rhi)
        free(self.rowner)
        free(self.rows)
        free(self.dscratch)
        free(self.iscratch)
        free(self.work)
        free(self.rcscratch)

    @property
    def nchunks(self):
        return self.plan.nchunks

    @property
    def total(self):
        return self.plan.total

    def set_rows(self, rows):
        """Tensor i reads scalar row rows[i] from the next run on.  All indices
        are checked before any is stored."""
        rows = list(rows)
        if len(rows) != self.n:
            raise ValueError(f"expected {self.n} row indices; got {len(rows)}")
        cdef Py_ssize_t i
        cdef int32_t mx = 0
        for i in range(self.n):
            r = rows[i]
            if (isinstance(r, bool) or not isinstance(r, (int, np.integer))
                    or not 0 <= r < 2**31):
                raise ValueError(f"row indices must be ints in [0, 2**31); rows[{i}] is {r!r}")
        for i in range(self.n):
            self.tensors[i].row = rows[i]
            if self.tensors[i].row > mx:
                mx = self.tensors[i].row
        self.max_row = mx

    cdef str _shape_str(self, Py_ssize_t i):
        return str(tuple(int(self.shapes[k]) for k in range(self.shape_at[i], self.shape_at[i + 1])))

    def set_grads(self, grads):
        """Validate every grad, then bind them all.  Raises before binding
        anything; returns the number of tensors with a grad."""
        if isinstance(grads, np.ndarray):
            # iterating an ndarray would hand its rows out as grads of different parameters
            raise TypeError(f"grads: expected a list of {self.n} gradients (one per parameter, "
                            f"None skips one); got {_describe(grads)}. Wrap a single gradient "
                            f"in a list: step([g])")
        # One private list: the objects checked are the ones kept alive and read
        # by the kernel, whatever the caller's sequence does on indexing, and
        # whatever it does to its own list while the GIL is released.
        try:
            grads = list(grads)
        except TypeError:
            raise TypeError(f"grads: expected a list of {self.n} gradients (one per "
                            f"parameter, None skips one); got {_describe(grads)}. Pass "
                            f"a list in the order of the parameters") from None
        self._check_arrays()
        cdef Py_ssize_t ng = len(grads), i, k
        if ng != self.n:
            raise ValueError(f"expected {self.n} grads (one per parameter, in the order the "
                             f"parameters were given; None skips one); got {ng}")
        cdef cnp.ndarray a
        cdef object g
        cdef int nd
        cdef int active = 0
        cdef uintptr_t lo
        cdef list rowgrads = None
        for i in range(self.n):
            g = grads[i]
            if g is None:
                self.pending[i] = NULL
                continue
            if isinstance(g, RowGrad):
                self._check_rowgrad(i, <RowGrad>g)
                if rowgrads is None:
                    rowgrads = []
                rowgrads.append(i)
                self.pending[i] = NULL
                active += 1
                continue
            if not cnp.PyArray_Check(g):
                raise TypeError(f"grads[{i}]: expected a numpy.ndarray of dtype "
                                f"{self.params[i].dtype} "
                                f"and shape {self._shape_str(i)}; got {_describe(g)}. Convert "
                                f"it with np.asarray(g, dtype=np.{self.params[i].dtype})")
            if not cnp.PyArray_CheckExact(g) and isinstance(g, _MaskedArray):
                raise TypeError(f"grads[{i}]: a masked array; fastopt reads the data under the "
                                f"mask too. Pass g.filled(0) (masked entries then add nothing) "
                                f"or a plain ndarray")
            a = <cnp.ndarray>g
            self.pending_gfmt[i] = self._grad_format(i, a)
            if self.pending_gfmt[i] < 0:
                if g.dtype.kind == "f" and g.dtype.itemsize in (4, 8) and g.dtype.isnative:
                    # float32 <-> float64: the model's weights were likely converted
                    # (model.double()), which leaves the optimizer on the old arrays
                    raise TypeError(
                        f"grads[{i}]: expected dtype {' or '.join(self.grad_dtypes(i))} "
                        f"(params[{i}] is {self.params[i].dtype}); got {g.dtype!r}. If the "
                        f"parameters were converted "
                        f"after the optimizer was built (model.double(), .float(), "
                        f"astype), the optimizer still updates the old arrays: build a new "
                        f"optimizer over the new parameters. Otherwise compute the grad in "
                        f"the param's dtype (or cast it: g.astype(p.dtype))")
                # (ml_dtypes' repr does not show a byte order)
                swapped = "" if g.dtype.isnative else ", byte-swapped"
                if self.multipass and _half(g.dtype):
                    swapped += (f"; this optimizer makes more than one pass over a tensor, "
                                f"so it reads float32 grads")
                raise TypeError(f"grads[{i}]: expected dtype "
                                f"{' or '.join(self.grad_dtypes(i))} (params[{i}] is "
                                f"{self.params[i].dtype}); got {g.dtype!r}{swapped}. Cast it "
                                f"with g.astype(p.dtype) or compute the grad in the param's "
                                f"dtype")
            nd = cnp.PyArray_NDIM(a)
            bad_shape = nd != self.ndims[i]
            for k in range(nd if not bad_shape else 0):
                if cnp.PyArray_DIMS(a)[k] != self.shapes[self.shape_at[i] + k]:
                    bad_shape = True
            if bad_shape:
                raise ValueError(f"grads[{i}]: expected shape {self._shape_str(i)} (the shape of "
                                 f"params[{i}]); got {g.shape}. Pass the gradient of params[{i}] "
                                 f"at index {i}: grads follow the order of the parameters")
            if not cnp.PyArray_IS_C_CONTIGUOUS(a):
                raise ValueError(f"grads[{i}]: expected a C-contiguous array; got strides "
                                 f"{g.strides}. Pass np.ascontiguousarray(g)")
            if not cnp.PyArray_ISALIGNED(a):
                raise ValueError(f"grads[{i}]: expected an aligned array; got a misaligned view. "
                                 f"Pass g.copy()")
            lo = <uintptr_t>cnp.PyArray_DATA(a)
            if self._overlap_owner(lo, lo + <uintptr_t>cnp.PyArray_NBYTES(a)) >= 0:
                self._check_alias(a, f"grads[{i}]")     # raises, naming it (formatted only then)
            self.pending[i] = cnp.PyArray_DATA(a)
            active += 1
        # every grad is valid but for the row indices' range, which coalescing
        # checks; it writes only the Engine's own buffers
        if rowgrads is not None:
            for i in rowgrads:
                self._coalesce(i, <RowGrad>grads[i])
        for i in range(self.n):
            self.tensors[i].grad = self.pending[i]
            self.tensors[i].gfmt = self.pending_gfmt[i] if self.pending[i] != NULL else 0
            self.tensors[i].compact = self.fixed_compact[i] or self.tensors[i].gfmt != 0
        self.nrowgrads = 0 if rowgrads is None else len(rowgrads)
        if rowgrads is not None:
            for i in rowgrads:
                self.tensors[i].grad = <const void *>self.rg_rows[i]   # set: not read
                self.tensors[i].rows = self.rg_rows[i]
                self.tensors[i].rgrad = self.rg_ptr[i]
        self.held = grads
        return active

    cdef int _grad_format(self, Py_ssize_t i, cnp.ndarray a):
        """How a grad of a's dtype is read for params[i] (FO_FMT_*), or -1
        if it is not allowed: the param's dtype; bfloat16 or float16 grads of
        float32 params (for a kernel with one pass over a tensor); float32
        grads of 16-bit params."""
        if not cnp.PyArray_ISNOTSWAPPED(a):
            return -1
        if cnp.PyArray_TYPE(a) == self.typenums[i]:
            return self.tensors[i].pfmt
        cdef int half = _half((<object>a).dtype)
        # the passes before the elementwise one read the grad as the param's dtype
        if self.typenums[i] == cnp.NPY_FLOAT and half and not self.multipass:
            return half
        if self.tensors[i].pfmt and cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT:
            return FO_FMT_NATIVE
        return -1

    def grad_dtypes(self, Py_ssize_t i):
        """The grad dtypes params[i] takes (names), for messages."""
        p = self.params[i].dtype
        if p == np.float32:
            return ["float32"] + ([] if self.multipass else ["bfloat16", "float16"])
        return [str(p)] + (["float32"] if self.tensors[i].pfmt else [])

    cdef int64_t _overlap_owner(self, uintptr_t lo, uintptr_t hi) noexcept:
        """The param whose own or state memory overlaps [lo, hi), or -1."""
        cdef int64_t left = 0, right = self.nranges, mid
        if hi <= lo:
            return -1
        # last range starting below hi; ranges are disjoint and sorted
        while left < right:
            mid = (left + right) // 2
            if self.rlo[mid] < hi:
                left = mid + 1
            else:
                right = mid
        if left > 0 and self.rhi[left - 1] > lo:
            return self.rowner[left - 1]
        return -1

    cdef int _check_alias(self, cnp.ndarray a, str what) except -1:
        """Refuse an array the step reads that shares memory with a param or
        state array the step writes."""
        cdef uintptr_t lo = <uintptr_t>cnp.PyArray_DATA(a)
        cdef int64_t k = self._overlap_owner(lo, lo + <uintptr_t>cnp.PyArray_NBYTES(a))
        if k >= 0:
            raise ValueError(f"{what} shares memory with params[{k}] or its optimizer "
                             f"state; an update would overwrite the gradient while reading "
                             f"it. Pass a separate gradient array")
        return 0

    cdef int _check_rowgrad(self, Py_ssize_t i, RowGrad rg) except -1:
        """Everything about a RowGrad for params[i] but its indices' range."""
        cdef cnp.ndarray a
        if self.ndims[i] != 2:
            raise ValueError(f"grads[{i}]: a RowGrad updates rows of a 2-D parameter (rows x "
                             f"dim); params[{i}] has shape {self._shape_str(i)}. Pass a dense "
                             f"gradient of that shape")
        if self.fixed_compact[i]:
            raise ValueError(f"grads[{i}]: a RowGrad, but params[{i}] has compact storage "
                             f"(16-bit param or compact state), which is updated in whole "
                             f"blocks. Pass a dense gradient, or keep float32 state")
        if self.info.finish != NULL:
            raise ValueError(f"grads[{i}]: a RowGrad, but the update of kernel "
                             f"{self.info.name.decode()!r} reads the whole tensor (a per-tensor "
                             f"norm), so it has no form that touches only some rows. Pass a "
                             f"dense gradient")
        idx = rg.indices
        if not cnp.PyArray_Check(idx):
            raise TypeError(f"grads[{i}].indices: expected a 1-D numpy.ndarray of int32 or "
                            f"int64 row indices; got {_describe(idx)}. Convert it with "
                            f"np.asarray(indices, dtype=np.int64)")
        a = <cnp.ndarray>idx
        if (idx.dtype.kind != "i" or cnp.PyArray_ITEMSIZE(a) not in (4, 8)
                or not cnp.PyArray_ISNOTSWAPPED(a)):
            raise TypeError(f"grads[{i}].indices: expected dtype int32 or int64 (native byte "
                            f"order); got {idx.dtype!r}. Cast it with "
                            f"indices.astype(np.int64)")
        if cnp.PyArray_NDIM(a) != 1:
            raise ValueError(f"grads[{i}].indices: expected a 1-D array of row indices; got "
                             f"shape {idx.shape}. Pass indices.ravel() with the rows of values "
                             f"in the same order")
        if not cnp.PyArray_IS_C_CONTIGUOUS(a) or not cnp.PyArray_ISALIGNED(a):
            raise ValueError(f"grads[{i}].indices: expected a contiguous, aligned array; got "
                             f"strides {idx.strides}. Pass np.ascontiguousarray(indices)")
        self._check_alias(a, f"grads[{i}].indices")
        vals = rg.values
        cdef Py_ssize_t n = cnp.PyArray_DIMS(a)[0]
        cdef cnp.npy_intp dim = self.shapes[self.shape_at[i] + 1]
        expected = f"({n}, {dim})"
        if not cnp.PyArray_Check(vals):
            raise TypeError(f"grads[{i}].values: expected a numpy.ndarray of dtype "
                            f"{self.params[i].dtype} and shape {expected}; got "
                            f"{_describe(vals)}. Convert it with "
                            f"np.asarray(values, dtype=np.{self.params[i].dtype})")
        if not cnp.PyArray_CheckExact(vals) and isinstance(vals, _MaskedArray):
            raise TypeError(f"grads[{i}].values: a masked array; fastopt reads the data under "
                            f"the mask too. Pass values.filled(0) or a plain ndarray")
        a = <cnp.ndarray>vals
        if cnp.PyArray_TYPE(a) != self.typenums[i] or not cnp.PyArray_ISNOTSWAPPED(a):
            raise TypeError(f"grads[{i}].values: expected dtype {self.params[i].dtype} (the "
                            f"dtype of params[{i}]); got {vals.dtype!r}. Cast it with "
                            f"values.astype(p.dtype)")
        if (cnp.PyArray_NDIM(a) != 2 or cnp.PyArray_DIMS(a)[0] != n
                or cnp.PyArray_DIMS(a)[1] != dim):
            raise ValueError(f"grads[{i}].values: expected shape {expected} (one row of "
                             f"params[{i}]'s {dim} columns per index); got {vals.shape}")
        if not cnp.PyArray_IS_C_CONTIGUOUS(a):
            raise ValueError(f"grads[{i}].values: expected a C-contiguous array; got strides "
                             f"{vals.strides}. Pass np.ascontiguousarray(values)")
        if not cnp.PyArray_ISALIGNED(a):
            raise ValueError(f"grads[{i}].values: expected an aligned array; got a misaligned "
                             f"view. Pass values.copy()")
        self._check_alias(a, f"grads[{i}].values")
        return 0

    cdef int _coalesce(self, Py_ssize_t i, RowGrad rg) except -1:
        """Sum the repeated rows of a checked RowGrad into tensor i's buffers;
        raise for an index outside the param's rows."""
        cdef cnp.ndarray idx = <cnp.ndarray>rg.indices
        cdef cnp.ndarray vals = <cnp.ndarray>rg.values
        cdef int64_t n = cnp.PyArray_DIMS(idx)[0]
        cdef int64_t limit = self.shapes[self.shape_at[i]]
        cdef int64_t width = self.shapes[self.shape_at[i] + 1]
        cdef int64_t es = 4 if self.tensors[i].dtype == FO_FLOAT32 else 8
        cdef int64_t cap = max(n, 1), nu
        if cap > self.rg_cap[i]:
            free(self.rg_rows[i])
            free(self.rg_ptr[i])
            free(self.rg_sums[i])
            self.rg_rows[i] = NULL
            self.rg_ptr[i] = NULL
            self.rg_sums[i] = NULL
            self.rg_cap[i] = 0
            self.rg_rows[i] = <int64_t *>_alloc(cap * sizeof(int64_t))
            self.rg_ptr[i] = <const void **>_alloc(cap * sizeof(void *))
            self.rg_sums[i] = <char *>_alloc(max(cap // 2, 1) * max(width, 1) * es)
            self.rg_cap[i] = cap
        if 2 * cap > self.rg_scratch_cap:
            self.rg_scratch = <int64_t *>_realloc(self.rg_scratch, 2 * cap * sizeof(int64_t))
            self.rg_scratch_cap = 2 * cap
        cdef const void *ip = cnp.PyArray_DATA(idx)
        cdef const void *vp = cnp.PyArray_DATA(vals)
        cdef int idx64 = cnp.PyArray_ITEMSIZE(idx) == 8
        cdef int32_t dtype = self.tensors[i].dtype
        with nogil:
            nu = fo_rows_coalesce(ip, idx64, n, limit, vp, width, dtype, self.rg_rows[i],
                                  self.rg_ptr[i], self.rg_sums[i], self.rg_scratch)
        if nu < 0:
            p = -1 - nu
            raise ValueError(f"grads[{i}].indices[{p}] is {int(rg.indices[p])}; row indices of "
                             f"params[{i}] must be in [0, {limit}) (a negative index is not "
                             f"counted from the end). Nothing was changed")
        self.tensors[i].nrows = nu
        self.tensors[i].width = width
        return 0

    def set_grad_addresses(self, addresses):
        """Bind grads given as memory addresses (``int``, or ``None`` to skip a
        param; or a 1-D C-contiguous int64 array, 0 to skip): for a caller
        that has already checked, per grad, that it is a C-contiguous array of
        its param's dtype and size that stays alive until the step returns
        (:mod:`fastopt.torch` binds ``p.grad`` this way without a NumPy view
        per tensor and step).  Only the aliasing with params and state is
        checked here.  Returns the number bound."""
        cdef object addrs
        cdef const int64_t *table = NULL
        if isinstance(addresses, np.ndarray):
            if (addresses.dtype != np.int64 or addresses.ndim != 1
                    or not addresses.flags.c_contiguous):
                raise TypeError(f"grad addresses as an array must be 1-D C-contiguous int64; "
                                f"got {addresses.dtype}, shape {addresses.shape}")
            addrs = addresses
            table = <const int64_t *>cnp.PyArray_DATA(<cnp.ndarray>addresses)
        else:
            addrs = list(addresses)
        self._check_arrays()
        cdef Py_ssize_t i
        cdef int64_t k
        cdef uintptr_t lo, hi
        cdef int active = 0
        if len(addrs) != self.n:
            raise ValueError(f"expected {self.n} grad addresses; got {len(addrs)}")
        for i in range(self.n):
            if table != NULL:
                lo = <uintptr_t>table[i]
                if lo == 0:
                    self.pending[i] = NULL
                    continue
            else:
                a = addrs[i]
                if a is None:
                    self.pending[i] = NULL
                    continue
                lo = <uintptr_t>a
                if lo == 0 and self.tensors[i].size > 0:
                    raise ValueError(f"grads[{i}]: a null address")
            hi = lo + <uintptr_t>(self.tensors[i].size *
                                  (2 if self.tensors[i].pfmt else
                                   4 if self.tensors[i].dtype == FO_FLOAT32 else 8))
            k = self._overlap_owner(lo, hi)
            if k >= 0:
                raise ValueError(f"grads[{i}] shares memory with params[{k}] or its optimizer "
                                 f"state; an update would overwrite the gradient while reading "
                                 f"it. Pass a separate gradient array")
            self.pending[i] = <const void *>lo
            active += 1
        self._unbind()
        for i in range(self.n):
            self.tensors[i].grad = self.pending[i]
            self.tensors[i].gfmt = self.tensors[i].pfmt if self.pending[i] != NULL else 0
            self.tensors[i].compact = self.fixed_compact[i]
        self.held = addrs
        return active

    def check(self):
        """Raise if a bound param or state array changed since it was bound
        (what set_grads checks before each step)."""
        self._check_arrays()

    @property
    def bound(self):
        """The grads bound by the last set_grads or set_grad_addresses (the
        Engine's own list, or the array of addresses), or None."""
        return self.held

    cdef inline void _unbind(self):
        cdef Py_ssize_t i
        for i in range(self.n):
            self.tensors[i].grad = NULL
            self.tensors[i].rows = NULL
            self.tensors[i].rgrad = NULL
        self.nrowgrads = 0
        self.held = None

    def clear_grads(self):
        self._unbind()

    cdef int _load_rows(self, rows) except -1:
        cdef Py_ssize_t nrows = len(rows), r, j, m
        if nrows <= self.max_row:
            self._unbind()
            raise ValueError(f"{nrows} scalar rows given; tensors use row {self.max_row}")
        if nrows * FO_NSCALARS > self.rows_cap:
            self.rows = <double *>_realloc(self.rows, nrows * FO_NSCALARS * sizeof(double))
            self.rows_cap = nrows * FO_NSCALARS
        cdef double *dst
        cdef list lrow
        for r in range(nrows):
            row = rows[r]
            m = len(row)
            if m > FO_NSCALARS:
                self._unbind()
                raise ValueError(f"a scalar row holds at most {FO_NSCALARS} values")
            dst = self.rows + r * FO_NSCALARS
            try:
                if type(row) is list:
                    # the per-step case: direct item access, no generic indexing
                    lrow = <list>row
                    for j in range(m):
                        dst[j] = lrow[j]
                else:
                    for j in range(m):
                        dst[j] = row[j]
            except BaseException:
                self._unbind()
                raise
            for j in range(m, FO_NSCALARS):
                dst[j] = 0.0
        self.nrows = nrows
        return 0

    def run(self, rows, int nthreads):
        """Apply the kernel to every bound tensor with the given scalar rows
        (a sequence of sequences of floats), then unbind the grads."""
        self._load_rows(rows)
        self._check_state_counts()
        with nogil:
            fo_step(&self.plan, self.kernel, self.rows, nthreads)
        self._unbind()

    def sumsq(self, int which, int nthreads):
        """Per-tensor sum of squares of the bound grads (which=0) or of the
        params (which=1), deterministic for any thread count."""
        out = np.empty(self.n, dtype=np.float64)
        cdef double[::1] o = out
        cdef double dummy
        with nogil:
            fo_sumsq(&self.plan, which, &o[0] if self.n > 0 else &dummy, self.dscratch, nthreads)
        return out

    def norms(self, int which, int nthreads):
        """Per-tensor 2-norm of the bound grads (which=0) or of the params
        (which=1): ``sqrt(sumsq)``, except where the sum of squares overflowed
        with finite elements (float64 near 1e155), which is recomputed with
        scaling so that the norm stays finite."""
        out = np.empty(self.n, dtype=np.float64)
        self._norms(which, nthreads, <double *>cnp.PyArray_DATA(out))
        return out

    cdef void _norms(self, int which, int nthreads, double *out) noexcept:
        cdef Py_ssize_t i
        with nogil:
            fo_sumsq(&self.plan, which, out, self.dscratch, nthreads)
        for i in range(self.n):
            out[i] = sqrt(out[i])
            if out[i] == INFINITY:
                out[i] = fo_norm_scaled(&self.plan, <int32_t>i, which)

    def nonfinite(self, int nthreads):
        """Per-tensor count of NaN/Inf elements in the bound grads."""
        out = np.empty(self.n, dtype=np.int64)
        cdef int64_t[::1] o = out
        cdef int64_t dummy
        with nogil:
            fo_count_nonfinite(&self.plan, &o[0] if self.n > 0 else &dummy, self.iscratch, nthreads)
        return out


cdef void *_alloc(size_t nbytes) except NULL:
    cdef void *p = malloc(nbytes)
    if p == NULL:
        raise MemoryError()
    return p


cdef void *_calloc(size_t count, size_t size) except NULL:
    cdef void *p = calloc(count, size)
    if p == NULL:
        raise MemoryError()
    return p


cdef void *_realloc(void *old, size_t nbytes) except NULL:
    cdef void *p = realloc(old, nbytes)
    if p == NULL:
        raise MemoryError()
    return p


def check_param(obj, Py_ssize_t i):
    """Raise the error a parameter would get; used by the Python layer."""
    _check_param(obj, i)


cdef _check_param(obj, Py_ssize_t i):
    if not isinstance(obj, np.ndarray):
        raise TypeError(f"params[{i}]: expected a numpy.ndarray of floats; got "
                        f"{_describe(obj)}. fastopt updates parameters in place and never "
                        f"copies one: create the weights as ndarrays and pass those objects")
    if not cnp.PyArray_CheckExact(obj) and isinstance(obj, _MaskedArray):
        raise TypeError(f"params[{i}]: a masked array; fastopt would update the entries under "
                        f"the mask too. Pass its data (w.data, the same memory) and apply the "
                        f"mask yourself")
    cdef cnp.ndarray a = <cnp.ndarray>obj
    if not _native_float(a) and not _half(obj.dtype):
        raise TypeError(f"params[{i}]: expected dtype float32, float64, bfloat16 (ml_dtypes) "
                        f"or float16 (native byte order); got {obj.dtype!r}. Convert the "
                        f"weights once with w = w.astype(np.float32) and keep using the new "
                        f"array")
    if not cnp.PyArray_IS_C_CONTIGUOUS(a):
        raise ValueError(f"params[{i}]: expected a C-contiguous array; got a view with strides "
                         f"{obj.strides} of shape {obj.shape}. Updating a copy would lose the update: "
                         f"make the weights contiguous once (w = np.ascontiguousarray(w)) and "
                         f"pass that array")
    if not cnp.PyArray_ISWRITEABLE(a):
        raise ValueError(f"params[{i}]: the array is read-only; fastopt updates parameters in "
                         f"place. Pass a writeable array (w.flags.writeable must be True)")
    if not cnp.PyArray_ISALIGNED(a):
        raise ValueError(f"params[{i}]: the array is not aligned to its dtype; pass an aligned "
                         f"copy and keep using it")


# ---- the whole step -------------------------------------------------------

cdef inline void _acc_add(const fo_tensor *t, void *acc) noexcept nogil:
    """acc <- acc + g; a 16-bit grad of a float32 param widened a chunk at a time."""
    cdef int64_t j, b, n
    cdef float *a32
    cdef const float *g32
    cdef double *a64
    cdef float buf[FO_CHUNK]
    if t.dtype == FO_FLOAT32:
        a32 = <float *>acc
        b = 0
        while b < t.size:
            n = min(<int64_t>FO_CHUNK, t.size - b)
            g32 = <const float *>fo_values(t, 0, b, n, buf)
            for j in range(n):
                a32[b + j] = a32[b + j] + g32[j]
            b += n
    else:
        a64 = <double *>acc
        for j in range(t.size):
            a64[j] = a64[j] + (<const double *>t.grad)[j]


cdef inline void _acc_mean(const fo_tensor *t, void *acc, int64_t k) noexcept nogil:
    """acc <- (g + acc) / k, in the param's dtype."""
    cdef int64_t j, b, n
    cdef float *a32
    cdef const float *g32
    cdef double *a64
    cdef float k32 = <float>k
    cdef double k64 = <double>k
    cdef float buf[FO_CHUNK]
    if t.dtype == FO_FLOAT32:
        a32 = <float *>acc
        b = 0
        while b < t.size:
            n = min(<int64_t>FO_CHUNK, t.size - b)
            g32 = <const float *>fo_values(t, 0, b, n, buf)
            for j in range(n):
                a32[b + j] = (g32[j] + a32[b + j]) / k32
            b += n
    else:
        a64 = <double *>acc
        for j in range(t.size):
            a64[j] = ((<const double *>t.grad)[j] + a64[j]) / k64


cdef class Stepper:
    """One optimizer's whole step, in Keras 3's order: bind and check the
    grads, skip_nonfinite, gradient accumulation, the scalar rows (schedules'
    values checked, the kernel's scalar function per group and step, maximize,
    clipvalue, weight decay and its exclusions), clipnorm or global_clipnorm,
    the kernel (with its reduction pass and finish, for Lamb), the counters,
    the moving average.  Raises before anything is written.

    The optimizer pushes each param group's hyper-parameters (``set_group``)
    and the options (``configure``); a group edited since it was pushed is
    handed back to ``sync(gi)`` at the next step.  ``sync`` and the
    ``cross_check`` of ``configure`` are held as weak methods (the optimizer
    owns this Stepper: no reference cycle keeps either alive).
    """
    cdef readonly Engine engine
    cdef Engine ema
    cdef list accum
    cdef void **acc_data
    cdef const fo_kernel_info *info
    cdef const fo_kernel_info *ema_info
    cdef int32_t n, ngroups, nhp, lr_index, wd_index
    cdef double *ghp
    cdef int32_t *gnstate
    cdef int64_t *gversion
    cdef int32_t *group_of
    cdef int64_t *steps
    cdef double *aux_t           # the host values, _NAUX per tensor / per group
    cdef double *aux_g
    cdef char *excluded
    cdef int convention
    cdef bint per_param, sched_calls, refuse_no_grads
    cdef list groups
    cdef list gsched             # per group: list of (fn, j, key, spec, lo, lo_closed, hi, hi_closed)
    cdef object sync
    cdef object cross_check
    cdef object reducer          # None, or what combines the reductions with other processes
    cdef object host             # None, or the optimizer's host stage (a weak method)
    # options
    cdef bint maximize, decoupled, skip_nonfinite, has_clipvalue
    cdef double clipvalue, clipnorm, global_clipnorm
    cdef int clip_mode           # 0 none, 1 per-tensor norm, 2 global norm
    cdef int64_t accum_k, ema_freq
    cdef double ema_momentum
    # use_swa: the averaging engine runs the "average" kernel (torch's swa_utils)
    cdef bint swa, _swapped
    cdef int64_t swa_start, swa_freq, _n_averaged
    cdef double swa_decay        # < 0: uniform average
    cdef int own_threads
    cdef readonly TeamTuner tuner     # the team of a step at the default thread count
    # counters
    cdef int64_t _iterations, _micro, _skipped
    # this step's rows: key of each row, the host value it hands on
    cdef int32_t *key_g
    cdef int64_t *key_t
    cdef double *key_aux
    cdef char *key_ex
    cdef double *row_aux
    cdef int32_t *group_row
    cdef int32_t *trow           # each tensor's row before clipping
    cdef double *dbuf
    cdef int64_t *ibuf
    cdef int64_t row_cap

    def __cinit__(self):
        self.acc_data = NULL
        self.reducer = None

    def __init__(self, Engine engine, list groups, list group_of, int convention,
                 bint per_param, bint sched_calls, sync, Engine ema=None, list accum=None,
                 *, bint refuse_no_grads=False, host=None):
        cdef Py_ssize_t i
        self.engine = engine
        self.info = engine.info
        self.n = engine.n
        self.ngroups = <int32_t>len(groups)
        self.groups = groups
        hp = kernel_hp(self.info.name.decode())
        if "learning_rate" not in hp:
            raise ValueError("a kernel driven by a Stepper reads learning_rate")
        self.nhp = <int32_t>len(hp) + 1          # + weight_decay, read by the shared slots
        self.lr_index = hp.index("learning_rate")
        self.wd_index = self.nhp - 1
        self.convention = convention
        self.per_param = per_param
        self.sched_calls = sched_calls
        self.refuse_no_grads = refuse_no_grads
        self.sync = _weakref.WeakMethod(sync)
        self.host = None if host is None else _weakref.WeakMethod(host)
        self.cross_check = None
        self.ema = ema
        self.swa = ema is not None and ema.info.name == b"average"
        self._swapped = False
        self.swa_start = self._n_averaged = 0
        self.swa_freq = 1
        self.swa_decay = -1.0
        if ema is not None:
            self.ema_info = ema.info
            if ema.rows_cap < FO_NSCALARS:
                ema.rows = <double *>_realloc(ema.rows, FO_NSCALARS * sizeof(double))
                ema.rows_cap = FO_NSCALARS
        self.accum = accum
        cdef Py_ssize_t ng = max(self.ngroups, 1), nt = max(self.n, 1)
        self.ghp = <double *>_alloc(ng * self.nhp * sizeof(double))
        memset(self.ghp, 0, ng * self.nhp * sizeof(double))
        self.gnstate = <int32_t *>_alloc(ng * sizeof(int32_t))
        self.gversion = <int64_t *>_alloc(ng * sizeof(int64_t))
        self.aux_g = <double *>_alloc(ng * _NAUX * sizeof(double))
        self.group_row = <int32_t *>_alloc(ng * sizeof(int32_t))
        for i in range(self.ngroups):
            self.gnstate[i] = 0
            self.gversion[i] = -1
            self.aux_g[i * _NAUX] = 1.0
            self.aux_g[i * _NAUX + 1] = 0.0
        self.gsched = [[] for _ in range(self.ngroups)]
        self.group_of = <int32_t *>_alloc(nt * sizeof(int32_t))
        self.steps = <int64_t *>_alloc(nt * sizeof(int64_t))
        self.aux_t = <double *>_alloc(nt * _NAUX * sizeof(double))
        self.excluded = <char *>_alloc(nt)
        self.dbuf = <double *>_alloc(nt * FO_NRED * sizeof(double))
        self.trow = <int32_t *>_alloc(nt * sizeof(int32_t))
        self.ibuf = <int64_t *>_alloc(nt * sizeof(int64_t))
        if len(group_of) != self.n:
            raise ValueError(f"expected {self.n} group indices; got {len(group_of)}")
        for i in range(self.n):
            self.group_of[i] = group_of[i]
            self.steps[i] = 0
            self.aux_t[i * _NAUX] = 1.0
            self.aux_t[i * _NAUX + 1] = 0.0
            self.excluded[i] = 0
        # rows: one per group, one per tensor at another step, one per clipped
        # tensor, one per tensor of a second pass
        self.row_cap = 3 * nt + ng
        self.key_g = <int32_t *>_alloc(self.row_cap * sizeof(int32_t))
        self.key_t = <int64_t *>_alloc(self.row_cap * sizeof(int64_t))
        self.key_aux = <double *>_alloc(self.row_cap * _NAUX * sizeof(double))
        self.key_ex = <char *>_alloc(self.row_cap)
        self.row_aux = <double *>_alloc(self.row_cap * _NAUX * sizeof(double))
        if self.row_cap * FO_NSCALARS > engine.rows_cap:
            engine.rows = <double *>_realloc(engine.rows, self.row_cap * FO_NSCALARS * sizeof(double))
            engine.rows_cap = self.row_cap * FO_NSCALARS
        if accum is not None:
            if len(accum) != self.n:
                raise ValueError(f"expected {self.n} accumulators; got {len(accum)}")
            self.acc_data = <void **>_alloc(nt * sizeof(void *))
            for i in range(self.n):
                a = accum[i]
                if engine.tensors[i].pfmt != FO_FMT_NATIVE:
                    raise ValueError(f"params[{i}] is {engine.params[i].dtype}: gradient "
                                     f"accumulation sums float32 or float64 grads in the "
                                     f"param's dtype; accumulate in float32 yourself and step "
                                     f"with the mean")
                if (not isinstance(a, np.ndarray) or a.dtype != engine.params[i].dtype
                        or a.shape != engine.params[i].shape or not a.flags.c_contiguous
                        or not a.flags.writeable):
                    raise ValueError(f"accumulator {i} must be a writeable C-contiguous array "
                                     f"of the param's dtype and shape")
                self.acc_data[i] = cnp.PyArray_DATA(<cnp.ndarray>a)
        self._iterations = self._micro = self._skipped = 0
        self.maximize = self.decoupled = self.skip_nonfinite = self.has_clipvalue = False
        self.clip_mode = 0
        self.accum_k = 0
        self.ema_freq = 0
        self.ema_momentum = 0.0
        self.own_threads = 0
        self.tuner = TeamTuner()

    def __dealloc__(self):
        free(self.ghp)
        free(self.gnstate)
        free(self.gversion)
        free(self.aux_g)
        free(self.group_row)
        free(self.group_of)
        free(self.steps)
        free(self.aux_t)
        free(self.excluded)
        free(self.dbuf)
        free(self.trow)
        free(self.ibuf)
        free(self.key_g)
        free(self.key_t)
        free(self.key_aux)
        free(self.key_ex)
        free(self.row_aux)
        free(self.acc_data)

    # ---- what the optimizer pushes -------------------------------------

    def set_group(self, Py_ssize_t gi, values, list scheduled, int nstate, int64_t version):
        """Group ``gi``'s hyper-parameters: ``values`` in the kernel's order
        then weight_decay (a scheduled entry's value is filled per step),
        ``scheduled``: ``(schedule, index, name, spec)`` in the order of the
        optimizer's table; ``nstate``: state arrays the group uses now."""
        cdef Py_ssize_t j
        if not 0 <= gi < self.ngroups or len(values) != self.nhp:
            raise ValueError(f"set_group: group {gi} of {self.ngroups}, {len(values)} values "
                             f"for {self.nhp}")
        entries = []
        for fn, j, key, spec in scheduled:
            lo, lo_closed, hi, hi_closed = spec.check
            entries.append((fn, j, key, spec, float(lo), bool(lo_closed), float(hi),
                            bool(hi_closed)))
        for j in range(self.nhp):
            self.ghp[gi * self.nhp + j] = values[j]
        self.gsched[gi] = entries
        self.gnstate[gi] = nstate
        self.gversion[gi] = version

    def group_values(self, Py_ssize_t gi):
        """The values group ``gi`` used last (scheduled ones as last evaluated)."""
        return [self.ghp[gi * self.nhp + j] for j in range(self.nhp)]

    def configure(self, *, maximize, decoupled, clipvalue, clipnorm, global_clipnorm,
                  skip_nonfinite, num_threads, ema_momentum, ema_overwrite_frequency,
                  gradient_accumulation_steps, cross_check=None, swa_start=0, swa_freq=1,
                  swa_decay=None):
        self.maximize = bool(maximize)
        self.decoupled = bool(decoupled)
        self.has_clipvalue = clipvalue is not None
        self.clipvalue = clipvalue if clipvalue is not None else 0.0
        self.clip_mode = 1 if clipnorm is not None else (2 if global_clipnorm is not None else 0)
        self.clipnorm = clipnorm if clipnorm is not None else 0.0
        self.global_clipnorm = global_clipnorm if global_clipnorm is not None else 0.0
        self.skip_nonfinite = bool(skip_nonfinite)
        self.own_threads = num_threads or 0
        self.ema_momentum = ema_momentum
        self.ema_freq = ema_overwrite_frequency or 0
        self.swa_start = swa_start
        self.swa_freq = swa_freq
        self.swa_decay = -1.0 if swa_decay is None else swa_decay
        k = gradient_accumulation_steps or 0
        if k and self.accum is None:
            raise ValueError("gradient accumulation needs accumulators")
        self.accum_k = k
        self.cross_check = None if cross_check is None else _weakref.WeakMethod(cross_check)

    def set_reducer(self, reducer):
        """Make this Stepper one part of an optimizer whose tensors are split
        over processes (``fastopt.distributed.ShardedOptimizer``): every
        reduction of a step is handed to ``reducer``, a collective on each
        process in the same order, so that each process sees the values of
        the whole tensors.  ``reducer.active``: whether any process steps a
        tensor this step; ``reducer.any(flag)``: the flag of any process;
        ``reducer.sums(sums, chunks, width)``: this process's per-tensor sums
        (``width`` per tensor) made whole-tensor sums in place from the
        per-chunk sums, returning the sums of every whole tensor;
        ``reducer.norms(grads, whole)``: per-tensor and per-whole-tensor
        norms where a sum of squares overflowed.  None: a process alone."""
        self.reducer = reducer

    def set_excluded(self, excluded):
        """Params excluded from weight decay: a collection of indices."""
        cdef Py_ssize_t i
        for i in range(self.n):
            self.excluded[i] = 0
        for i in excluded:
            self.excluded[i] = 1

    # ---- counters ----------------------------------------------------------

    @property
    def iterations(self):
        return self._iterations

    @iterations.setter
    def iterations(self, int64_t value):
        self._iterations = value

    @property
    def micro(self):
        return self._micro

    @micro.setter
    def micro(self, int64_t value):
        self._micro = value

    @property
    def skipped(self):
        return self._skipped

    @skipped.setter
    def skipped(self, int64_t value):
        self._skipped = value

    @property
    def schedule_step(self):
        """The step the schedules read at the next update."""
        return self._micro if self.accum_k and self.sched_calls else self._iterations

    def get_steps(self):
        return np.array([self.steps[i] for i in range(self.n)], dtype=np.int64)

    def set_steps(self, steps):
        cdef Py_ssize_t i
        for i in range(self.n):
            self.steps[i] = steps[i]

    def get_aux(self):
        """The host values: per group (one clock) or per tensor (per_param);
        a float each, or a pair for a kernel with two."""
        cdef double *a = self.aux_t if self.per_param else self.aux_g
        cdef Py_ssize_t i, m = self.n if self.per_param else self.ngroups
        if self.info.has_aux > 1:
            return [[a[i * _NAUX], a[i * _NAUX + 1]] for i in range(m)]
        return [a[i * _NAUX] for i in range(m)]

    def set_aux(self, values):
        cdef double *a = self.aux_t if self.per_param else self.aux_g
        cdef Py_ssize_t i, m = self.n if self.per_param else self.ngroups
        for i in range(m):
            if self.info.has_aux > 1:
                a[i * _NAUX] = values[i][0]
                a[i * _NAUX + 1] = values[i][1]
            else:
                a[i * _NAUX] = values[i]

    # ---- the step ------------------------------------------------------------

    cdef int _threads(self):
        if self.own_threads:
            return self.own_threads
        return _default_threads if _default_threads else fo_max_threads()

    cdef int _step_threads(self):
        """A step's threads: as set, or at the default the measured team."""
        cdef int n = self._threads()
        if self.own_threads or _default_threads:
            return n
        return self.tuner.pick(n, fo_now_ns())

    cdef int _schedules(self, int64_t step) except -1:
        cdef Py_ssize_t gi
        for gi in range(self.ngroups):
            if self.gsched[gi]:
                self._group_schedules(gi, step)
        return 0

    def evaluate(self, Py_ssize_t gi, int64_t step):
        """Group ``gi``'s values with its schedules evaluated at ``step`` and
        checked as a step checks them."""
        if self.gsched[gi]:
            self._group_schedules(gi, step)
        return self.group_values(gi)

    cdef int _group_schedules(self, Py_ssize_t gi, int64_t step) except -1:
        """Evaluate group ``gi``'s schedules at ``step`` into its values, checked
        as constants are (finite, learning_rate >= 0, the range, the rules
        across fields)."""
        cdef double v
        cdef list entries = <list>self.gsched[gi]
        for e in entries:
            r = (<tuple>e)[0](step)
            v = r if type(r) is float else _schedule_float(r, (<tuple>e)[2], step)
            if not isfinite(v):
                raise ValueError(f"{(<tuple>e)[2]} evaluated to {v!r} at step {step}; "
                                 f"hyper-parameters must be finite")
            self.ghp[gi * self.nhp + <Py_ssize_t>(<tuple>e)[1]] = v
        v = self.ghp[gi * self.nhp + self.lr_index]
        if v < 0:
            raise ValueError(f"learning_rate evaluated to {v!r} at step {step}; it must "
                             f"be >= 0")
        for e in entries:
            _check_scheduled(<tuple>e, self.ghp[gi * self.nhp + <Py_ssize_t>(<tuple>e)[1]],
                             step)
        if self.cross_check is not None:
            self.cross_check()(gi, step)
        return 0

    cdef int32_t _row(self, int32_t g, int64_t t, const double *aux, char ex, int32_t *nrows):
        """Index of this step's row for (group, step, host values, excluded),
        computed on first use."""
        cdef int32_t r, nr = nrows[0]
        for r in range(nr - 1, -1, -1):
            if (self.key_g[r] == g and self.key_t[r] == t and self.key_ex[r] == ex
                    and _same(self.key_aux[r * _NAUX], aux[0])
                    and _same(self.key_aux[r * _NAUX + 1], aux[1])):
                return r
        r = nr
        nrows[0] = nr + 1
        self.key_g[r] = g
        self.key_t[r] = t
        self.key_aux[r * _NAUX] = aux[0]
        self.key_aux[r * _NAUX + 1] = aux[1]
        self.key_ex[r] = ex
        cdef double *row = self.engine.rows + <int64_t>r * FO_NSCALARS
        cdef const double *h = self.ghp + <int64_t>g * self.nhp
        cdef int flags = 0
        cdef double wd = h[self.wd_index]
        memset(row, 0, FO_NSCALARS * sizeof(double))
        row[FO_S_GSCALE] = 1.0
        row[FO_S_DECAY] = 1.0
        if self.maximize:
            flags |= FO_F_GSCALE
            row[FO_S_GSCALE] = -1.0
        if self.has_clipvalue:
            flags |= FO_F_CLIP
            row[FO_S_CLIP] = self.clipvalue
        if wd != 0.0 and not ex:
            if self.decoupled:
                flags |= FO_F_DECAY
                row[FO_S_DECAY] = 1.0 - h[self.lr_index] * wd
            else:
                flags |= FO_F_L2
                row[FO_S_L2] = wd
        row[FO_S_FLAGS] = flags
        cdef fo_ctx ctx
        ctx.hp = h
        ctx.t = t
        ctx.convention = self.convention
        ctx.nstate = self.gnstate[g]
        ctx.aux = aux[0]
        ctx.aux2 = aux[1]
        self.row_aux[r * _NAUX + 1] = aux[1]
        ctx.aux2_next = &self.row_aux[r * _NAUX + 1]
        self.row_aux[r * _NAUX] = self.info.scalars_fn(&ctx, row)
        return r

    cdef int32_t _copy_row(self, int32_t r, int32_t *nrows):
        cdef int32_t c = nrows[0]
        nrows[0] = c + 1
        memcpy(self.engine.rows + <int64_t>c * FO_NSCALARS,
               self.engine.rows + <int64_t>r * FO_NSCALARS, FO_NSCALARS * sizeof(double))
        self.key_g[c] = -1      # never found again by _row
        return c

    cdef int _clip(self, int32_t *nrows, int nthreads) except -1:
        cdef Engine eng = self.engine
        cdef Py_ssize_t i
        cdef int32_t r
        cdef double c, nrm, f, total, inv, m
        cdef double *row
        if self.clip_mode == 1:
            c = self.clipnorm
            if self.reducer is None:
                eng._norms(0, nthreads, self.dbuf)
            else:
                self._shared_norms(nthreads)
            for i in range(self.n):
                if eng.tensors[i].grad == NULL:
                    continue
                nrm = self.dbuf[i]
                # c/max(norm, c), NaN-propagating: NaN norms give NaN, inf gives 0
                f = 1.0 if nrm <= c else c / nrm
                if f != 1.0:
                    r = self._copy_row(eng.tensors[i].row, nrows)
                    row = eng.rows + <int64_t>r * FO_NSCALARS
                    row[FO_S_FLAGS] = <double>(<int>row[FO_S_FLAGS] | FO_F_GSCALE)
                    row[FO_S_GSCALE] *= f
                    eng.tensors[i].row = r
        elif self.clip_mode == 2:
            c = self.global_clipnorm
            with nogil:
                fo_sumsq(&eng.plan, 0, self.dbuf, eng.dscratch, nthreads)
            if self.reducer is None:
                total = sqrt(fo_fsum(self.dbuf, self.n))
            else:
                # fo_fsum is exact: the same total from the whole tensors in any order
                whole = self._combined(1)
                total = sqrt(fo_fsum(<double *>cnp.PyArray_DATA(whole), len(whole)))
            if total == INFINITY:
                # the sum of squares overflowed: combine per-tensor norms with scaling
                # (still inf, or NaN, when a grad holds inf or NaN)
                if self.reducer is None:
                    total = _math.hypot(*eng.norms(0, nthreads).tolist())
                else:
                    total = _math.hypot(*self.reducer.norms(self._bound(), whole)[1])
            # Keras: c * min(1/norm, 1/c), turned into NaN when the norm is not finite
            inv = 1.0 / total if total > 0 else INFINITY
            m = 1.0 / c
            f = c * (m if m < inv else inv) + (total - total)
            for r in range(nrows[0]):
                row = eng.rows + <int64_t>r * FO_NSCALARS
                row[FO_S_FLAGS] = <double>(<int>row[FO_S_FLAGS] | FO_F_GSCALE)
                row[FO_S_GSCALE] *= f
        return 0

    cdef object _combined(self, int width):
        """The reducer's whole-tensor sums: this Stepper's per-tensor sums
        (``dbuf``) are replaced by those of the whole tensors, from every
        process's per-chunk sums (the engine's scratch); returns the sums of
        every whole tensor (float64, ``width`` per tensor)."""
        cdef Engine eng = self.engine
        cdef Py_ssize_t ns = self.n * width, nc = eng.plan.nchunks * width
        sums = np.empty(ns, dtype=np.float64)
        chunks = np.empty(nc, dtype=np.float64)
        if ns:
            memcpy(cnp.PyArray_DATA(sums), self.dbuf, ns * sizeof(double))
        if nc:
            memcpy(cnp.PyArray_DATA(chunks), eng.dscratch, nc * sizeof(double))
        whole = np.ascontiguousarray(self.reducer.sums(sums, chunks, width), dtype=np.float64)
        if sums.shape != (ns,) or sums.dtype != np.float64:
            raise RuntimeError("reducer.sums changed the shape of the sums")
        if ns:
            memcpy(self.dbuf, cnp.PyArray_DATA(sums), ns * sizeof(double))
        return whole

    cdef list _bound(self):
        """The grads the kernel reads now (the accumulated means, with accumulation)."""
        if self.accum_k:
            return [self.accum[i] if self.engine.tensors[i].grad != NULL else None
                    for i in range(self.n)]
        return list(self.engine.held)

    cdef int _shared_norms(self, int nthreads) except -1:
        """Per-tensor norms of whole tensors split over processes into dbuf,
        as Engine._norms computes them for a whole tensor."""
        cdef Engine eng = self.engine
        cdef Py_ssize_t i
        with nogil:
            fo_sumsq(&eng.plan, 0, self.dbuf, eng.dscratch, nthreads)
        whole = self._combined(1)
        for i in range(self.n):
            self.dbuf[i] = sqrt(self.dbuf[i])
        if np.isposinf(whole).any():         # the same on every process
            mine = self.reducer.norms(self._bound(), whole)[0]
            for i in range(self.n):
                if self.dbuf[i] == INFINITY:
                    self.dbuf[i] = mine[i]
        return 0

    cdef int _apply(self, int32_t *nrows, int nthreads) except -1:
        """The kernel over every bound tensor; a kernel with a reduction pass
        runs it first and its finish function turns each tensor's sums into
        the row of the elementwise pass; a kernel with factored state runs its
        row/column pass (and fold) before them."""
        cdef Engine eng = self.engine
        cdef Py_ssize_t i
        cdef int32_t r
        if self.info.finish == NULL:
            with nogil:
                fo_step(&eng.plan, eng.kernel, eng.rows, nthreads)
            return 0
        cdef double *sums = self.dbuf
        if eng.factored:
            with nogil:
                fo_step_rowcol(&eng.plan, eng.kernel, eng.rows, eng.rcscratch, nthreads)
        with nogil:
            fo_step_reduce(&eng.plan, eng.kernel, eng.rows, sums, eng.dscratch, nthreads)
        if self.reducer is not None:
            self._combined(FO_NRED)
        if self.host is not None:
            self._host_stage()
        for i in range(self.n):
            if eng.tensors[i].grad == NULL:
                continue
            r = self._copy_row(eng.tensors[i].row, nrows)
            self.info.finish(&eng.tensors[i], sums + i * FO_NRED, eng.rows + <int64_t>r * FO_NSCALARS)
            eng.tensors[i].row = r
        with nogil:
            fo_step(&eng.plan, eng.kernel, eng.rows, nthreads)
        return 0

    cdef int _host_stage(self) except -1:
        """The optimizer's host stage, between the reduction pass and the
        finish: ``host(stepped, sums)`` with the indices of the tensors
        stepped now and their sums (an ``(n, FO_NRED)`` float64 view the
        stage may rewrite; the finish reads it).  It works on the arrays the
        kernel shares with it (Muon's Newton-Schulz iteration)."""
        cdef Py_ssize_t i
        stepped = [i for i in range(self.n) if self.engine.tensors[i].grad != NULL]
        sums = np.asarray(<double[:max(self.n, 1) * FO_NRED]> self.dbuf)
        self.host()(stepped, sums[:self.n * FO_NRED].reshape(self.n, FO_NRED))
        return 0

    def step(self, grads, bint addresses=False):
        """One update.  ``addresses=True``: ``grads`` are memory addresses (see
        :meth:`Engine.set_grad_addresses`) instead of arrays."""
        cdef Engine eng = self.engine
        cdef Py_ssize_t gi, i
        cdef list groups = self.groups
        if self._swapped:
            raise RuntimeError("the parameters hold the averages (swap_averages() was "
                               "called): call swap_averages() again before the next step")
        for gi in range(self.ngroups):
            if groups[gi].version != self.gversion[gi]:
                self.sync()(gi)
        cdef int active = (eng.set_grad_addresses(grads) if addresses
                           else eng.set_grads(grads))
        if self.reducer is not None:
            # a process whose part of every stepped tensor is empty still takes
            # part in the step's collectives
            active = bool(self.reducer.active)
        cdef int nthreads = self._step_threads()
        cdef int64_t k = self.accum_k, updates_before = self._iterations, step, t_shared
        cdef int32_t nrows = 0, g
        cdef double ema_hp[3]
        cdef fo_ctx ctx
        cdef bint keep_aux
        try:
            if not active and self.refuse_no_grads and self.n:
                raise ValueError(f"No gradients provided for any variable: all {self.n} grads "
                                 f"are None, and Keras 3 refuses such a step (the torch "
                                 f"convention skips every parameter). Nothing was changed")
            if k and eng.nrowgrads:
                raise ValueError("a RowGrad cannot be accumulated (gradient_accumulation_steps "
                                 "keeps a dense sum of every grad): concatenate the micro-"
                                 "batches' indices and values into one RowGrad (repeated rows "
                                 "are summed), divide the values by the number of micro-"
                                 "batches, and step without accumulation. Nothing was changed")
            if self.ema is not None:
                self.ema._check_arrays()    # before the update, not after it
            if self.skip_nonfinite and active:
                with nogil:
                    fo_count_nonfinite(&eng.plan, self.ibuf, eng.iscratch, nthreads)
                bad = False
                for i in range(self.n):
                    if self.ibuf[i]:
                        bad = True
                        break
                if self.reducer is not None:
                    bad = bool(self.reducer.any(bad))
                if bad:
                    self._skipped += 1
                    return
            if k and (self._micro + 1) % k:
                for i in range(self.n):
                    if eng.tensors[i].grad != NULL:
                        _acc_add(&eng.tensors[i], self.acc_data[i])
            else:
                # Keras's Nadam advances every group's product every update
                keep_aux = self.info.has_aux and not self.per_param
                if active or keep_aux:
                    step = self._micro if k and self.sched_calls else self._iterations
                    self._schedules(step)
                    t_shared = self._iterations + 1
                    if keep_aux:
                        for gi in range(self.ngroups):
                            self.group_row[gi] = self._row(<int32_t>gi, t_shared,
                                                           &self.aux_g[gi * _NAUX], 0, &nrows)
                    for i in range(self.n):
                        if eng.tensors[i].grad == NULL:
                            continue
                        g = self.group_of[i]
                        if self.per_param:
                            self.trow[i] = self._row(g, self.steps[i] + 1, &self.aux_t[i * _NAUX],
                                                     self.excluded[i], &nrows)
                            eng.tensors[i].step = self.steps[i] + 1
                        else:
                            self.trow[i] = self._row(g, t_shared, &self.aux_g[g * _NAUX],
                                                     self.excluded[i], &nrows)
                            eng.tensors[i].step = t_shared
                        eng.tensors[i].row = self.trow[i]
                    eng.nrows = nrows
                    eng._check_state_counts()
                # nothing has changed up to here: every error above leaves all as it was
                if k:
                    for i in range(self.n):
                        if eng.tensors[i].grad != NULL:
                            _acc_mean(&eng.tensors[i], self.acc_data[i], k)
                            eng.tensors[i].grad = self.acc_data[i]
                            eng.tensors[i].gfmt = FO_FMT_NATIVE     # the param's dtype
                            eng.tensors[i].compact = eng.fixed_compact[i]
                if active:
                    self._clip(&nrows, nthreads)
                    self._apply(&nrows, nthreads)
                if k:
                    for i in range(self.n):
                        memset(self.acc_data[i], 0,
                               eng.tensors[i].size * (4 if eng.tensors[i].dtype == FO_FLOAT32 else 8))
                if keep_aux:
                    for gi in range(self.ngroups):
                        memcpy(&self.aux_g[gi * _NAUX], &self.row_aux[self.group_row[gi] * _NAUX],
                               _NAUX * sizeof(double))
                if self.per_param:
                    for i in range(self.n):
                        if eng.tensors[i].grad != NULL:
                            memcpy(&self.aux_t[i * _NAUX], &self.row_aux[self.trow[i] * _NAUX],
                                   _NAUX * sizeof(double))
                            self.steps[i] += 1
                self._iterations += 1
            if self.swa:
                # torchcontrib's clock: after the u-th update, u > swa_start, u % swa_freq == 0
                if (self._iterations > updates_before and self._iterations > self.swa_start
                        and self._iterations % self.swa_freq == 0):
                    self._average(nthreads)
            elif self.ema is not None:
                ema_hp[0] = self.ema_momentum if updates_before else 0.0
                ema_hp[1] = 1.0 if self.ema_freq and (updates_before + 1) % self.ema_freq == 0 else 0.0
                self._run_ema(ema_hp, nthreads)
            self._micro += 1
        finally:
            eng._unbind()

    cdef void _average(self, int nthreads) noexcept:
        """One update of the averages (AveragedModel.update_parameters): a
        copy the first time, then the uniform or the exponential average."""
        cdef double hp[3]
        hp[0] = 0.0 if self._n_averaged == 0 else (1.0 if self.swa_decay < 0 else 2.0)
        hp[1] = <double>(self._n_averaged + 1)
        hp[2] = self.swa_decay if self.swa_decay >= 0 else 0.0
        self._run_ema(hp, nthreads)
        self._n_averaged += 1

    def swap_averages(self):
        """Swap every parameter with its average (bits moved, no arithmetic)."""
        cdef double hp[3]
        if not self.swa:
            raise ValueError("swap_averages needs use_swa=True")
        if self._n_averaged == 0:
            raise ValueError(f"there is no average yet: averaging starts after update "
                             f"swa_start + 1 = {self.swa_start + 1} (and every swa_freq="
                             f"{self.swa_freq} updates); {self._iterations} applied so far")
        self.ema._check_arrays()
        hp[0] = 3.0
        hp[1] = hp[2] = 0.0
        self._run_ema(hp, self._threads())
        self._swapped = not self._swapped

    @property
    def swapped(self):
        """Whether the parameters hold the averages (between two swaps)."""
        return self._swapped

    @property
    def n_averaged(self):
        """Updates averaged so far (use_swa)."""
        return self._n_averaged

    @n_averaged.setter
    def n_averaged(self, int64_t value):
        if value < 0:
            raise ValueError(f"n_averaged must be >= 0; got {value}")
        self._n_averaged = value

    cdef void _run_ema(self, double *hp, int nthreads) noexcept:
        cdef Engine e = self.ema
        cdef Py_ssize_t i
        cdef fo_ctx ctx
        cdef double *row = e.rows
        memset(row, 0, FO_NSCALARS * sizeof(double))
        row[FO_S_GSCALE] = 1.0
        row[FO_S_DECAY] = 1.0
        ctx.hp = hp
        ctx.t = 0
        ctx.convention = self.convention
        ctx.nstate = 1
        ctx.aux = 0.0
        ctx.aux2 = 0.0
        ctx.aux2_next = NULL
        self.ema_info.scalars_fn(&ctx, row)
        for i in range(e.n):
            e.tensors[i].grad = e.tensors[i].param
            e.tensors[i].row = 0
        with nogil:
            fo_step(&e.plan, e.kernel, row, nthreads)
        for i in range(e.n):
            e.tensors[i].grad = NULL


cdef double _schedule_float(object r, str key, int64_t step) except? -1.0:
    """A schedule's value as a float: a number (a NumPy or 0-d array scalar
    too), never a string (float("0.1") would parse it) or a bool."""
    if isinstance(r, (str, bytes, bool, np.bool_)) or not (
            hasattr(r, "__float__") or hasattr(r, "__index__")):
        raise TypeError(f"{key}: the schedule returned {r!r:.60} ({type(r).__name__}) at step "
                        f"{step}; a schedule must return a number (a float)")
    return float(r)


cdef inline bint _same(double a, double b) noexcept:
    """Equal, or both NaN (a row's key)."""
    return a == b or (a != a and b != b)


cdef int _check_scheduled(tuple e, double v, int64_t step) except -1:
    """A scheduled value gets the range check of a constant one (beta_1 -> 1
    would divide by zero in the bias correction, momentum > 1 would diverge
    silently)."""
    cdef double lo = e[4], hi = e[6]
    cdef bint ok = (v >= lo if e[5] else v > lo) and (v <= hi if e[7] else v < hi)
    if not ok:
        from fastopt import _hyper
        _hyper.check_range(e[3], e[2], v, f"schedule value at step {step}: ")
    return 0
