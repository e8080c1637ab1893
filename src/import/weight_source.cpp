#include "import/weight_source.h"

namespace woq::import {

std::unique_ptr<WeightSource> WeightSource::open(const std::string& path) {
  std::unique_ptr<WeightSource> s(new WeightSource());
  if (!looks_like_gguf(path)) {
    s->safetensors_ = Safetensors::open(path);
    return s;
  }
  s->gguf_ = GgufFile::open(path);
  for (const GgufTensor& g : s->gguf_->tensors()) {
    SafeTensor t;
    t.name = g.name;
    const auto type = GgmlType(g.type);
    const bool is_float = type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16;
    t.dtype = ggml_type_name(g.type);
    t.shape.assign(g.dims.rbegin(), g.dims.rend());
    t.count = 1;
    for (uint64_t d : g.dims) t.count *= d;  // GgufFile::open refused an overflow
    if (is_float) {  // the reader checked that these bytes lie in the file
      t.data = g.data;
      t.bytes = g.bytes;
    }
    s->gguf_tensors_.push_back(std::move(t));
  }
  return s;
}

const SafeTensor* WeightSource::find(const std::string& name) const {
  if (safetensors_) return safetensors_->find(name);
  const GgufTensor* g = gguf_->find(name);  // same order as gguf_tensors_
  return g ? &gguf_tensors_[size_t(g - gguf_->tensors().data())] : nullptr;
}

}  // namespace woq::import
