#include "quant/rtn.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "kernels/cpu/numeric.h"
#include "quant/packing.h"
#include "runtime/error.h"

namespace woq {

uint16_t fp16_round_up(double x) {
  if (!(x <= 65504.0))
    fail(Status::InvalidArgument, "a group needs scale " + std::to_string(x) +
                                      ", above the largest fp16 value 65504 (weights too large)");
  uint16_t h = kernels::float_to_half(static_cast<float>(x));
  while (double(kernels::half_to_float(h)) < x) ++h;
  while (h > 0 && double(kernels::half_to_float(uint16_t(h - 1))) >= x) --h;
  return h;
}

double load_weight(const void* weights, DType dtype, uint64_t i, uint64_t cols) {
  const double w = load_as_float(weights, dtype, i);
  if (!std::isfinite(w))
    fail(Status::InvalidArgument, "weight at row " + std::to_string(i / cols) + ", col " + std::to_string(i % cols) +
                                      " is not finite");
  return w;
}

void check_quant_config(const QuantConfig& config, uint64_t rows, uint64_t cols) {
  if (config.bits < 2 || config.bits > 8)
    fail(Status::InvalidArgument, "bits = " + std::to_string(config.bits) + " is not supported (2..8)");
  const uint32_t g = config.group_size;
  if (g != 0 && g != 32 && g != 64 && g != 128 && g != 256)
    fail(Status::InvalidArgument, "group_size = " + std::to_string(g) +
                                      " is not supported (32, 64, 128, 256, or 0 for per-channel)");
  if (config.scheme != Scheme::Asymmetric && config.scheme != Scheme::Symmetric)
    fail(Status::InvalidArgument, "unknown scheme " + std::to_string(int(config.scheme)));
  if (config.method != Method::Rtn && config.method != Method::Mse && config.method != Method::Hqq &&
      config.method != Method::Gptq && config.method != Method::Awq)
    fail(Status::Unsupported, "quantization method " + std::to_string(int(config.method)) +
                                  " is not available in woq_quantize (RTN, MSE, HQQ, AWQ and GPTQ are)");
  if (config.act_order != ActOrder::Off && config.method != Method::Gptq)
    fail(Status::InvalidArgument, "act_order applies to GPTQ only");
  if (rows == 0 || cols == 0)
    fail(Status::Shape, "weight matrix " + std::to_string(rows) + " x " + std::to_string(cols) + " is empty");
  if (rows > (1ull << 32) - 1 || cols > (1ull << 32) - 1 || rows * cols > (1ull << 40))
    fail(Status::Shape, "weight matrix " + std::to_string(rows) + " x " + std::to_string(cols) + " is too large");
  if (g != 0 && cols % g != 0)
    fail(Status::Shape, "cols = " + std::to_string(cols) + " is not a multiple of group_size " + std::to_string(g));
}

GroupRange group_range(const double* w, uint64_t n) {
  GroupRange r;
  for (uint64_t i = 0; i < n; ++i) {
    r.lo = std::min(r.lo, w[i]);
    r.hi = std::max(r.hi, w[i]);
    r.amax = std::max(r.amax, std::fabs(w[i]));
  }
  return r;
}

Grid make_grid(const GroupRange& range, double shrink, const QuantConfig& config) {
  const double qmax = double((1u << config.bits) - 1);
  const double half_range = double(1u << (config.bits - 1));
  const double lo = range.lo * shrink, hi = range.hi * shrink, amax = range.amax * shrink;
  // The grid must include 0 and cover [lo, hi]; the scale is rounded up
  // to fp16 so that rounding it cannot shrink the grid.
  const double ideal = config.scheme == Scheme::Symmetric ? amax / (half_range - 1) : (hi - lo) / qmax;
  Grid g{fp16_round_up(ideal), 0, 0};
  g.s = kernels::half_to_float(g.s16);
  if (g.s == 0) {
    g.s16 = 0x3c00;  // 1.0: the group is all zeros
    g.s = 1;
    g.z = config.scheme == Scheme::Symmetric ? half_range : 0;
  } else {
    g.z = config.scheme == Scheme::Symmetric ? half_range : std::min(qmax, std::max(0.0, std::nearbyint(-lo / g.s)));
  }
  return g;
}

QuantizedMatrix make_quantized(uint64_t rows, uint64_t cols, DType dtype, const QuantConfig& config) {
  QuantizedMatrix m;
  m.rows = rows;
  m.cols = cols;
  m.bits = config.bits;
  m.group_size = config.group_size == 0 ? static_cast<uint32_t>(cols) : config.group_size;
  m.scheme = config.scheme;
  m.method = config.method;
  m.source_dtype = dtype;
  m.codes.assign(rows * m.words_per_row(), 0);
  m.scales.resize(rows * m.groups_per_row());
  m.zeros.resize(rows * m.groups_per_row());
  return m;
}

namespace {

// Codes of w[0..n) on grid g; returns the squared error of the stored
// (fp32) dequantized values, summed in order.
double quantize_on(const double* w, uint64_t n, const Grid& g, uint32_t bits, uint8_t* q) {
  double err = 0;
  for (uint64_t i = 0; i < n; ++i) {
    q[i] = quantize_value(w[i], g, bits);
    const double e = double(dequantize_value(q[i], g)) - w[i];
    err += e * e;
  }
  return err;
}

// WOQ_METHOD_HQQ (SPEC.md 5.8): HQQ's half-quadratic splitting with an
// l_0.5 error norm, solving for scale and zero-point together, then a
// least-squares scale for the rounded zero-point; these grids compete with
// the RTN grid on squared error.
constexpr int kHqqIterations = 20;
constexpr double kHqqBeta = 10.0, kHqqKappa = 1.01;

// Generalized soft threshold of the l_0.5 proximal step.
double shrink_lp(double x, double beta) {
  const double a = std::fabs(x);
  if (a == 0) return 0;
  const double v = a - 1.0 / (beta * std::sqrt(a));
  return v > 0 ? std::copysign(v, x) : 0.0;
}

// The grids HQQ proposes for w[0..n), starting from the RTN grid g0.
std::vector<Grid> hqq_candidates(const double* w, uint64_t n, const Grid& g0, const QuantConfig& config) {
  const double qmax = double((1u << config.bits) - 1);
  const bool sym = config.scheme == Scheme::Symmetric;
  std::vector<Grid> out;
  std::vector<double> q(n), t(n);
  double s = g0.s, z = g0.z, beta = kHqqBeta;
  for (int it = 0; it < kHqqIterations; ++it) {
    // Codes on the current grid; the sparse error W_e; then (s, z) as the
    // least-squares fit of W - W_e = s (Q - z).
    double mq = 0, mt = 0;
    for (uint64_t i = 0; i < n; ++i) {
      q[i] = std::min(qmax, std::max(0.0, std::nearbyint(w[i] / s + z)));
      t[i] = w[i] - shrink_lp(w[i] - s * (q[i] - z), beta);
      mq += q[i];
      mt += t[i];
    }
    mq /= double(n);
    mt /= double(n);
    double num = 0, den = 0;
    for (uint64_t i = 0; i < n; ++i) {
      const double dq = sym ? q[i] - z : q[i] - mq;
      num += dq * (sym ? t[i] : t[i] - mt);
      den += dq * dq;
    }
    if (den > 0 && num > 0) {
      s = num / den;
      if (!sym) z = mq - mt / s;
    }
    beta *= kHqqKappa;
  }
  z = sym ? z : std::min(qmax, std::max(0.0, std::nearbyint(z)));
  auto push = [&](double scale) {
    if (!(scale > 0 && scale <= 65504.0)) return;
    const uint16_t s16 = kernels::float_to_half(float(scale));
    const double v = kernels::half_to_float(s16);
    if (v > 0) out.push_back({s16, v, z});
  };
  push(s);
  // Least-squares scale for the codes on (s, z) with z now an integer.
  double num = 0, den = 0;
  for (uint64_t i = 0; i < n; ++i) {
    const double d = std::min(qmax, std::max(0.0, std::nearbyint(w[i] / s + z))) - z;
    num += w[i] * d;
    den += d * d;
  }
  if (den > 0) push(num / den);
  return out;
}

}  // namespace

QuantizedMatrix quantize_rtn(const void* weights, DType dtype, uint64_t rows, uint64_t cols,
                             const QuantConfig& config) {
  check_quant_config(config, rows, cols);
  QuantizedMatrix m = make_quantized(rows, cols, dtype, config);
  const uint64_t groups = m.groups_per_row();

  const int steps = config.method == Method::Mse ? kShrinkSteps : 1;
  std::vector<double> w(m.group_size);
  std::vector<uint8_t> q(cols), trial(m.group_size);
  for (uint64_t n = 0; n < rows; ++n) {
    for (uint64_t j = 0; j < groups; ++j) {
      for (uint64_t i = 0; i < m.group_size; ++i)
        w[i] = load_weight(weights, dtype, n * cols + j * m.group_size + i, cols);
      const GroupRange range = group_range(w.data(), m.group_size);
      uint8_t* codes = q.data() + j * m.group_size;
      Grid best = make_grid(range, 1.0, config);
      double best_err = quantize_on(w.data(), m.group_size, best, config.bits, codes);
      std::vector<Grid> candidates;
      for (int step = 1; step < steps; ++step) candidates.push_back(make_grid(range, shrink_factor(step), config));
      if (config.method == Method::Hqq) candidates = hqq_candidates(w.data(), m.group_size, best, config);
      for (const Grid& g : candidates) {  // a strictly smaller error replaces
        const double err = quantize_on(w.data(), m.group_size, g, config.bits, trial.data());
        if (err < best_err) {
          best = g, best_err = err;
          std::copy(trial.begin(), trial.end(), codes);
        }
      }
      m.scales[n * groups + j] = best.s16;
      m.zeros[n * groups + j] = static_cast<uint8_t>(best.z);
    }
    pack_row(q.data(), cols, config.bits, m.codes.data() + n * m.words_per_row());
  }
  m.stats = measure_error(m, weights, dtype);
  return m;
}

QuantStats measure_error(const QuantizedMatrix& m, const void* weights, DType dtype) {
  double err2 = 0, ref2 = 0, max_err = 0;
  std::vector<float> row(m.cols);
  const kernels::QuantView v = m.view();
  for (uint64_t n = 0; n < m.rows; ++n) {
    kernels::reference_dequantize_row(v, n, row.data());
    for (uint64_t k = 0; k < m.cols; ++k) {
      const double w = load_as_float(weights, dtype, n * m.cols + k);
      const double e = double(row[k]) - w;
      err2 += e * e;
      ref2 += w * w;
      max_err = std::max(max_err, std::fabs(e));
    }
  }
  QuantStats s;
  s.max_abs_error = max_err;
  s.rel_frobenius_error = ref2 > 0 ? std::sqrt(err2 / ref2) : (err2 > 0 ? std::numeric_limits<double>::infinity() : 0);
  s.sqnr_db = err2 > 0 ? 10 * std::log10(ref2 / err2) : std::numeric_limits<double>::infinity();
  return s;
}

}  // namespace woq
