#include "quant/gptq.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "quant/packing.h"
#include "runtime/error.h"
#include "runtime/thread_pool.h"

namespace woq {
namespace {

constexpr uint64_t kBlock = 128;  // columns per lazy batch update

// Dot product in four independent sums (the compiler may not reorder a
// strict floating-point reduction; four chains keep the FPU busy).
double dot(const double* a, const double* b, uint64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  uint64_t p = 0;
  for (; p + 4 <= n; p += 4) {
    s0 += a[p] * b[p];
    s1 += a[p + 1] * b[p + 1];
    s2 += a[p + 2] * b[p + 2];
    s3 += a[p + 3] * b[p + 3];
  }
  for (; p < n; ++p) s0 += a[p] * b[p];
  return (s0 + s1) + (s2 + s3);
}

// In-place lower Cholesky factor of the K x K matrix a (row-major; the
// upper triangle is ignored); false if a is not numerically positive definite.
bool cholesky_lower(std::vector<double>& a, uint64_t k) {
  for (uint64_t j = 0; j < k; ++j) {
    const double* aj = &a[j * k];
    const double d = a[j * k + j] - dot(aj, aj, j);
    if (!(d > 0) || !std::isfinite(d)) return false;
    const double l = std::sqrt(d);
    a[j * k + j] = l;
    for (uint64_t i = j + 1; i < k; ++i) a[i * k + j] = (a[i * k + j] - dot(&a[i * k], aj, j)) / l;
  }
  return true;
}

// U, upper triangular with H^-1 = U^T U. With J the order-reversing
// permutation and J H J = L L^T, H^-1 = (J L^-1 J)^T (J L^-1 J), and
// J L^-1 J is upper triangular: one Cholesky factorization and one
// triangular inverse, no explicit H^-1.
bool upper_inverse_factor(const std::vector<double>& h, uint64_t k, std::vector<double>& u) {
  std::vector<double> l(k * k);
  for (uint64_t i = 0; i < k; ++i)
    for (uint64_t j = 0; j <= i; ++j) l[i * k + j] = h[(k - 1 - i) * k + (k - 1 - j)];
  if (!cholesky_lower(l, k)) return false;
  // inv = L^-1 row by row: inv[i] = (e_i - sum_{p<i} L[i][p] inv[p]) / L[i][i].
  std::vector<double> inv(k * k, 0.0);
  for (uint64_t i = 0; i < k; ++i) {
    double* row = &inv[i * k];
    for (uint64_t p = 0; p < i; ++p) {
      const double f = l[i * k + p];
      if (f == 0) continue;
      const double* rp = &inv[p * k];
      for (uint64_t j = 0; j <= p; ++j) row[j] -= f * rp[j];
    }
    const double d = l[i * k + i];
    for (uint64_t j = 0; j < i; ++j) row[j] /= d;
    row[i] = 1.0 / d;
  }
  u.assign(k * k, 0.0);
  for (uint64_t i = 0; i < k; ++i)
    for (uint64_t j = i; j < k; ++j) u[i * k + j] = inv[(k - 1 - i) * k + (k - 1 - j)];
  return std::all_of(u.begin(), u.end(), [](double v) { return std::isfinite(v); });
}

}  // namespace

std::vector<float> load_calibration(const Calibration& calib, uint64_t cols, const char* method) {
  if (!calib.x || calib.rows == 0)
    fail(Status::InvalidArgument, std::string(method) + " needs calibration activations X[S, " + std::to_string(cols) +
                                      "] (none given)");
  if (calib.rows > (uint64_t(1) << 40) / cols)
    fail(Status::Shape, "calibration X[" + std::to_string(calib.rows) + ", " + std::to_string(cols) + "] is too large");
  std::vector<float> x(calib.rows * cols);
  for (uint64_t i = 0; i < x.size(); ++i) {
    x[i] = load_as_float(calib.x, calib.dtype, i);
    if (!std::isfinite(x[i]))
      fail(Status::InvalidArgument, "calibration activation at row " + std::to_string(i / cols) + ", col " +
                                        std::to_string(i % cols) + " is not finite");
  }
  return x;
}

std::vector<double> load_weights(const void* weights, DType dtype, uint64_t rows, uint64_t cols) {
  std::vector<double> w(rows * cols);
  for (uint64_t i = 0; i < w.size(); ++i) w[i] = load_weight(weights, dtype, i, cols);
  return w;
}

QuantizedMatrix quantize_gptq(const void* weights, DType dtype, uint64_t rows, uint64_t cols,
                              const QuantConfig& config, const Calibration& calib, GptqReport* report) {
  check_quant_config(config, rows, cols);
  if (cols > 65536)
    fail(Status::Shape, "GPTQ's K x K Hessian is limited to K <= 65536 inputs, got " + std::to_string(cols));
  const uint64_t k = cols;
  const std::vector<float> x = load_calibration(calib, cols, "GPTQ");

  // H = 2 X^T X / S, accumulated in double: 64 rows of X at a time, each
  // row of H updated by all of them while it is in cache. Every thread owns
  // the rows i = t, t + T, ... (balanced over the triangle), so each entry
  // is summed in the same order whatever the thread count.
  std::vector<double> h(k * k, 0.0);
  constexpr uint64_t kRowsPerPass = 64;
  const unsigned threads = unsigned(std::max(1, std::min<int>(hardware_threads(), int(k / 64) + 1)));
  // Allocated here so that the threads' work cannot throw.
  std::vector<std::vector<double>> passes(threads, std::vector<double>(kRowsPerPass * k));
  auto accumulate = [&](unsigned t) noexcept {
    std::vector<double>& xd = passes[t];
    for (uint64_t s0 = 0; s0 < calib.rows; s0 += kRowsPerPass) {
      const uint64_t n = std::min(kRowsPerPass, calib.rows - s0);
      for (uint64_t i = 0; i < n * k; ++i) xd[i] = x[s0 * k + i];
      for (uint64_t i = t; i < k; i += threads) {
        double* hi = &h[i * k];
        for (uint64_t r = 0; r < n; ++r) {
          const double* xr = &xd[r * k];
          const double xi = xr[i];
          if (xi == 0) continue;
          for (uint64_t j = 0; j <= i; ++j) hi[j] += xi * xr[j];
        }
      }
    }
  };
  {
    std::vector<std::thread> helpers;
    struct JoinAll {  // also when starting a thread throws
      std::vector<std::thread>& threads;
      ~JoinAll() {
        for (auto& t : threads) t.join();
      }
    } join_all{helpers};
    helpers.reserve(threads);
    for (unsigned t = 1; t < threads; ++t) helpers.emplace_back(accumulate, t);
    accumulate(0);
  }
  const double norm = 2.0 / double(calib.rows);
  for (uint64_t i = 0; i < k; ++i)
    for (uint64_t j = 0; j <= i; ++j) h[j * k + i] = h[i * k + j] = h[i * k + j] * norm;

  // Inputs that never fire cannot be informed by X: they get a unit
  // diagonal, so their rounding error stays theirs.
  GptqReport rep;
  rep.keep_fake_quant = report && report->keep_fake_quant;
  if (rep.keep_fake_quant) rep.fake_quant.resize(rows * cols);
  for (uint64_t i = 0; i < k; ++i)
    if (h[i * k + i] == 0) {
      h[i * k + i] = 1;
      ++rep.dead_columns;
    }

  // The weights, checked and widened.
  const QuantizedMatrix shape = make_quantized(rows, cols, dtype, config);
  const uint64_t g = shape.group_size, groups = shape.groups_per_row();
  std::vector<double> w = load_weights(weights, dtype, rows, k);

  // Column order: natural, or by decreasing diag(H) (act-order).
  std::vector<uint64_t> order(k);
  std::iota(order.begin(), order.end(), 0);
  if (config.act_order != ActOrder::Off)
    std::stable_sort(order.begin(), order.end(), [&](uint64_t a, uint64_t b) { return h[a * k + a] > h[b * k + b]; });
  // Permuted act-order stores the columns in that order, so its groups are
  // runs of that order, as natural order's are of 0..K-1.
  const bool permuted = config.act_order == ActOrder::Permuted;

  // Static grids for act-order: from the weights before any update.
  std::vector<Grid> grids(rows * groups);
  if (config.act_order == ActOrder::StaticGroups)
    for (uint64_t n = 0; n < rows; ++n)
      for (uint64_t j = 0; j < groups; ++j) grids[n * groups + j] = rtn_grid(&w[n * k + j * g], g, config);

  // Permuted Hessian, dampened until it factors.
  std::vector<double> hp(k * k);
  double mean_diag = 0;
  for (uint64_t i = 0; i < k; ++i) mean_diag += h[i * k + i];
  mean_diag /= double(k);
  std::vector<double> u;
  bool factored = false;
  for (double damp : {0.01, 0.02, 0.04, 0.07, 0.10}) {
    for (uint64_t i = 0; i < k; ++i)
      for (uint64_t j = 0; j < k; ++j) hp[i * k + j] = h[order[i] * k + order[j]];
    for (uint64_t i = 0; i < k; ++i) hp[i * k + i] += damp * mean_diag;
    if (upper_inverse_factor(hp, k, u)) {
      rep.damp = damp;
      factored = true;
      break;
    }
  }
  if (!factored)
    fail(Status::InvalidArgument, "GPTQ: the calibration Hessian is not positive definite even with 10% dampening "
                                  "(calibration activations degenerate: too few rows or non-finite sums)");
  std::vector<double>().swap(hp);
  std::vector<double>().swap(h);

  // The weights in quantization order, so that every update is contiguous.
  std::vector<double> wp(rows * k);
  for (uint64_t n = 0; n < rows; ++n)
    for (uint64_t i = 0; i < k; ++i) wp[n * k + i] = w[n * k + order[i]];
  std::vector<double>().swap(w);  // not needed again: do not hold two copies

  // Column by column; each row is independent of the others.
  std::vector<uint8_t> codes(rows * k);
  std::vector<double> err(rows * kBlock);
  for (uint64_t b0 = 0; b0 < k; b0 += kBlock) {
    const uint64_t b1 = std::min(k, b0 + kBlock);
    for (uint64_t i = b0; i < b1; ++i) {
      const uint64_t col = order[i], stored = permuted ? i : col, group = stored / g;
      const double d = u[i * k + i];
      const double* ui = &u[i * k];
      for (uint64_t n = 0; n < rows; ++n) {
        double* wn = &wp[n * k];
        Grid& grid = grids[n * groups + group];
        // Natural or permuted order: the group's grid from its weights as
        // updated so far (they follow this column in wp).
        if (config.act_order != ActOrder::StaticGroups && stored % g == 0) grid = rtn_grid(wn + i, g, config);
        const uint8_t q = quantize_value(wn[i], grid, config.bits);
        codes[n * k + stored] = q;
        const float w_hat = dequantize_value(q, grid);
        if (rep.keep_fake_quant) rep.fake_quant[n * k + col] = w_hat;
        const double e = (wn[i] - double(w_hat)) / d;
        err[n * kBlock + (i - b0)] = e;
        for (uint64_t j = i + 1; j < b1; ++j) wn[j] -= e * ui[j];
      }
    }
    // Lazy update of the columns after the block.
    for (uint64_t n = 0; n < rows; ++n) {
      double* wn = &wp[n * k];
      for (uint64_t i = b0; i < b1; ++i) {
        const double e = err[n * kBlock + (i - b0)];
        if (e == 0) continue;
        const double* ui = &u[i * k];
        for (uint64_t j = b1; j < k; ++j) wn[j] -= e * ui[j];
      }
    }
  }

  QuantizedMatrix m = shape;
  for (uint64_t n = 0; n < rows; ++n) {
    for (uint64_t j = 0; j < groups; ++j) {
      m.scales[n * groups + j] = grids[n * groups + j].s16;
      m.zeros[n * groups + j] = static_cast<uint8_t>(grids[n * groups + j].z);
    }
    pack_row(&codes[n * k], k, config.bits, m.codes.data() + n * m.words_per_row());
  }
  if (permuted) m.input_permutation.assign(order.begin(), order.end());
  m.stats = measure_error(m, weights, dtype);
  if (report) *report = std::move(rep);
  return m;
}

}  // namespace woq
