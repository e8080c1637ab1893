// woq's values of a GGUF file's tensors (WeightSource::floats: what
// `woq quantize --requantize`, `bench --reference` and `inspect --source`
// read) against EXPECT.safetensors, ggml's own dequantization of the same
// blocks (ggml_check.py quantize). Every tensor EXPECT names must be in the
// GGUF file with the same shape and the same values, bit for bit.
//   woq_gguf_floats_check FILE.gguf EXPECT.safetensors
#include <cstdio>
#include <cstring>
#include <exception>
#include <set>
#include <string>

#include "import/safetensors.h"
#include "import/weight_source.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: woq_gguf_floats_check FILE.gguf EXPECT.safetensors\n");
    return 2;
  }
  try {
    auto gguf = woq::import::WeightSource::open(argv[1]);
    auto expect = woq::import::Safetensors::open(argv[2]);
    std::set<std::string> types;
    size_t values = 0;
    for (const woq::import::SafeTensor& want : expect->tensors()) {
      const woq::import::SafeTensor* got = gguf->find(want.name);
      if (!got || got->shape != want.shape || !gguf->has_floats(*got)) {
        std::printf("FAIL: %s has no decodable tensor '%s' of the expected shape\n", argv[1], want.name.c_str());
        return 1;
      }
      const std::vector<float> a = gguf->floats(*got), b = want.to_f32();
      for (size_t i = 0; i < a.size(); ++i)
        if (std::memcmp(&a[i], &b[i], 4) != 0) {
          std::printf("FAIL: '%s' (%s) value %zu: woq %.9g, ggml %.9g\n", want.name.c_str(), got->dtype.c_str(), i,
                      double(a[i]), double(b[i]));
          return 1;
        }
      types.insert(got->dtype);
      values += a.size();
    }
    std::string names;
    for (const std::string& t : types) names += (names.empty() ? "" : ", ") + t;
    std::printf("gguf floats OK: %zu tensors (%s), %zu values equal ggml's dequantization bit for bit\n",
                expect->tensors().size(), names.c_str(), values);
    return 0;
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
}
