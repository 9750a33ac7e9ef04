"""fastopt updates NumPy views of memory owned by something else, in place:
a bytearray, an mmap'ed file and, when torch is installed, CPU tensors
(``tensor.detach().numpy()`` shares the tensor's memory)."""
import mmap

import numpy as np
import pytest

import fastopt as fo

from optim_db import info


def test_view_of_a_bytearray_is_updated_in_place():
    buf = bytearray(np.arange(4, dtype=np.float64).tobytes())
    w = np.frombuffer(buf, dtype=np.float64)          # writable view, owns nothing
    opt = fo.SGD([w], learning_rate=0.5)
    opt.step([np.ones(4)])
    assert np.frombuffer(bytes(buf), dtype=np.float64).tolist() == [-0.5, 0.5, 1.5, 2.5]


def test_view_of_an_mmap_is_updated_in_place(tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(np.ones(8, dtype=np.float32).tobytes())
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as mm:
        w = np.frombuffer(mm, dtype=np.float32)
        opt = fo.Adam([w], learning_rate=0.25)
        opt.step([np.full(8, 3.0, dtype=np.float32)])
        del w, opt                                    # release the buffer before closing
        mm.flush()
    np.testing.assert_allclose(np.fromfile(path, dtype=np.float32), 0.75, rtol=1e-6)


def test_read_only_foreign_memory_is_refused_not_copied():
    w = np.frombuffer(bytes(16), dtype=np.float64)   # read-only, like a JAX array's view
    with pytest.raises(ValueError, match=r"params\[0\]: the array is read-only"):
        fo.SGD([w])


try:
    import torch
except ImportError:
    torch = None

requires_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


@requires_torch
def test_torch_tensor_numpy_shares_memory_and_is_updated():
    t = torch.zeros(3, 4)
    w = t.numpy()
    assert np.shares_memory(w, t.numpy())
    opt = fo.SGD([w], learning_rate=0.1)
    opt.step([np.ones((3, 4), dtype=np.float32)])
    assert torch.equal(t, torch.full((3, 4), -0.1))


@requires_torch
@pytest.mark.parametrize("name,kwargs", [
    ("SGD", {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    ("Adam", {"lr": 0.01}),
    ("AdamW", {"lr": 0.01, "weight_decay": 0.1}),
])
def test_torch_model_trained_through_numpy_views_matches_torch_optim(name, kwargs):
    """fastopt (torch convention) on ``p.detach().numpy()`` with grads from
    ``p.grad.numpy()`` follows torch.optim on an identical model."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    twin = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2))
    twin.load_state_dict(model.state_dict())
    params = list(model.parameters())
    views = [p.detach().numpy() for p in params]     # share memory with the parameters
    ours = getattr(fo, name)(views, convention="torch", **kwargs)
    theirs = getattr(torch.optim, info(name).torch_name)(twin.parameters(), **kwargs)
    x, y = torch.randn(32, 6), torch.randn(32, 2)
    for _ in range(20):
        for m in (model, twin):
            m.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
        ours.step([p.grad.numpy() for p in params])
        theirs.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-6)
    assert not torch.equal(params[0], torch.nn.Linear(6, 5).weight)   # it did train


@requires_torch
def test_non_contiguous_tensor_view_is_refused():
    t = torch.zeros(4, 3)
    with pytest.raises(ValueError, match=r"params\[0\]: expected a C-contiguous array"):
        fo.SGD([t.T.numpy()])


@requires_torch
def test_tensor_that_requires_grad_needs_detach():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(RuntimeError):
        p.numpy()                                      # torch refuses: use p.detach().numpy()
    w = p.detach().numpy()
    fo.SGD([w], learning_rate=1.0).step([np.ones(3, dtype=np.float32)])
    assert p.data.tolist() == [-1.0, -1.0, -1.0]
