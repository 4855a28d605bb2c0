// The ops of one decode step, alone, at decode (T=1) and verify (T=k+1) sizes:
//
//   op/rmsnorm_cossim/C:<hidden>/T:<rows>/<dtype>/<device>        residual add + RMSNorm + cosine similarity
//   op/rope_kv_write/<model>/T:<rows>/<dtype>/<device>             RoPE of q and k + k, v written to the cache
//   op/attention/<model>/q:<T>/ctx:<cached>/<dtype>/<device>       T queries over <cached> + T cache rows
//   op/attention_int8/<model>/q:<T>/ctx:<cached>/<dtype>/cpu        the same over the draft's int8 mirror
//   op/attention_int8_float/<model>/q:<T>/ctx:<cached>/<dtype>/cpu  the mirror's float kernel, where the
//                                                                  CPU would run its integer VNNI kernel
//   op/argmax_top1/V:<vocab>/rows:<rows>/<prob|id>/<dtype>/<device> greedy id (+ its probability) per row
//
// <model> gives the head layout (smollm2-135m 9/3 heads, qwen2.5-0.5b 14/2, llama2-7b 32/32; head_dim
// 64, 64, 128) and hidden sizes 576, 896, 4096. Only the public op entry points are called, so the
// figures follow whatever kernel dispatch picks. Every case reports bytes_per_second: the bytes the op
// must read and write at least, over the time (KV rows read once per KV head for attention). Inputs
// are random: the values do not change the work.
#include "bench_common.h"
#include "ops/attention.h"
#include "ops/attention_int8.h"
#include "ops/cpu/features.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/sampling.h"

#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/cos.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/ones.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/sin.h>

#include <cmath>

