"""Build of fastopt's one extension: fastopt._core (Cython + the C engine in csrc/).

OpenMP is found by compiling, linking and running a tiny program.  Without it
the build warns loudly and goes serial; FASTOPT_REQUIRE_OPENMP=1 turns that
into an error.  The wheel is not tuned to the build machine: SIMD variants are compiled side by side
and chosen at run time (csrc/variants.h).
"""
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import types
from concurrent.futures import ThreadPoolExecutor
from glob import glob

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

BASE_FLAGS = ["-std=c99", "-O3", "-fno-math-errno", "-ffp-contract=off", "-fvisibility=hidden"]
OPENMP_FLAGS = ["-fopenmp"]

PROBE = r"""
#include <omp.h>
#include <stdio.h>
int main(void) {
    int n = 0;
    #pragma omp parallel reduction(+:n)
    n += 1;
    printf("%d\n", n);
    return n >= 1 ? 0 : 1;
}
"""


def _compiler():
    return os.environ.get("CC") or sysconfig.get_config_var("CC").split()[0] or "cc"


def openmp_works():
    """Compile, link and run a parallel region; True only if all three work."""
    cc = _compiler()
    if shutil.which(cc) is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "probe.c")
        exe = os.path.join(tmp, "probe")
        with open(src, "w") as f:
            f.write(PROBE)
        try:
            subprocess.run([cc, *OPENMP_FLAGS, src, "-o", exe], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run([exe], check=True, stdout=subprocess.DEVNULL, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
    return True


def build_flags():
    require = os.environ.get("FASTOPT_REQUIRE_OPENMP", "") not in ("", "0")
    if os.environ.get("FASTOPT_DISABLE_OPENMP", "") not in ("", "0"):
        have = False
    else:
        have = openmp_works()
    if not have:
        msg = ("fastopt: OpenMP was not found (compile, link or run of a test program failed); "
               "building a SERIAL engine. Install a compiler with OpenMP (gcc, or clang + libomp).")
        if require:
            sys.exit(msg + " FASTOPT_REQUIRE_OPENMP is set: stopping.")
        print("\n" + "*" * 78 + "\n" + msg + "\n" + "*" * 78 + "\n", file=sys.stderr)
        return BASE_FLAGS, []
    return BASE_FLAGS + OPENMP_FLAGS, OPENMP_FLAGS


def _compile_in_parallel(self, sources, output_dir=None, macros=None, include_dirs=None,
                         debug=0, extra_preargs=None, extra_postargs=None, depends=None):
    """CCompiler.compile, one source file per CPU at a time: the kernels are
    compiled for several SIMD variants each, so a serial build is slow."""
    macros, objects, extra_postargs, pp_opts, build = self._setup_compile(
        output_dir, macros, include_dirs, sources, depends, extra_postargs)
    cc_args = self._get_cc_args(pp_opts, debug, extra_preargs)

    def one(obj):
        if obj in build:
            src, ext = build[obj]
            self._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

    with ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        list(pool.map(one, objects))
    return objects


class ParallelBuildExt(build_ext):
    def build_extensions(self):
        if hasattr(self.compiler, "_setup_compile") and hasattr(self.compiler, "_compile"):
            self.compiler.compile = types.MethodType(_compile_in_parallel, self.compiler)
        super().build_extensions()


compile_args, link_args = build_flags()

ext = Extension(
    "fastopt._core",
    sources=["fastopt/_core.pyx", "csrc/driver.c", "csrc/compact.c", *sorted(glob("csrc/kernels/*.c"))],
    include_dirs=["csrc", np.get_include()],
    depends=sorted(glob("csrc/*.h") + glob("csrc/*.def")),
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(ext_modules=cythonize([ext], language_level=3), cmdclass={"build_ext": ParallelBuildExt})
