// Autocast for the feature-map ops: under torch.autocast they compute in float32
// (bilinear weights and sums lose too much in float16) and, like torchvision's,
// return the dtype of their input.
#include <ATen/autocast_mode.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

namespace nasx::ops {
namespace {

template <c10::DispatchKey Key, c10::DeviceType Dev>
struct FeatureAutocast {
  static at::Tensor f32(const at::Tensor& t) { return at::autocast::cached_cast(at::kFloat, t, Dev); }
  static std::optional<at::Tensor> f32(const std::optional<at::Tensor>& t) {
    return t.has_value() && t->defined() ? std::optional<at::Tensor>(f32(*t)) : t;
  }

  static at::Tensor roi_align(const at::Tensor& input, const at::Tensor& rois, double scale, int64_t ph, int64_t pw,
                              int64_t sampling_ratio, bool aligned) {
    c10::impl::ExcludeDispatchKeyGuard guard(Key);
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("nasx::roi_align", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, int64_t, int64_t, int64_t,
                                           bool)>();
    return op.call(f32(input), f32(rois), scale, ph, pw, sampling_ratio, aligned).to(input.scalar_type());
  }

  static at::Tensor deform_conv2d(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                                  const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& bias,
                                  int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw) {
    c10::impl::ExcludeDispatchKeyGuard guard(Key);
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("nasx::deform_conv2d", "")
                         .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                           const std::optional<at::Tensor>&, const std::optional<at::Tensor>&, int64_t,
                                           int64_t, int64_t, int64_t, int64_t, int64_t)>();
    return op.call(f32(input), f32(weight), f32(offset), f32(mask), f32(bias), sh, sw, ph, pw, dh, dw)
        .to(input.scalar_type());
  }

  static void register_all(torch::Library& m) {
    m.impl("roi_align", &roi_align);
    m.impl("deform_conv2d", &deform_conv2d);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(nasx, AutocastCPU, m) {
  FeatureAutocast<c10::DispatchKey::AutocastCPU, c10::DeviceType::CPU>::register_all(m);
}

TORCH_LIBRARY_IMPL(nasx, AutocastCUDA, m) {
  FeatureAutocast<c10::DispatchKey::AutocastCUDA, c10::DeviceType::CUDA>::register_all(m);
}

}  // namespace nasx::ops
