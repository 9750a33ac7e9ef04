# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""fastopt's only compiled module.

It validates every array before anything is written, caches raw pointers,
releases the GIL and calls the C engine in ``csrc/``.  The C side cannot
fail during a step, so all errors are raised here.
"""
import numpy as np

cimport numpy as cnp
from libc.stdint cimport int32_t, int64_t, uintptr_t
from libc.stdlib cimport free, malloc, realloc
from libc.math cimport INFINITY, sqrt
from libc.string cimport memset

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


def parallel_threshold():
    """Work below which a step runs on the calling thread only: active elements
    times the kernel's cost (SGD 1, kernels with a divide or square root 2)."""
    return fo_parallel_threshold()


def set_parallel_threshold(int64_t n):
    fo_set_parallel_threshold(n)


def kernel_nstate(str name):
    return fo_kernel(KERNELS[name]).nstate


cdef str _describe(obj):
    if isinstance(obj, np.ndarray):
        return f"a {obj.dtype} array of shape {obj.shape}"
    return f"an object of type {type(obj).__name__}"


cdef inline bint _native_float(cnp.ndarray a):
    cdef int tn = cnp.PyArray_TYPE(a)
    return (tn == cnp.NPY_FLOAT or tn == cnp.NPY_DOUBLE) and cnp.PyArray_ISNOTSWAPPED(a)


