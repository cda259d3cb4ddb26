// CPU kernels of sigmoid_focal_loss and its backward.
//
// torchvision evaluates the focal loss as ~12 separate tensor ops forward and
// twice as many in autograd's backward, each a full pass over memory. Here the
// forward is one pass and the backward another. The forward reproduces
// torchvision's result bit for bit (focal_loss_math.h): its exp, log1p and pow
// are torch's own CPU functions (TorchMath), including the few elements that
// torch.sigmoid and torch.pow compute on their scalar path. Reductions add
// per-chunk double sums in a fixed order (independent of the thread count).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <tuple>
#include <utility>
#include <vector>

#include "ops/assign_checks.h"
#include "ops/cpu/simd.h"
#include "ops/cpu/torch_math.h"
#include "ops/focal_loss_math.h"

namespace nasx::ops {
namespace {

constexpr int64_t kGrain = 16384;  // elements per parallel chunk
constexpr int64_t kBlock = 256;    // elements per block: the block's buffers stay in L1

using Tails = std::vector<std::pair<int64_t, int64_t>>;

// FocalCore and m = (1 - p_t) ** gamma of up to kBlock elements, structure of arrays.
template <typename T>
struct Block {
  T p[kBlock], ce[kBlock], q[kBlock], a[kBlock], m[kBlock];
  FocalCore<T> core(int64_t i) const { return {p[i], ce[i], q[i], a[i]}; }
};

// The element-wise arithmetic between the transcendental calls; compiled for AVX2
// and baseline (exact IEEE operations either way: no FMA contraction).
template <typename T>
NASX_ALWAYS_INLINE void core_body(const T* __restrict x, const T* __restrict t, const T* __restrict e1,
                                  const T* __restrict e2, int64_t len, const FocalParams<T>& prm, Block<T>& b) {
  for (int64_t i = 0; i < len; ++i) {
    const auto c = focal_core(x[i], t[i], FocalExp<T>{e1[i], e2[i]}, prm);
    b.p[i] = c.p;
    b.ce[i] = c.ce;
    b.q[i] = c.q;
    b.a[i] = c.a;
    b.m[i] = focal_pow(c.q, prm.pow);
  }
}
NASX_SIMD_CLONES void core_loop(const float* x, const float* t, const float* e1, const float* e2, int64_t len,
                                const FocalParams<float>& prm, Block<float>& b) {
  core_body(x, t, e1, e2, len, prm, b);
}
NASX_SIMD_CLONES void core_loop(const double* x, const double* t, const double* e1, const double* e2, int64_t len,
                                const FocalParams<double>& prm, Block<double>& b) {
  core_body(x, t, e1, e2, len, prm, b);
}

// Gradients of a block: grad per element (g) or one `scale` for all; compiled for
// AVX2 and baseline like core_loop.
template <typename T, bool WithTargets>
NASX_ALWAYS_INLINE void grad_body(const T* __restrict x, const T* __restrict t, const T* __restrict g, T scale,
                                  int64_t len, const FocalParams<T>& prm, const Block<T>& b, T* __restrict dx,
                                  T* __restrict dt) {
  if (g) {
    for (int64_t i = 0; i < len; ++i) focal_grad<T, WithTargets>(x[i], t[i], b.core(i), b.m[i], prm, g[i], dx + i, WithTargets ? dt + i : nullptr);
  } else {
    for (int64_t i = 0; i < len; ++i) focal_grad<T, WithTargets>(x[i], t[i], b.core(i), b.m[i], prm, scale, dx + i, WithTargets ? dt + i : nullptr);
  }
}
#define NASX_GRAD_LOOP(T)                                                                                      \
  NASX_SIMD_CLONES void grad_loop(const T* x, const T* t, const T* g, T scale, int64_t len,                    \
                                  const FocalParams<T>& prm, const Block<T>& b, T* dx, T* dt) {                \
    if (dt) {                                                                                                  \
      grad_body<T, true>(x, t, g, scale, len, prm, b, dx, dt);                                                 \
    } else {                                                                                                   \
      grad_body<T, false>(x, t, g, scale, len, prm, b, dx, dt);                                                \
    }                                                                                                          \
  }
NASX_GRAD_LOOP(float)
NASX_GRAD_LOOP(double)
#undef NASX_GRAD_LOOP

// Block of len elements. `scalar`: as torch's scalar path of torch.sigmoid and
// torch.pow (libm exp; pow raised in double for a float tensor, the exponent
// being a Python float); else their vector path (TorchMath). log_sigmoid has no
// scalar path in torch: always TorchMath.
template <typename T>
void eval_block(const TorchMath& tm, const T* x, const T* t, int64_t len, const FocalParams<T>& prm, bool scalar,
                Block<T>& b) {
  T e1[kBlock], e2[kBlock];
  for (int64_t i = 0; i < len; ++i) {
    e1[i] = -x[i];
    e2[i] = -std::fabs(x[i]);
  }
  if (scalar) {
    for (int64_t i = 0; i < len; ++i) e1[i] = std::exp(e1[i]);
  } else {
    tm.exp(e1, e1, len);
  }
  tm.exp(e2, e2, len);
  tm.log1p(e2, e2, len);
  core_loop(x, t, e1, e2, len, prm, b);
  if (prm.pow == FocalPow::Sqrt) tm.sqrt(b.q, b.m, len);  // torch.sqrt: MKL's, not libm's
  if (prm.pow != FocalPow::General) return;
  if (scalar) {
    for (int64_t i = 0; i < len; ++i) b.m[i] = static_cast<T>(std::pow(static_cast<double>(b.q[i]), prm.gamma_d));
  } else {
    tm.pow(b.q, prm.gamma, b.m, len);
  }
}

// Losses of elements [begin, end) into out[0, end - begin), then the elements
// torch computes on its scalar path (tails, global indices) recomputed so.
template <typename T>
void loss_range(const TorchMath& tm, const T* x, const T* t, int64_t begin, int64_t end, const FocalParams<T>& prm,
                const Tails& tails, T* out) {
  Block<T> b;
  const auto run = [&](int64_t s, int64_t e, bool scalar) {
    for (int64_t i = s; i < e; i += kBlock) {
      const int64_t len = std::min(kBlock, e - i);
      eval_block(tm, x + i, t + i, len, prm, scalar, b);
      for (int64_t k = 0; k < len; ++k) out[i - begin + k] = focal_finish(b.core(k), b.m[k], prm);
    }
  };
  run(begin, end, false);
  for (const auto& [ts, te] : tails) {
    const int64_t s = std::max(ts, begin), e = std::min(te, end);
    if (s < e) run(s, e, true);
  }
}

at::Tensor sigmoid_focal_loss_cpu(const at::Tensor& inputs, const at::Tensor& targets, double alpha, double gamma,
                                  c10::string_view reduction) {
  const auto f = prepare_focal(inputs, targets, alpha, gamma, reduction);
  const int64_t n = f.n;
  const TorchMath& tm = TorchMath::get();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(f.dtype, "sigmoid_focal_loss", [&] {
    using T = scalar_t;
    const FocalParams<T> prm(alpha, gamma);
    const T* px = f.x.const_data_ptr<T>();
    const T* pt = f.t.const_data_ptr<T>();
    // Where torch.sigmoid / torch.pow take their scalar path over this many elements.
    const Tails tails = tm.scalar_tails<T>(n);
    if (f.reduction == Reduction::None) {
      out = at::empty(f.x.sizes(), f.x.options());
      T* po = out.mutable_data_ptr<T>();
      at::parallel_for(0, n, kGrain, [&](int64_t b, int64_t e) { loss_range(tm, px, pt, b, e, prm, tails, po + b); });
      return;
    }
    const int64_t chunks = (n + kGrain - 1) / kGrain;
    std::vector<double> partial(chunks, 0.0);
    at::parallel_for(0, chunks, 1, [&](int64_t cb, int64_t ce) {
      std::vector<T> buf(kGrain);
      for (int64_t c = cb; c < ce; ++c) {
        const int64_t begin = c * kGrain, end = std::min(n, begin + kGrain);
        loss_range(tm, px, pt, begin, end, prm, tails, buf.data());
        double acc = 0;
        for (int64_t i = 0; i < end - begin; ++i) acc += buf[i];
        partial[c] = acc;
      }
    });
    double total = 0;
    for (double v : partial) total += v;
    if (f.reduction == Reduction::Mean) total /= static_cast<double>(n);  // 0/0 = nan for empty input, as torch
    out = at::scalar_tensor(total, f.x.options());
  });
  return out.scalar_type() == f.out_dtype ? out : out.to(f.out_dtype);
}

std::tuple<at::Tensor, at::Tensor> sigmoid_focal_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& inputs,
                                                                   const at::Tensor& targets, double alpha,
                                                                   double gamma, c10::string_view reduction,
                                                                   bool targets_grad) {
  const auto f = prepare_focal_backward(grad, inputs, targets, alpha, gamma, reduction);
  const int64_t n = f.n;
  const TorchMath& tm = TorchMath::get();
  auto dx = at::empty(f.x.sizes(), f.x.options());
  auto dt = targets_grad ? at::empty(f.x.sizes(), f.x.options()) : at::empty({0}, f.x.options());
  AT_DISPATCH_FLOATING_TYPES(f.dtype, "sigmoid_focal_loss", [&] {
    using T = scalar_t;
    const FocalParams<T> prm(alpha, gamma);
    const T* px = f.x.const_data_ptr<T>();
    const T* pt = f.t.const_data_ptr<T>();
    const T* pg = f.grad.const_data_ptr<T>();
    T* pdx = dx.mutable_data_ptr<T>();
    T* pdt = targets_grad ? dt.mutable_data_ptr<T>() : nullptr;
    const bool per_element = f.reduction == Reduction::None;
    T scale = per_element ? T(1) : pg[0];
    if (f.reduction == Reduction::Mean) scale = scale / static_cast<T>(n);  // torch's mean backward divides
    at::parallel_for(0, n, kGrain, [&](int64_t begin, int64_t end) {
      Block<T> b;
      for (int64_t i = begin; i < end; i += kBlock) {
        const int64_t len = std::min(kBlock, end - i);
        eval_block(tm, px + i, pt + i, len, prm, false, b);
        grad_loop(px + i, pt + i, per_element ? pg + i : nullptr, scale, len, prm, b, pdx + i, pdt ? pdt + i : nullptr);
      }
    });
  });
  return {dx.to(inputs.scalar_type()), targets_grad ? dt.to(targets.scalar_type()) : at::empty({0}, targets.options())};
}

}  // namespace

TORCH_LIBRARY_IMPL(nasx, CPU, m) {
  m.impl("sigmoid_focal_loss", &sigmoid_focal_loss_cpu);
  m.impl("sigmoid_focal_loss_backward", &sigmoid_focal_loss_backward_cpu);
}

}  // namespace nasx::ops
