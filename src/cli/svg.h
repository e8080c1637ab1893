// The `woq inspect --svg` picture, written directly as SVG text: a histogram
// of a tensor's original weights with one group's quantization levels drawn
// under it, and the SQNR of re-quantizing the tensor at 8..2 bits.
#pragma once

#include <string>
#include <vector>

namespace woq::cli {

struct SvgPicture {
  std::string title;
  std::vector<float> weights;      // the original weights (all of them)
  std::vector<float> levels;       // s * (q - z), q = 0 .. 2^bits - 1, of one group
  std::string levels_label;        // which group, bits, s, z
  std::vector<int> sqnr_bits;      // e.g. 8, 7, ..., 2
  std::vector<double> sqnr_db;     // SQNR per entry of sqnr_bits
  int stored_bits = 0;             // highlighted in the chart
};

// Returns the SVG document.
std::string render_svg(const SvgPicture& p);

}  // namespace woq::cli
