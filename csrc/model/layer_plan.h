#pragma once
// Which sublayers a forward pass runs. A skipped sublayer is the identity on the residual stream:
// its norm, projections and KV write are all skipped. The full model runs everything; a draft
// model is the same weights under a plan with some sublayers off.
#include <cstdint>
#include <string>
#include <vector>

namespace dotf {

struct LayerPlan {
  std::vector<bool> attention;  // [layers]
  std::vector<bool> mlp;        // [layers]

  static LayerPlan full(int64_t num_layers) {
    return {std::vector<bool>(num_layers, true), std::vector<bool>(num_layers, true)};
  }
  int64_t num_layers() const { return static_cast<int64_t>(attention.size()); }
  bool is_full() const;
  std::vector<int64_t> skipped_attention() const;
  std::vector<int64_t> skipped_mlp() const;
  // Throws ValueError unless both vectors have num_layers entries.
  void validate(int64_t num_layers) const;
  // e.g. "attn-skip[3,5] mlp-skip[]": a stable key for caches of per-plan state (CUDA graphs).
  std::string key() const;
};

}  // namespace dotf
