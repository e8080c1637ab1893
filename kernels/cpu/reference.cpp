#include "reference.h"

#include <vector>

namespace woq::kernels {

void reference_dequantize_row(const QuantView& w, uint64_t n, float* out) {
  const uint64_t groups = w.cols / w.group_size;
  const uint32_t* codes = w.codes + n * w.words_per_row;
  for (uint64_t k = 0; k < w.cols; ++k) {
    const uint64_t j = n * groups + k / w.group_size;
    const float s = half_to_float(w.scales[j]);
    const int q = int(unpack_code(codes, k, w.bits));
    const float w_hat = s * float(q - int(w.zeros[j]));
    if (w.input_permutation) out[w.input_permutation[k]] = w_hat;
    else out[k] = w.input_scales ? w_hat * w.input_scales[k] : w_hat;
  }
}

void reference_matmul(const QuantView& w, const void* x, ActType x_type, uint64_t m, void* y,
                      ActType y_type, uint64_t row_begin, uint64_t row_end) {
  std::vector<float> xf(m * w.cols);
  for (uint64_t i = 0; i < xf.size(); ++i) xf[i] = load_act(x, x_type, i);
  std::vector<float> row(w.cols);
  for (uint64_t n = row_begin; n < row_end; ++n) {
    reference_dequantize_row(w, n, row.data());
    for (uint64_t r = 0; r < m; ++r) {
      const float* xr = xf.data() + r * w.cols;
      float acc = 0.0f;
      for (uint64_t k = 0; k < w.cols; ++k) acc += xr[k] * row[k];
      if (w.bias) acc += w.bias[n];
      store_act(y, y_type, r * w.rows + n, acc);
    }
  }
}

}  // namespace woq::kernels
