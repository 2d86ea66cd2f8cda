// Checkpoint tensors crossing the plugin boundary. The host owns the files (safetensors shards,
// index); a model plugin sees a WeightSource to load from and hands back its state in HF layout.
#pragma once

#include "kiln/sdk/export.h"

#include <ATen/core/Tensor.h>
#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::sdk {

/// Name, dtype and shape of one stored tensor, known without reading its data.
struct TensorInfo {
  std::string name;
  c10::ScalarType dtype = c10::ScalarType::Float;
  std::vector<int64_t> shape;
};

/// A read-only set of named tensors (a checkpoint folder). Owned by the host; valid for the
/// duration of the call it is passed to.
class KILN_SDK_API WeightSource {
 public:
  virtual ~WeightSource();
  /// Every tensor, in file order.
  virtual std::vector<TensorInfo> list() const = 0;
  virtual bool contains(std::string_view name) const = 0;
  /// The tensor on the CPU in its stored dtype. It may alias a read-only memory map: never write
  /// to it (copy or cast first); it stays valid for as long as the tensor is referenced. Throws
  /// kiln::Error naming the tensor and file when it is absent or unreadable.
  virtual at::Tensor load(std::string_view name) const = 0;
  /// Where the tensors come from, for messages ("ckpt/model.safetensors.index.json").
  virtual std::string describe() const = 0;
};

} // namespace kiln::sdk
