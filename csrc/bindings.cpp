// The only pybind11 file: exposes the C++ core as dotf._C. Python (python/dotf/) stays thin.
#include "core/check.h"
#include "core/memory.h"
#include "model/transformer.h"
#include "ops/accept.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/sampling.h"
#include "speculative/engine.h"
#include "speculative/selection.h"

#include <torch/csrc/utils/pybind.h>
#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

#include <chrono>

namespace py = pybind11;
using namespace dotf;

namespace {

py::dict stats_to_dict(const DecodeStats& s) {
  py::dict d;
  d["strategy"] = s.strategy;
  d["stop_reason"] = s.stop_reason;
  d["prompt_tokens"] = s.prompt_tokens;
  d["new_tokens"] = s.new_tokens;
  d["seconds"] = s.seconds;
  d["tokens_per_second"] = s.tokens_per_second();
  d["prefill_seconds"] = s.prefill_seconds;
  d["graph_replays"] = s.graphs.replays;
  d["graph_captures"] = s.graphs.captures;
  d["eager_steps"] = s.graphs.eager;
  d["graph_capture_seconds"] = s.graphs.capture_seconds;
  d["graphs_note"] = s.graphs.disabled_reason;
  if (s.strategy == "ar") return d;
  d["selection_seconds"] = s.selection_seconds;
  d["draft_seconds"] = s.draft_seconds;
  d["verify_seconds"] = s.verify_seconds;
  d["rounds"] = s.rounds;
  d["drafted"] = s.drafted;
  d["accepted"] = s.accepted;
  d["round_tokens"] = s.round_tokens;
  d["acceptance_rate"] = s.acceptance_rate();
  d["mean_accepted_length"] = s.mean_accepted_length();
  d["drafted_at"] = s.drafted_at;
  d["accepted_at"] = s.accepted_at;
  d["draft_exit"] = s.draft_exit;
  d["initial_gamma"] = s.initial_gamma;
  d["final_gamma"] = s.final_gamma;
  d["skipped_attention_layers"] = s.skipped_attention;
  d["skipped_mlp_layers"] = s.skipped_mlp;
  d["layer_similarity"] = s.attention_similarity;
  d["mlp_similarity"] = s.mlp_similarity;
  d["plan_note"] = s.plan_note;
  py::dict drafted, accepted;
  drafted["model"] = s.drafted_by_source[0];
  drafted["lookup"] = s.drafted_by_source[1];
  accepted["model"] = s.accepted_by_source[0];
  accepted["lookup"] = s.accepted_by_source[1];
  d["drafted_by_source"] = drafted;
  d["accepted_by_source"] = accepted;
  d["plain_steps"] = s.plain_steps;
  d["fallback_switches"] = s.fallback_switches;
  d["reselections"] = s.reselections;
  if (s.cost_selections > 0) {
    d["cost_selections"] = s.cost_selections;
    d["predicted_acceptance"] = s.predicted_acceptance;
    d["predicted_gain"] = s.predicted_gain;
    d["plan_acceptance"] = s.plan_acceptance;  // -1 until the chosen plan drafted
  }
  return d;
}

py::dict graph_stats_to_dict(const GraphStats& s) {
  py::dict d;
  d["captures"] = s.captures;
  d["replays"] = s.replays;
  d["eager"] = s.eager;
  d["capture_seconds"] = s.capture_seconds;
  d["disabled_reason"] = s.disabled_reason;
  return d;
}

LogitsFor logits_for(const std::string& which) {
  if (which == "all") return LogitsFor::All;
  if (which == "last") return LogitsFor::Last;
  if (which == "none") return LogitsFor::None;
  throw ValueError("logits must be 'all', 'last' or 'none', got '" + which + "'");
}

// Raised between rounds when Python has a pending signal (Ctrl-C). Only the main thread handles
// signals, and taking the GIL costs up to the interpreter's switch interval (5 ms) while another
// Python thread runs: look at most every 20 ms, and only from the main thread (see generate).
void check_python_signals() {
  thread_local std::chrono::steady_clock::time_point last{};
  const auto now = std::chrono::steady_clock::now();
  if (now - last < std::chrono::milliseconds(20)) return;
  last = now;
  py::gil_scoped_acquire gil;
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

bool on_python_main_thread() {  // call with the GIL held (no function-local static: it could deadlock on the GIL)
  return py::module_::import("threading").attr("main_thread")().attr("ident").cast<unsigned long>() ==
         PyThread_get_thread_ident();
}

// Speculative options by name; an unknown name is a ValueError rather than silently ignored.
GenerateRequest request_from_options(const py::dict& options) {
  GenerateRequest r;
  SpecOptions& s = r.spec;
  for (auto item : options) {
    const std::string key = py::cast<std::string>(item.first);
    py::handle v = item.second;
    if (key == "threshold") s.selection.threshold = py::cast<double>(v);
    else if (key == "budget") s.selection.budget = py::cast<double>(v);
    else if (key == "keep_first") s.selection.keep_first = py::cast<int64_t>(v);
    else if (key == "similarity") {
      const std::string agg = py::cast<std::string>(v);
      DOTF_CHECK_ARG(agg == "mean" || agg == "last", "similarity must be 'mean' or 'last', got '", agg, "'");
      s.use_last_position = agg == "last";
    }
    else if (key == "max_draft") s.max_draft = py::cast<int64_t>(v);
    else if (key == "gamma") r.gamma = py::cast<double>(v);
    else if (key == "margin") r.margin = py::cast<double>(v);
    else if (key == "draft_exit") s.draft_exit = draft_exit_from_string(py::cast<std::string>(v));
    else if (key == "alpha") r.alpha = py::cast<double>(v);
    else if (key == "carry_gamma") r.carry_gamma = py::cast<bool>(v);
    else if (key == "adaptive_gamma") r.adaptive_gamma = py::cast<bool>(v);
    else if (key == "draft") r.draft = draft_weights_from_string(py::cast<std::string>(v));
    else if (key == "lookup") s.lookup = py::cast<bool>(v);
    else if (key == "lookup_every_step") s.lookup_every_step = py::cast<bool>(v);
    else if (key == "lookup_max_ngram") s.lookup_options.max_ngram = py::cast<int64_t>(v);
    else if (key == "lookup_min_ngram") s.lookup_options.min_ngram = py::cast<int64_t>(v);
    else if (key == "lookup_max_tokens") s.lookup_options.max_tokens = py::cast<int64_t>(v);
    else if (key == "break_even") s.break_even = py::cast<bool>(v);
    else if (key == "reselect_every") s.reselect_every = py::cast<int64_t>(v);
    else if (key == "selection") {
      const std::string rule = py::cast<std::string>(v);
      DOTF_CHECK_ARG(rule == "threshold" || rule == "cost", "selection must be 'threshold' or 'cost', got '", rule, "'");
      s.rule = rule == "cost" ? SpecOptions::Rule::Cost : SpecOptions::Rule::Threshold;
    }
    else if (key == "sensitivity") s.sensitivity = py::cast<double>(v);
    else if (key == "cost_warmup_rounds") s.cost_warmup_rounds = py::cast<int64_t>(v);
    else if (key == "cuda_graphs") r.cuda_graphs = py::cast<bool>(v);
    else throw ValueError("unknown generate option '" + key + "'");
  }
  return r;
}

struct PyModel {
  std::shared_ptr<Transformer> model;
  std::shared_ptr<Engine> engine;

  PyModel(const ModelConfig& config, const TensorMap& tensors, at::ScalarType dtype, at::Device device,
          int64_t max_seq_len, const std::string& linear_path) {
    // "auto": the path measured fastest for small-M products with these weights (ops/linear.cpp).
    const LinearPath path =
        linear_path == "auto" ? default_linear_path(dtype, device) : linear_path_from_string(linear_path);
    ModelWeights w = build_weights(config, tensors, dtype, device, path);
    model = std::make_shared<Transformer>(config, std::move(w), max_seq_len);
    engine = std::make_shared<Engine>(model);
  }
};

// Step forwards through CUDA graphs, for the GPU benchmark and tests (generate uses the Engine's).
struct PyGraphedForward {
  std::shared_ptr<Transformer> model;  // keeps the model alive while graphs point into its weights
  std::unique_ptr<GraphedForward> graphs;
};

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "dotf C++ core: transformer forward, KV cache, draft selection, speculative decoding";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const dotf::ValueError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const dotf::TypeError& e) {
      PyErr_SetString(PyExc_TypeError, e.what());
    }
  });

  m.def("build_info", [] {
    py::dict d;
#ifdef DOTF_WITH_CUDA
    d["cuda"] = true;
    d["cuda_archs"] = std::string(DOTF_CUDA_ARCHS);
#else
    d["cuda"] = false;
    d["cuda_archs"] = std::string();
#endif
    d["parallel"] = at::get_parallel_info();
    // Packed weights ask for transparent huge pages (core/memory.h).
    d["huge_pages"] = huge_pages_enabled();
    d["transparent_huge_pages"] = transparent_huge_page_mode();
    return d;
  });

  py::class_<RopeScaling>(m, "RopeScaling")
      .def(py::init<>())
      .def_readwrite("type", &RopeScaling::type)
      .def_readwrite("factor", &RopeScaling::factor)
      .def_readwrite("low_freq_factor", &RopeScaling::low_freq_factor)
      .def_readwrite("high_freq_factor", &RopeScaling::high_freq_factor)
      .def_readwrite("original_max_position_embeddings", &RopeScaling::original_max_position_embeddings);

  py::class_<ModelConfig>(m, "ModelConfig")
      .def(py::init<>())
      .def_readwrite("model_type", &ModelConfig::model_type)
      .def_readwrite("vocab_size", &ModelConfig::vocab_size)
      .def_readwrite("hidden_size", &ModelConfig::hidden_size)
      .def_readwrite("intermediate_size", &ModelConfig::intermediate_size)
      .def_readwrite("num_layers", &ModelConfig::num_layers)
      .def_readwrite("num_heads", &ModelConfig::num_heads)
      .def_readwrite("num_kv_heads", &ModelConfig::num_kv_heads)
      .def_readwrite("head_dim", &ModelConfig::head_dim)
      .def_readwrite("max_position_embeddings", &ModelConfig::max_position_embeddings)
      .def_readwrite("rms_norm_eps", &ModelConfig::rms_norm_eps)
      .def_readwrite("rope_theta", &ModelConfig::rope_theta)
      .def_readwrite("rope_scaling", &ModelConfig::rope_scaling)
      .def_readwrite("tie_word_embeddings", &ModelConfig::tie_word_embeddings)
      .def("validate", &ModelConfig::validate)
      .def("rope_inv_freq", &ModelConfig::rope_inv_freq);

  py::class_<KVCache>(m, "KVCache")
      .def_property_readonly("length", &KVCache::length)
      .def_property_readonly("capacity", &KVCache::capacity)
      .def_property_readonly("nbytes", &KVCache::nbytes)
      .def("keys", &KVCache::keys, py::arg("layer"), "[capacity, kv_heads, head_dim] view of a layer's keys")
      .def("values", &KVCache::values, py::arg("layer"))
      .def("append", &KVCache::append, py::arg("count"))
      .def("truncate", &KVCache::truncate, py::arg("length"));

  py::class_<PyModel>(m, "Model")
      .def(py::init<const ModelConfig&, const TensorMap&, at::ScalarType, at::Device, int64_t, const std::string&>(),
           py::arg("config"), py::arg("tensors"), py::arg("dtype"), py::arg("device"), py::arg("max_seq_len"),
           py::arg("linear_path") = "auto")
      .def_property_readonly("max_seq_len", [](const PyModel& p) { return p.model->max_seq_len(); })
      .def_property_readonly("weight_bytes", [](const PyModel& p) { return p.model->weights().nbytes(); })
      .def_property_readonly("linear_path", [](const PyModel& p) { return to_string(p.model->weights().lm_head.path()); })
      .def("new_cache", [](const PyModel& p, int64_t capacity) { return p.model->new_cache(capacity); },
           py::arg("capacity"))
      .def(
          "forward",
          [](PyModel& p, const at::Tensor& tokens, int64_t start, KVCache& cache, std::vector<bool> attention,
             std::vector<bool> mlp, bool similarity, const std::string& logits, const std::string& weights) {
            const auto draft = p.engine->draft_weights(draft_weights_from_string(weights));
            ForwardOutput out;
            {
              py::gil_scoped_release release;
              out = p.model->forward(tokens, start, cache, LayerPlan{std::move(attention), std::move(mlp)},
                                     ForwardOptions{logits_for(logits), similarity}, draft.get());
            }
            return py::make_tuple(out.logits, out.similarity, out.last_similarity);
          },
          py::arg("tokens"), py::arg("start"), py::arg("cache"), py::arg("attention"), py::arg("mlp"),
          py::arg("similarity") = false, py::arg("logits") = "all", py::arg("weights") = "same",
          "weights: 'same' (the model's) or 'int8' (the derived draft copy)")
      .def("graph_stats", [](const PyModel& p) { return graph_stats_to_dict(p.engine->graph_stats()); },
           "CUDA graph totals over this model's generate calls")
      .def("release_graphs", [](PyModel& p) { p.engine->release_graphs(); },
           "drop the captured CUDA graphs and the KV cache they write")
      .def_property_readonly("draft_bytes", [](const PyModel& p) { return p.engine->draft_bytes(); })
      .def("release_draft", [](PyModel& p) { p.engine->release_draft(); })
      .def(
          "generate",
          [](PyModel& p, const at::Tensor& prompt, const std::string& strategy, int64_t max_new_tokens,
             std::vector<int64_t> eos, std::optional<std::function<void(const std::vector<int64_t>&)>> on_tokens,
             const py::dict& options, std::optional<std::vector<bool>> plan_attention,
             std::optional<std::vector<bool>> plan_mlp, KVCache* cache) {
            GenerateRequest r = request_from_options(options);
            r.strategy = strategy_from_string(strategy);
            r.decode.max_new_tokens = max_new_tokens;
            r.decode.eos_token_ids = std::move(eos);
            if (on_tokens) {
              auto fn = *on_tokens;
              r.decode.on_tokens = [fn](const std::vector<int64_t>& chunk) {
                py::gil_scoped_acquire gil;
                fn(chunk);
              };
            }
            if (on_python_main_thread()) r.decode.check_interrupt = check_python_signals;
            if (plan_attention || plan_mlp) {
              LayerPlan plan = LayerPlan::full(p.model->config().num_layers);
              if (plan_attention) plan.attention = *plan_attention;
              if (plan_mlp) plan.mlp = *plan_mlp;
              r.spec.plan = plan;
            }
            DecodeResult result;
            {
              py::gil_scoped_release release;
              result = p.engine->generate(prompt, r, cache);
            }
            return py::make_tuple(result.tokens, stats_to_dict(result.stats));
          },
          py::arg("prompt"), py::arg("strategy") = "ar", py::arg("max_new_tokens") = 64,
          py::arg("eos_token_ids") = std::vector<int64_t>{}, py::arg("on_tokens") = py::none(),
          py::arg("options") = py::dict(), py::arg("plan_attention") = py::none(), py::arg("plan_mlp") = py::none(),
          py::arg("cache") = nullptr);

  py::class_<PyGraphedForward>(m, "GraphedForward")
      .def(py::init([](const PyModel& p, bool enabled, int64_t max_tokens, int64_t max_graphs, int64_t min_bucket) {
             return PyGraphedForward{p.model, std::make_unique<GraphedForward>(
                                                  *p.model, GraphOptions{enabled, max_tokens, max_graphs, min_bucket})};
           }),
           py::arg("model"), py::arg("enabled") = true, py::arg("max_tokens") = 17, py::arg("max_graphs") = 128,
           py::arg("min_bucket") = 256)
      .def(
          "forward",
          [](PyGraphedForward& g, const std::vector<int64_t>& tokens, int64_t start, KVCache& cache,
             std::vector<bool> attention, std::vector<bool> mlp, bool similarity, const std::string& logits) {
            ForwardOutput out;
            {
              py::gil_scoped_release release;
              out = g.graphs->forward(tokens, start, cache, LayerPlan{std::move(attention), std::move(mlp)},
                                      ForwardOptions{logits_for(logits), similarity});
            }
            return py::make_tuple(out.logits, out.similarity, out.last_similarity);
          },
          py::arg("tokens"), py::arg("start"), py::arg("cache"), py::arg("attention"), py::arg("mlp"),
          py::arg("similarity") = false, py::arg("logits") = "all",
          "Model.forward for tokens given as a list; a replay's outputs are overwritten by the next forward")
      .def_property_readonly("stats", [](const PyGraphedForward& g) { return graph_stats_to_dict(g.graphs->stats()); })
      .def_property_readonly("graphs", [](const PyGraphedForward& g) { return g.graphs->graphs(); })
      .def("clear", [](PyGraphedForward& g) { g.graphs->clear(); });

  m.def(
      "select_draft_plan",
      [](const std::vector<double>& similarity, double threshold, double budget, int64_t keep_first) {
        LayerPlan plan = select_draft_plan(similarity, SelectionOptions{threshold, budget, keep_first});
        return plan.skipped_attention();
      },
      py::arg("similarity"), py::arg("threshold"), py::arg("budget") = 0.5, py::arg("keep_first") = 1,
      "Attention layers the draft drops for these per-layer similarities");

  m.def(
      "gamma_sequence",
      [](double gamma, double alpha, const std::vector<std::tuple<int64_t, int64_t, bool>>& rounds) {
        AdaptiveGamma g{gamma, alpha, 0.0};
        std::vector<double> out;
        for (const auto& [accepted, drafted, hit_max] : rounds) {
          g.update(accepted, drafted, hit_max);
          out.push_back(g.gamma);
        }
        return out;
      },
      py::arg("gamma"), py::arg("alpha"), py::arg("rounds"),
      "gamma after each (accepted, drafted, hit_max_draft) round, by Draft & Verify's rule");

  // Ops, exposed for the kernel tests (CPU reference vs CUDA) and microbenchmarks.
  auto ops = m.def_submodule("ops", "individual ops");
  ops.def("add_rmsnorm_cossim", [](at::Tensor h, std::optional<at::Tensor> delta, const at::Tensor& weight, double eps,
                                   bool want_cos) {
    at::Tensor normed = at::empty_like(h);
    at::Tensor cos = want_cos ? at::empty({h.size(0)}, h.options().dtype(at::kFloat)) : at::Tensor();
    add_rmsnorm_cossim(h, delta ? *delta : at::Tensor(), weight, eps, normed, cos);
    return py::make_tuple(h, normed, cos);
  });
  ops.def("rope_qkv_to_cache", [](const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, int64_t start,
                                  int64_t num_heads, int64_t num_kv_heads, at::Tensor k_cache, at::Tensor v_cache,
                                  const std::optional<at::Tensor>& device_start) {
    at::Tensor q = at::empty({qkv.size(0), num_heads, k_cache.size(2)}, qkv.options());
    rope_qkv_to_cache(qkv, cos, sin, start, num_heads, num_kv_heads, q, k_cache, v_cache,
                      device_start.value_or(at::Tensor()));
    return q;
  }, py::arg("qkv"), py::arg("cos"), py::arg("sin"), py::arg("start"), py::arg("num_heads"), py::arg("num_kv_heads"),
     py::arg("k_cache"), py::arg("v_cache"), py::arg("device_start") = py::none());
  ops.def("attention_with_cache", [](const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                                     int64_t start, double scale, const std::optional<at::Tensor>& device_start) {
    return attention_with_cache(q, k_cache, v_cache, start, scale, device_start.value_or(at::Tensor()));
  }, py::arg("q"), py::arg("k_cache"), py::arg("v_cache"), py::arg("start"), py::arg("scale"),
     py::arg("device_start") = py::none(),
     "device_start: [1] int64 holding the real start (read by the kernel); start is then its upper bound");
  ops.def("greedy_accept", &greedy_accept, py::arg("drafts"), py::arg("target"));
  ops.def("silu_mul", &silu_mul, py::arg("gate_up"), "silu(gate) * up of a [T, 2I] gate|up tensor");
  ops.def("attention_with_cache_cpu", &attention_with_cache_cpu);
  ops.def("attention_with_cache_reference", &attention_with_cache_reference);
  ops.def("fused_attention_supports", &fused_attention_supports, py::arg("q"), py::arg("k_cache"));
  ops.def("argmax_top1", [](const at::Tensor& logits, bool with_prob) {
    auto [ids, probs] = argmax_top1(logits, with_prob);
    return py::make_tuple(ids, probs);
  }, py::arg("logits"), py::arg("with_prob") = true);
  ops.def("top1_margin", &top1_margin, py::arg("logits"), py::arg("ids"),
          "top-1 logit minus the largest other logit per row (the margin draft exit's confidence)");
}
