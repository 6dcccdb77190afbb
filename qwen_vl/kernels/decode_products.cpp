// Few-row products for decoding on CPU: activations x [M, K] (M small) against a weight
// [N, K] that is streamed from memory once. oneDNN's bf16 GEMV and aten's int8 / int4 weight
// kernels leave much of the read bandwidth unused on these shapes; these loops keep several
// weight rows in flight and do nothing else. Also the dequantization that prefill with quantized
// weights uses. Built on first use with AVX-512 (F, BW, VL, BF16, VNNI); see kernels/__init__.py.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "simd.h"

namespace {

using namespace qwen_vl;

constexpr int64_t kRowsPerCall = 4;   // activation rows one pass over the weight serves
constexpr int64_t kTile = 4;          // weight rows read side by side
constexpr int64_t kGrain = 64;        // weight rows per parallel task, at least
constexpr int kPrefetchBytes = 512;      // how far ahead of the loads each weight row is prefetched
constexpr int kPrefetchTileBytes = 2048; // the same for int4 tiles, one stream per thread

// out[m, n + t] = sum_k x[m, k] * w[n + t, k] for the T weight rows from n: bf16 in, fp32 sums (vdpbf16ps).
template <int M, int T>
void bf16_tile(const at::BFloat16* x, const at::BFloat16* w, float* out, int64_t K, int64_t N, int64_t n) {
  __m512 acc[M][T];
  for (int m = 0; m < M; ++m)
    for (int t = 0; t < T; ++t) acc[m][t] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 32) {
    __mmask32 mask = tail32(K - k);
    __m512i xs[M];
    for (int m = 0; m < M; ++m) xs[m] = _mm512_maskz_loadu_epi16(mask, x + m * K + k);
    for (int t = 0; t < T; ++t) {
      _mm_prefetch((const char*)(w + (n + t) * K + k) + kPrefetchBytes, _MM_HINT_T0);
      __m512i wv = _mm512_maskz_loadu_epi16(mask, w + (n + t) * K + k);
      for (int m = 0; m < M; ++m) acc[m][t] = _mm512_dpbf16_ps(acc[m][t], (__m512bh)xs[m], (__m512bh)wv);
    }
  }
  for (int m = 0; m < M; ++m)
    for (int t = 0; t < T; ++t) out[m * N + n + t] = _mm512_reduce_add_ps(acc[m][t]);
}

// x quantized for VNNI: per block of 256 values a scale (max |x| / 127), and |round(x / scale)|
// as uint8 with the signs as one mask per 64 values. vpdpbusd multiplies uint8 by int8, so the
// signs move onto the weights. A block's int32 sums become fp32 once (256 as in llama.cpp's Q8_K).
constexpr int64_t kScaleBlock = 256;

struct QuantizedRow {
  const uint8_t* magnitude;  // [blocks * 256]
  const __mmask64* negative;  // [blocks * 4]
  const float* scale;  // [blocks]
};

// Sums of x * q per weight row; the caller applies the row scale.
template <int M, int T>
void int8_tile(const QuantizedRow* x, const int8_t* q, float* out, int64_t K, int64_t N, int64_t n) {
  __m512 acc[M][T];
  for (int m = 0; m < M; ++m)
    for (int t = 0; t < T; ++t) acc[m][t] = _mm512_setzero_ps();
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t block = 0; block * kScaleBlock < K; ++block) {
    __m512i sums[M][T];
    for (int m = 0; m < M; ++m)
      for (int t = 0; t < T; ++t) sums[m][t] = zero;
    for (int64_t k = block * kScaleBlock; k < std::min(K, (block + 1) * kScaleBlock); k += 64) {
      __m512i w[T];
      for (int t = 0; t < T; ++t) {
        _mm_prefetch((const char*)(q + (n + t) * K + k) + kPrefetchBytes, _MM_HINT_T0);
        w[t] = _mm512_maskz_loadu_epi8(tail64(K - k), q + (n + t) * K + k);
      }
      for (int m = 0; m < M; ++m) {
        __m512i magnitude = _mm512_loadu_si512(x[m].magnitude + k);
        __mmask64 negative = x[m].negative[k / 64];
        for (int t = 0; t < T; ++t)
          sums[m][t] = _mm512_dpbusd_epi32(sums[m][t], magnitude, _mm512_mask_sub_epi8(w[t], negative, zero, w[t]));
      }
    }
    for (int m = 0; m < M; ++m) {
      __m512 scale = _mm512_set1_ps(x[m].scale[block]);
      for (int t = 0; t < T; ++t) acc[m][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sums[m][t]), scale, acc[m][t]);
    }
  }
  for (int m = 0; m < M; ++m)
    for (int t = 0; t < T; ++t) out[m * N + n + t] = _mm512_reduce_add_ps(acc[m][t]);
}

