// Shapes, validation and prologue of deform_conv2d and its backward, shared by
// both backends: each entry point calls prepare() (or prepare_backward()) once.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <c10/util/Optional.h>

#include <optional>
#include <tuple>

#include "ops/feature_checks.h"

namespace nasx::ops {

struct DeformConvShape {
  int64_t batch, in_ch, height, width;
  int64_t out_ch, kh, kw, groups, offset_groups, out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
  bool use_mask;

  int64_t taps() const { return kh * kw; }                           // K
  int64_t pixels() const { return out_h * out_w; }                   // P
  int64_t in_per_group() const { return in_ch / groups; }            // Cg
  int64_t out_per_group() const { return out_ch / groups; }          // Og
  int64_t in_per_offset_group() const { return in_ch / offset_groups; }
  bool depthwise() const { return in_per_group() == 1; }             // groups == in_channels
};

inline DeformConvShape deform_conv2d_shape(const at::Tensor& input, const at::Tensor& weight,
                                           const at::Tensor& offset, const std::optional<at::Tensor>& mask,
                                           const std::optional<at::Tensor>& bias, int64_t stride_h,
                                           int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                                           int64_t dil_w, const char* op) {
  check_float(input, op, "input");
  check_float(weight, op, "weight");
  check_float(offset, op, "offset");
  check_dim(input, 4, op, "input", "[N, C_in, H, W]");
  check_dim(weight, 4, op, "weight", "[C_out, C_in / groups, kH, kW]");
  check_dim(offset, 4, op, "offset", "[N, 2 * offset_groups * kH * kW, H_out, W_out]");
  check_same_device(input, "input", weight, "weight", op);
  check_same_device(input, "input", offset, "offset", op);
  check_positive(stride_h, op, "stride_h");
  check_positive(stride_w, op, "stride_w");
  check_positive(dil_h, op, "dilation_h");
  check_positive(dil_w, op, "dilation_w");
  TORCH_CHECK_VALUE(pad_h >= 0 && pad_w >= 0, op, ": expected padding >= 0, got (", pad_h, ", ", pad_w, ")");
  DeformConvShape s{};
  s.batch = input.size(0);
  s.in_ch = input.size(1);
  s.height = input.size(2);
  s.width = input.size(3);
  s.out_ch = weight.size(0);
  s.kh = weight.size(2);
  s.kw = weight.size(3);
  s.stride_h = stride_h, s.stride_w = stride_w, s.pad_h = pad_h, s.pad_w = pad_w, s.dil_h = dil_h, s.dil_w = dil_w;
  TORCH_CHECK_VALUE(s.kh > 0 && s.kw > 0, op, ": expected a kernel of at least 1 x 1, got weight of shape ",
                    weight.sizes());
  TORCH_CHECK_VALUE(weight.size(1) > 0 && s.in_ch % weight.size(1) == 0, op,
                    ": expected input channels (", s.in_ch, ") to be a multiple of weight.size(1) (", weight.size(1),
                    "), the input channels per group");
  s.groups = s.in_ch / weight.size(1);
  TORCH_CHECK_VALUE(s.out_ch % s.groups == 0, op, ": expected output channels weight.size(0) (", s.out_ch,
                    ") to be a multiple of groups (", s.groups, ")");
  check_plane(s.height, s.width, op);
  s.out_h = (s.height + 2 * pad_h - (dil_h * (s.kh - 1) + 1)) / stride_h + 1;
  s.out_w = (s.width + 2 * pad_w - (dil_w * (s.kw - 1) + 1)) / stride_w + 1;
  TORCH_CHECK_VALUE(s.out_h > 0 && s.out_w > 0, op, ": the output would be empty: input of ", s.height, " x ",
                    s.width, " with padding (", pad_h, ", ", pad_w, ") is smaller than the dilated kernel of ",
                    dil_h * (s.kh - 1) + 1, " x ", dil_w * (s.kw - 1) + 1);
  const int64_t k2 = 2 * s.taps();
  TORCH_CHECK_VALUE(offset.size(0) == s.batch && offset.size(1) > 0 && offset.size(1) % k2 == 0 &&
                        offset.size(2) == s.out_h && offset.size(3) == s.out_w,
                    op, ": expected offset of shape [", s.batch, ", 2 * offset_groups * ", s.kh, " * ", s.kw, ", ",
                    s.out_h, ", ", s.out_w, "], got shape ", offset.sizes());
  s.offset_groups = offset.size(1) / k2;
  TORCH_CHECK_VALUE(s.in_ch % s.offset_groups == 0, op, ": expected input channels (", s.in_ch,
                    ") to be a multiple of offset_groups (", s.offset_groups, ")");
  s.use_mask = mask.has_value() && mask->defined();
  if (s.use_mask) {
    check_float(*mask, op, "mask");
    check_same_device(input, "input", *mask, "mask", op);
    TORCH_CHECK_VALUE(mask->dim() == 4 && mask->size(0) == s.batch && mask->size(1) == s.offset_groups * s.taps() &&
                          mask->size(2) == s.out_h && mask->size(3) == s.out_w,
                      op, ": expected mask of shape [", s.batch, ", ", s.offset_groups * s.taps(), ", ", s.out_h, ", ",
                      s.out_w, "] (offset_groups * kH * kW channels), got shape ", mask->sizes());
  }
  if (bias.has_value() && bias->defined()) {
    check_float(*bias, op, "bias");
    check_same_device(input, "input", *bias, "bias", op);
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == s.out_ch, op, ": expected bias of shape [", s.out_ch,
                      "], got shape ", bias->sizes());
  }
  return s;
}

