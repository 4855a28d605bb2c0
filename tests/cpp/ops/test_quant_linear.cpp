// The int8 scheme has one definition (quantize_int8_per_channel, ops/quant_linear.h): the CPU draft's
// Int8Avx2 panels multiply by exactly the weight the CUDA draft kernels' QuantizedWeight holds.
#include "ops/cpu/features.h"
#include "ops/linear.h"
#include "ops/quant_linear.h"

#include <ATen/ops/equal.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>

#include <optional>
#include <utility>

namespace dotf {
namespace {

TEST(QuantLinear, Int8Avx2PanelsHoldTheQuantizedWeight) {
  if (!cpu_has_avx2_fma()) GTEST_SKIP() << "this CPU lacks AVX2/FMA";
  for (const auto [n, k] : {std::pair<int64_t, int64_t>{37, 100}, {64, 576}}) {
    const at::Tensor w = at::randn({n, k}).mul(0.02);
    const Linear lin(w, std::nullopt, LinearPath::Int8Avx2);
    const QuantizedWeight q = quantize_weight(w, 8);
    // q * scale is exact in float64, so rounding it to float32 gives the float32 product the panels use.
    EXPECT_TRUE(at::equal(lin.effective_weight(), dequantize_weight(q, at::kFloat))) << n << "x" << k;
  }
}

TEST(QuantLinear, CpuPathIsTheReferenceRounded) {
  const at::Tensor w = at::randn({24, 256}), x = at::randn({5, 256});
  for (int bits : {8, 4}) {
    const QuantizedWeight q = quantize_weight(w, bits);
    EXPECT_TRUE(at::equal(quant_linear(x, q, std::nullopt), quant_linear_reference(x, q, std::nullopt).to(at::kFloat)))
        << "bits " << bits;
  }
}

}  // namespace
}  // namespace dotf
