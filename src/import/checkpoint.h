// Converts quantized checkpoints made by other tools (AutoGPTQ, AutoAWQ,
// compressed-tensors, llama.cpp's GGUF, ONNX Runtime's MatMulNBits) into woq's canonical layout without
// re-quantizing.
// Each flavour's packing is documented in docs/IMPORT.md.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "quant/quantized_matrix.h"

namespace woq::import {

enum class Flavor { Auto, GptqV1, GptqV2, Awq, CompressedTensors, Gguf, Onnx };

struct ImportedLayer {
  std::string name;  // "<prefix>.weight"
  QuantizedMatrix matrix;  // with bias when the checkpoint has one
};

struct ImportResult {
  Flavor flavor = Flavor::Auto;
  std::string how;  // where the flavour came from
  size_t layer_count = 0;  // layers converted (each handed to ImportOptions::on_layer)
  std::vector<std::string> skipped;
  // The checkpoint's own string metadata: safetensors' __metadata__, or a
  // GGUF file's string-valued keys.
  std::map<std::string, std::string> metadata;
  // Scales converted to fp16 (GGUF's fp16 block scales, copied as they
  // are, are not counted), how many of them ImportOptions::round_scales
  // changed, and the largest relative change |fp16(s) - s| / |s|.
  uint64_t scales_read = 0, scales_rounded = 0;
  double largest_scale_change = 0;
};

struct ImportOptions {
  // woq keeps fp16 scales. false: a scale fp16 cannot hold exactly is
  // refused (the weights never change); true: it is rounded to the nearest
  // fp16 and counted in the result.
  bool round_scales = false;
  // Required: called with each layer as soon as it is converted (in
  // checkpoint order; `index` counts from 0 of `total`, which is known
  // before the first), so the import holds one converted layer at a time.
  // What it throws propagates.
  std::function<void(ImportedLayer&& layer, size_t index, size_t total)> on_layer;
};

const char* flavor_name(Flavor f);
// "auto", "gptq", "gptq_v2", "awq", "compressed-tensors", "gguf", "onnx"; throws Error otherwise.
Flavor parse_flavor(const std::string& name);

// Reads one safetensors checkpoint, a single file or shards (see
// Safetensors::open), and a config next to it; or a GGUF file (its Q4_0,
// Q5_0 and Q8_0 matrices); or an ONNX model (its MatMulNBits weights).
// Throws Error.
ImportResult import_checkpoint(const std::string& path, Flavor flavor, const ImportOptions& options = {});

}  // namespace woq::import