namespace {

using namespace dotf;
using namespace dotf::bench;

const std::vector<at::ScalarType> kDtypes = {at::kFloat, at::kBFloat16};
const std::vector<int64_t> kNormRows = {1, 8};
const std::vector<int64_t> kQueryLens = {1, 5, 9, 13};  // decode, then verify of k = 4, 8, 12 drafts
const std::vector<int64_t> kCachedPositions = {128, 512, 1024, 2048, 4096};
const std::vector<int64_t> kVocabs = {49152, 151936};  // SmolLM2, Qwen2.5
const std::vector<int64_t> kArgmaxRows = {1, 13};
constexpr int64_t kRopeStart = 512;  // position of the first rotated token (any; the work is the same)

void rmsnorm_cossim_case(benchmark::State& state, int64_t hidden, int64_t rows, at::ScalarType dtype,
                         at::Device device) {
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  at::Tensor h = at::randn({rows, hidden}, opts);                    // [T, C], += delta each call
  const at::Tensor delta = at::randn({rows, hidden}, opts) * 0.01;   // [T, C]
  const at::Tensor weight = at::ones({hidden}, opts);                // [C]
  at::Tensor normed = at::empty({rows, hidden}, opts);               // [T, C]
  const at::Tensor cos = at::empty({rows}, opts.dtype(at::kFloat));  // [T]
  run_iterations(state, device, [&] { add_rmsnorm_cossim(h, delta, weight, 1e-6, normed, cos); });
  // Reads h, delta, weight; writes h, normed, cos.
  const int64_t bytes = (4 * rows * hidden + hidden) * h.element_size() + rows * 4;
  state.SetBytesProcessed(state.iterations() * bytes);
}

void rope_kv_write_case(benchmark::State& state, const ModelConfig& c, int64_t rows, at::ScalarType dtype,
                        at::Device device) {
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  const int64_t H = c.num_heads, KVH = c.num_kv_heads, D = c.head_dim, positions = kRopeStart + rows;
  const at::Tensor angles =
      at::arange(positions, at::TensorOptions().dtype(at::kFloat)).unsqueeze(1) * c.rope_inv_freq().unsqueeze(0);
  const at::Tensor rope_cos = at::cos(angles).to(opts).contiguous();  // [P, D/2]
  const at::Tensor rope_sin = at::sin(angles).to(opts).contiguous();  // [P, D/2]
  const at::Tensor qkv = at::randn({rows, (H + 2 * KVH) * D}, opts);  // [T, (H + 2*KVH) * D]
  at::Tensor q = at::empty({rows, H, D}, opts);                       // [T, H, D]
  at::Tensor k_cache = at::empty({positions, KVH, D}, opts);          // [capacity, KVH, D]
  at::Tensor v_cache = at::empty({positions, KVH, D}, opts);          // [capacity, KVH, D]
  run_iterations(state, device,
                 [&] { rope_qkv_to_cache(qkv, rope_cos, rope_sin, kRopeStart, H, KVH, q, k_cache, v_cache); });
  // Reads qkv and the T rows of cos/sin; writes q, k, v (as many elements as qkv).
  const int64_t bytes = (2 * rows * (H + 2 * KVH) * D + rows * D) * qkv.element_size();
  state.SetBytesProcessed(state.iterations() * bytes);
}

void attention_case(benchmark::State& state, const ModelConfig& c, int64_t query_len, int64_t cached,
                    at::ScalarType dtype, at::Device device) {
  const auto opts = at::TensorOptions().dtype(dtype).device(device);
  const int64_t H = c.num_heads, KVH = c.num_kv_heads, D = c.head_dim, rows = cached + query_len;
  const at::Tensor q = at::randn({query_len, H, D}, opts);     // [T, H, D] at positions cached..rows-1
  const at::Tensor k_cache = at::randn({rows, KVH, D}, opts);  // [capacity, KVH, D], all rows valid
  const at::Tensor v_cache = at::randn({rows, KVH, D}, opts);  // [capacity, KVH, D]
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  run_iterations(state, device,
                 [&] { benchmark::DoNotOptimize(attention_with_cache(q, k_cache, v_cache, cached, scale)); });
  // Reads every valid K and V row once, q; writes [T, H*D].
  const int64_t bytes = (2 * rows * KVH * D + 2 * query_len * H * D) * q.element_size();
  state.SetBytesProcessed(state.iterations() * bytes);
}

// The int8 mirror of the same rows (draft_kv="int8"): a byte per value plus a float scale per row and head.
// float_kernel: the kernel that widens the rows exactly, instead of the integer VNNI one the CPU may run.
void attention_int8_case(benchmark::State& state, const ModelConfig& c, int64_t query_len, int64_t cached,
                         at::ScalarType dtype, bool float_kernel) {
  const auto opts = at::TensorOptions().dtype(dtype);
  const int64_t H = c.num_heads, KVH = c.num_kv_heads, D = c.head_dim, rows = cached + query_len;
  const at::Tensor q = at::randn({query_len, H, D}, opts);
  const at::Tensor k_cache = at::randn({rows, KVH, D}, opts), v_cache = at::randn({rows, KVH, D}, opts);
  at::Tensor k_q = at::empty({KVH, rows, D}, at::kChar), v_q = at::empty({KVH, rows, D}, at::kChar);
  at::Tensor k_s = at::empty({KVH, rows}, at::kFloat), v_s = at::empty({KVH, rows}, at::kFloat);
  quantize_kv_rows(k_cache, v_cache, 0, rows, k_q, v_q, k_s, v_s);
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  if (float_kernel) int8_attention_vnni_allowed() = false;
  run_iterations(state, at::kCPU, [&] {
    benchmark::DoNotOptimize(int8_attention_with_cache(q, k_q, v_q, k_s, v_s, cached, scale));
  });
  int8_attention_vnni_allowed() = true;
  const int64_t bytes = 2 * rows * KVH * (D + 4) + 2 * query_len * H * D * q.element_size();
  state.SetBytesProcessed(state.iterations() * bytes);
}

void argmax_top1_case(benchmark::State& state, int64_t vocab, int64_t rows, bool with_prob, at::ScalarType dtype,
                      at::Device device) {
  const at::Tensor logits = at::randn({rows, vocab}, at::TensorOptions().dtype(dtype).device(device));  // [T, V]
  run_iterations(state, device, [&] { benchmark::DoNotOptimize(argmax_top1(logits, with_prob)); });
  state.SetBytesProcessed(state.iterations() * rows * vocab * logits.element_size());
}

const bool registered = [] {
  for (const at::Device device : bench_devices()) {
    for (const at::ScalarType dtype : kDtypes) {
      const std::string suffix = "/" + dtype_name(dtype) + "/" + device_name(device);
      for (const ModelShape& shape : model_shapes()) {
        const int64_t hidden = shape.config.hidden_size;
        for (int64_t rows : kNormRows) {
          register_case("op/rmsnorm_cossim/C:" + std::to_string(hidden) + "/T:" + std::to_string(rows) + suffix, device,
                        [=](benchmark::State& s) { rmsnorm_cossim_case(s, hidden, rows, dtype, device); });
        }
      }
      for (const ModelShape& shape : model_shapes()) {
        const ModelConfig* config = &shape.config;
        for (int64_t rows : kNormRows) {
          register_case("op/rope_kv_write/" + std::string(shape.name) + "/T:" + std::to_string(rows) + suffix, device,
                        [=](benchmark::State& s) { rope_kv_write_case(s, *config, rows, dtype, device); });
        }
      }
      for (const ModelShape& shape : model_shapes()) {
        const ModelConfig* config = &shape.config;
        for (int64_t query_len : kQueryLens) {
          for (int64_t cached : kCachedPositions) {
            register_case("op/attention/" + std::string(shape.name) + "/q:" + std::to_string(query_len) +
                              "/ctx:" + std::to_string(cached) + suffix,
                          device,
                          [=](benchmark::State& s) { attention_case(s, *config, query_len, cached, dtype, device); });
            if (!device.is_cpu()) continue;
            for (const bool float_kernel : {false, true}) {
              if (float_kernel && !int8_attention_vnni_enabled(config->head_dim)) continue;  // the same kernel
              register_case(std::string(float_kernel ? "op/attention_int8_float/" : "op/attention_int8/") +
                                shape.name + "/q:" + std::to_string(query_len) + "/ctx:" + std::to_string(cached) +
                                suffix,
                            device, [=](benchmark::State& s) {
                              attention_int8_case(s, *config, query_len, cached, dtype, float_kernel);
                            });
            }
          }
        }
      }
      for (int64_t vocab : kVocabs) {
        for (int64_t rows : kArgmaxRows) {
          for (bool with_prob : {true, false}) {
            register_case("op/argmax_top1/V:" + std::to_string(vocab) + "/rows:" + std::to_string(rows) +
                              (with_prob ? "/prob" : "/id") + suffix,
                          device,
                          [=](benchmark::State& s) { argmax_top1_case(s, vocab, rows, with_prob, dtype, device); });
          }
        }
      }
    }
  }
  return true;
}();

}  // namespace