// x[k0, k1) as int8 with one scale, max |x| / 127 (0 for a block of zeros), rounded to nearest:
// the activation quantization of both the int8 and the int4 products.
inline float quantize_block(const at::BFloat16* x, int64_t k0, int64_t k1, int8_t* q) {
  float amax = 0.f;
  for (int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::abs(static_cast<float>(x[k])));
  const float inverse = amax > 0 ? 127.f / amax : 0.f;
  for (int64_t k = k0; k < k1; ++k) q[k - k0] = static_cast<int8_t>(std::nearbyint(static_cast<float>(x[k]) * inverse));
  return amax / 127.f;
}

// Buffers of one x row quantized for int8_tile (values past K are zero).
struct QuantizedRowBuffers {
  std::vector<uint8_t> magnitude;
  std::vector<__mmask64> negative;
  std::vector<float> scale;

  QuantizedRowBuffers(const at::BFloat16* x, int64_t K) {
    const int64_t blocks = (K + kScaleBlock - 1) / kScaleBlock;
    magnitude.assign(blocks * kScaleBlock, 0), negative.assign(blocks * 4, 0), scale.assign(blocks, 0.f);
    int8_t q[kScaleBlock];
    for (int64_t block = 0; block < blocks; ++block) {
      const int64_t k0 = block * kScaleBlock, k1 = std::min(K, k0 + kScaleBlock);
      scale[block] = quantize_block(x, k0, k1, q);
      for (int64_t k = k0; k < k1; ++k) {
        magnitude[k] = static_cast<uint8_t>(std::abs(q[k - k0]));
        if (q[k - k0] < 0) negative[k / 64] |= 1ull << (k % 64);
      }
    }
  }
  QuantizedRow view() const { return {magnitude.data(), negative.data(), scale.data()}; }
};

// Rows [n0, n1) in tiles of kTile, the last few one by one.
template <int M, typename Tile>
void rows(Tile tile, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + kTile <= n1; n += kTile) tile(std::integral_constant<int, kTile>{}, n);
  for (; n < n1; ++n) tile(std::integral_constant<int, 1>{}, n);
}

template <int M>
void bf16_pass(const at::BFloat16* x, const at::BFloat16* w, float* out, int64_t K, int64_t N) {
  at::parallel_for(0, N, kGrain, [&](int64_t n0, int64_t n1) {
    rows<M>([&](auto t, int64_t n) { bf16_tile<M, decltype(t)::value>(x, w, out, K, N, n); }, n0, n1);
  });
}

template <int M>
void int8_pass(const QuantizedRow* x, const int8_t* q, float* out, int64_t K, int64_t N) {
  at::parallel_for(0, N, kGrain, [&](int64_t n0, int64_t n1) {
    rows<M>([&](auto t, int64_t n) { int8_tile<M, decltype(t)::value>(x, q, out, K, N, n); }, n0, n1);
  });
}

// Runs `pass<M>` over x in chunks of at most kRowsPerCall rows.
template <typename Pass>
void by_row_chunks(int64_t rows_total, Pass pass) {
  for (int64_t r = 0; r < rows_total; r += kRowsPerCall) {
    switch (std::min(kRowsPerCall, rows_total - r)) {
      case 1: pass(std::integral_constant<int, 1>{}, r); break;
      case 2: pass(std::integral_constant<int, 2>{}, r); break;
      case 3: pass(std::integral_constant<int, 3>{}, r); break;
      default: pass(std::integral_constant<int, 4>{}, r); break;
    }
  }
}

void check_input(const at::Tensor& x, int64_t K) {
  TORCH_CHECK(x.dim() == 2 && x.size(1) == K && x.is_contiguous(), "x must be contiguous [rows, ", K, "]");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16, "x must be bfloat16");
}

