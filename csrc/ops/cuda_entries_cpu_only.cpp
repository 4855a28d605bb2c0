// The CUDA entry points (ops/cuda/entries.h) of a CPU-only build, compiled only when dotf is built
// without its CUDA kernels (CMakeLists.txt: *_cpu_only.cpp). A CUDA tensor handed to an op then fails
// with this message instead of reaching CPU code.
#include "ops/cuda/entries.h"

#include <stdexcept>
#include <string>

namespace dotf {

namespace {
// A RuntimeError in Python, as DOTF_CHECK raises.
[[noreturn]] void no_cuda_kernels(const char* op) {
  throw std::runtime_error(std::string(op) +
                           ": dotf was built without CUDA kernels (rebuild with a CUDA torch, nvcc and DOTF_CUDA=ON)");
}
}  // namespace

void add_rmsnorm_cossim_cuda(at::Tensor&, const at::Tensor&, const at::Tensor&, double, at::Tensor&, const at::Tensor&) {
  no_cuda_kernels("add_rmsnorm_cossim");
}
void rope_qkv_to_cache_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, const RopeQkvShape&, at::Tensor&,
                            at::Tensor&, at::Tensor&) {
  no_cuda_kernels("rope_qkv_to_cache");
}
at::Tensor attention_with_cache_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, double,
                                     const at::Tensor&) {
  no_cuda_kernels("attention_with_cache");
}
at::Tensor int8_attention_with_cache_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                          const at::Tensor&, int64_t, double, int64_t, const at::Tensor&) {
  no_cuda_kernels("int8_attention_with_cache");
}
void quantize_kv_rows_cuda(const at::Tensor&, const at::Tensor&, int64_t, int64_t, const at::Tensor&, at::Tensor&,
                           at::Tensor&, at::Tensor&, at::Tensor&) {
  no_cuda_kernels("quantize_kv_rows");
}
void argmax_top1_cuda(const at::Tensor&, at::Tensor&, at::Tensor&, bool) { no_cuda_kernels("argmax_top1"); }
void greedy_accept_cuda(const at::Tensor&, const at::Tensor&, at::Tensor&) { no_cuda_kernels("greedy_accept"); }
void silu_mul_cuda(const at::Tensor&, at::Tensor&) { no_cuda_kernels("silu_mul"); }
at::Tensor warped_probabilities_cuda(const at::Tensor&, const SamplingParams&) {
  no_cuda_kernels("warped_probabilities");
}
at::Tensor sample_rows_cuda(const at::Tensor&, const at::Tensor&) { no_cuda_kernels("sample_rows"); }
std::pair<at::Tensor, at::Tensor> speculative_accept_cuda(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                          const at::Tensor&, const at::Tensor&) {
  no_cuda_kernels("speculative_accept");
}
void quant_linear_cuda(const at::Tensor&, const QuantizedWeight&, const at::Tensor&, at::Tensor&) {
  no_cuda_kernels("quant_linear");
}

}  // namespace dotf
