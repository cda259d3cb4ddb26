// CPU kernels of sigmoid_focal_loss and its backward.
//
// torchvision evaluates the focal loss as ~12 separate tensor ops forward and
// twice as many in autograd's backward, each a full pass over memory. Here the
// forward is one pass (loss, or its sum, per element) and the backward another
// that yields the input (and optionally target) gradient from one exp and one
// log1p per element. Reductions accumulate in double per thread chunk.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <tuple>
#include <vector>

#include "ops/assign_checks.h"
#include "ops/cpu/fast_math.h"
#include "ops/cpu/simd.h"
#include "ops/focal_loss_math.h"

namespace nasx::ops {
namespace {

constexpr int64_t kGrain = 16384;

// Chunk loops, compiled for AVX2 and baseline; float32 uses the vectorisable exp/log1p.
template <typename T>
NASX_ALWAYS_INLINE void loss_body(const T* __restrict x, const T* __restrict t, int64_t n,
                                  const FocalParams<T>& prm, T* __restrict out) {
  if (prm.gamma == T(2)) {  // the usual exponent: a constant the compiler folds, so the loop has no pow
    FocalParams<T> two = prm;
    two.gamma = T(2);
    for (int64_t i = 0; i < n; ++i) out[i] = focal_loss<T, VecMath>(x[i], t[i], two);
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = focal_loss<T, VecMath>(x[i], t[i], prm);
  }
}
NASX_SIMD_CLONES void loss_chunk(const float* x, const float* t, int64_t n, const FocalParams<float>& prm, float* out) {
  loss_body(x, t, n, prm, out);
}
NASX_SIMD_CLONES void loss_chunk(const double* x, const double* t, int64_t n, const FocalParams<double>& prm,
                                 double* out) {
  loss_body(x, t, n, prm, out);
}

// grad: per element (g != nullptr) or the same `scale` everywhere.
template <typename T, bool WithTargets>
NASX_ALWAYS_INLINE void grad_body(const T* __restrict x, const T* __restrict t, const T* __restrict g, T scale,
                                  int64_t n, const FocalParams<T>& prm, T* __restrict dx, T* __restrict dt) {
  if (prm.gamma == T(2)) {  // as loss_body
    FocalParams<T> two = prm;
    two.gamma = T(2);
    if (g) {
      for (int64_t i = 0; i < n; ++i) focal_grad<T, WithTargets, VecMath>(x[i], t[i], two, g[i], dx + i, WithTargets ? dt + i : nullptr);
    } else {
      for (int64_t i = 0; i < n; ++i) focal_grad<T, WithTargets, VecMath>(x[i], t[i], two, scale, dx + i, WithTargets ? dt + i : nullptr);
    }
  } else if (g) {
    for (int64_t i = 0; i < n; ++i) focal_grad<T, WithTargets, VecMath>(x[i], t[i], prm, g[i], dx + i, WithTargets ? dt + i : nullptr);
  } else {
    for (int64_t i = 0; i < n; ++i) focal_grad<T, WithTargets, VecMath>(x[i], t[i], prm, scale, dx + i, WithTargets ? dt + i : nullptr);
  }
}
#define NASX_GRAD_CHUNK(T)                                                                                     \
  NASX_SIMD_CLONES void grad_chunk(const T* x, const T* t, const T* g, T scale, int64_t n,                     \
                                   const FocalParams<T>& prm, T* dx, T* dt) {                                  \
    if (dt) {                                                                                                  \
      grad_body<T, true>(x, t, g, scale, n, prm, dx, dt);                                                      \
    } else {                                                                                                   \
      grad_body<T, false>(x, t, g, scale, n, prm, dx, nullptr);                                                \
    }                                                                                                          \
  }
NASX_GRAD_CHUNK(float)
NASX_GRAD_CHUNK(double)
#undef NASX_GRAD_CHUNK

at::Tensor sigmoid_focal_loss_cpu(const at::Tensor& inputs_in, const at::Tensor& targets_in, double alpha,
                                  double gamma, c10::string_view reduction_name) {
  const char* op = "sigmoid_focal_loss";
  check_sigmoid_focal_loss_inputs(inputs_in, targets_in, alpha, gamma, op);
  const Reduction reduction = parse_reduction(reduction_name, op);
  const auto out_dtype = at::promote_types(inputs_in.scalar_type(), targets_in.scalar_type());
  const auto dtype = compute_dtype(out_dtype);
  const auto x = inputs_in.to(dtype).contiguous();
  const auto t = targets_in.to(dtype).contiguous();
  const int64_t n = x.numel();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(dtype, "sigmoid_focal_loss", [&] {
    const FocalParams<scalar_t> prm(alpha, gamma);
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const scalar_t* pt = t.const_data_ptr<scalar_t>();
    if (reduction == Reduction::None) {
      out = at::empty(x.sizes(), x.options());
      scalar_t* po = out.mutable_data_ptr<scalar_t>();
      at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { loss_chunk(px + b, pt + b, e - b, prm, po + b); });
      return;
    }
    // Fixed chunks, summed in order: the result does not depend on the thread count.
    const int64_t chunks = (n + kGrain - 1) / kGrain;
    std::vector<double> partial(chunks, 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
      std::vector<scalar_t> buf(kGrain);
      for (int64_t c = cb; c < ce; ++c) {
        const int64_t begin = c * kGrain, len = std::min(n, begin + kGrain) - begin;
        loss_chunk(px + begin, pt + begin, len, prm, buf.data());
        double acc = 0;
        for (int64_t i = 0; i < len; ++i) acc += buf[i];
        partial[c] = acc;
      }
    });
    double total = 0;
    for (double v : partial) total += v;
    if (reduction == Reduction::Mean) total /= static_cast<double>(n);  // 0/0 = nan for empty input, as torch
    out = at::scalar_tensor(total, x.options());
  });
  return out.scalar_type() == out_dtype ? out : out.to(out_dtype);
}

