// fastopt.torch's per-step binding of a param group, in one C++ pass.
//
// A step must read each param's .grad, check it (dense, on the CPU, of the
// param's dtype and size, contiguous), take its address, keep it alive while
// the kernels run, and tell autograd afterwards that each stepped param was
// written in place.  From Python that is five or six calls into torch per
// tensor (about 0.4 us each time a 404-tensor model steps); here it is one
// loop over the at::Tensor handles kept from the bind.
//
// Built on first use with torch.utils.cpp_extension (fastopt/torch.py); any
// failure leaves the Python path, which gives the same results.  A Binder
// keeps only what the bind fixed; each step's addresses and grads live in its
// own Step, so steps of one optimizer from two threads share nothing here.
// Anything the fast check does not accept (a param replaced or re-pointed, a grad of
// another layout, dtype, size or stride, an empty grad) is handed back to the
// Python path by index, which rebinds the group or raises its own message.
#include <torch/extension.h>
#include <torch/csrc/autograd/variable.h>
#include <pybind11/numpy.h>

#include <cstdint>
#include <memory>
#include <vector>

namespace {

// One step's binding: its grads' addresses (0: no grad), and the grads
// themselves, held until the step is done with them (the object is dropped).
struct Step {
    int64_t status = 0;     // -1 - (number of grads): all passed; else the index to check
    pybind11::array_t<int64_t> addrs;
    std::vector<at::Tensor> held;
};

struct Binder {
    std::vector<at::Tensor> params;
    std::vector<PyObject *> objects;   // the bound Parameter objects (the group holds them)
    std::vector<void *> ptrs;
    std::vector<int64_t> nbytes;

    explicit Binder(const pybind11::list &ps)
    {
        for (const auto &h : ps) {
            params.push_back(h.cast<at::Tensor>());
            objects.push_back(h.ptr());
            ptrs.push_back(params.back().data_ptr());
            nbytes.push_back(static_cast<int64_t>(params.back().nbytes()));
        }
    }

    // The step's binding of the group's list `ps`: status < 0 when every
    // param and grad passed, else the index of the first that needs the
    // checked path (nothing held then).
    std::unique_ptr<Step> gather(const pybind11::list &ps) const
    {
        const size_t n = params.size();
        auto st = std::make_unique<Step>();
        if (static_cast<size_t>(PyList_GET_SIZE(ps.ptr())) != n)
            return st;
        st->addrs = pybind11::array_t<int64_t>(static_cast<pybind11::ssize_t>(n));
        int64_t *out = st->addrs.mutable_data();
        st->held.reserve(n);
        auto checked_path = [&st](size_t i) {
            st->status = static_cast<int64_t>(i);
            st->held.clear();
            return std::move(st);
        };
        int64_t present = 0;
        for (size_t i = 0; i < n; i++) {
            const at::Tensor &p = params[i];
            if (PyList_GET_ITEM(ps.ptr(), i) != objects[i] || p.data_ptr() != ptrs[i] ||
                static_cast<int64_t>(p.nbytes()) != nbytes[i])
                return checked_path(i);
            const at::Tensor &g = p.grad();
            if (!g.defined()) {
                out[i] = 0;
                continue;
            }
            if (g.layout() != c10::kStrided || !g.device().is_cpu() ||
                g.scalar_type() != p.scalar_type() ||
                static_cast<int64_t>(g.nbytes()) != nbytes[i] || nbytes[i] == 0 ||
                !g.is_contiguous() || g.data_ptr() == nullptr)
                return checked_path(i);
            out[i] = reinterpret_cast<int64_t>(g.data_ptr());
            st->held.push_back(g);
            present++;
        }
        st->status = -1 - present;
        return st;
    }

    // After the step: the params stepped were written in place, as torch's
    // own in-place updates record (autograd refuses a graph that saved them).
    void bump(const Step &st) const
    {
        const int64_t *a = st.addrs.data();
        for (size_t i = 0; i < params.size(); i++)
            if (a[i] != 0)
                torch::autograd::impl::bump_version(params[i]);
    }
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    pybind11::class_<Step>(m, "Step")
        .def_readonly("status", &Step::status)
        .def_readonly("addrs", &Step::addrs);
    pybind11::class_<Binder>(m, "Binder")
        .def(pybind11::init<const pybind11::list &>())
        .def("gather", &Binder::gather)
        .def("bump", &Binder::bump);
}