// The gradients the backward fills, zeroed, in the compute dtype: input, weight
// (the weight's shape), offset, mask ([0] without a mask); bias is summed up front.
struct DeformGrads {
  at::Tensor input, weight, offset, mask, bias;
};

// The checked shape and the tensors in the compute dtype, contiguous.
struct Prepared {
  DeformConvShape s;
  at::Tensor input, weight, offset, mask;  // mask undefined if unused
  at::Tensor grad;                         // the output gradient (backward only)
  at::ScalarType input_dtype, weight_dtype, offset_dtype, mask_dtype;  // as given

  DeformGrads zero_grads() const {
    return {at::zeros_like(input), at::zeros_like(weight), at::zeros_like(offset),
            s.use_mask ? at::zeros_like(mask) : at::zeros({0}, input.options()), grad.sum({0, 2, 3})};
  }
  // The gradients in the dtypes of what they are gradients of.
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> result(const DeformGrads& g) const {
    return {g.input.to(input_dtype), g.weight.to(weight_dtype), g.offset.to(offset_dtype),
            g.mask.to(s.use_mask ? mask_dtype : input_dtype), g.bias.to(input_dtype)};
  }
};

inline Prepared prepare(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& offset,
                        const std::optional<at::Tensor>& mask, const std::optional<at::Tensor>& bias,
                        int64_t stride_h, int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h,
                        int64_t dil_w, const char* op = "deform_conv2d") {
  Prepared p;
  p.s = deform_conv2d_shape(input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, op);
  const auto dtype = compute_dtype(input.scalar_type());
  p.input_dtype = input.scalar_type();
  p.weight_dtype = weight.scalar_type();
  p.offset_dtype = offset.scalar_type();
  p.mask_dtype = p.s.use_mask ? mask->scalar_type() : p.input_dtype;
  p.input = input.to(dtype).contiguous();
  p.weight = weight.to(dtype).contiguous();
  p.offset = offset.to(dtype).contiguous();
  if (p.s.use_mask) p.mask = mask->to(dtype).contiguous();
  return p;
}

inline Prepared prepare_backward(const at::Tensor& grad, const at::Tensor& input, const at::Tensor& weight,
                                 const at::Tensor& offset, const std::optional<at::Tensor>& mask, int64_t stride_h,
                                 int64_t stride_w, int64_t pad_h, int64_t pad_w, int64_t dil_h, int64_t dil_w) {
  const char* op = "deform_conv2d_backward";
  Prepared p = prepare(input, weight, offset, mask, std::nullopt, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, op);
  const auto& s = p.s;
  check_float(grad, op, "grad");
  check_same_device(input, "input", grad, "grad", op);
  TORCH_CHECK_VALUE(grad.dim() == 4 && grad.size(0) == s.batch && grad.size(1) == s.out_ch &&
                        grad.size(2) == s.out_h && grad.size(3) == s.out_w,
                    op, ": expected grad of shape [", s.batch, ", ", s.out_ch, ", ", s.out_h, ", ", s.out_w,
                    "], got shape ", grad.sizes());
  p.grad = grad.to(p.input.scalar_type()).contiguous();
  return p;
}

}  // namespace nasx::ops
