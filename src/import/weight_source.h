// The float weights of a model, for the commands that read them
// (`woq quantize`, `bench --reference`, `inspect --source`): a safetensors
// checkpoint (one file or shards, see Safetensors::open) or a GGUF file.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "import/gguf.h"
#include "import/safetensors.h"

namespace woq::import {

class WeightSource {
 public:
  // A GGUF file (told by its magic) or anything Safetensors::open takes.
  // A GGUF file's tensors are shown as safetensors shows them: shape in
  // row-major order (GGUF lists the contiguous dimension first, so a
  // matrix of N outputs and K inputs becomes [N, K]), dtype "F32", "F16"
  // or "BF16" for those types and ggml's type name ("Q4_0", "Q6_K", ...)
  // for the others, with their blocks as data where woq decodes them
  // (gguf_has_floats) and no data otherwise. Throws woq::Error naming the
  // file.
  static std::unique_ptr<WeightSource> open(const std::string& path);
  WeightSource(const WeightSource&) = delete;
  WeightSource& operator=(const WeightSource&) = delete;

  const std::vector<SafeTensor>& tensors() const { return safetensors_ ? safetensors_->tensors() : gguf_tensors_; }
  const SafeTensor* find(const std::string& name) const;
  // Safetensors' __metadata__, or a GGUF file's string-valued keys.
  const std::map<std::string, std::string>& metadata() const {
    return safetensors_ ? safetensors_->metadata() : gguf_->strings();
  }
  bool is_gguf() const { return gguf_ != nullptr; }
  // Whether floats(t) gives t's values: F32 / F16 / BF16, or a GGUF block
  // type woq decodes (Q4_0 .. Q8_0, Q2_K .. Q6_K).
  bool has_floats(const SafeTensor& t) const;
  // The values of one of this source's tensors as fp32; a GGUF block type
  // is dequantized as ggml does. Throws woq::Error(Format) naming it for
  // another type.
  std::vector<float> floats(const SafeTensor& t) const;
  // The GGUF tensor behind one of this source's tensors; nullptr for
  // safetensors.
  const GgufTensor* gguf_tensor(const SafeTensor& t) const;

 private:
  WeightSource() = default;
  std::unique_ptr<Safetensors> safetensors_;
  std::unique_ptr<GgufFile> gguf_;
  std::vector<SafeTensor> gguf_tensors_;  // views of gguf_'s tensors
};

}  // namespace woq::import
