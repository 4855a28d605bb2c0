#pragma once
// The object behind dotf._C.Model: a loaded transformer and the Engine that runs its generate calls.
// Shared by the public module and the testing hooks (which step the same model through CUDA graphs).
#include "model/transformer.h"
#include "speculative/engine.h"

#include <memory>
#include <string>

namespace dotf {

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

}  // namespace dotf