// x [M, K] bf16, w [N, K] bf16 -> [M, N] bf16
at::Tensor linear_bf16(const at::Tensor& x, const at::Tensor& w) {
  TORCH_CHECK(w.dim() == 2 && w.is_contiguous() && w.scalar_type() == at::kBFloat16, "w must be contiguous bf16 [N, K]");
  const int64_t N = w.size(0), K = w.size(1), M = x.size(0);
  check_input(x, K);
  at::Tensor out = at::empty({M, N}, x.options().dtype(at::kFloat));
  by_row_chunks(M, [&](auto m, int64_t r) {
    bf16_pass<decltype(m)::value>(x.data_ptr<at::BFloat16>() + r * K, w.data_ptr<at::BFloat16>(),
                                  out.data_ptr<float>() + r * N, K, N);
  });
  return out.to(at::kBFloat16);
}

// x [M, K] bf16, q [N, K] int8, scales [N] -> [M, N] bf16: (x @ q.T) * scales
at::Tensor linear_int8(const at::Tensor& x, const at::Tensor& q, const at::Tensor& scales) {
  TORCH_CHECK(q.dim() == 2 && q.is_contiguous() && q.scalar_type() == at::kChar, "q must be contiguous int8 [N, K]");
  const int64_t N = q.size(0), K = q.size(1), M = x.size(0);
  check_input(x, K);
  TORCH_CHECK(scales.numel() == N, "scales must have one value per output row");
  std::vector<QuantizedRowBuffers> buffers;
  std::vector<QuantizedRow> rows_q;
  for (int64_t m = 0; m < M; ++m) buffers.emplace_back(x.data_ptr<at::BFloat16>() + m * K, K);
  for (const auto& b : buffers) rows_q.push_back(b.view());
  at::Tensor out = at::empty({M, N}, x.options().dtype(at::kFloat));
  by_row_chunks(M, [&](auto m, int64_t r) {
    int8_pass<decltype(m)::value>(rows_q.data() + r, q.data_ptr<int8_t>(), out.data_ptr<float>() + r * N, K, N);
  });
  return out.mul_(scales.to(at::kFloat)).to(at::kBFloat16);
}

// q [N, K] int8, scales [N] bf16 -> bf16 [N, K]: q * scale rounded once, as int8.dequantize.
at::Tensor dequantize_int8(const at::Tensor& q, const at::Tensor& scales) {
  TORCH_CHECK(q.dim() == 2 && q.is_contiguous() && q.scalar_type() == at::kChar, "q must be contiguous int8 [N, K]");
  const int64_t N = q.size(0), K = q.size(1);
  at::Tensor s = scales.to(at::kFloat).contiguous();
  at::Tensor out = at::empty({N, K}, q.options().dtype(at::kBFloat16));
  const int8_t* qp = q.data_ptr<int8_t>();
  const float* sp = s.data_ptr<float>();
  auto* op = out.data_ptr<at::BFloat16>();
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      __m512 scale = _mm512_set1_ps(sp[n]);
      for (int64_t k = 0; k < K; k += 16) {
        __mmask16 mask = tail16(K - k);
        __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, qp + n * K + k)));
        __m256bh b = _mm512_cvtneps_pbh(_mm512_mul_ps(v, scale));
        _mm256_mask_storeu_epi16(op + n * K + k, mask, (__m256i)b);
      }
    }
  });
  return out;
}

// ---- int4 in tiles of 16 rows --------------------------------------------------------------------
// Layout (int4.to_tiles): tiles uint8 [N/16, K/8, 16, 4], byte i of row r in chunk c holding
// q[r, 8c + i] (low nibble) and q[r, 8c + 4 + i] (high); scales fp16 and zeros uint8 [N/16, K/g, 16].
// One 64-byte load gives 16 rows x 8 columns; vpdpbusd multiplies the unsigned nibbles by int8
// activations (quantized per group of g columns), four columns a lane, so each tile's 16 sums sit
// in one register and need no horizontal reduction.
struct GroupQuantizedRow {
  std::vector<int8_t> values;  // [K]
  std::vector<float> scale;    // [K/g]
  std::vector<float> sum;      // [K/g]: sum of values in the group, for the zero points

