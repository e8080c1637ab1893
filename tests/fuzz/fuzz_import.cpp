// Fuzz target: a checkpoint of another tool (safetensors plus the config
// file next to it, a GGUF file or an ONNX model) through
// woq_import_checkpoint, as `woq import` runs it.
// Hostile input must come back as an error code other than
// WOQ_ERR_INTERNAL ("a bug in woq") with a message, leaving no file
// behind (neither the output nor a temporary one); an import that
// succeeds must have written a .woq file that opens and verifies. The
// safetensors and GGUF readers alone are exercised too: any exception but
// woq::Error escapes, and libFuzzer reports it.
//
// Input: byte 0 picks the format argument (bits 0-2: auto, gptq, gptq_v2,
// awq, compressed-tensors, gguf, onnx, auto) and the config files (bits
// 3-4: none, quantize_config.json, config.json, both); with a config, bytes
// 1-2 are its length L (little-endian, cut to what is there) and L bytes
// follow (JSON, or the external data an ONNX model names); the rest is the
// checkpoint file: m.onnx for formats 6 and 7 (the import recognises an
// ONNX model by its name), else m.safetensors (a GGUF one by its magic).
#include <dirent.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "import/gguf.h"
#include "import/onnx.h"
#include "import/safetensors.h"
#include "runtime/error.h"
#include "woq.h"

namespace {

// The files an input becomes, and the import's output.
constexpr const char* kInputFiles[] = {"m.safetensors", "m.onnx", "quantize_config.json", "config.json"};
constexpr const char* kOutputFile = "out.woq";

// A private directory for the files of one input, removed at exit.
struct Scratch {
  std::string dir;
  Scratch() {
    char pattern[] = "/dev/shm/woq-fuzz-import-XXXXXX";  // tmpfs: the writers' fsyncs cost nothing
    char fallback[] = "/tmp/woq-fuzz-import-XXXXXX";
    const char* made = mkdtemp(pattern);
    if (!made) made = mkdtemp(fallback);
    if (!made) {
      std::perror("fuzz_import: mkdtemp");
      std::abort();
    }
    dir = made;
  }
  ~Scratch() {
    for (const char* name : kInputFiles) std::remove(file(name).c_str());
    std::remove(file(kOutputFile).c_str());
    rmdir(dir.c_str());
  }
  std::string file(const char* name) const { return dir + "/" + name; }
};

void write_file(const std::string& path, const uint8_t* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || (size && std::fwrite(data, 1, size, f) != size) || std::fclose(f) != 0) {
    std::perror("fuzz_import: write");
    std::abort();
  }
}

[[noreturn]] void defect(const char* what, woq_status status) {
  std::fprintf(stderr, "fuzz_import: %s: %s: %s\n", what, woq_status_string(status), woq_last_error());
  std::abort();
}

// The readers on their own: every float tensor converted, and a GGUF file's
// decodable block tensors dequantized (small ones only).
void read_safetensors(const std::string& path) {
  try {
    auto file = woq::import::Safetensors::open(path);
    for (const auto& t : file->tensors())
      if ((t.dtype == "F32" || t.dtype == "F16" || t.dtype == "BF16") && t.elements() <= (1u << 16)) t.to_f32();
  } catch (const woq::Error&) {
  }
  try {
    auto gguf = woq::import::GgufFile::open(path);
    for (const auto& t : gguf->tensors())  // what `quantize --requantize` and `bench --reference` read
      if (woq::import::gguf_has_floats(t.type) && t.data && t.bytes <= (1u << 18)) woq::import::gguf_floats(t);
  } catch (const woq::Error&) {
  }
}

// The ONNX reader on its own: every element of the small initializers.
void read_onnx(const std::string& path) {
  try {
    auto model = woq::import::OnnxModel::open(path);
    for (const auto& t : model->initializers())
      for (uint64_t i = 0; i < t->elements && i < (1u << 16); ++i) t->number_at(i);
  } catch (const woq::Error&) {
  }
}

// Whether the directory holds anything but the input's files (and the
// output, when `output` is allowed).
bool leftover(const Scratch& scratch, bool output) {
  DIR* d = opendir(scratch.dir.c_str());
  if (!d) return false;
  bool found = false;
  while (const dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    bool expected = name == "." || name == ".." || (output && name == kOutputFile);
    for (const char* input : kInputFiles) expected = expected || name == input;
    found = found || !expected;
  }
  closedir(d);
  return found;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const Scratch scratch;
  if (size < 1) return 0;
  static const char* const kFormats[8] = {"auto", "gptq", "gptq_v2", "awq", "compressed-tensors", "gguf", "onnx", "auto"};
  const char* format = kFormats[data[0] & 7];
  const bool onnx = (data[0] & 7) >= 6;
  const unsigned configs = (data[0] >> 3) & 3;
  size_t at = 1;
  std::remove(scratch.file("quantize_config.json").c_str());
  std::remove(scratch.file("config.json").c_str());
  if (configs) {
    size_t length = size >= 3 ? size_t(data[1]) | size_t(data[2]) << 8 : 0;
    at = size >= 3 ? 3 : size;
    if (length > size - at) length = size - at;
    if (configs & 1) write_file(scratch.file("quantize_config.json"), data + at, length);
    if (configs & 2) write_file(scratch.file("config.json"), data + at, length);
    at += length;
  }
  const std::string checkpoint = scratch.file(kInputFiles[onnx ? 1 : 0]), out = scratch.file(kOutputFile);
  std::remove(scratch.file(kInputFiles[onnx ? 0 : 1]).c_str());
  write_file(checkpoint, data + at, size - at);
  if (onnx) read_onnx(checkpoint);
  else read_safetensors(checkpoint);

  std::remove(out.c_str());
  const char* report = nullptr;
  const woq_status status = woq_import_checkpoint(checkpoint.c_str(), format, out.c_str(), &report);
  if (status == WOQ_ERR_INTERNAL) defect("import", status);
  if (status != WOQ_OK) {
    if (!woq_last_error()[0]) defect("import failed without a message", status);
    if (leftover(scratch, false)) defect("a failed import left its output or a temporary file", status);
    return 0;
  }
  if (!report || !report[0]) defect("import succeeded without a report", status);
  if (leftover(scratch, true)) defect("import left a temporary file", status);
  woq_file* file = nullptr;
  woq_status s = woq_file_open(out.c_str(), &file);
  if (s != WOQ_OK) defect("the imported file does not open", s);
  uint64_t count = 0;
  s = woq_file_verify(file);
  if (s == WOQ_OK) s = woq_file_tensor_count(file, &count);
  woq_file_close(file);
  if (s != WOQ_OK) defect("the imported file does not verify", s);
  if (count == 0) defect("the imported file holds no tensors", s);
  return 0;
}
