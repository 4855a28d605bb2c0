// Whole decoder steps on random-weight models of real shapes (SmolLM2-135M, Qwen2.5-0.5B; pick one
// with --benchmark_filter):
//
//   step/full/<model>/ctx:<n>/<dtype>/<device>                one token at position n, every sublayer
//   step/draft/<model>/<plan>[+int8]/ctx:<n>/<dtype>/<device> one token under a draft layer plan
//   step/verify/<model>/k:<k>/ctx:512/<dtype>/<device>        k+1 tokens at positions 512.., every sublayer
//
// A step is what the decoder does per forward: Transformer::forward, argmax_top1 over the logits it
// needs (with the top-1 probability for drafts, which the draft-exit test reads) and the ids back on
// the host. Plans: none skips nothing (only with +int8: dotf's default draft), attn_skip_odd skips
// the attention of every odd layer, layer_skip_odd both sublayers of every odd layer; +int8 runs the
// draft on the int8 copy of the linear weights (CPU only, int8_draft_path()), as the engine's
// draft_weights="int8" does. Linear layers use dotf's default path for the dtype and device, as the
// Python API's linear_path="auto".
//
// Draft and verify cases report x_step: their time over one full step at the same context (measured
// once per model and context), i.e. what a draft step or verifying k drafts costs in decode steps.
//
// The KV cache holds random keys and values: attention's work does not depend on them, and a real
// prefill of 2048 tokens would take minutes on one CPU thread. Every iteration starts from the same
// cache length (truncate is O(1)).
#include "bench_common.h"
#include "model/transformer.h"
#include "ops/linear.h"
#include "ops/sampling.h"

#include <ATen/ops/randint.h>

#include <map>
#include <memory>
#include <stdexcept>

