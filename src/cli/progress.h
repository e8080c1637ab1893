// A one-line progress bar, drawn only when stdout is a terminal so that
// logs and pipes get plain lines.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace woq::cli {

class Progress {
 public:
  Progress(uint64_t total, std::string label);
  ~Progress();
  void step(const std::string& item);  // one unit done; `item` names it
  void finish();

 private:
  void draw(const std::string& item);
  uint64_t total_;
  uint64_t done_ = 0;
  std::string label_;
  bool tty_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace woq::cli
