// Internal error type of the C++ core. Values mirror woq_status in woq.h
// (capi/ static_asserts that); capi turns an Error into a status code plus
// the thread-local message.
#pragma once

#include <stdexcept>
#include <string>

namespace woq {

enum class Status {
  Ok = 0,
  InvalidArgument = 1,
  Shape = 2,
  OutOfMemory = 3,
  Io = 4,
  Format = 5,
  Checksum = 6,
  Version = 7,
  NotFound = 8,
  Unsupported = 9,
  Limit = 10,
  Internal = 11,
};

class Error : public std::runtime_error {
 public:
  Error(Status status, const std::string& message) : std::runtime_error(message), status_(status) {}
  Status status() const { return status_; }

 private:
  Status status_;
};

[[noreturn]] inline void fail(Status status, const std::string& message) { throw Error(status, message); }

}  // namespace woq
