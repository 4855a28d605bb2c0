// Linear paths at decode/verify batch sizes, one thread (DOTF_BENCH_THREADS overrides).
//
//   linear/<path>/<shape>/M:<m>          every path x shape x M in {1,2,4,6,9,13,16}
//   hint/onednn_fp32_h<hint>/<shape>/M:<m>  oneDNN prepack batch-size hints (h0 = no hint)
//   cross/<path>/<shape>/M:<m>           aten vs avx2 for M in {16..kAvx2MaxM} (where avx2 hands over)
//
// Paths: aten_fp32, onednn_fp32, aten_bf16, onednn_bf16, int8 (FBGEMM, fp32 in/out), int8_avx2 (ours:
// int8 weights, int16 activations), avx2_fp32, avx2_bf16. Weights are rotated among enough copies that
// together they exceed the 32 MB L3 several times over, as in a real decode step where the whole model
// streams through the cache; so every call reads its weight from DRAM. DOTF_BENCH_RESIDENT=1 keeps one
// copy instead (cache-resident: the kernel's compute-bound speed).
// bench/linear_paths.py runs this and writes bench/results/linear_paths.md.
#include "bench_common.h"
#include "ops/linear.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/TensorOperators.h>
#include <ATen/ops/randn.h>
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

using dotf::Linear;
using dotf::LinearPath;

struct Shape {
  const char* name;
  int64_t in, out;
};

const std::vector<Shape> kShapes = {
    {"big_4096x8192", 4096, 8192},
    // SmolLM2-135M: hidden 576, 9 query heads / 3 kv heads of 64, MLP 1536, vocab 49152.
    {"smol_qkv_576x960", 576, 960},
    {"smol_o_576x576", 576, 576},
    {"smol_gateup_576x3072", 576, 3072},
    {"smol_down_1536x576", 1536, 576},
    {"smol_lmhead_576x49152", 576, 49152},
    // Qwen2.5-0.5B: hidden 896, 14 q heads / 2 kv heads of 64, MLP 4864, vocab 151936.
    {"qwen_qkv_896x1152", 896, 1152},
    {"qwen_o_896x896", 896, 896},
    {"qwen_gateup_896x9728", 896, 9728},
    {"qwen_down_4864x896", 4864, 896},
    {"qwen_lmhead_896x151936", 896, 151936},
};
const std::vector<int64_t> kMs = {1, 2, 4, 6, 9, 13, 16};

struct PathSpec {
  const char* name;
  LinearPath path;
  at::ScalarType dtype;
};
const std::vector<PathSpec> kPaths = {
    {"aten_fp32", LinearPath::Aten, at::kFloat},
    {"onednn_fp32", LinearPath::OneDnnPacked, at::kFloat},
    {"aten_bf16", LinearPath::Aten, at::kBFloat16},
    {"onednn_bf16", LinearPath::OneDnnPacked, at::kBFloat16},
    {"int8", LinearPath::Int8Dynamic, at::kFloat},
    {"int8_avx2", LinearPath::Int8Avx2, at::kFloat},
    {"avx2_fp32", LinearPath::Avx2Packed, at::kFloat},
    {"avx2_bf16", LinearPath::Avx2Packed, at::kBFloat16},
};
const std::vector<int64_t> kHints = {0, 1, 2, 4, 6, 8, 16};  // 0: no hint (oneDNN's default)
const std::vector<const char*> kHintShapes = {"big_4096x8192", "smol_gateup_576x3072", "smol_o_576x576",
                                              "qwen_down_4864x896"};

// Weight copies per (shape, path, hint), kept while memory allows: bench/linear_paths.py runs one
// shape per process with --benchmark_enable_random_interleaving, so every path of a shape is resident
// and the repetitions of all paths interleave in time (a shared machine's noise then hits all paths
// alike). Past the budget the oldest set is freed.
struct Copies {
  std::vector<Linear> lins;
  int64_t weight_bytes = 0;  // bytes one call reads (the packed copy for packed paths)
  int64_t held_bytes = 0;    // bytes the set holds (originals + packed copies)
};
constexpr int64_t kCacheBudget = int64_t(6) << 30;