cdef class Engine:
    """The arrays of one optimizer and the C work list over them.

    ``Engine(kernel, params, states)``: ``params`` is a list of ndarrays that
    are updated in place, ``states[i]`` the list of state arrays of
    ``params[i]`` (each of the param's shape and dtype).  Per step:
    ``set_grads(grads)`` validates and binds the gradients (raising before
    anything is written), optional reductions read them, ``run(rows,
    nthreads)`` applies the kernel with the scalar rows and unbinds them.

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
    cdef list held

    def __cinit__(self):
        self.tensors = NULL
        self.planned = False

    def __init__(self, str kernel, list params, list states):
        if kernel not in KERNELS:
            raise ValueError(f"unknown kernel {kernel!r}; known: {sorted(KERNELS)}")
        self.kernel = KERNELS[kernel]
        self.info = fo_kernel(self.kernel)
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
            ntot += len(self.states[i])
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
        memset(self.tensors, 0, max(n, 1) * sizeof(fo_tensor))
        self.arrays = []

        cdef cnp.ndarray p, s
        cdef int64_t at = 0
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
            self.tensors[i].dtype = FO_FLOAT32 if self.typenums[i] == cnp.NPY_FLOAT else FO_FLOAT64
            self.tensors[i].row = 0
            self.nstates[i] = <int32_t>len(self.states[i])
            self._track(p, i, -1)
            if cnp.PyArray_NBYTES(p) > 0:
                ranges.append((<uintptr_t>cnp.PyArray_DATA(p), cnp.PyArray_NBYTES(p), i, -1))
            for k in range(len(self.states[i])):
                obj = self.states[i][k]
                if not isinstance(obj, np.ndarray):
                    raise ValueError(f"state {k} of params[{i}] must be an ndarray; got "
                                     f"{_describe(obj)}")
                s = <cnp.ndarray>obj
                if (cnp.PyArray_TYPE(s) != self.typenums[i] or obj.shape != (<object>p).shape
                        or not cnp.PyArray_ISNOTSWAPPED(s)
                        or (cnp.PyArray_FLAGS(s) & _REQUIRED_FLAGS) != _REQUIRED_FLAGS):
                    raise ValueError(f"state {k} of params[{i}] must be a writeable, aligned, "
                                     f"C-contiguous ndarray of the param's dtype (native byte "
                                     f"order) and shape; got {_describe(obj)}")
                self.tensors[i].state[k] = cnp.PyArray_DATA(s)
                self._track(s, i, k)
                if cnp.PyArray_NBYTES(s) > 0:
                    ranges.append((<uintptr_t>cnp.PyArray_DATA(s), cnp.PyArray_NBYTES(s), i, k))
        self.shape_at[n] = at
        self.min_nstate = min([self.nstates[i] for i in range(n)], default=nstate_max)
        ranges.sort()
        for k in range(1, len(ranges)):
            a, b = ranges[k - 1], ranges[k]
            if a[0] + a[1] > b[0]:
                ia, ib = sorted((a[2], b[2]))
                if a[3] < 0 and b[3] < 0:
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
        self.dscratch = <double *>_alloc(max(self.plan.nchunks, 1) * FO_NRED * sizeof(double))
        self.iscratch = <int64_t *>_alloc(max(self.plan.nchunks, 1) * sizeof(int64_t))
        self.rows_cap = 0
        self.rows = NULL
        self.max_row = 0
        self.held = None

    cdef void _track(self, cnp.ndarray a, Py_ssize_t owner, Py_ssize_t slot):
        cdef Py_ssize_t j = len(self.arrays)
        self.arrays.append(a)
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
        what = (f"params[{i}]" if self.aslot[j] < 0
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
                f"{np.dtype(np.float32 if self.atype[j] == cnp.NPY_FLOAT else np.float64)} "
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
        if self.planned:
            fo_plan_free(&self.plan)
        free(self.tensors)
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
        cdef uintptr_t lo, hi
        cdef int64_t left, right, mid
        cdef int active = 0
        for i in range(self.n):
            g = grads[i]
            if g is None:
                self.pending[i] = NULL
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
            if cnp.PyArray_TYPE(a) != self.typenums[i] or not cnp.PyArray_ISNOTSWAPPED(a):
                raise TypeError(f"grads[{i}]: expected dtype {self.params[i].dtype} (the dtype of "
                                f"params[{i}]); got {g.dtype!r}. Cast it with "
                                f"g.astype(p.dtype) or compute the grad in the param's dtype")
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
            if cnp.PyArray_NBYTES(a) > 0 and self.nranges > 0:
                lo = <uintptr_t>cnp.PyArray_DATA(a)
                hi = lo + <uintptr_t>cnp.PyArray_NBYTES(a)
                # last range starting below hi; ranges are disjoint and sorted
                left = 0
                right = self.nranges
                while left < right:
                    mid = (left + right) // 2
                    if self.rlo[mid] < hi:
                        left = mid + 1
                    else:
                        right = mid
                if left > 0 and self.rhi[left - 1] > lo:
                    k = self.rowner[left - 1]
                    raise ValueError(f"grads[{i}] shares memory with params[{k}] or its optimizer "
                                     f"state; an update would overwrite the gradient while reading "
                                     f"it. Pass a separate gradient array")
            self.pending[i] = cnp.PyArray_DATA(a)
            active += 1
        for i in range(self.n):
            self.tensors[i].grad = self.pending[i]
        self.held = grads
        return active

    def check(self):
        """Raise if a bound param or state array changed since it was bound
        (what set_grads and run_params check before each step)."""
        self._check_arrays()

    @property
    def bound(self):
        """The grads bound by the last set_grads (the Engine's own list), or None."""
        return self.held

    cdef inline void _unbind(self):
        cdef Py_ssize_t i
        for i in range(self.n):
            self.tensors[i].grad = NULL
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

    def run_reduce(self, rows, int nthreads):
        """Run the kernel's reduction pass over every bound tensor (grads stay
        bound for the elementwise pass that follows); returns an (n, NRED)
        float64 array of per-tensor sums, deterministic for any thread count."""
        self._load_rows(rows)
        self._check_state_counts()
        out = np.zeros((self.n, FO_NRED), dtype=np.float64)
        cdef double[:, ::1] o = out
        cdef double dummy
        with nogil:
            fo_step_reduce(&self.plan, self.kernel, self.rows,
                           &o[0, 0] if self.n > 0 else &dummy, self.dscratch, nthreads)
        return out

    def run_params(self, rows, int nthreads):
        """Apply a kernel that reads only params and state (no grad) to every
        tensor: each is marked active for this call."""
        cdef Py_ssize_t i
        self._check_arrays()
        self._load_rows(rows)
        for i in range(self.n):
            self.tensors[i].grad = self.tensors[i].param
        try:
            self._check_state_counts()
            with nogil:
                fo_step(&self.plan, self.kernel, self.rows, nthreads)
        finally:
            self.clear_grads()

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
        cdef double *o = <double *>cnp.PyArray_DATA(out)
        cdef Py_ssize_t i
        with nogil:
            fo_sumsq(&self.plan, which, o, self.dscratch, nthreads)
        for i in range(self.n):
            o[i] = sqrt(o[i])
            if o[i] == INFINITY:
                o[i] = fo_norm_scaled(&self.plan, <int32_t>i, which)
        return out

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
        raise TypeError(f"params[{i}]: expected a numpy.ndarray of float32 or float64; got "
                        f"{_describe(obj)}. fastopt updates parameters in place and never "
                        f"copies one: create the weights as ndarrays and pass those objects")
    if not cnp.PyArray_CheckExact(obj) and isinstance(obj, _MaskedArray):
        raise TypeError(f"params[{i}]: a masked array; fastopt would update the entries under "
                        f"the mask too. Pass its data (w.data, the same memory) and apply the "
                        f"mask yourself")
    cdef cnp.ndarray a = <cnp.ndarray>obj
    if not _native_float(a):
        raise TypeError(f"params[{i}]: expected dtype float32 or float64 (native byte order); "
                        f"got {obj.dtype!r}. Convert the weights once with "
                        f"w = w.astype(np.float32) and keep using the new array")
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
