// dotf._C.testing: hooks that only tests and benchmarks use: step forwards through CUDA graphs, the
// selection and adaptive-gamma rules on their own, and the individual ops (CPU reference vs CUDA
// kernels, microbenchmarks).
#include "core/check.h"
#include "core/memory.h"
#include "ops/accept.h"
#include "ops/activation.h"
#include "ops/attention.h"
#include "ops/attention_int8.h"
#include "ops/cpu/attention_avx2.h"
#include "ops/cpu/features.h"
#include "ops/linear_screen.h"
#include "ops/quant_linear.h"
#include "ops/rmsnorm.h"
#include "ops/rope.h"
#include "ops/sample.h"
#include "ops/sampling.h"
#include "python/convert.h"
#include "python/py_model.h"
#include "speculative/policies/draft_exit.h"
#include "speculative/selection.h"

#include <pybind11/stl.h>

#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>

namespace py = pybind11;

namespace dotf {

namespace {

// Step forwards through CUDA graphs, for the GPU benchmark and tests (generate uses the Engine's).
struct PyGraphedForward {
  std::shared_ptr<Transformer> model;  // keeps the model alive while graphs point into its weights
  std::unique_ptr<GraphedForward> graphs;
};

// An LM-head screen: one built here over a given weight, or a model's own.
struct PyLinearScreen {
  std::shared_ptr<const LinearScreen> screen;
};

}  // namespace

void register_testing(py::module_& m) {
  auto t = m.def_submodule("testing", "hooks for tests and benchmarks; not a stable API");
  py::class_<PyGraphedForward>(t, "GraphedForward")
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
                                      ForwardOptions{parse_name<LogitsFor>(logits), similarity});
            }
            return py::make_tuple(out.logits, out.similarity, out.last_similarity);
          },
          py::arg("tokens"), py::arg("start"), py::arg("cache"), py::arg("attention"), py::arg("mlp"),
          py::arg("similarity") = false, py::arg("logits") = "all",
          "Model.forward for tokens given as a list; a replay's outputs are overwritten by the next forward")
      .def_property_readonly("stats", [](const PyGraphedForward& g) { return graph_stats_to_dict(g.graphs->stats()); })
      .def_property_readonly("graphs", [](const PyGraphedForward& g) { return g.graphs->graphs(); })
      .def("clear", [](PyGraphedForward& g) { g.graphs->clear(); });

  t.def(
      "select_draft_plan",
      [](const std::vector<double>& similarity, double threshold, double budget, int64_t keep_first) {
        LayerPlan plan = select_draft_plan(similarity, SelectionOptions{threshold, budget, keep_first});
        return plan.skipped_attention();
      },
      py::arg("similarity"), py::arg("threshold"), py::arg("budget") = 0.5, py::arg("keep_first") = 1,
      "Attention layers the draft drops for these per-layer similarities");

  t.def(
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
  py::class_<PyLinearScreen>(t, "LinearScreen", "top-k outputs of a linear layer through an int8 screen")
      .def(py::init([](const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
             return PyLinearScreen{std::make_shared<const LinearScreen>(Linear(weight, bias, LinearPath::Avx2Packed))};
           }),
           py::arg("weight"), py::arg("bias") = py::none(), "a screen of Linear(weight, bias) on path 'avx2'")
      .def("__call__", [](const PyLinearScreen& s, const at::Tensor& x) { return s.screen->layer()(x); },
           "the layer's full product")
      .def("top_k", [](const PyLinearScreen& s, const at::Tensor& x, int64_t k) { return s.screen->top_k(x, k); },
           py::arg("x"), py::arg("k"))
      .def(
          "bounds",
          [](const PyLinearScreen& s, const at::Tensor& x) -> py::object {
            auto [l8, bound] = s.screen->bounds(x);
            if (!l8.defined()) return py::none();
            return py::make_tuple(l8, bound);
          },
          py::arg("x"), "(int8 outputs, their bound), or None where the bound does not apply")
      .def_property_readonly("extra_bytes", [](const PyLinearScreen& s) { return s.screen->extra_bytes(); });
  t.def(
      "lm_head_screen",
      [](PyModel& p) -> py::object {
        auto screen = p.engine->lm_head_screen();
        if (!screen) return py::none();
        return py::cast(PyLinearScreen{std::move(screen)});
      },
      py::arg("model"), "the model's LM-head screen (built at first use), or None where its head has none");
  t.def("set_available_memory_bytes", &set_available_memory_bytes_for_tests, py::arg("bytes"),
        "the free memory that generate()'s cache check sees (-1: the machine's own figure again)");
  t.def("available_memory_bytes", &available_memory_bytes, "the free memory that generate()'s cache check sees");

  auto ops = t.def_submodule("ops", "individual ops");
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
                                     int64_t start, double scale, const std::optional<at::Tensor>& device_start,
                                     int64_t window) {
    return attention_with_cache(q, k_cache, v_cache, start, scale, device_start.value_or(at::Tensor()), window);
  }, py::arg("q"), py::arg("k_cache"), py::arg("v_cache"), py::arg("start"), py::arg("scale"),
     py::arg("device_start") = py::none(), py::arg("window") = 0,
     "device_start: [1] int64 holding the real start (read by the kernel); start is then its upper bound");
  ops.def("greedy_accept", &greedy_accept, py::arg("drafts"), py::arg("target"));
  ops.def("silu_mul", &silu_mul, py::arg("gate_up"), "silu(gate) * up of a [T, 2I] gate|up tensor");
  ops.def("attention_with_cache_cpu", &attention_with_cache_cpu, py::arg("q"), py::arg("k_cache"), py::arg("v_cache"),
          py::arg("start"), py::arg("scale"), py::arg("window") = 0);
  ops.def("attention_with_cache_reference", &attention_with_cache_reference, py::arg("q"), py::arg("k_cache"),
          py::arg("v_cache"), py::arg("start"), py::arg("scale"), py::arg("window") = 0);
  ops.def("fused_attention_supports", &fused_attention_supports, py::arg("q"), py::arg("k_cache"));
  ops.def("quantize_kv_rows", [](const at::Tensor& k_cache, const at::Tensor& v_cache, int64_t start, int64_t count,
                                 at::Tensor k_q, at::Tensor v_q, at::Tensor k_scale, at::Tensor v_scale,
                                 const std::optional<at::Tensor>& device_start) {
    quantize_kv_rows(k_cache, v_cache, start, count, k_q, v_q, k_scale, v_scale, device_start.value_or(at::Tensor()));
  }, py::arg("k_cache"), py::arg("v_cache"), py::arg("start"), py::arg("count"), py::arg("k_q"), py::arg("v_q"),
     py::arg("k_scale"), py::arg("v_scale"), py::arg("device_start") = py::none(),
     "quantizes cache rows [start, start + count) into the int8 mirror");
  ops.def("int8_attention_with_cache", [](const at::Tensor& q, const at::Tensor& k_q, const at::Tensor& v_q,
                                          const at::Tensor& k_scale, const at::Tensor& v_scale, int64_t start,
                                          double scale, int64_t window, const std::optional<at::Tensor>& device_start) {
    return int8_attention_with_cache(q, k_q, v_q, k_scale, v_scale, start, scale, window,
                                     device_start.value_or(at::Tensor()));
  }, py::arg("q"), py::arg("k_q"), py::arg("v_q"), py::arg("k_scale"), py::arg("v_scale"), py::arg("start"),
     py::arg("scale"), py::arg("window") = 0, py::arg("device_start") = py::none());
  ops.def("int8_attention_with_cache_reference", &int8_attention_with_cache_reference, py::arg("q"), py::arg("k_q"),
          py::arg("v_q"), py::arg("k_scale"), py::arg("v_scale"), py::arg("start"), py::arg("scale"),
          py::arg("window") = 0);
  ops.def("fused_int8_attention_supports", &avx2::int8_attention_supports, py::arg("q"));
  ops.def("set_avx512_kernels", [](bool allowed) { avx512_kernels_allowed() = allowed; }, py::arg("allowed"),
          "let kernels use AVX-512 where the CPU has it (default) or keep them to AVX2, to compare the two");
  ops.def("set_int8_attention_vnni", [](bool allowed) { int8_attention_vnni_allowed() = allowed; },
          py::arg("allowed"),
          "let the int8 mirror's attention run its integer VNNI kernel where the CPU has it (default), or the "
          "float kernel that widens the mirror's rows exactly");
  ops.def("cpu_has_avx512_vnni", &cpu_has_avx512_vnni);
  ops.def("cpu_has_avx512vl", &cpu_has_avx512vl);
  ops.def("argmax_top1", [](const at::Tensor& logits, bool with_prob) {
    auto [ids, probs] = argmax_top1(logits, with_prob);
    return py::make_tuple(ids, probs);
  }, py::arg("logits"), py::arg("with_prob") = true);
  ops.def("warped_probabilities", [](const at::Tensor& logits, double temperature, int64_t top_k, double top_p,
                                     double min_p) {
    return warped_probabilities(logits, SamplingParams{temperature, top_k, top_p, min_p});
  }, py::arg("logits"), py::arg("temperature") = 1.0, py::arg("top_k") = 0, py::arg("top_p") = 1.0,
     py::arg("min_p") = 0.0, "softmax of the logits after temperature, top-k, top-p and min-p");
  ops.def("sample_rows", &sample_rows, py::arg("probs"), py::arg("uniforms"));
  ops.def("speculative_accept", [](const at::Tensor& p, const at::Tensor& q, const at::Tensor& drafts,
                                   const at::Tensor& lookup, const at::Tensor& uniforms) {
    auto [verdict, ratios] = speculative_accept(p, q, drafts, lookup, uniforms);
    return py::make_tuple(verdict, ratios);
  }, py::arg("p"), py::arg("q"), py::arg("drafts"), py::arg("lookup"), py::arg("uniforms"));
  ops.def("accept_output_distribution", [](const at::Tensor& p, const std::optional<at::Tensor>& q, int64_t x) {
    return accept_output_distribution(p, q.value_or(at::Tensor()), x);
  }, py::arg("p"), py::arg("q"), py::arg("x"),
     "distribution of the token emitted where draft x (drawn from q; None: a lookup draft) was proposed");
  py::class_<QuantizedWeight>(ops, "QuantizedWeight", "a weight quantized by quantize_weight (ops/quant_linear.h)")
      .def_readonly("qweight", &QuantizedWeight::qweight)
      .def_readonly("scale", &QuantizedWeight::scale)
      .def_readonly("bits", &QuantizedWeight::bits)
      .def_readonly("group", &QuantizedWeight::group)
      .def_readonly("in_features", &QuantizedWeight::in_features)
      .def_property_readonly("out_features", &QuantizedWeight::out_features)
      .def_property_readonly("nbytes", &QuantizedWeight::bytes);
  ops.def("quantize_weight", &quantize_weight, py::arg("w"), py::arg("bits"), py::arg("group") = kInt4Group,
          "int8 per output channel (bits 8) or int4 in groups along K (bits 4), on w's device");
  ops.def("dequantize_weight", [](const QuantizedWeight& w) { return dequantize_weight(w); }, py::arg("w"),
          "q * scale as [N, K] float64");
  ops.def("quant_linear", &quant_linear, py::arg("x"), py::arg("w"), py::arg("bias") = py::none(),
          "x (q * scale)^T + bias in x's dtype: the CUDA kernels, or the float64 reference on the CPU");
  ops.def("quant_linear_reference", &quant_linear_reference, py::arg("x"), py::arg("w"), py::arg("bias") = py::none(),
          "x (q * scale)^T + bias in float64");
  ops.def("top1_margin", &top1_margin, py::arg("logits"), py::arg("ids"),
          "top-1 logit minus the largest other logit per row (the margin draft exit's confidence)");
}

}  // namespace dotf
