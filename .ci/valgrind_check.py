"""Memcheck over a short fastopt workload, counting only what is fastopt's.

Usage: python .ci/valgrind_check.py            (runs valgrind on itself)
       python .ci/valgrind_check.py --workload (the workload; what valgrind runs)

CPython and NumPy are not built for memcheck (pymalloc, interned objects kept
until exit, deliberate reads of uninitialised padding), so the whole-process
report is noisy.  Counted here: every memcheck error (invalid read/write,
use of uninitialised values, invalid free, overlap) with a frame in
fastopt's extension module, and every "definitely"/"indirectly lost" leak
record allocated from such a frame, except allocations made while the module
is imported (type objects and constants that CPython never frees at exit)
and the thread stacks of libgomp's pool (kept until exit for reuse): these
are created once per process and reported separately.
Both counts must be zero.
"""
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET


def workload():
    import numpy as np

    import fastopt as fo
    from fastopt import _core
    from fastopt.optimizers import REGISTRY

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for simd in _core.simd_supported():
            _core.set_simd(simd)
            for name, cls in sorted(REGISTRY.items()):
                for conv in ("keras", "torch"):
                    params = [rng.standard_normal(n).astype(dt) for n, dt in
                              [(0, np.float32), (1, np.float64), (37, np.float32),
                               (5000, np.float64), (9000, np.float32)]]
                    try:
                        opt = cls(params, convention=conv)
                    except ValueError:
                        continue
                    for threads, threshold in ((1, 10**9), (2, 0)):
                        _core.set_parallel_threshold(threshold)
                        opt.num_threads = threads
                        for k in range(3):
                            grads = [rng.standard_normal(p.shape).astype(p.dtype)
                                     for p in params]
                            if k == 1:
                                grads[2] = None
                            opt.step(grads)
                    eng = opt._engine
                    eng.set_grads([rng.standard_normal(p.shape).astype(p.dtype)
                                   for p in params])
                    eng.sumsq(0, 2)
                    eng.sumsq(1, 2)
                    eng.nonfinite(2)
                    eng.clear_grads()
                    for bad in ([params[0].astype(np.float64)] + params[1:],
                                [params[0], params[1], params[2]],
                                params[:1] + [params[1][::-1].copy()] + params[2:]):
                        try:
                            opt.step(bad)
                        except (TypeError, ValueError):
                            pass
                    path = os.path.join(tmp, f"{name}.npz")
                    fo.save(path, opt)
                    fo.load(path, opt)
                    del opt
            _compact_workload(rng, tmp)
    print("workload done")


def _compact_workload(rng, tmp):
    """Compact storage: int8, bfloat16 and float16 state, 16-bit params and
    grads, a master copy, clipping of 16-bit grads, a checkpoint."""
    import numpy as np

    import fastopt as fo
    try:
        import ml_dtypes
    except ImportError:
        return
    bf16 = ml_dtypes.bfloat16
    sizes = [(37, np.float32), (5000, np.float32), (9000, bf16), (300, np.float16)]
    for kw in ({"state_dtype": "int8", "min_8bit_size": 0}, {"state_dtype": "bfloat16"},
               {"state_dtype": "float16", "global_clipnorm": 1.0},
               {"master_weights": True, "state_dtype": "int8", "skip_nonfinite": True}):
        params = [rng.standard_normal(n).astype(dt) for n, dt in sizes]
        opt = fo.Adam(params, **kw)
        for k in range(3):
            grads = [rng.standard_normal(p.shape).astype(bf16 if k == 1 and p.dtype ==
                                                           np.float32 else p.dtype)
                     for p in params]
            opt.step(grads)
        path = os.path.join(tmp, "compact.npz")
        fo.save(path, opt)
        fo.load(path, opt)
        del opt


def _frames_in_fastopt(stack):
    for frame in stack.iter("frame"):
        obj = frame.findtext("obj") or ""
        fil = frame.findtext("file") or ""
        if "fastopt" in os.path.basename(obj) or "_core" in os.path.basename(obj) \
                or fil.endswith((".c", ".h", ".pyx")) and ("driver" in fil or "kernel" in fil
                                                          or "_core" in fil):
            return True
    return False


def _in_module_init(stack):
    """Allocated once per process: at import, or for libgomp's thread pool
    (its threads live until exit and are reused by every parallel region)."""
    fns = [f.findtext("fn") or "" for f in stack.iter("frame")]
    if any(fn.startswith(("__pyx_pymod_exec", "__pyx_pymod_create", "PyInit_")) for fn in fns):
        return True
    return any(fn.startswith("pthread_create") for fn in fns) and "GOMP_parallel" in fns


def main():
    with tempfile.TemporaryDirectory() as tmp:
        xml = os.path.join(tmp, "memcheck.xml")
        env = dict(os.environ, PYTHONMALLOC="malloc", OMP_NUM_THREADS="2")
        cmd = ["valgrind", "--tool=memcheck", "--leak-check=full",
               "--errors-for-leak-kinds=definite,indirect", "--num-callers=40",
               "--xml=yes", f"--xml-file={xml}",
               sys.executable, os.path.abspath(__file__), "--workload"]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode != 0 or "workload done" not in out.stdout:
            print(out.stdout[-3000:], out.stderr[-3000:], sep="\n")
            sys.exit(f"valgrind run failed (exit {out.returncode})")
        root = ET.parse(xml).getroot()
    errors = ours_errors = lost_bytes = ours_lost_bytes = init_bytes = 0
    for err in root.iter("error"):
        kind = err.findtext("kind") or ""
        stack = err.find("stack")
        ours = stack is not None and _frames_in_fastopt(stack)
        if kind.startswith("Leak_"):
            if kind not in ("Leak_DefinitelyLost", "Leak_IndirectlyLost"):
                # possibly lost: reached only by interior pointers, as CPython's free
                # lists hold the tuples and floats they keep for reuse
                continue
            nbytes = 0
            xw = err.find("xwhat")
            if xw is not None:
                nbytes = int(xw.findtext("leakedbytes") or 0)
            lost_bytes += nbytes
            if ours and _in_module_init(stack):
                init_bytes += nbytes
            elif ours:
                ours_lost_bytes += nbytes
                print(f"LEAK in fastopt ({nbytes} bytes):", ET.tostring(err, encoding="unicode")[:2000])
            continue
        errors += 1
        if ours:
            ours_errors += 1
            print("ERROR in fastopt:", ET.tostring(err, encoding="unicode")[:3000])
    print(f"valgrind memcheck: {ours_errors} errors in fastopt frames "
          f"({errors} in the whole process), {ours_lost_bytes} bytes definitely/indirectly "
          f"lost from fastopt frames after import ({init_bytes} once at import, "
          f"{lost_bytes} in the whole process)")
    sys.exit(1 if ours_errors or ours_lost_bytes else 0)


if __name__ == "__main__":
    if "--workload" in sys.argv:
        workload()
    else:
        main()