  GroupQuantizedRow(const at::BFloat16* x, int64_t K, int64_t group) : values(K), scale(K / group), sum(K / group) {
    for (int64_t g = 0; g < K / group; ++g) {
      scale[g] = quantize_block(x, g * group, (g + 1) * group, values.data() + g * group);
      int32_t total = 0;
      for (int64_t k = g * group; k < (g + 1) * group; ++k) total += values[k];
      sum[g] = static_cast<float>(total);
    }
  }
};

template <int M>
void int4_tile(const GroupQuantizedRow* x, const uint8_t* tiles, const at::Half* scales, const uint8_t* zeros,
               float* out, int64_t K, int64_t N, int64_t group, int64_t tile) {
  const int64_t groups = K / group;
  const uint8_t* w = tiles + tile * K * 8;  // 16 rows x K/2 bytes
  const __m512i low = _mm512_set1_epi8(0x0F);
  __m512 acc[M];
  for (int m = 0; m < M; ++m) acc[m] = _mm512_setzero_ps();
  for (int64_t g = 0; g < groups; ++g) {
    // four independent sums per row (two chunks, low and high nibbles): one chain would wait
    // on vpdpbusd's latency
    __m512i dots[M][4];
    for (int m = 0; m < M; ++m)
      for (int j = 0; j < 4; ++j) dots[m][j] = _mm512_setzero_si512();
    for (int64_t k = g * group; k < (g + 1) * group; k += 16) {
      const uint8_t* chunk = w + k * 8;
      _mm_prefetch((const char*)chunk + kPrefetchTileBytes, _MM_HINT_T0);
      _mm_prefetch((const char*)chunk + kPrefetchTileBytes + 64, _MM_HINT_T0);
      __m512i nibbles[4];
      for (int half = 0; half < 2; ++half) {
        __m512i bytes = _mm512_loadu_si512(chunk + half * 64);
        nibbles[2 * half] = _mm512_and_si512(bytes, low);
        nibbles[2 * half + 1] = _mm512_and_si512(_mm512_srli_epi16(bytes, 4), low);
      }
      for (int m = 0; m < M; ++m) {
        int32_t xs[4];  // x[k..k+3], x[k+4..k+7], x[k+8..k+11], x[k+12..k+15], four int8 each
        std::memcpy(xs, x[m].values.data() + k, 16);
        for (int j = 0; j < 4; ++j) dots[m][j] = _mm512_dpbusd_epi32(dots[m][j], nibbles[j], _mm512_set1_epi32(xs[j]));
      }
    }
    for (int m = 0; m < M; ++m)
      dots[m][0] = _mm512_add_epi32(_mm512_add_epi32(dots[m][0], dots[m][1]), _mm512_add_epi32(dots[m][2], dots[m][3]));
    const int64_t at = (tile * groups + g) * 16;
    __m512 scale = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(scales + at)));
    __m512 zero = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(zeros + at))));
    for (int m = 0; m < M; ++m) {
      // sum_k x_k w_k = sx * scale * (sum_k xq_k q_k - zero * sum_k xq_k)
      __m512 dot = _mm512_fnmadd_ps(zero, _mm512_set1_ps(x[m].sum[g]), _mm512_cvtepi32_ps(dots[m][0]));
      acc[m] = _mm512_fmadd_ps(_mm512_mul_ps(dot, scale), _mm512_set1_ps(x[m].scale[g]), acc[m]);
    }
  }
  for (int m = 0; m < M; ++m) _mm512_storeu_ps(out + m * N + tile * 16, acc[m]);
}

void check_tiles(const at::Tensor& tiles, const at::Tensor& scales, const at::Tensor& zeros) {
  TORCH_CHECK(tiles.dim() == 4 && tiles.size(2) == 16 && tiles.size(3) == 4 && tiles.is_contiguous() &&
                  tiles.scalar_type() == at::kByte, "tiles must be contiguous uint8 [N/16, K/8, 16, 4]");
  TORCH_CHECK(scales.is_contiguous() && scales.scalar_type() == at::kHalf && zeros.is_contiguous() &&
                  zeros.scalar_type() == at::kByte && scales.sizes() == zeros.sizes() && scales.dim() == 3 &&
                  scales.size(0) == tiles.size(0) && scales.size(2) == 16,
              "scales (fp16) and zeros (uint8) must be contiguous [N/16, K/g, 16]");
}

