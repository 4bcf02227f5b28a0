// The one file that declares mmhost._C's Python bindings (imported only by
// mmhost/kernels/_native.py). Kernels live in their own .cpp files, declared in mmhost.h.

#include <torch/extension.h>

#include "mmhost.h"

namespace py = pybind11;

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "mmhost C++ CPU kernels; see mmhost/kernels/*.py for each op's contract.";

  // The GIL is released for the whole call: kernels touch no Python objects, and other request
  // threads can keep decoding and batching while a batch is scored.
  m.def("linear_forward", &mmhost::linear_forward,
        R"doc(Score every row of x with the model in its slot (fused multi-model linear).

out[i] = link[s](weight[s] @ x[i] + bias[s]) with s = slots[i]; link 0 identity,
1 sigmoid (elementwise), 2 softmax over the K outputs.

Args:
    x: (N, D) float32, contiguous, CPU.
    slots: (N,) int64, each in [0, S).
    weight: (S, K, D) float32, contiguous.
    bias: (S, K) float32, contiguous.
    link: (S,) int8.

Returns:
    (N, K) float32.

Raises:
    RuntimeError: on a wrong dtype, device, layout or shape, or a slot outside [0, S).
)doc",
        py::arg("x"), py::arg("slots"), py::arg("weight"), py::arg("bias"), py::arg("link"),
        py::call_guard<py::gil_scoped_release>());
}
