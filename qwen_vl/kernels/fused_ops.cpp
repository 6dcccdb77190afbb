// The element-wise work of prefill, fused into one pass each. PyTorch runs RMSNorm and the
// rotary embedding as chains of element-wise ops over fp32 copies, which at full size cost a
// large share of a prefill next to the AMX GEMMs; here each row is read and written once.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>

#include "simd.h"

namespace {

using namespace qwen_vl;

// x [rows, D] bf16 (rows contiguous), weight [D] bf16 -> bf16: weight * bf16(x / rms(x)), the
// normalisation in fp32 and the scale in bf16, as RMSNorm.forward.
at::Tensor rms_norm_bf16(const at::Tensor& x, const at::Tensor& weight, double eps) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && weight.scalar_type() == at::kBFloat16, "bf16 only");
  const int64_t D = x.size(-1);
  TORCH_CHECK(weight.numel() == D && weight.is_contiguous() && x.is_contiguous(), "x contiguous [..., D], weight [D]");
  at::Tensor out = at::empty_like(x);
  const int64_t rows = x.numel() / D;
  const auto* xp = x.data_ptr<at::BFloat16>();
  const auto* wp = weight.data_ptr<at::BFloat16>();
  auto* op = out.data_ptr<at::BFloat16>();
  at::parallel_for(0, rows, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const at::BFloat16* row = xp + r * D;
      __m512 squares = _mm512_setzero_ps();
      for (int64_t k = 0; k < D; k += 16) {
        __m512 v = load_bf16x16(row + k, tail16(D - k));
        squares = _mm512_fmadd_ps(v, v, squares);
      }
      const float inverse = 1.f / std::sqrt(_mm512_reduce_add_ps(squares) / D + static_cast<float>(eps));
      const __m512 scale = _mm512_set1_ps(inverse);
      for (int64_t k = 0; k < D; k += 16) {
        __mmask16 mask = tail16(D - k);
        __m512 normed = _mm512_mul_ps(load_bf16x16(row + k, mask), scale);
        // round to bf16 first, then the bf16 * bf16 product rounds once more
        __m512 rounded = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(normed)), 16));
        store_bf16x16(op + r * D + k, _mm512_mul_ps(rounded, load_bf16x16(wp + k, mask)), mask);
      }
    }
  });
  return out;
}

// x [S, H, D] bf16 (any strides, last dim contiguous), cos / sin [S, D] fp32 -> bf16 [S, H, D]
// contiguous: x * cos + rotate_half(x) * sin in fp32, rotate_half(x) = (-x[D/2:], x[:D/2]).
at::Tensor rotary_bf16(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
  TORCH_CHECK(x.dim() == 3 && x.scalar_type() == at::kBFloat16 && x.stride(2) == 1, "x bf16 [S, H, D], last dim contiguous");
  const int64_t S = x.size(0), H = x.size(1), D = x.size(2), half = D / 2;
  TORCH_CHECK(D % 2 == 0 && cos.scalar_type() == at::kFloat && sin.scalar_type() == at::kFloat, "cos, sin fp32");
  at::Tensor c = cos.reshape({S, D}).contiguous(), s = sin.reshape({S, D}).contiguous();
  at::Tensor out = at::empty({S, H, D}, x.options());
  const auto* xp = x.data_ptr<at::BFloat16>();
  const float* cp = c.data_ptr<float>();
  const float* sp = s.data_ptr<float>();
  auto* op = out.data_ptr<at::BFloat16>();
  const int64_t s0 = x.stride(0), s1 = x.stride(1);
  at::parallel_for(0, S, 16, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      for (int64_t h = 0; h < H; ++h) {
        const at::BFloat16* in = xp + i * s0 + h * s1;
        at::BFloat16* dst = op + (i * H + h) * D;
        for (int64_t k = 0; k < half; k += 16) {
          __mmask16 mask = tail16(half - k);
          __m512 first = load_bf16x16(in + k, mask), second = load_bf16x16(in + half + k, mask);
          __m512 c1 = _mm512_maskz_loadu_ps(mask, cp + i * D + k), c2 = _mm512_maskz_loadu_ps(mask, cp + i * D + half + k);
          __m512 s1v = _mm512_maskz_loadu_ps(mask, sp + i * D + k), s2 = _mm512_maskz_loadu_ps(mask, sp + i * D + half + k);
          store_bf16x16(dst + k, _mm512_fnmadd_ps(second, s1v, _mm512_mul_ps(first, c1)), mask);
          store_bf16x16(dst + half + k, _mm512_fmadd_ps(first, s2, _mm512_mul_ps(second, c2)), mask);
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(qwen_vl_cpu, m) {
  m.def("rms_norm_bf16(Tensor x, Tensor weight, float eps) -> Tensor", &rms_norm_bf16);
  m.def("rotary_bf16(Tensor x, Tensor cos, Tensor sin) -> Tensor", &rotary_bf16);
}
