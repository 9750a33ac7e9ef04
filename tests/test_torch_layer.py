"""What fastopt.torch needs from fastopt, checked without torch: the import
message, and the engine's binding of grads by address."""
import subprocess
import sys

import numpy as np
import pytest

import fastopt as fo


def test_import_without_torch_says_how_to_install():
    code = ("import sys; sys.modules['torch'] = None\n"
            "try:\n    import fastopt.torch\nexcept ImportError as e:\n    print(e)\n"
            "else:\n    print('imported')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert "pip install 'fastopt[torch]'" in out


def test_engine_binds_grads_by_address_and_refuses_aliasing():
    """The hook fastopt.torch binds grads with (no torch needed): addresses
    that the caller vouches for, checked for aliasing like array grads."""
    w, g = np.ones(5), np.full(5, 0.5)
    opt = fo.SGD([w, np.zeros(3)], learning_rate=0.1, convention="torch")
    opt._stepper.step([g.ctypes.data, None], True)
    np.testing.assert_allclose(w, 0.95)
    for bad, match in (([w.ctypes.data, None], r"grads\[0\] shares memory with params\[0\]"),
                       ([w.ctypes.data + 8, None], r"grads\[0\] shares memory"),
                       ([0, None], "null address"),
                       ([g.ctypes.data], "expected 2 grad addresses")):
        with pytest.raises(ValueError, match=match):
            opt._stepper.step(bad, True)
    np.testing.assert_allclose(w, 0.95)
    assert opt.iterations == 1
