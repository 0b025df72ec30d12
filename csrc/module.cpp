// pybind11 bindings of megatron_lang._C (the project's C++ hot loops).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <tuple>
#include <vector>

#include "blend_index.h"

namespace py = pybind11;

namespace {

std::tuple<py::array_t<int16_t>, py::array_t<int64_t>, py::array_t<int64_t>>
build_capped_blend_index_py(
    const py::array_t<double, py::array::c_style | py::array::forcecast>& weights,
    const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& caps, int64_t size) {
  if (weights.ndim() != 1 || caps.ndim() != 1) {
    throw std::invalid_argument("capped blend index: weights and caps must be 1-D");
  }
  std::vector<double> w(weights.data(), weights.data() + weights.size());
  std::vector<int64_t> c(caps.data(), caps.data() + caps.size());
  megatron_lang::check_capped_blend_inputs(w, c, size);

  py::array_t<int16_t> dataset_index(size);
  py::array_t<int64_t> dataset_sample_index(size);
  py::array_t<int64_t> drawn(static_cast<py::ssize_t>(w.size()));
  int16_t* di = dataset_index.mutable_data();
  int64_t* dsi = dataset_sample_index.mutable_data();
  int64_t* dr = drawn.mutable_data();
  {
    py::gil_scoped_release release;
    megatron_lang::build_capped_blend_index(w, c, size, di, dsi, dr);
  }
  return {dataset_index, dataset_sample_index, drawn};
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "megatron_lang C++ extension: hot index-building loops";
  m.def("build_capped_blend_index", &build_capped_blend_index_py, py::arg("weights"),
        py::arg("caps"), py::arg("size"),
        R"doc(Capped blend index.

Args:
    weights: float64[n], > 0 (need not sum to 1).
    caps: int64[n], the most samples drawable from each source (>= 0).
    size: number of samples to produce; must not exceed sum(caps).

Returns:
    (dataset_index int16[size], dataset_sample_index int64[size], drawn int64[n]).

Raises:
    ValueError: invalid inputs or caps that cannot supply ``size`` samples.
)doc");
}