// x [M, K] bf16 -> [M, N] bf16
at::Tensor linear_int4(const at::Tensor& x, const at::Tensor& tiles, const at::Tensor& scales, const at::Tensor& zeros) {
  check_tiles(tiles, scales, zeros);
  const int64_t N = tiles.size(0) * 16, K = tiles.size(1) * 8, M = x.size(0), group = K / scales.size(1);
  check_input(x, K);
  TORCH_CHECK(group % 16 == 0 && group * scales.size(1) == K, "the group size must divide K in multiples of 16");
  std::vector<GroupQuantizedRow> rows_q;
  for (int64_t m = 0; m < M; ++m) rows_q.emplace_back(x.data_ptr<at::BFloat16>() + m * K, K, group);
  at::Tensor out = at::empty({M, N}, x.options().dtype(at::kFloat));
  by_row_chunks(M, [&](auto m, int64_t r) {
    at::parallel_for(0, N / 16, 4, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t)
        int4_tile<decltype(m)::value>(rows_q.data() + r, tiles.data_ptr<uint8_t>(), scales.data_ptr<at::Half>(),
                                      zeros.data_ptr<uint8_t>(), out.data_ptr<float>() + r * N, K, N, group, t);
    });
  });
  return out.to(at::kBFloat16);
}

// The tiled weight -> bf16 [K, N] (transposed, as dequantize_int4_transposed): (q - zero) * scale
// in fp32, rounded once.
at::Tensor dequantize_int4_tiles(const at::Tensor& tiles, const at::Tensor& scales, const at::Tensor& zeros) {
  check_tiles(tiles, scales, zeros);
  const int64_t N = tiles.size(0) * 16, K = tiles.size(1) * 8, groups = scales.size(1), group = K / groups;
  at::Tensor out = at::empty({K, N}, tiles.options().dtype(at::kBFloat16));
  const uint8_t* tp = tiles.data_ptr<uint8_t>();
  const at::Half* sp = scales.data_ptr<at::Half>();
  const uint8_t* zp = zeros.data_ptr<uint8_t>();
  auto* op = out.data_ptr<at::BFloat16>();
  // Eight output rows (columns k..k+7 of W) at a time across every tile, so that the stores run
  // along the rows. Tile by tile, they land N apart, at N = 2048 all in the same few cache sets
  // (6x slower on a 2048 x 2048 slice).
  at::parallel_for(0, K / 8, 8, [&](int64_t c0, int64_t c1) {
    for (int64_t k = c0 * 8; k < c1 * 8; k += 8) {
      for (int64_t t = 0; t < N / 16; ++t) {
        const int64_t at = (t * groups + k / group) * 16;
        __m512 scale = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)(sp + at)));
        __m512 zero = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(zp + at))));
        __m512i bytes = _mm512_loadu_si512(tp + t * K * 8 + k * 8);
        for (int i = 0; i < 8; ++i) {  // column k + i: byte i % 4 of each lane, low or high nibble
          __m512i q = _mm512_and_si512(_mm512_srli_epi32(bytes, 8 * (i % 4) + 4 * (i / 4)), _mm512_set1_epi32(0xF));
          __m512 w = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(q), zero), scale);
          _mm256_storeu_si256((__m256i*)(op + (k + i) * N + t * 16), (__m256i)_mm512_cvtneps_pbh(w));
        }
      }
    }
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(qwen_vl_cpu, m) {
  m.def("linear_bf16(Tensor x, Tensor w) -> Tensor", &linear_bf16);
  m.def("linear_int8(Tensor x, Tensor q, Tensor scales) -> Tensor", &linear_int8);
  m.def("dequantize_int8(Tensor q, Tensor scales) -> Tensor", &dequantize_int8);
  m.def("linear_int4(Tensor x, Tensor tiles, Tensor scales, Tensor zeros) -> Tensor", &linear_int4);
  m.def("dequantize_int4_tiles(Tensor tiles, Tensor scales, Tensor zeros) -> Tensor", &dequantize_int4_tiles);
}