Copies& copies_for(const Shape& s, const PathSpec& p, std::optional<int64_t> hint) {
  static std::vector<std::pair<std::string, std::unique_ptr<Copies>>> cache;
  const std::string key = std::string(s.name) + "/" + p.name + "/" + (hint ? std::to_string(*hint) : "d");
  for (auto& [k, c] : cache) {
    if (k == key) return *c;
  }
  auto make = [&](const at::Tensor& w, const at::Tensor& b) {
    return hint ? Linear(w, b, p.path, *hint == 0 ? std::nullopt : hint) : Linear(w, b, p.path);
  };
  at::manual_seed(0);
  const at::Tensor w0 = (at::randn({s.out, s.in}) * 0.05).to(p.dtype);
  const at::Tensor b = at::randn({s.out}).to(p.dtype);
  auto c = std::make_unique<Copies>();
  c->lins.push_back(make(w0, b));
  c->weight_bytes = c->lins[0].extra_bytes() > 0 ? c->lins[0].extra_bytes() : w0.nbytes();
  const int64_t per_copy = w0.nbytes() + c->lins[0].extra_bytes();
  const int64_t min_total = int64_t(96) << 20;  // 3x L3
  // DOTF_BENCH_RESIDENT=1: one copy, so a weight that fits the L3 stays there (compute-bound times).
  const bool one_copy = std::getenv("DOTF_BENCH_RESIDENT") || c->weight_bytes > (int64_t(256) << 20);
  const int64_t n = one_copy ? 1 : std::max<int64_t>(2, (min_total + c->weight_bytes - 1) / c->weight_bytes);
  for (int64_t i = 1; i < n; ++i) c->lins.push_back(make((at::randn({s.out, s.in}) * 0.05).to(p.dtype), b));
  c->held_bytes = n * per_copy;
  int64_t total = c->held_bytes;
  for (auto& e : cache) total += e.second->held_bytes;
  while (!cache.empty() && total > kCacheBudget) {
    total -= cache.front().second->held_bytes;
    cache.erase(cache.begin());
  }
  cache.emplace_back(key, std::move(c));
  return *cache.back().second;
}

void run(benchmark::State& state, const Shape& s, const PathSpec& p, int64_t m, std::optional<int64_t> hint) {
  at::set_num_threads(dotf::bench::bench_threads());
  Copies& c = copies_for(s, p, hint);
  const at::Tensor x = at::randn({m, s.in}).to(p.dtype);
  size_t i = 0;
  for (int k = 0; k < 2; ++k) benchmark::DoNotOptimize(c.lins[k % c.lins.size()](x));  // warm up
  for (auto _ : state) {
    at::Tensor y = c.lins[i](x);
    benchmark::DoNotOptimize(y.data_ptr());
    i = (i + 1) % c.lins.size();
  }
  state.counters["copies"] = double(c.lins.size());
  state.counters["weight_GBps"] = benchmark::Counter(double(c.weight_bytes) * 1e-9,
                                                     benchmark::Counter::kIsIterationInvariantRate);
}

const bool registered = [] {
  for (const PathSpec& p : kPaths) {
    for (const Shape& s : kShapes) {
      for (int64_t m : kMs) {
        const std::string name = std::string("linear/") + p.name + "/" + s.name + "/M:" + std::to_string(m);
        benchmark::RegisterBenchmark(name.c_str(), [&s, &p, m](benchmark::State& st) { run(st, s, p, m, std::nullopt); })
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      }
    }
  }
  static const PathSpec fp32 = {"onednn_fp32", LinearPath::OneDnnPacked, at::kFloat};
  for (int64_t h : kHints) {
    for (const Shape& s : kShapes) {
      if (std::find_if(kHintShapes.begin(), kHintShapes.end(), [&](const char* n) { return std::string(n) == s.name; }) ==
          kHintShapes.end())
        continue;
      for (int64_t m : kMs) {
        const std::string name =
            "hint/onednn_fp32_h" + std::to_string(h) + "/" + s.name + "/M:" + std::to_string(m);
        benchmark::RegisterBenchmark(name.c_str(), [&s, h, m](benchmark::State& st) { run(st, s, fp32, m, h); })
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      }
    }
  }
  // Where Avx2Packed should hand over to at::linear: run the avx2 kernel past its cutoff by calling
  // it with M <= kAvx2MaxM only (the cutoff itself is what this measures).
  for (const PathSpec& p : kPaths) {
    const std::string pn = p.name;
    if (pn != "aten_fp32" && pn != "avx2_fp32" && pn != "aten_bf16" && pn != "avx2_bf16") continue;
    for (const Shape& s : kShapes) {
      if (std::string(s.name) != "big_4096x8192" && std::string(s.name) != "smol_gateup_576x3072") continue;
      for (int64_t m : {16, 24, 32}) {
        const std::string name = "cross/" + pn + "/" + s.name + "/M:" + std::to_string(m);
        benchmark::RegisterBenchmark(name.c_str(), [&s, &p, m](benchmark::State& st) { run(st, s, p, m, std::nullopt); })
            ->Unit(benchmark::kMicrosecond)
            ->UseRealTime();
      }
    }
  }
  return true;
}();

}  // namespace
