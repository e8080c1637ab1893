// Shared helpers for the unit tests.
#pragma once

#include <unistd.h>
#include <woq.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

namespace woq::test {

// Gaussian weights with a few outliers, never all zero.
inline std::vector<float> random_weights(uint64_t rows, uint64_t cols, uint32_t seed, float scale = 0.05f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> w(rows * cols);
  for (float& v : w) v = dist(rng);
  for (uint64_t i = 0; i < w.size(); i += 997) w[i] *= 20.0f;  // outliers
  return w;
}

inline std::vector<float> random_activations(uint64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = dist(rng);
  return x;
}

// ||a - b|| / ||b||
template <class A>
double rel_error(const A& a, const std::vector<double>& b) {
  double e = 0, r = 0;
  for (size_t i = 0; i < b.size(); ++i) {
    const double d = double(a[i]) - b[i];
    e += d * d;
    r += b[i] * b[i];
  }
  return std::sqrt(e / r);
}

// Y = X W^T (+ bias) in float64; W is [n, k].
inline std::vector<double> matmul_f64(const std::vector<float>& x, const std::vector<float>& w, const float* bias,
                                      uint64_t m, uint64_t n, uint64_t k) {
  std::vector<double> y(m * n);
  for (uint64_t r = 0; r < m; ++r)
    for (uint64_t j = 0; j < n; ++j) {
      double acc = bias ? bias[j] : 0.0;
      for (uint64_t i = 0; i < k; ++i) acc += double(x[r * k + i]) * double(w[j * k + i]);
      y[r * n + j] = acc;
    }
  return y;
}

// A directory removed (with its files) when the test ends.
class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/woq_test_XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::system(("rm -rf '" + path_ + "'").c_str()); }
  std::string file(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

inline void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// Writes a .woq file holding one tensor; false (with the library's message
// on stderr) if any step fails.
inline bool write_one_tensor(const std::string& path, const char* name, const woq_qmatrix* q,
                             const float* bias = nullptr) {
  woq_writer* w = nullptr;
  woq_status s = woq_writer_create(path.c_str(), &w);
  if (s == WOQ_OK) s = woq_writer_add_tensor(w, name, q, bias);
  if (s == WOQ_OK) s = woq_writer_finish(w);
  if (s != WOQ_OK) std::fprintf(stderr, "writing %s: %s\n", path.c_str(), woq_last_error());
  woq_writer_destroy(w);
  return s == WOQ_OK;
}

}  // namespace woq::test
