"""How fastopt's OpenMP threads wait between steps.

After a parallel region, libgomp's worker threads spin for ``GOMP_SPINCOUNT``
``pause`` instructions before they sleep: 300 000 by default, milliseconds.
In a training loop that spin can take a core from the BLAS threads of the
next matmul or from another process; sleeping at once instead
(``OMP_WAIT_POLICY=passive``), or after a short spin, makes every step that
follows a pause pay for waking its workers, which on a virtual machine can
cost more than the split saves (``python bench/run.py --in-loop``).  No
single spin count is right beside BLAS, beside torch and back to back.

So fastopt leaves libgomp's own wait as it is and sizes the team instead: at
the default thread count each optimizer measures whether its loop runs faster
with its steps on one thread or on the whole team (``TeamTuner`` in
``_core.pyx``); the spin then only runs where the team pays for it.

Knobs: ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set by the user apply to
every libgomp in the process, and fastopt leaves them alone;
``FASTOPT_SPINCOUNT=N`` sets a spin count for fastopt's libgomp alone: it is
put in the environment only while ``_core`` (and so libgomp) loads, and
removed at once, so processes started later and OpenMP runtimes loaded later
(torch's own libgomp, LLVM's libomp) do not see it.  It reaches another
library only when that library links the very libgomp copy fastopt loaded:
the repaired wheel vendors a private copy (``fastopt.libs/``), a build from
source links the system's ``libgomp.so.1``; :func:`describe` (in
``fo.show_config()``) says which.  The wait policy changes only timing,
never results.
"""
import os

#: fastopt's default spin count, in libgomp's units (``pause`` instructions):
#: None leaves libgomp's own.
SPINCOUNT = None
_USER_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")

#: What :func:`import_core` did: filled once, read by :func:`describe`.
state = {"spincount": None, "source": "not loaded", "library": None, "private": None}


def _libgomp_paths():
    """Paths of the libgomp copies mapped into this process, or None where the
    process map cannot be read (not Linux)."""
    try:
        with open("/proc/self/maps") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    paths = set()
    for line in lines:
        path = line.split(maxsplit=5)[-1] if line.count(" ") >= 5 else ""
        if os.path.basename(path).startswith("libgomp"):
            paths.add(path)
    return paths


def spincount_setting():
    """(value for GOMP_SPINCOUNT or None to leave the environment alone, source);
    ImportError for a malformed ``FASTOPT_SPINCOUNT``."""
    user = [k for k in _USER_VARS if os.environ.get(k, "").strip()]
    if user:
        return None, "user: " + ", ".join(f"{k}={os.environ[k].strip()}" for k in user)
    text = os.environ.get("FASTOPT_SPINCOUNT", "").strip()
    if not text:
        return SPINCOUNT, "fastopt default: libgomp's own wait, the team measured"
    if not text.isdigit():
        raise ImportError(f"FASTOPT_SPINCOUNT must be a non-negative integer (pause instructions "
                          f"a waiting OpenMP thread spins before it sleeps; 0 sleeps at once); "
                          f"got {text!r}. Unset it to leave libgomp's own wait.")
    return int(text), "FASTOPT_SPINCOUNT"


def import_core(package, setting):
    """Import ``<package>._core`` with the wait policy ``setting`` (from
    :func:`spincount_setting`) for the libgomp it loads; record in :data:`state`
    what took effect."""
    import importlib

    spin, source = setting
    before = _libgomp_paths()
    if spin is not None:
        os.environ["GOMP_SPINCOUNT"] = str(spin)
    try:
        core = importlib.import_module(package + "._core")
    finally:
        if spin is not None:
            del os.environ["GOMP_SPINCOUNT"]
    after = _libgomp_paths()
    new = sorted(after - before) if before is not None and after is not None else []
    if not core.openmp():
        state.update(source="serial build", spincount=None)
    elif before is None:
        state.update(source=source + " (unverified: no process map)", spincount=spin)
    elif len(new) == 1:
        lib = new[0]
        private = os.path.basename(os.path.dirname(lib)).endswith(".libs")
        state.update(spincount=spin, source=source, library=lib, private=private)
    else:
        # libgomp was mapped before fastopt: its settings were read then.
        state.update(spincount=None, library=", ".join(sorted(after)) or None,
                     source="already loaded by another library: its settings apply")
    return core


def describe():
    """One line for ``show_config``: how fastopt's OpenMP threads wait."""
    s = state
    if s["source"] == "serial build":
        return "no threads (serial build)"
    if s["spincount"] is None:
        wait = "libgomp's own settings"
    else:
        wait = ("sleep at once" if s["spincount"] == 0
                else f"spin {s['spincount']} pauses, then sleep")
    if s["library"] is None or s["source"].startswith("already loaded"):
        return f"{wait} [{s['source']}]"
    scope = ("private to fastopt" if s["private"] else
             "shared with any library that links the same libgomp")
    return f"{wait} [{s['source']}; {s['library']}, {scope}]"
