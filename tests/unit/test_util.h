// Shared helpers for the unit tests.
#pragma once

#include <dirent.h>
#include <unistd.h>
#include <woq.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
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

// The names in a directory, but "." and "..".
inline std::vector<std::string> list_dir(const std::string& path) {
  std::vector<std::string> names;
  DIR* d = opendir(path.c_str());
  if (!d) return names;
  while (dirent* e = readdir(d))
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) names.push_back(e->d_name);
  closedir(d);
  return names;
}

inline std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

inline void write_file(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
}

// A context with default options but `backend`.
inline woq_status create_context(woq_backend backend, woq_context** out) {
  woq_context_options o;
  woq_context_options_init(&o);
  o.backend = backend;
  return woq_context_create(&o, out);
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

// An AutoGPTQ v2 act-order layer "l" (4-bit, asymmetric) written byte by
// byte as safetensors (u64 header length, JSON header, data), for
// woq_import_checkpoint with format "gptq_v2": n outputs (a multiple of 8),
// k inputs in groups of `group`, g_idx a random permutation of k / group.
// Returns the checkpoint's own dequantization in the model's input order,
// W[j][i] = s[g_idx[i]][j] (q[i][j] - z[g_idx[i]][j]), computed here.
inline std::vector<float> write_act_order_gptq(const std::string& path, uint64_t n, uint64_t k, uint32_t group,
                                               uint32_t seed) {
  std::mt19937 rng(seed);
  const uint64_t groups = k / group;
  std::vector<int32_t> g_idx(k);
  for (uint64_t i = 0; i < k; ++i) g_idx[i] = int32_t(i / group);
  std::shuffle(g_idx.begin(), g_idx.end(), rng);
  std::vector<uint32_t> q(k * n), z(groups * n);
  std::vector<uint16_t> s_bits(groups * n);
  for (uint32_t& v : q) v = rng() % 16;
  for (uint32_t& v : z) v = 1 + rng() % 14;
  for (uint16_t& v : s_bits) v = uint16_t(0x2000 + rng() % 1024);  // fp16 2^-7 (1 + m / 1024)
  std::vector<int32_t> qweight(k / 8 * n, 0), qzeros(groups * n / 8, 0);
  for (uint64_t i = 0; i < k; ++i)
    for (uint64_t j = 0; j < n; ++j) qweight[(i / 8) * n + j] |= int32_t(q[i * n + j] << (4 * (i % 8)));
  for (uint64_t g = 0; g < groups; ++g)
    for (uint64_t j = 0; j < n; ++j) qzeros[g * (n / 8) + j / 8] |= int32_t(z[g * n + j] << (4 * (j % 8)));
  std::vector<float> w(n * k);
  for (uint64_t j = 0; j < n; ++j)
    for (uint64_t i = 0; i < k; ++i) {
      const uint64_t at = uint64_t(g_idx[i]) * n + j;
      const float scale = float(std::ldexp(1.0 + (s_bits[at] - 0x2000) / 1024.0, -7));
      w[j * k + i] = scale * float(int(q[i * n + j]) - int(z[at]));
    }
  struct Part { const char* name; const char* dtype; std::string shape; const void* data; uint64_t bytes; };
  const Part parts[] = {
      {"l.qweight", "I32", std::to_string(k / 8) + "," + std::to_string(n), qweight.data(), qweight.size() * 4},
      {"l.qzeros", "I32", std::to_string(groups) + "," + std::to_string(n / 8), qzeros.data(), qzeros.size() * 4},
      {"l.scales", "F16", std::to_string(groups) + "," + std::to_string(n), s_bits.data(), s_bits.size() * 2},
      {"l.g_idx", "I32", std::to_string(k), g_idx.data(), g_idx.size() * 4}};
  std::string header = "{";
  uint64_t offset = 0;
  for (const Part& p : parts) {
    header += std::string(header.size() > 1 ? "," : "") + "\"" + p.name + "\":{\"dtype\":\"" + p.dtype +
              "\",\"shape\":[" + p.shape + "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + p.bytes) + "]}";
    offset += p.bytes;
  }
  header += "}";
  std::vector<uint8_t> file(8);
  const uint64_t header_bytes = header.size();
  std::memcpy(file.data(), &header_bytes, 8);
  file.insert(file.end(), header.begin(), header.end());
  for (const Part& p : parts)
    file.insert(file.end(), static_cast<const uint8_t*>(p.data), static_cast<const uint8_t*>(p.data) + p.bytes);
  write_file(path, file);
  return w;
}

}  // namespace woq::test
