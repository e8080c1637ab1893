#include "import/onnx.h"

#include <cstring>

#include "kernels/cpu/numeric.h"
#include "runtime/error.h"

namespace woq::import {
namespace {

constexpr uint64_t kMaxDims = 8;
constexpr uint64_t kMaxStringBytes = 1u << 20;
constexpr int kWireVarint = 0, kWire64 = 1, kWireBytes = 2, kWire32 = 5;

uint64_t element_bytes(int32_t type) {
  switch (OnnxType(type)) {
    case OnnxType::Uint8: case OnnxType::Int8: return 1;
    case OnnxType::Uint16: case OnnxType::Int16: case OnnxType::Float16: case OnnxType::Bfloat16: return 2;
    case OnnxType::Float: case OnnxType::Int32: case OnnxType::Uint32: return 4;
    case OnnxType::Int64: case OnnxType::Double: case OnnxType::Uint64: return 8;
  }
  return 0;
}

// One protobuf message: a bounds-checked walk over its fields. Offsets in
// messages are from the start of the file.
class Message {
 public:
  Message(const uint8_t* file, const uint8_t* begin, uint64_t size, const std::string* where)
      : file_(file), at_(begin), end_(begin + size), where_(where) {}

  // The next field's number and wire type; false at the end.
  bool next(uint32_t& field, int& wire) {
    if (at_ == end_) return false;
    const uint64_t tag = varint();
    field = uint32_t(tag >> 3);
    wire = int(tag & 7);
    if (field == 0 || tag >> 32) bad("a field number out of range");
    return true;
  }
  uint64_t varint() {
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (at_ == end_) bad("a varint running past its message");
      const uint8_t b = *at_++;
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    bad("a varint longer than 10 bytes");
  }
  Message bytes() {
    const uint64_t n = varint();
    if (n > uint64_t(end_ - at_)) bad("a length of " + std::to_string(n) + " bytes running past its message");
    Message m(file_, at_, n, where_);
    at_ += n;
    return m;
  }
  std::string text() {
    Message m = bytes();
    if (m.size() > kMaxStringBytes) bad("a string over 1 MiB");
    return std::string(reinterpret_cast<const char*>(m.at_), m.size());
  }
  template <class T>
  T fixed() {
    if (uint64_t(end_ - at_) < sizeof(T)) bad("a fixed-size value running past its message");
    T v;
    std::memcpy(&v, at_, sizeof(T));
    at_ += sizeof(T);
    return v;
  }
  void skip(int wire) {
    switch (wire) {
      case kWireVarint: varint(); return;
      case kWire64: fixed<uint64_t>(); return;
      case kWireBytes: bytes(); return;
      case kWire32: fixed<uint32_t>(); return;
      default: bad("wire type " + std::to_string(wire) + " (groups or garbage)");
    }
  }
  void expect(int wire, int want, const char* what) {
    if (wire != want) bad(std::string(what) + " with wire type " + std::to_string(wire));
  }
  uint64_t size() const { return uint64_t(end_ - at_); }
  const uint8_t* data() const { return at_; }
  bool done() const { return at_ == end_; }
  [[noreturn]] void bad(const std::string& what) const {
    fail(Status::Format, *where_ + ": " + what + " at byte offset " + std::to_string(at_ - file_));
  }

 private:
  const uint8_t* file_;
  const uint8_t* at_;
  const uint8_t* end_;
  const std::string* where_;
};

// Repeated scalars come packed (one length-delimited run) or one per field.
template <class Read>
void repeated(Message& m, int wire, int scalar_wire, Read read) {
  if (wire == kWireBytes) {
    Message run = m.bytes();
    while (!run.done()) read(run);
  } else {
    m.expect(wire, scalar_wire, "a repeated number");
    read(m);
  }
}

bool plain_file_name(const std::string& s) {
  return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos && s.find('\\') == std::string::npos &&
         s.find('\0') == std::string::npos;
}

}  // namespace

bool OnnxTensor::is_float() const {
  const auto t = OnnxType(type);
  return t == OnnxType::Float || t == OnnxType::Float16 || t == OnnxType::Bfloat16 || t == OnnxType::Double;
}

double OnnxTensor::number_at(uint64_t i) const {
  if (i >= elements) fail(Status::Format, "index " + std::to_string(i) + " is outside ONNX tensor '" + name + "'");
  const uint8_t* p = data + i * element_bytes(type);
  const auto read = [p](auto v) {
    std::memcpy(&v, p, sizeof(v));
    return v;
  };
  switch (OnnxType(type)) {
    case OnnxType::Float: return read(float(0));
    case OnnxType::Double: return read(double(0));
    case OnnxType::Float16: return kernels::half_to_float(read(uint16_t(0)));
    case OnnxType::Bfloat16: return kernels::bf16_to_float(read(uint16_t(0)));
    case OnnxType::Uint8: return p[0];
    case OnnxType::Int8: return int8_t(p[0]);
    case OnnxType::Uint16: return read(uint16_t(0));
    case OnnxType::Int16: return read(int16_t(0));
    case OnnxType::Int32: return read(int32_t(0));
    case OnnxType::Uint32: return read(uint32_t(0));
    case OnnxType::Int64: return double(read(int64_t(0)));
    case OnnxType::Uint64: return double(read(uint64_t(0)));
  }
  fail(Status::Format, "ONNX tensor '" + name + "' has data type " + std::to_string(type) + ", not a number woq reads");
}

class OnnxParser {
 public:
  explicit OnnxParser(OnnxModel& model) : m_(model), where_("'" + model.path_ + "'") {}

