#include "cli/progress.h"

#include <unistd.h>

#include <cstdio>

namespace woq::cli {

Progress::Progress(uint64_t total, std::string label)
    : total_(total), label_(std::move(label)), tty_(isatty(STDOUT_FILENO) != 0), start_(std::chrono::steady_clock::now()) {}

Progress::~Progress() { finish(); }

void Progress::step(const std::string& item) {
  ++done_;
  if (tty_) draw(item);
}

void Progress::draw(const std::string& item) {
  const int width = 30;
  const int filled = total_ ? int(width * done_ / total_) : width;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  std::string name = item.size() > 40 ? "..." + item.substr(item.size() - 37) : item;
  std::printf("\r%s [%.*s%*s] %llu/%llu %5.1fs %-40s", label_.c_str(), filled, "##############################",
              width - filled, "", static_cast<unsigned long long>(done_), static_cast<unsigned long long>(total_), secs,
              name.c_str());
  std::fflush(stdout);
}

void Progress::finish() {
  if (finished_) return;
  finished_ = true;
  if (tty_ && done_ > 0) std::printf("\r%*s\r", 120, "");
  std::fflush(stdout);
}

}  // namespace woq::cli
