#include "cli/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace woq::cli {
namespace {

std::string fmt(const char* f, double a, double b = 0, double c = 0, double d = 0) {
  char buf[256];
  std::snprintf(buf, sizeof buf, f, a, b, c, d);
  return buf;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

}  // namespace

std::string render_svg(const SvgPicture& p) {
  const double W = 900, H = 380;
  // Histogram panel: x in [40, 580], bars above y = 280, levels below.
  const double hx0 = 40, hx1 = 580, hy0 = 50, hy1 = 280;
  float lo = 0, hi = 0;
  for (float w : p.weights) lo = std::min(lo, w), hi = std::max(hi, w);
  for (float l : p.levels) lo = std::min(lo, l), hi = std::max(hi, l);
  if (hi <= lo) hi = lo + 1;
  const int bins = 80;
  std::vector<double> count(bins, 0);
  for (float w : p.weights) count[std::min(bins - 1, int((w - lo) / (hi - lo) * bins))] += 1;
  const double peak = std::max(1.0, *std::max_element(count.begin(), count.end()));
  auto x_of = [&](double v) { return hx0 + (v - lo) / (hi - lo) * (hx1 - hx0); };

  std::string s = fmt("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%g\" height=\"%g\" viewBox=\"0 0 %g %g\" "
                      "font-family=\"sans-serif\" font-size=\"12\">\n",
                      W, H, W, H);
  s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  s += "<text x=\"" + fmt("%g", hx0) + "\" y=\"24\" font-size=\"15\">" + escape(p.title) + "</text>\n";
  s += fmt("<text x=\"%g\" y=\"42\" fill=\"#555\">histogram of the %g original weights (sqrt scale)</text>\n", hx0,
           double(p.weights.size()));
  for (int b = 0; b < bins; ++b) {
    // sqrt keeps the tails visible next to the peak.
    const double h = std::sqrt(count[b] / peak) * (hy1 - hy0);
    const double x = hx0 + b * (hx1 - hx0) / bins;
    s += fmt("<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" fill=\"#4a7ab7\"/>\n", x, hy1 - h,
             (hx1 - hx0) / bins - 0.5, h);
  }
  s += fmt("<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n", hx0, hy1, hx1, hy1);
  for (float l : p.levels)
    s += fmt("<line x1=\"%.2f\" y1=\"%g\" x2=\"%.2f\" y2=\"%g\" stroke=\"#c0392b\" stroke-width=\"1.5\"/>\n", x_of(l),
             hy1 + 8, x_of(l), hy1 + 30);
  s += fmt("<text x=\"%g\" y=\"%g\" fill=\"#c0392b\">", hx0, hy1 + 46) + escape(p.levels_label) + "</text>\n";
  s += fmt("<text x=\"%g\" y=\"%g\" text-anchor=\"start\">%.3g</text>\n", hx0, hy1 + 64, lo);
  s += fmt("<text x=\"%g\" y=\"%g\" text-anchor=\"end\">%.3g</text>\n", hx1, hy1 + 64, hi);
  if (lo < 0 && hi > 0)
    s += fmt("<text x=\"%.2f\" y=\"%g\" text-anchor=\"middle\">0</text>\n", x_of(0), hy1 + 64);

  // SQNR panel: bars per bit width.
  const double cx0 = 640, cx1 = 870, cy0 = 70, cy1 = 280;
  double top = 10;
  for (double v : p.sqnr_db)
    if (std::isfinite(v)) top = std::max(top, v);
  top = std::ceil(top / 10) * 10;
  s += fmt("<text x=\"%g\" y=\"42\" fill=\"#555\">SQNR (dB) re-quantized at each bit width</text>\n", cx0 - 10);
  s += fmt("<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"black\"/>\n", cx0, cy1, cx1, cy1);
  for (double t = 0; t <= top; t += 10) {
    const double y = cy1 - t / top * (cy1 - cy0);
    s += fmt("<line x1=\"%g\" y1=\"%.2f\" x2=\"%g\" y2=\"%.2f\" stroke=\"#ddd\"/>\n", cx0, y, cx1, y);
    s += fmt("<text x=\"%g\" y=\"%.2f\" text-anchor=\"end\">%g</text>\n", cx0 - 4, y + 4, t);
  }
  const double slot = (cx1 - cx0) / std::max<size_t>(1, p.sqnr_bits.size());
  for (size_t i = 0; i < p.sqnr_bits.size(); ++i) {
    const double v = std::isfinite(p.sqnr_db[i]) ? std::max(0.0, p.sqnr_db[i]) : top;
    const double h = v / top * (cy1 - cy0), x = cx0 + i * slot + 4;
    const char* color = p.sqnr_bits[i] == p.stored_bits ? "#c0392b" : "#7f8c8d";
    s += fmt("<rect x=\"%.2f\" y=\"%.2f\" width=\"%.2f\" height=\"%.2f\" ", x, cy1 - h, slot - 8, h) +
         "fill=\"" + color + "\"/>\n";
    s += fmt("<text x=\"%.2f\" y=\"%.2f\" text-anchor=\"middle\" font-size=\"10\">%.1f</text>\n", x + (slot - 8) / 2,
             cy1 - h - 4, p.sqnr_db[i]);
    s += fmt("<text x=\"%.2f\" y=\"%g\" text-anchor=\"middle\">%g</text>\n", x + (slot - 8) / 2, cy1 + 16,
             double(p.sqnr_bits[i]));
  }
  s += fmt("<text x=\"%g\" y=\"%g\" text-anchor=\"middle\">bits per weight</text>\n", (cx0 + cx1) / 2, cy1 + 34);
  s += "</svg>\n";
  return s;
}

}  // namespace woq::cli
