#include "quant/awq.h"

#include <algorithm>
#include <cmath>
#include <string>
#include <utility>

#include "quant/packing.h"
#include "runtime/error.h"

namespace woq {
namespace {

constexpr int kAlphaSteps = 21;     // alpha = 0, 0.05, ..., 1
constexpr uint64_t kEvalRows = 256; // calibration rows the alpha search scores on

// Per-channel factors s = a^alpha over the floored mean |x|, normalized so
// that max(s) * min(s) = 1 (keeps the scaled weights in a sane range).
std::vector<double> channel_scales(const std::vector<double>& mean_abs, double alpha) {
  double top = 0;
  for (double a : mean_abs) top = std::max(top, a);
  const double floor = top > 0 ? 1e-4 * top : 1.0;
  std::vector<double> s(mean_abs.size());
  double lo = INFINITY, hi = 0;
  for (size_t k = 0; k < s.size(); ++k) {
    s[k] = std::pow(std::max(mean_abs[k], floor), alpha);
    lo = std::min(lo, s[k]);
    hi = std::max(hi, s[k]);
  }
  const double norm = std::sqrt(lo * hi);
  for (double& v : s) v /= norm;
  return s;
}

// One row's grids and codes.
struct RowResult {
  std::vector<Grid> grids;
  std::vector<uint8_t> codes;
};

}  // namespace

QuantizedMatrix quantize_awq(const void* weights, DType dtype, uint64_t rows, uint64_t cols, const QuantConfig& config,
                             const Calibration& calib, bool fold, AwqReport* report) {
  check_quant_config(config, rows, cols);
  const uint64_t k = cols;
  const std::vector<float> x = load_calibration(calib, cols, "AWQ");
  const std::vector<double> w = load_weights(weights, dtype, rows, cols);
  QuantizedMatrix m = make_quantized(rows, cols, dtype, config);
  const uint64_t g = m.group_size, groups = m.groups_per_row();

  std::vector<double> mean_abs(k, 0.0);
  for (uint64_t s = 0; s < calib.rows; ++s)
    for (uint64_t c = 0; c < k; ++c) mean_abs[c] += std::fabs(double(x[s * k + c]));
  for (double& a : mean_abs) a /= double(calib.rows);

  // Rows the alpha search is scored on, spread over the calibration set.
  const uint64_t eval = std::min(calib.rows, kEvalRows);
  std::vector<const float*> xe(eval);
  for (uint64_t e = 0; e < eval; ++e) xe[e] = &x[(e * calib.rows / eval) * k];
  std::vector<double> y_ref(eval * rows, 0.0);
  double ref2 = 0;
  for (uint64_t e = 0; e < eval; ++e)
    for (uint64_t n = 0; n < rows; ++n) {
      double acc = 0;
      for (uint64_t c = 0; c < k; ++c) acc += double(xe[e][c]) * w[n * k + c];
      y_ref[e * rows + n] = acc;
      ref2 += acc * acc;
    }

  // Quantizes row n of W diag(s) on RTN grids shrunk by `shrink`; writes
  // the effective weights (as backends compute them) to w_eff.
  auto quantize_row = [&](uint64_t n, const std::vector<double>& s, const std::vector<float>& inv, double shrink,
                          RowResult& out, double* w_eff) {
    std::vector<double> ws(g);
    out.grids.resize(groups);
    out.codes.resize(k);
    for (uint64_t j = 0; j < groups; ++j) {
      for (uint64_t i = 0; i < g; ++i) ws[i] = w[n * k + j * g + i] * s[j * g + i];
      const Grid grid = make_grid(group_range(ws.data(), g), shrink, config);
      out.grids[j] = grid;
      for (uint64_t i = 0; i < g; ++i) {
        const uint64_t c = j * g + i;
        out.codes[c] = quantize_value(ws[i], grid, config.bits);
        w_eff[c] = double(dequantize_value(out.codes[c], grid) * inv[c]);
      }
    }
  };
  auto output_error = [&](const std::vector<double>& s, const std::vector<float>& inv) {
    std::vector<double> w_eff(k);
    RowResult r;
    double err = 0;
    for (uint64_t n = 0; n < rows; ++n) {
      quantize_row(n, s, inv, 1.0, r, w_eff.data());
      for (uint64_t e = 0; e < eval; ++e) {
        double acc = 0;
        for (uint64_t c = 0; c < k; ++c) acc += double(xe[e][c]) * w_eff[c];
        const double d = acc - y_ref[e * rows + n];
        err += d * d;
      }
    }
    return err;
  };
  auto inverse = [](const std::vector<double>& s) {
    std::vector<float> inv(s.size());
    for (size_t c = 0; c < s.size(); ++c) inv[c] = float(1.0 / s[c]);
    return inv;
  };

  // 1. alpha by output error (alpha = 0 is RTN, so AWQ never loses to it here).
  AwqReport rep;
  double best_err = INFINITY;
  std::vector<double> best_s;
  for (int step = 0; step < kAlphaSteps; ++step) {
    const double alpha = double(step) / double(kAlphaSteps - 1);
    std::vector<double> s = channel_scales(mean_abs, alpha);
    const double err = output_error(s, inverse(s));
    if (step == 0) rep.calib_error_rtn = ref2 > 0 ? err / ref2 : 0;
    if (err < best_err) best_err = err, best_s = std::move(s), rep.alpha = alpha;
  }
  const std::vector<float> inv = inverse(best_s);

  // 2. Per-group clipping by output error: e^T (X_g^T X_g) e over all rows.
  std::vector<double> gram(groups * g * g, 0.0);
  for (uint64_t s = 0; s < calib.rows; ++s)
    for (uint64_t j = 0; j < groups; ++j) {
      const float* xg = &x[s * k + j * g];
      double* gj = &gram[j * g * g];
      for (uint64_t a = 0; a < g; ++a) {
        if (xg[a] == 0) continue;
        for (uint64_t b = 0; b < g; ++b) gj[a * g + b] += double(xg[a]) * double(xg[b]);
      }
    }
  std::vector<double> trial_eff(k), err_vec(g);
  RowResult best_row, trial_row;
  for (uint64_t n = 0; n < rows; ++n) {
    std::vector<double> group_err(groups, INFINITY);
    for (int step = 0; step < kShrinkSteps; ++step) {
      quantize_row(n, best_s, inv, shrink_factor(step), trial_row, trial_eff.data());
      if (step == 0) best_row = trial_row;
      for (uint64_t j = 0; j < groups; ++j) {
        for (uint64_t i = 0; i < g; ++i) err_vec[i] = trial_eff[j * g + i] - w[n * k + j * g + i];
        const double* gj = &gram[j * g * g];
        double e2 = 0;
        for (uint64_t a = 0; a < g; ++a) {
          double row_dot = 0;
          for (uint64_t b = 0; b < g; ++b) row_dot += gj[a * g + b] * err_vec[b];
          e2 += err_vec[a] * row_dot;
        }
        if (e2 < group_err[j]) {  // strictly smaller replaces: ties keep the wider grid
          group_err[j] = e2;
          best_row.grids[j] = trial_row.grids[j];
          std::copy(&trial_row.codes[j * g], &trial_row.codes[j * g] + g, &best_row.codes[j * g]);
        }
      }
    }
    for (uint64_t j = 0; j < groups; ++j) {
      m.scales[n * groups + j] = best_row.grids[j].s16;
      m.zeros[n * groups + j] = static_cast<uint8_t>(best_row.grids[j].z);
    }
    pack_row(best_row.codes.data(), k, config.bits, m.codes.data() + n * m.words_per_row());
  }

  // Error statistics against what the stored data stands for.
  if (fold) {
    std::vector<float> scaled(rows * k);  // W diag(s): what the tensor multiplies pre-scaled X by
    for (uint64_t i = 0; i < scaled.size(); ++i) scaled[i] = float(w[i] * best_s[i % k]);
    m.stats = measure_error(m, scaled.data(), DType::F32);
    rep.folded = inv;
  } else {
    m.input_scales = inv;
    m.stats = measure_error(m, weights, dtype);
  }
  {  // the final calibration error, as backends will compute
    double err = 0;
    std::vector<float> row(k);
    const kernels::QuantView v = m.view();
    for (uint64_t n = 0; n < rows; ++n) {
      kernels::reference_dequantize_row(v, n, row.data());
      for (uint64_t e = 0; e < eval; ++e) {
        double acc = 0;
        for (uint64_t c = 0; c < k; ++c) acc += double(xe[e][c]) * (fold ? double(row[c]) * inv[c] : double(row[c]));
        const double d = acc - y_ref[e * rows + n];
        err += d * d;
      }
    }
    rep.calib_error = ref2 > 0 ? err / ref2 : 0;
  }
  if (report) *report = std::move(rep);
  return m;
}

}  // namespace woq
