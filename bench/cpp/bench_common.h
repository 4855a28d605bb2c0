#pragma once
// Helpers shared by the dotf_bench sources: the thread count, the devices to run on, how one
// iteration is timed there, case names, and the real model shapes the cases use.
#include "tiny_model.h"  // tests/cpp: random-weight models from a ModelConfig

#include <ATen/Parallel.h>
#include <benchmark/benchmark.h>
#include <c10/core/Event.h>
#include <c10/core/impl/DeviceGuardImplInterface.h>
#include <torch/cuda.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>
#include <vector>

namespace dotf::bench {

// ATen threads: 1 unless DOTF_BENCH_THREADS says otherwise. One thread keeps figures comparable
// across machines with different core counts and less exposed to other load on a shared machine.
inline int bench_threads() {
  const char* env = std::getenv("DOTF_BENCH_THREADS");
  const int threads = env ? std::atoi(env) : 1;
  return threads > 0 ? threads : 1;
}

// CPU always; CUDA too when dotf was built with its kernels and a GPU is present (without one the
// CUDA cases are simply not registered).
inline std::vector<at::Device> bench_devices() {
  std::vector<at::Device> devices = {at::Device(at::kCPU)};
#ifdef DOTF_WITH_CUDA
  if (torch::cuda::is_available()) devices.emplace_back(at::kCUDA, 0);
#endif
  return devices;
}

inline std::string device_name(at::Device device) { return device.is_cuda() ? "cuda" : "cpu"; }
inline std::string dtype_name(at::ScalarType dtype) {
  return dtype == at::kBFloat16 ? "bf16" : dtype == at::kHalf ? "fp16" : dtype == at::kDouble ? "fp64" : "fp32";
}

// Times calls on one device. CPU calls are synchronous: a steady clock around the call. CUDA calls
// only enqueue kernels, so they are timed with events on the current stream: the GPU time from the
// first launch to the last kernel's end, without the cost of a host synchronisation. The events are
// created once and re-recorded (creating one inside the timed region would delay the stop mark).
class CallTimer {
 public:
  explicit CallTimer(at::Device device) : device_(device) {
    if (device.is_cuda()) {
      start_.emplace(device.type(), c10::EventFlag::BACKEND_DEFAULT);  // BACKEND_DEFAULT: timing on
      stop_.emplace(device.type(), c10::EventFlag::BACKEND_DEFAULT);
    }
  }

  template <typename Call>
  double seconds(Call&& call) {
    if (!device_.is_cuda()) {
      const auto t0 = std::chrono::steady_clock::now();
      call();
      return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    const c10::Stream stream = c10::impl::getDeviceGuardImpl(device_.type())->getStream(device_);
    start_->record(stream);
    call();
    stop_->record(stream);
    stop_->synchronize();
    return start_->elapsedTime(*stop_) * 1e-3;  // elapsedTime is in milliseconds
  }

  // Median of `reps` timed calls after one untimed warm-up call.
  template <typename Call>
  double median_seconds(Call&& call, int reps = 5) {
    call();
    std::vector<double> times;
    for (int i = 0; i < reps; ++i) times.push_back(seconds(call));
    std::nth_element(times.begin(), times.begin() + reps / 2, times.end());
    return times[reps / 2];
  }

 private:
  at::Device device_;
  std::optional<c10::Event> start_, stop_;
};

// The benchmark loop: `call` once per iteration, timed as register_case set it up for the device
// (the benchmark's own clock on CPU, CallTimer's events as manual time on CUDA). Returns the total
// seconds the iterations took, for counters derived from the time. One untimed call comes first: the
// first call pays for lazy setup and cold caches, and a case whose single iteration outlasts
// --benchmark_min_time would otherwise report exactly that call.
template <typename Call>
double run_iterations(benchmark::State& state, at::Device device, Call&& call) {
  call();
  if (!device.is_cuda()) {
    const auto t0 = std::chrono::steady_clock::now();
    for (auto _ : state) call();
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  CallTimer timer(device);
  double total = 0;
  for (auto _ : state) {
    const double s = timer.seconds(call);
    state.SetIterationTime(s);
    total += s;
  }
  return total;
}

// Registers one case (times in microseconds) with the timing mode run_iterations uses on `device`;
// the case runs on bench_threads() ATen threads.
template <typename Case>
benchmark::internal::Benchmark* register_case(const std::string& name, at::Device device, Case run_case) {
  auto* b = benchmark::RegisterBenchmark(name.c_str(), [run_case](benchmark::State& state) {
    at::set_num_threads(bench_threads());
    run_case(state);
  });
  b->Unit(benchmark::kMicrosecond);
  if (device.is_cuda()) {
    b->UseManualTime();
  } else {
    b->UseRealTime();
  }
  return b;
}

// ---- real model shapes (config.json of each model) ----

struct ModelShape {
  const char* name;  // as it appears in case names
  ModelConfig config;
};

inline ModelConfig smollm2_135m_config() {
  ModelConfig c = fixtures::tiny_config(/*layers=*/30, /*hidden=*/576, /*heads=*/9, /*kv_heads=*/3, /*vocab=*/49152);
  c.intermediate_size = 1536;
  c.max_position_embeddings = 8192;
  c.rope_theta = 100000.0;
  return c;  // tied embeddings, head_dim 64
}

inline ModelConfig qwen25_05b_config() {
  ModelConfig c = fixtures::tiny_config(/*layers=*/24, /*hidden=*/896, /*heads=*/14, /*kv_heads=*/2, /*vocab=*/151936);
  c.model_type = "qwen2";  // QKV bias
  c.intermediate_size = 4864;
  c.max_position_embeddings = 32768;
  c.rope_theta = 1000000.0;
  c.rms_norm_eps = 1e-6;
  c.tie_word_embeddings = false;
  return c;  // head_dim 64
}

inline ModelConfig llama2_7b_config() {
  ModelConfig c = fixtures::tiny_config(/*layers=*/32, /*hidden=*/4096, /*heads=*/32, /*kv_heads=*/32, /*vocab=*/32000);
  c.intermediate_size = 11008;
  c.max_position_embeddings = 4096;
  c.tie_word_embeddings = false;
  return c;  // head_dim 128, no GQA
}

inline const std::vector<ModelShape>& model_shapes() {
  static const std::vector<ModelShape> shapes = {
      {"smollm2-135m", smollm2_135m_config()},
      {"qwen2.5-0.5b", qwen25_05b_config()},
      {"llama2-7b", llama2_7b_config()},
  };
  return shapes;
}

}  // namespace dotf::bench
