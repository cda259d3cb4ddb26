// Schemas of the Pareto ops (objectives are minimised). Kernels:
// cpu/{non_dominated_sort,crowding_distance,hypervolume,partial_order_prune}_kernel.cpp
// and the .cu files of the same names under cuda/.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(nasx, m) {
  m.def("non_dominated_sort(Tensor objectives) -> Tensor");
  m.def("crowding_distance(Tensor objectives, Tensor ranks) -> Tensor");
  m.def("hypervolume(Tensor points, Tensor reference) -> Tensor");
  m.def(
      "partial_order_prune(Tensor candidates, Tensor candidate_cost, Tensor evaluated, Tensor evaluated_cost, "
      "Tensor evaluated_acc) -> Tensor");
}