  void model(Message msg) {
    bool graph = false;
    uint32_t field;
    int wire;
    while (msg.next(field, wire)) {
      if (field == 1 && wire == kWireVarint) {
        m_.ir_version_ = int64_t(msg.varint());
      } else if ((field == 2 || field == 3) && wire == kWireBytes) {
        m_.metadata_[field == 2 ? "producer_name" : "producer_version"] = msg.text();
      } else if (field == 7 && wire == kWireBytes) {
        if (graph) msg.bad("a second graph");
        graph = true;
        this->graph(msg.bytes());
      } else if (field == 14 && wire == kWireBytes) {
        std::string key, value;
        entry(msg.bytes(), key, value);
        m_.metadata_[key] = value;
      } else {
        msg.skip(wire);
      }
    }
    if (!graph) fail(Status::Format, where_ + " has no graph: not an ONNX model");
  }

 private:
  void graph(Message msg) {
    uint32_t field;
    int wire;
    while (msg.next(field, wire)) {
      if (field == 1 && wire == kWireBytes) {
        m_.nodes_.push_back(node(msg.bytes()));
      } else if (field == 5 && wire == kWireBytes) {
        auto t = tensor(msg.bytes());
        if (!m_.by_name_.emplace(t->name, t.get()).second)
          fail(Status::Format, where_ + " holds two initializers named '" + t->name + "'");
        m_.initializers_.push_back(std::move(t));
      } else {
        msg.skip(wire);
      }
    }
  }

  OnnxNode node(Message msg) {
    OnnxNode n;
    uint32_t field;
    int wire;
    while (msg.next(field, wire)) {
      if (field == 1 && wire == kWireBytes) n.inputs.push_back(msg.text());
      else if (field == 3 && wire == kWireBytes) n.name = msg.text();
      else if (field == 4 && wire == kWireBytes) n.op_type = msg.text();
      else if (field == 7 && wire == kWireBytes) n.domain = msg.text();
      else if (field == 5 && wire == kWireBytes) attribute(msg.bytes(), n);
      else msg.skip(wire);
    }
    return n;
  }

  // AttributeProto: name (1), i (3); other kinds are not needed.
  void attribute(Message msg, OnnxNode& n) {
    std::string name;
    bool has_int = false;
    int64_t value = 0;
    uint32_t field;
    int wire;
    while (msg.next(field, wire)) {
      if (field == 1 && wire == kWireBytes) {
        name = msg.text();
      } else if (field == 3 && wire == kWireVarint) {
        value = int64_t(msg.varint());
        has_int = true;
      } else {
        msg.skip(wire);
      }
    }
    if (has_int) n.ints[name] = value;
  }

  void entry(Message msg, std::string& key, std::string& value) {
    uint32_t field;
    int wire;
    while (msg.next(field, wire)) {
      if (field == 1 && wire == kWireBytes) key = msg.text();
      else if (field == 2 && wire == kWireBytes) value = msg.text();
      else msg.skip(wire);
    }
  }

