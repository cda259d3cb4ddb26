// Autocast: under torch.autocast the box ops run in float32. Pixel-box areas
// overflow float16 (300 x 300 > 65504) and NMS decisions flip with rounding, so
// the kernels never see reduced-precision boxes; box_iou then returns float32.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace nasx::ops {
namespace {

template <c10::DispatchKey Key, c10::DeviceType Dev>
struct Autocast {
  static at::Tensor f32(const at::Tensor& t) { return at::autocast::cached_cast(at::kFloat, t, Dev); }

  template <typename Sig>
  static auto op(const char* name) {
    return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Sig>();
  }

  static at::Tensor box_iou(const at::Tensor& a, const at::Tensor& b) {
    c10::impl::ExcludeDispatchKeyGuard guard(Key);
    static auto o = op<at::Tensor(const at::Tensor&, const at::Tensor&)>("nasx::box_iou");
    return o.call(f32(a), f32(b));
  }

  static at::Tensor generalized_box_iou(const at::Tensor& a, const at::Tensor& b) {
    c10::impl::ExcludeDispatchKeyGuard guard(Key);
    static auto o = op<at::Tensor(const at::Tensor&, const at::Tensor&)>("nasx::generalized_box_iou");
    return o.call(f32(a), f32(b));
  }

  static at::Tensor nms(const at::Tensor& boxes, const at::Tensor& scores, double thr) {
    c10::impl::ExcludeDispatchKeyGuard guard(Key);
    static auto o = op<at::Tensor(const at::Tensor&, const at::Tensor&, double)>("nasx::nms");
    return o.call(f32(boxes), f32(scores), thr);
  }

  static at::Tensor batched_nms(const at::Tensor& boxes, const at::Tensor& scores, const at::Tensor& idxs,
                                double thr) {
    c10::impl::ExcludeDispatchKeyGuard guard(Key);
    static auto o =
        op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double)>("nasx::batched_nms");
    return o.call(f32(boxes), f32(scores), idxs, thr);
  }

  static std::tuple<at::Tensor, at::Tensor> soft_nms(const at::Tensor& boxes, const at::Tensor& scores,
                                                     double iou_threshold, double sigma, double score_threshold,
                                                     c10::string_view method) {
    c10::impl::ExcludeDispatchKeyGuard guard(Key);
    static auto o = op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, double, double,
                                                          double, c10::string_view)>("nasx::soft_nms");
    return o.call(f32(boxes), f32(scores), iou_threshold, sigma, score_threshold, method);
  }

  static void register_all(torch::Library& m) {
    m.impl("box_iou", &box_iou);
    m.impl("generalized_box_iou", &generalized_box_iou);
    m.impl("nms", &nms);
    m.impl("batched_nms", &batched_nms);
    m.impl("soft_nms", &soft_nms);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(nasx, AutocastCPU, m) {
  Autocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>::register_all(m);
}

TORCH_LIBRARY_IMPL(nasx, AutocastCUDA, m) {
  Autocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>::register_all(m);
}

}  // namespace nasx::ops
