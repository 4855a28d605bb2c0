// GraphedForward in a CPU-only build (CMakeLists.txt: *_cpu_only.cpp): no graphs, every forward
// runs eagerly. graphed_forward_cuda.cpp is the CUDA builds' version of these members.
#include "model/graphed_forward.h"

namespace dotf {

struct GraphedForward::Impl {};

GraphedForward::GraphedForward(const Transformer& model, GraphOptions options) : model_(model), options_(options) {
  stats_.disabled_reason = options.enabled ? "dotf was built without CUDA" : "disabled by the caller";
}
GraphedForward::~GraphedForward() = default;
int64_t GraphedForward::graphs() const { return 0; }
void GraphedForward::clear() {}
bool GraphedForward::serves(int64_t, const ForwardOptions&) const { return false; }

ForwardOutput GraphedForward::forward(const std::vector<int64_t>& tokens, int64_t start, KVCache& cache,
                                      const LayerPlan& plan, const ForwardOptions& options,
                                      const ModelWeights* weights) {
  return eager(tokens, start, cache, plan, options, weights);
}

}  // namespace dotf
