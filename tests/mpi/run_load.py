"""Rank script: try to load the sharded checkpoint <argv[2]> for case argv[3]
with this launch's world size; report the error to <argv[1]>/result.rank<k>.json."""
import os
import sys

from mpi4py import MPI

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

from fastopt.distributed import ShardedOptimizer  # noqa: E402

comm = MPI.COMM_WORLD
cls, kwargs, dtypes, options = common.CASES[sys.argv[3]]
params = common.init(dtypes)
opt = ShardedOptimizer(cls, common.params_arg(params, options), comm, **kwargs)
try:
    opt.load(sys.argv[2])
    error = None
except ValueError as e:
    error = str(e)
common.report(sys.argv[1], comm.Get_rank(), {"error": error, "iterations": opt.iterations})
