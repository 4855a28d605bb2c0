// dotf._C, the public module: build facts, the option table, the model config, the KV cache and the
// Model with generate(). Python (python/dotf/) stays thin. Hooks only tests and benchmarks use live in
// the `testing` submodule (csrc/python/testing.cpp); conversions in csrc/python/convert.cpp.
#include "core/check.h"
#include "core/memory.h"
#include "ops/cpu/features.h"
#include "python/convert.h"
#include "python/py_model.h"

#include <pybind11/functional.h>
#include <pybind11/stl.h>

#include <ATen/Parallel.h>

#include <chrono>
#include <memory>

namespace py = pybind11;
using namespace dotf;

namespace dotf {
void register_testing(py::module_& m);  // csrc/python/testing.cpp
}

namespace {

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

std::optional<LayerPlan> fixed_plan(int64_t num_layers, std::optional<std::vector<bool>> attention,
                                    std::optional<std::vector<bool>> mlp) {
  if (!attention && !mlp) return std::nullopt;
  LayerPlan plan = LayerPlan::full(num_layers);
  if (attention) plan.attention = std::move(*attention);
  if (mlp) plan.mlp = std::move(*mlp);
  return plan;
}

py::tuple generate(PyModel& p, const at::Tensor& prompt, const std::string& strategy,
                   std::vector<int64_t> eos, std::optional<py::function> on_tokens,
                   const py::dict& options, std::optional<std::vector<bool>> plan_attention,
                   std::optional<std::vector<bool>> plan_mlp, KVCache* cache, uint64_t seed,
                   std::optional<py::function> on_prefill) {
  GenerateRequest r = p.engine->request(parse_name<Strategy>(strategy));
  apply_options(r, options);
  r.eos_token_ids = std::move(eos);
  r.seed = seed;
  // The callables are held through shared_ptrs: the engine copies the request without the GIL, which then
  // copies no Python reference; the last owner is `r`, destroyed here with the GIL held.
  if (on_tokens) {
    // A truthy return value ends generation after the chunk (the Python layer's stop strings).
    r.on_tokens = [fn = std::make_shared<py::function>(*on_tokens)](const std::vector<int64_t>& chunk) {
      py::gil_scoped_acquire gil;
      const py::object result = (*fn)(chunk);
      const int truth = PyObject_IsTrue(result.ptr());
      if (truth < 0) throw py::error_already_set();
      return truth == 1;
    };
  }
  if (on_prefill) {
    r.on_prefill_progress = [fn = std::make_shared<py::function>(*on_prefill)](int64_t done, int64_t layers) {
      py::gil_scoped_acquire gil;
      (*fn)(done, layers);
    };
  }
  if (on_python_main_thread()) r.check_interrupt = check_python_signals;
  r.plan = fixed_plan(p.model->config().num_layers, std::move(plan_attention), std::move(plan_mlp));
  DecodeResult result;
  {
    py::gil_scoped_release release;
    result = p.engine->generate(prompt, r, cache);
  }
  return py::make_tuple(result.tokens, stats_to_dict(result.stats));
}

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
    } catch (const dotf::MemoryError& e) {
      PyErr_SetString(PyExc_MemoryError, e.what());
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
    // The CPU kernels chosen at run time on this CPU (ops/cpu/features.h).
    d["cpu_kernels"] = std::string(cpu_has_avx2_fma() ? "avx2" : "portable");
    d["int8_linear_isa"] = std::string(int8_linear_isa());
    d["attention_isa"] = std::string(attention_isa());
    d["int8_attention_isa"] = std::string(int8_attention_isa());
    return d;
  });

  m.def("option_table", &option_table_to_python,
        "every generate option: name, type, choices, range, scope, doc, defaults[device][strategy]");
  m.attr("strategies") = names_of<Strategy>();
  m.attr("default_strategy") = name_of(kDefaultStrategy);

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
      .def("truncate", &KVCache::truncate, py::arg("length"))
      .def("add_int8_mirror", &KVCache::add_int8_mirror,
           "allocate the draft's int8 mirror (CPU) and quantize the rows below the length into it")
      .def_property_readonly("int8_mirror_nbytes", &KVCache::int8_mirror_nbytes);

  py::class_<PyModel>(m, "Model")
      .def(py::init<const ModelConfig&, const TensorMap&, at::ScalarType, at::Device, int64_t, const std::string&>(),
           py::arg("config"), py::arg("tensors"), py::arg("dtype"), py::arg("device"), py::arg("max_seq_len"),
           py::arg("linear_path") = "auto")
      .def_property_readonly("max_seq_len", [](const PyModel& p) { return p.model->max_seq_len(); })
      .def("cache_bytes", [](const PyModel& p, int64_t positions, bool int8_mirror) {
        return p.model->cache_bytes(positions, int8_mirror);
      }, py::arg("positions"), py::arg("int8_mirror") = false)
      .def_property_readonly("weight_bytes", [](const PyModel& p) { return p.model->weights().nbytes(); })
      .def_property_readonly("linear_path", [](const PyModel& p) { return to_string(p.model->weights().lm_head.path()); })
      .def("new_cache", [](const PyModel& p, int64_t capacity) { return p.model->new_cache(capacity); },
           py::arg("capacity"))
      .def(
          "forward",
          [](PyModel& p, const at::Tensor& tokens, int64_t start, KVCache& cache, std::vector<bool> attention,
             std::vector<bool> mlp, bool similarity, const std::string& logits, const std::string& weights,
             int64_t logits_top_k, const std::string& kv, int64_t window) {
            DOTF_CHECK_ARG(logits_top_k >= 0, "logits_top_k must be >= 0, got ", logits_top_k);
            const auto draft = p.engine->draft_weights(parse_name<DraftWeights>(weights));
            // Only a forward over the model's own head uses (and builds) the screen.
            const auto screen = logits_top_k > 0 && !draft ? p.engine->lm_head_screen() : nullptr;
            const ForwardOptions options{.logits = parse_name<LogitsFor>(logits), .similarity = similarity,
                                         .lm_head_screen = screen.get(), .logits_top_k = logits_top_k,
                                         .int8_kv = parse_name<DraftKV>(kv) == DraftKV::Int8,
                                         .attention_window = window};
            ForwardOutput out;
            {
              py::gil_scoped_release release;
              out = p.model->forward(tokens, start, cache, LayerPlan{std::move(attention), std::move(mlp)}, options,
                                     draft.get());
            }
            return py::make_tuple(out.logits, out.similarity, out.last_similarity);
          },
          py::arg("tokens"), py::arg("start"), py::arg("cache"), py::arg("attention"), py::arg("mlp"),
          py::arg("similarity") = false, py::arg("logits") = "all", py::arg("weights") = "same",
          py::arg("logits_top_k") = 0, py::arg("kv") = "same", py::arg("window") = 0,
          "weights: 'same' (the model's) or 'int8' (the derived draft copy); logits_top_k > 0: only each row's "
          "k largest logits are exact, the LM head's screen may leave the rest at -inf; kv: attention over the "
          "exact rows ('same') or the cache's int8 mirror ('int8', after cache.add_int8_mirror()); window > 0: "
          "attention sees the first 4 keys and the last `window` (a draft's window, CPU)")
      .def("graph_stats", [](const PyModel& p) { return graph_stats_to_dict(p.engine->graph_stats()); },
           "CUDA graph totals over this model's generate calls")
      .def("release_graphs", [](PyModel& p) { p.engine->release_graphs(); },
           "drop the captured CUDA graphs and the KV cache they write")
      .def_property_readonly("draft_bytes", [](const PyModel& p) { return p.engine->draft_bytes(); })
      .def_property_readonly("lm_head_screen_bytes", [](const PyModel& p) { return p.engine->lm_head_screen_bytes(); })
      .def("release_draft", [](PyModel& p) { p.engine->release_draft(); })
      .def("generate", &generate, py::arg("prompt"), py::arg("strategy") = name_of(kDefaultStrategy),
           py::arg("eos_token_ids") = std::vector<int64_t>{}, py::arg("on_tokens") = py::none(),
           py::arg("options") = py::dict(), py::arg("plan_attention") = py::none(), py::arg("plan_mlp") = py::none(),
           py::arg("cache") = nullptr, py::arg("seed") = 0, py::arg("on_prefill") = py::none(),
           "options: name -> value, as dotf.options() lists them; on_prefill(layers done, layers) after each "
           "layer of the prefill");

  register_testing(m);
}
