// empty_on_huge_pages: the buffers packed weights live in (core/memory.h).
#include "core/memory.h"
#include "ops/cpu/features.h"
#include "ops/linear.h"

#include <ATen/ops/allclose.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/randn.h>
#include <gtest/gtest.h>

#include <cstdint>

namespace dotf {
namespace {

uintptr_t address(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()); }

TEST(HugePages, LargeCpuTensorStartsOnA2MiBBoundaryAndHoldsItsBytes) {
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  at::Tensor t = empty_on_huge_pages({3, 1 << 18}, opts, /*enabled=*/true);  // 3 MiB
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{3, 1 << 18}));
  EXPECT_EQ(t.scalar_type(), at::kFloat);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_EQ(address(t) % kHugePageBytes, 0u);
  t.fill_(2.5f);  // every byte is writable (ASan builds check the bounds and the free)
  EXPECT_EQ(t.sum().item<double>(), 2.5 * 3 * (1 << 18));
}

TEST(HugePages, SmallOrDisabledIsAnOrdinaryTensor) {
  const auto opts = at::TensorOptions().dtype(at::kChar);
  for (bool enabled : {true, false}) {
    at::Tensor small = empty_on_huge_pages({1000}, opts, enabled);
    EXPECT_EQ(small.numel(), 1000);
    EXPECT_EQ(small.scalar_type(), at::kChar);
  }
  at::Tensor off = empty_on_huge_pages({int64_t(4) << 20}, opts, /*enabled=*/false);
  EXPECT_EQ(off.numel(), int64_t(4) << 20);
}

TEST(HugePages, ModeIsOneTheKernelNames) {
  const std::string mode = transparent_huge_page_mode();
  EXPECT_TRUE(mode == "always" || mode == "madvise" || mode == "never" || mode == "unavailable") << mode;
}

// A weight big enough to be packed onto huge pages computes what at::linear does.
TEST(HugePages, PackedLinearOnHugePagesMatchesAtenLinear) {
  if (!cpu_has_avx2_fma()) GTEST_SKIP() << "needs AVX2+FMA";
  at::manual_seed(3);
  const at::Tensor w = at::randn({1024, 768});  // 3 MiB of fp32 panels
  const at::Tensor x = at::randn({5, 768});
  for (LinearPath path : {LinearPath::Avx2Packed, LinearPath::Int8Avx2}) {
    const Linear lin(w, std::nullopt, path);
    const at::Tensor ref = at::linear(x.to(at::kDouble), lin.effective_weight().to(at::kDouble)).to(at::kFloat);
    EXPECT_TRUE(at::allclose(lin(x), ref, 1e-3, path == LinearPath::Int8Avx2 ? 1e-2 : 1e-4)) << to_string(path);
  }
}

}  // namespace
}  // namespace dotf