  std::unique_ptr<OnnxTensor> tensor(Message msg) {
    auto t = std::make_unique<OnnxTensor>();
    bool raw = false, external = false;
    const uint8_t* raw_data = nullptr;
    uint64_t raw_bytes = 0;
    std::vector<uint64_t> typed;  // int32_data / int64_data values, or float_data bits
    int typed_field = 0;
    std::map<std::string, std::string> ext;
    uint32_t field;
    int wire;
    while (msg.next(field, wire)) {
      if (field == 1) {
        repeated(msg, wire, kWireVarint, [&](Message& m) {
          const int64_t d = int64_t(m.varint());
          if (d < 0) m.bad("a negative dimension");
          if (t->dims.size() == kMaxDims) m.bad("more than 8 dimensions");
          t->dims.push_back(uint64_t(d));
        });
      } else if (field == 2 && wire == kWireVarint) {
        t->type = int32_t(msg.varint());
      } else if (field == 8 && wire == kWireBytes) {
        t->name = msg.text();
      } else if (field == 9 && wire == kWireBytes) {
        Message data = msg.bytes();
        raw = true;
        raw_data = data.data();
        raw_bytes = data.size();
      } else if (field == 4 || field == 5 || field == 7) {
        if (typed_field && typed_field != int(field)) msg.bad("a tensor with two typed data fields");
        typed_field = int(field);
        if (field == 4)
          repeated(msg, wire, kWire32, [&](Message& m) { typed.push_back(m.fixed<uint32_t>()); });
        else
          repeated(msg, wire, kWireVarint, [&](Message& m) { typed.push_back(m.varint()); });
      } else if (field == 13 && wire == kWireBytes) {
        std::string key, value;
        entry(msg.bytes(), key, value);
        ext[key] = value;
      } else if (field == 14 && wire == kWireVarint) {
        external = msg.varint() == 1;
      } else {
        msg.skip(wire);
      }
    }
    const std::string what = where_ + " initializer '" + t->name + "'";
    const uint64_t size = element_bytes(t->type);
    t->elements = 1;
    for (uint64_t d : t->dims) {
      if (d && t->elements > (uint64_t(1) << 48) / d) fail(Status::Format, what + " has more than 2^48 elements");
      t->elements *= d;
    }
    if (size == 0) return t;  // a type woq never reads (strings, ...): kept for its name only
    const uint64_t bytes = t->elements * size;
    if (external) {
      t->data = external_data(ext, bytes, what);
    } else if (raw) {
      if (raw_bytes != bytes)
        fail(Status::Format, what + " has " + std::to_string(raw_bytes) + " bytes of raw_data, its shape needs " +
                                 std::to_string(bytes));
      t->data = raw_data;
    } else {
      // Typed fields: float_data for FLOAT, int64_data for INT64, and
      // int32_data for the narrower types (FLOAT16 / BFLOAT16 as their bits).
      const int want = OnnxType(t->type) == OnnxType::Float ? 4 : OnnxType(t->type) == OnnxType::Int64 ? 7
                       : size <= 4 && OnnxType(t->type) != OnnxType::Uint32 ? 5 : 0;
      if (typed.size() != t->elements || (t->elements && typed_field != want))
        fail(Status::Format, what + " holds " + std::to_string(typed.size()) + " values in field " +
                                 std::to_string(typed_field) + ", its shape and type need " +
                                 std::to_string(t->elements) + " in field " + std::to_string(want));
      t->decoded.resize(bytes);
      for (uint64_t i = 0; i < t->elements; ++i) std::memcpy(&t->decoded[i * size], &typed[i], size);  // little-endian
      t->data = t->decoded.data();
    }
    return t;
  }

  // external_data: location (a file next to the model), offset, length.
  const uint8_t* external_data(const std::map<std::string, std::string>& ext, uint64_t bytes, const std::string& what) {
    const auto get = [&](const char* key) {
      const auto it = ext.find(key);
      return it == ext.end() ? std::string() : it->second;
    };
    const std::string location = get("location");
    if (!plain_file_name(location))
      fail(Status::Format, what + ": external data location '" + location +
                               "' is not a plain file name next to the model (no '/', no '..')");
    const auto number = [&](const char* key) -> uint64_t {
      const std::string s = get(key);
      if (s.empty()) return ~uint64_t(0);
      if (s.size() > 19 || s.find_first_not_of("0123456789") != std::string::npos)
        fail(Status::Format, what + ": external data " + key + " '" + s + "' is not a number");
      return std::stoull(s);
    };
    const uint64_t offset = number("offset") == ~uint64_t(0) ? 0 : number("offset");
    const uint64_t length = number("length") == ~uint64_t(0) ? bytes : number("length");
    if (length != bytes)
      fail(Status::Format, what + ": external data length " + std::to_string(length) + ", its shape needs " +
                               std::to_string(bytes));
    auto& file = m_.external_[location];
    if (!file) {
      const std::string dir = m_.path_.find('/') == std::string::npos ? "." : m_.path_.substr(0, m_.path_.rfind('/'));
      file = std::make_unique<MappedFile>(dir + "/" + location, 1, what + ": external data file '" + location + "' is empty");
    }
    if (offset > file->size() || bytes > file->size() - offset)
      fail(Status::Format, what + ": external data bytes " + std::to_string(offset) + ".." +
                               std::to_string(offset + bytes) + " lie outside '" + location + "' (" +
                               std::to_string(file->size()) + " bytes)");
    return file->data() + offset;
  }

  OnnxModel& m_;
  std::string where_;
};

OnnxModel::OnnxModel(std::string path) : path_(std::move(path)) {}

const OnnxTensor* OnnxModel::find(const std::string& name) const {
  const auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

std::unique_ptr<OnnxModel> OnnxModel::open(const std::string& path) {
  std::unique_ptr<OnnxModel> m(new OnnxModel(path));
  m->file_ = std::make_unique<MappedFile>(path, 1, "'" + path + "' is empty: not an ONNX model");
  OnnxParser parser(*m);
  const std::string where = "'" + path + "'";
  parser.model(Message(m->file_->data(), m->file_->data(), m->file_->size(), &where));
  return m;
}

bool looks_like_onnx(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".onnx") == 0;
}

}  // namespace woq::import