std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_backward_cpu(const at::Tensor& grad_in,
                                                                   const at::Tensor& inputs_in,
                                                                   const at::Tensor& targets_in, double alpha,
                                                                   double gamma, c10::string_view reduction_name,
                                                                   bool targets_grad) {
  const char* op = "sigmoid_focal_loss_backward";
  check_sigmoid_focal_loss_inputs(inputs_in, targets_in, alpha, gamma, op);
  const Reduction reduction = parse_reduction(reduction_name, op);
  check_float(grad_in, op, "grad");
  if (reduction == Reduction::None) {
    TORCH_CHECK_VALUE(grad_in.sizes() == inputs_in.sizes(), op, ": expected grad of shape ", inputs_in.sizes(),
                      ", got shape ", grad_in.sizes());
  } else {
    TORCH_CHECK_VALUE(grad_in.numel() == 1, op, ": expected a one-element grad for a reduced loss, got shape ",
                      grad_in.sizes());
  }
  const auto dtype = compute_dtype(at::promote_types(inputs_in.scalar_type(), targets_in.scalar_type()));
  const auto x = inputs_in.to(dtype).contiguous();
  const auto t = targets_in.to(dtype).contiguous();
  const auto g = grad_in.to(dtype).contiguous();
  const int64_t n = x.numel();
  auto dx = at::empty(x.sizes(), x.options());
  auto dt = targets_grad ? at::empty(x.sizes(), x.options()) : at::empty({0}, x.options());
  AT_DISPATCH_FLOATING_TYPES(dtype, "sigmoid_focal_loss", [&] {
    const FocalParams<scalar_t> prm(alpha, gamma);
    const scalar_t* px = x.const_data_ptr<scalar_t>();
    const scalar_t* pt = t.const_data_ptr<scalar_t>();
    const scalar_t* pg = g.const_data_ptr<scalar_t>();
    scalar_t* pdx = dx.mutable_data_ptr<scalar_t>();
    scalar_t* pdt = targets_grad ? dt.mutable_data_ptr<scalar_t>() : nullptr;
    const bool per_element = reduction == Reduction::None;
    scalar_t scale = per_element ? scalar_t(1) : pg[0];
    if (reduction == Reduction::Mean) scale = scale / static_cast<scalar_t>(n);
    at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) {
      grad_chunk(px + b, pt + b, per_element ? pg + b : nullptr, scale, e - b, prm, pdx + b, pdt ? pdt + b : nullptr);
    });
  });
  return {dx.to(inputs_in.scalar_type()), targets_grad ? dt.to(targets_in.scalar_type()) : at::empty({0}, targets_in.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("sigmoid_focal_loss", &sigmoid_focal_loss_cpu);
  m.impl("sigmoid_focal_loss_backward", &sigmoid_focal_loss_backward_cpu);
}

}  // namespace nasx::ops
