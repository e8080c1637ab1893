#include "import/safetensors.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "import/output_file.h"
#include "kernels/cpu/numeric.h"
#include "runtime/error.h"

namespace woq::import {

uint64_t safetensors_dtype_size(const std::string& d) {
  if (d == "F64" || d == "I64" || d == "U64") return 8;
  if (d == "F32" || d == "I32" || d == "U32") return 4;
  if (d == "F16" || d == "BF16" || d == "I16" || d == "U16") return 2;
  if (d == "U8" || d == "I8" || d == "BOOL") return 1;
  return 0;
}

void SafeTensor::check_index(uint64_t i) const {
  // An importer that computed an index past the tensor has a bug; an error
  // rather than a read beyond it (the mapping hides such reads from ASan).
  if (i >= elements())
    fail(Status::Internal, "index " + std::to_string(i) + " is past the end of tensor '" + name + "' (" +
                               std::to_string(elements()) + " elements)");
}

float SafeTensor::float_at(uint64_t i) const {
  check_index(i);
  if (dtype == "F32") {
    float v;
    std::memcpy(&v, data + 4 * i, 4);
    return v;
  }
  if (dtype == "F16" || dtype == "BF16") {
    uint16_t h;
    std::memcpy(&h, data + 2 * i, 2);
    return dtype == "F16" ? kernels::half_to_float(h) : kernels::bf16_to_float(h);
  }
  fail(Status::Format, "tensor '" + name + "' has dtype " + dtype + ", expected F16, BF16 or F32");
}

std::vector<float> SafeTensor::to_f32() const {
  std::vector<float> out(elements());
  for (uint64_t i = 0; i < out.size(); ++i) out[i] = float_at(i);
  return out;
}

namespace {

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

bool is_directory(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

bool is_file(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The checkpoint inside a directory (see Safetensors::open).
std::string checkpoint_in(const std::string& dir) {
  for (const char* name : {"model.safetensors.index.json", "model.safetensors"})
    if (is_file(dir + "/" + name)) return dir + "/" + name;
  DIR* d = ::opendir(dir.c_str());
  if (!d) fail(Status::Io, "cannot list directory '" + dir + "': " + std::strerror(errno));
  std::vector<std::string> indexes, files;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (ends_with(name, ".safetensors.index.json")) indexes.push_back(name);
    else if (ends_with(name, ".safetensors")) files.push_back(name);
  }
  ::closedir(d);
  if (indexes.size() == 1) return dir + "/" + indexes[0];
  if (indexes.empty() && files.size() == 1) return dir + "/" + files[0];
  fail(Status::Io, "directory '" + dir + "' holds no model.safetensors.index.json or model.safetensors, and " +
                       std::to_string(indexes.size()) + " *.safetensors.index.json and " +
                       std::to_string(files.size()) + " *.safetensors files: name the checkpoint's file");
}

// A shard name from an index: a plain file name next to the index, so that
// an index cannot reach files elsewhere.
bool plain_file_name(const std::string& name) {
  return !name.empty() && name != "." && name != ".." && name.find_first_of(std::string("/\\\0", 3)) == std::string::npos;
}

constexpr uint64_t kMaxIndexBytes = 64u << 20;
constexpr size_t kMaxShards = 4096;

}  // namespace

std::unique_ptr<Safetensors> Safetensors::open(const std::string& path) {
  std::unique_ptr<Safetensors> f(new Safetensors());
  f->path_ = is_directory(path) ? checkpoint_in(path) : path;
  if (ends_with(f->path_, ".json")) {
    f->open_index(f->path_);
  } else {
    f->add_shard(f->path_);
  }
  return f;
}

void Safetensors::open_index(const std::string& index) {
  const std::string where = "safetensors index '" + index + "': ";
  std::ifstream in(index, std::ios::binary);
  if (!in) fail(Status::Io, "cannot open '" + index + "': " + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const auto size = static_cast<uint64_t>(in.tellg());
  if (size > kMaxIndexBytes) fail(Status::Format, where + "is larger than 64 MiB");
  in.seekg(0);
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    fail(Status::Format, where + "is not valid JSON: " + e.what());
  }
  if (!j.is_object() || !j.contains("weight_map") || !j["weight_map"].is_object())
    fail(Status::Format, where + "has no \"weight_map\" object");
  const nlohmann::json& map = j["weight_map"];
  if (map.empty()) fail(Status::Format, where + "\"weight_map\" lists no tensors");
  std::map<std::string, size_t> shard_numbers;  // name -> shard, in name order
  for (auto it = map.begin(); it != map.end(); ++it) {
    if (!it.value().is_string())
      fail(Status::Format, where + "tensor '" + it.key() + "' maps to " + it.value().dump() + ", not a file name");
    const std::string shard = it.value().get<std::string>();
    if (!plain_file_name(shard))
      fail(Status::Format, where + "tensor '" + it.key() + "' maps to " + it.value().dump() +
                               ", which is not a plain file name in the index's directory");
    shard_numbers.emplace(shard, 0);
  }
  if (shard_numbers.size() > kMaxShards)
    fail(Status::Format, where + "names " + std::to_string(shard_numbers.size()) + " shards, more than " +
                             std::to_string(kMaxShards));
  const std::string dir = index.find('/') == std::string::npos ? "." : index.substr(0, index.rfind('/'));
  for (auto& [shard, number] : shard_numbers) number = add_shard(dir + "/" + shard);
  for (auto it = map.begin(); it != map.end(); ++it) {
    const std::string& shard = it.value().get_ref<const std::string&>();
    const auto t = by_name_.find(it.key());
    if (t == by_name_.end() || shard_of_[t->second] != shard_numbers.at(shard))
      fail(Status::Format, where + "puts tensor '" + it.key() + "' in '" + shard + "', which does not hold it");
  }
}

size_t Safetensors::add_shard(const std::string& path) {
  const std::string where = "safetensors '" + path + "': ";
  mappings_.emplace_back(path, 8, where + "file is shorter than its 8-byte header length");
  const uint64_t file_size = mappings_.back().size();
  const size_t shard = mappings_.size() - 1;
  const size_t first = tensors_.size();
  const uint8_t* bytes = mappings_.back().data();
  uint64_t header_len;
  std::memcpy(&header_len, bytes, 8);
  if (header_len > file_size - 8 || header_len > (100u << 20))
    fail(Status::Format, where + "header length " + std::to_string(header_len) + " exceeds the file or 100 MiB");
  const uint8_t* data = bytes + 8 + header_len;
  const uint64_t data_size = file_size - 8 - header_len;
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(bytes + 8, bytes + 8 + header_len);
  } catch (const std::exception& e) {
    fail(Status::Format, where + "header is not valid JSON: " + e.what());
  }
  if (!header.is_object()) fail(Status::Format, where + "header is not a JSON object");
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) fail(Status::Format, where + "__metadata__ is not an object");
      for (auto m2 = v.begin(); m2 != v.end(); ++m2)
        if (m2.value().is_string()) metadata_.emplace(m2.key(), m2.value().get<std::string>());
      continue;
    }
    const std::string tw = where + "tensor '" + name + "': ";
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets") ||
        !v["dtype"].is_string() || !v["shape"].is_array() || !v["data_offsets"].is_array() ||
        v["data_offsets"].size() != 2)
      fail(Status::Format, tw + "needs dtype, shape and two data_offsets");
    SafeTensor t;
    t.name = name;
    t.dtype = v["dtype"].get<std::string>();
    const uint64_t esize = safetensors_dtype_size(t.dtype);
    if (esize == 0) fail(Status::Format, tw + "unknown dtype '" + t.dtype + "'");
    uint64_t count = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) fail(Status::Format, tw + "shape entries must be non-negative integers");
      uint64_t dim = d.get<uint64_t>();
      t.shape.push_back(dim);
      if (__builtin_mul_overflow(count, dim, &count)) fail(Status::Format, tw + "shape overflows");
    }
    const auto& off = v["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      fail(Status::Format, tw + "data_offsets must be non-negative integers");
    const uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    uint64_t bytes_needed;
    if (__builtin_mul_overflow(count, esize, &bytes_needed)) fail(Status::Format, tw + "size overflows");
    if (begin > end || end > data_size)
      fail(Status::Format, tw + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                               ") fall outside the " + std::to_string(data_size) + "-byte data section");
    if (end - begin != bytes_needed)
      fail(Status::Format, tw + "holds " + std::to_string(end - begin) + " bytes but its shape needs " +
                               std::to_string(bytes_needed));
    t.data = data + begin;
    t.bytes = bytes_needed;
    t.count = count;
    tensors_.push_back(std::move(t));
  }
  // Order by data offset: the order the tensors were written in.
  std::sort(tensors_.begin() + first, tensors_.end(),
            [](const SafeTensor& a, const SafeTensor& b) { return a.data < b.data; });
  shard_of_.resize(tensors_.size(), shard);
  for (size_t i = first; i < tensors_.size(); ++i) {
    const auto [it, added] = by_name_.emplace(tensors_[i].name, i);
    if (!added)
      fail(Status::Format, "tensor '" + tensors_[i].name + "' is in both '" + path + "' and an earlier shard");
  }
  return shard;
}

const SafeTensor* Safetensors::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

void write_safetensors(const std::string& path, const std::vector<SafeTensorOut>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const SafeTensorOut& t : tensors) {
    uint64_t elements = 1;
    for (uint64_t d : t.shape) elements *= d;
    if (elements * safetensors_dtype_size(t.dtype) != t.bytes.size())
      fail(Status::InvalidArgument, "tensor '" + t.name + "': " + std::to_string(t.bytes.size()) +
                                        " bytes do not match its shape and dtype " + t.dtype);
    header[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  OutputFile out(path);
  const uint64_t n = text.size();
  out.write(&n, 8);
  out.write(text.data(), text.size());
  for (const SafeTensorOut& t : tensors) out.write(t.bytes.data(), t.bytes.size());
  out.commit();
}

}  // namespace woq::import