namespace {

using namespace dotf;
using namespace dotf::bench;

const std::vector<int64_t> kContexts = {128, 512, 2048};
constexpr int64_t kVerifyContext = 512;
constexpr int64_t kMaxDrafts = 12;
constexpr int64_t kCacheCapacity = 2048 + kMaxDrafts + 1;
const std::vector<const char*> kStepModels = {"smollm2-135m", "qwen2.5-0.5b"};

const ModelShape& shape_named(const std::string& name) {
  for (const ModelShape& s : model_shapes()) {
    if (name == s.name) return s;
  }
  throw std::invalid_argument("no model shape " + name);
}

// One model at a time: Qwen2.5-0.5B in fp32 holds ~5.5 GB with its packed weights. Cases are
// registered model by model, so a run builds each model once.
struct LoadedModel {
  std::string key;
  std::unique_ptr<Transformer> model;
  KVCache cache;                                // kCacheCapacity rows of random keys and values
  std::unique_ptr<ModelWeights> int8_draft;     // built on first use
  std::map<int64_t, double> full_step_seconds;  // context -> median full-step time, for x_step
};

LoadedModel& load(const ModelShape& shape, at::ScalarType dtype, at::Device device) {
  // Never destroyed: freeing CUDA memory from a static destructor, after the CUDA runtime has shut
  // down at exit, fails.
  static LoadedModel& held = *new LoadedModel;
  const std::string key = std::string(shape.name) + "/" + dtype_name(dtype) + "/" + device_name(device);
  if (held.key == key) return held;
  held = LoadedModel{};  // free the previous model before building the next
  const ModelConfig& c = shape.config;
  ModelWeights weights =
      build_weights(c, fixtures::random_tensors(c), dtype, device, default_linear_path(dtype, device));
  held.model = std::make_unique<Transformer>(c, std::move(weights), kCacheCapacity);
  held.cache = held.model->new_cache(kCacheCapacity);
  held.cache.key_buffer().normal_();
  held.cache.value_buffer().normal_();
  held.key = key;
  return held;
}

const ModelWeights* int8_draft_weights(LoadedModel& m) {
  if (!m.int8_draft)
    m.int8_draft = std::make_unique<ModelWeights>(m.model->weights().with_linear_path(int8_draft_path()));
  return m.int8_draft.get();
}

// Sets the cache length to `context`: rows past the current length hold random values already.
void set_length(KVCache& cache, int64_t context) {
  if (cache.length() >= context) {
    cache.truncate(context);
  } else {
    cache.append(context - cache.length());
  }
}

// One decoder step: tokens [T] at positions start..start+T-1 -> greedy ids [T or 1] on the host.
at::Tensor decoder_step(LoadedModel& m, const at::Tensor& tokens, int64_t start, const LayerPlan& plan,
                        LogitsFor logits, bool with_prob, const ModelWeights* weights = nullptr) {
  ForwardOutput out = m.model->forward(tokens, start, m.cache, plan, ForwardOptions{logits, false}, weights);
  return argmax_top1(out.logits, with_prob).first.cpu();
}

at::Tensor random_tokens(const ModelConfig& c, int64_t count) {  // [count] int64 on the CPU, as the decoder feeds them
  return at::randint(c.vocab_size, {count}, at::TensorOptions().dtype(at::kLong));
}

struct DraftPlan {
  const char* name;
  bool skip_attention, skip_mlp;  // of every odd layer
};
// "none" skips nothing: with +int8 it is dotf's default draft (alone it would be the full step).
const std::vector<DraftPlan> kDraftPlans = {{"none", false, false}, {"attn_skip_odd", true, false},
                                            {"layer_skip_odd", true, true}};

LayerPlan odd_layers_skipped(int64_t num_layers, const DraftPlan& draft) {
  LayerPlan plan = LayerPlan::full(num_layers);
  for (int64_t l = 1; l < num_layers; l += 2) {
    if (draft.skip_attention) plan.attention[l] = false;
    if (draft.skip_mlp) plan.mlp[l] = false;
  }
  return plan;
}

// The median full decode step at a context, measured once per model (the unit of x_step counters).
double full_step_seconds(LoadedModel& m, const ModelShape& shape, int64_t context, at::Device device) {
  if (!m.full_step_seconds.count(context)) {
    const LayerPlan full = LayerPlan::full(shape.config.num_layers);
    const at::Tensor token = random_tokens(shape.config, 1);
    m.full_step_seconds[context] = CallTimer(device).median_seconds([&] {
      set_length(m.cache, context);
      decoder_step(m, token, context, full, LogitsFor::Last, /*with_prob=*/false);
    });
  }
  return m.full_step_seconds[context];
}

void full_step_case(benchmark::State& state, const ModelShape& shape, int64_t context, at::ScalarType dtype,
                    at::Device device) {
  LoadedModel& m = load(shape, dtype, device);
  const LayerPlan full = LayerPlan::full(shape.config.num_layers);
  const at::Tensor token = random_tokens(shape.config, 1);
  run_iterations(state, device, [&] {
    set_length(m.cache, context);
    decoder_step(m, token, context, full, LogitsFor::Last, /*with_prob=*/false);
  });
}

void draft_step_case(benchmark::State& state, const ModelShape& shape, const DraftPlan& draft, bool int8,
                     int64_t context, at::ScalarType dtype, at::Device device) {
  LoadedModel& m = load(shape, dtype, device);
  const LayerPlan plan = odd_layers_skipped(shape.config.num_layers, draft);
  const ModelWeights* weights = int8 ? int8_draft_weights(m) : nullptr;
  const double step = full_step_seconds(m, shape, context, device);
  const at::Tensor token = random_tokens(shape.config, 1);
  const double seconds = run_iterations(state, device, [&] {
    set_length(m.cache, context);
    decoder_step(m, token, context, plan, LogitsFor::Last, /*with_prob=*/true, weights);
  });
  if (state.iterations() > 0) state.counters["x_step"] = seconds / double(state.iterations()) / step;
}

void verify_case(benchmark::State& state, const ModelShape& shape, int64_t drafts, at::ScalarType dtype,
                 at::Device device) {
  LoadedModel& m = load(shape, dtype, device);
  const LayerPlan full = LayerPlan::full(shape.config.num_layers);
  const double step = full_step_seconds(m, shape, kVerifyContext, device);
  const at::Tensor tokens = random_tokens(shape.config, drafts + 1);  // the last accepted token + k drafts
  const double seconds = run_iterations(state, device, [&] {
    set_length(m.cache, kVerifyContext);
    decoder_step(m, tokens, kVerifyContext, full, LogitsFor::All, /*with_prob=*/false);
  });
  if (state.iterations() > 0)
    state.counters["x_step"] = seconds / double(state.iterations()) / step;
}

std::vector<at::ScalarType> step_dtypes(at::Device device) {
  // CPU: fp32, what dotf runs there. CUDA: bf16 too, what GPU runs use.
  if (device.is_cuda()) return {at::kFloat, at::kBFloat16};
  return {at::kFloat};
}

const bool registered = [] {
  for (const char* model_name : kStepModels) {
    const ModelShape* shape = &shape_named(model_name);
    for (const at::Device device : bench_devices()) {
      for (const at::ScalarType dtype : step_dtypes(device)) {
        const std::string suffix = "/" + dtype_name(dtype) + "/" + device_name(device);
        const std::string model = std::string(model_name);
        for (int64_t context : kContexts) {
          register_case("step/full/" + model + "/ctx:" + std::to_string(context) + suffix, device,
                        [=](benchmark::State& s) { full_step_case(s, *shape, context, dtype, device); });
        }
        for (const DraftPlan& draft : kDraftPlans) {
          // The int8 draft is CPU only (fp32 models here).
          const bool int8_possible = !device.is_cuda() && dtype == at::kFloat;
          for (bool int8 : {false, true}) {
            if (int8 && !int8_possible) continue;
            if (!int8 && !draft.skip_attention && !draft.skip_mlp) continue;  // that is step/full
            const DraftPlan* plan = &draft;
            for (int64_t context : kContexts) {
              register_case("step/draft/" + model + "/" + draft.name + (int8 ? "+int8" : "") +
                                "/ctx:" + std::to_string(context) + suffix,
                            device,
                            [=](benchmark::State& s) {
                              draft_step_case(s, *shape, *plan, int8, context, dtype, device);
                            });
            }
          }
        }
        for (int64_t drafts = 0; drafts <= kMaxDrafts; ++drafts) {
          register_case("step/verify/" + model + "/k:" + std::to_string(drafts) + "/ctx:" +
                            std::to_string(kVerifyContext) + suffix,
                        device, [=](benchmark::State& s) { verify_case(s, *shape, drafts, dtype, device); });
        }
      }
    }
  }
  return true;
}();

}  // namespace
