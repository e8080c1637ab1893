#include "import/weight_source.h"

#include <functional>

#include "runtime/error.h"

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
    t.dtype = ggml_type_name(g.type);
    t.shape.assign(g.dims.rbegin(), g.dims.rend());
    t.count = 1;
    for (uint64_t d : g.dims) t.count *= d;  // GgufFile::open refused an overflow
    if (gguf_has_floats(g.type)) {  // the reader checked that these bytes lie in the file
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

bool WeightSource::has_floats(const SafeTensor& t) const {
  if (safetensors_) return t.dtype == "F32" || t.dtype == "F16" || t.dtype == "BF16";
  return t.data && gguf_has_floats(gguf_tensor(t)->type);
}

std::vector<float> WeightSource::floats(const SafeTensor& t) const {
  if (safetensors_) return t.to_f32();
  return gguf_floats(*gguf_tensor(t));
}

const GgufTensor* WeightSource::gguf_tensor(const SafeTensor& t) const {
  if (safetensors_) return nullptr;
  const SafeTensor* begin = gguf_tensors_.data();
  const std::less<const SafeTensor*> before;
  if (before(&t, begin) || !before(&t, begin + gguf_tensors_.size()))
    fail(Status::Internal, "tensor '" + t.name + "' is not one of this GGUF file's");
  return &gguf_->tensors()[size_t(&t - begin)];  // the same order
}

}  // namespace woq::import
