// The safetensors importer refuses malformed files with a message.
#include <gtest/gtest.h>

#include <cstring>

#include "import/safetensors.h"
#include "runtime/error.h"
#include "test_util.h"

namespace {

std::vector<uint8_t> make(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> out(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  std::copy(header.begin(), header.end(), out.begin() + 8);
  return out;
}

std::string open_error(const std::vector<uint8_t>& bytes) {
  woq::test::TempDir dir;
  woq::test::write_file(dir.file("t.safetensors"), bytes);
  try {
    woq::import::Safetensors::open(dir.file("t.safetensors"));
  } catch (const woq::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Safetensors, ReadsAValidFile) {
  woq::test::TempDir dir;
  woq::test::write_file(dir.file("ok.safetensors"),
                        make(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"__metadata__":{"k":"v"}})", 24));
  auto f = woq::import::Safetensors::open(dir.file("ok.safetensors"));
  ASSERT_EQ(f->tensors().size(), 1u);
  EXPECT_EQ(f->tensors()[0].shape, (std::vector<uint64_t>{2, 3}));
  EXPECT_EQ(f->metadata().at("k"), "v");
}

TEST(Safetensors, RejectsMalformedFiles) {
  EXPECT_NE(open_error({1, 2, 3}).find("shorter"), std::string::npos);
  std::vector<uint8_t> huge(16, 0xff);
  EXPECT_NE(open_error(huge).find("header length"), std::string::npos);
  EXPECT_NE(open_error(make("{not json", 0)).find("JSON"), std::string::npos);
  EXPECT_NE(open_error(make("[1,2]", 0)).find("object"), std::string::npos);
  EXPECT_NE(open_error(make(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8)).find("outside"),
            std::string::npos);
  EXPECT_NE(open_error(make(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8)).find("needs 12"),
            std::string::npos);
  EXPECT_NE(open_error(make(R"({"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}})", 8)).find("dtype"),
            std::string::npos);
  EXPECT_NE(open_error(make(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 8)).find("non-negative"),
            std::string::npos);
  EXPECT_NE(open_error(make(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", 8))
                .find("overflow"),
            std::string::npos);
  EXPECT_NE(open_error(make(R"({"a":{"dtype":"F32"}})", 8)).find("needs dtype"), std::string::npos);
}

namespace {

// A shard holding F32 tensors (name, values), written byte by byte like make().
std::vector<uint8_t> shard(const std::vector<std::pair<std::string, std::vector<float>>>& tensors,
                           const std::string& metadata = "") {
  std::string header = "{" + (metadata.empty() ? "" : "\"__metadata__\":" + metadata);
  uint64_t offset = 0;
  for (const auto& [name, values] : tensors) {
    header += std::string(header.size() > 1 ? "," : "") + "\"" + name + "\":{\"dtype\":\"F32\",\"shape\":[" +
              std::to_string(values.size()) + "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + 4 * values.size()) + "]}";
    offset += 4 * values.size();
  }
  std::vector<uint8_t> out = make(header + "}", 0);
  for (const auto& t : tensors) {
    const auto* b = reinterpret_cast<const uint8_t*>(t.second.data());
    out.insert(out.end(), b, b + 4 * t.second.size());
  }
  return out;
}

void write_text(const std::string& path, const std::string& text) {
  woq::test::write_file(path, std::vector<uint8_t>(text.begin(), text.end()));
}

// A directory with two shards and an index naming them the way Hugging Face
// does; `weight_map` replaces the index's map when given.
struct ShardedCheckpoint {
  woq::test::TempDir dir;
  explicit ShardedCheckpoint(const std::string& weight_map = "") {
    woq::test::write_file(dir.file("model-00001-of-00002.safetensors"),
                          shard({{"layer.weight", {1, 2, 3, 4}}, {"norm", {5}}}, R"({"format":"pt","a":"1"})"));
    woq::test::write_file(dir.file("model-00002-of-00002.safetensors"),
                          shard({{"layer.bias", {6, 7}}}, R"({"format":"np","b":"2"})"));
    write_text(dir.file("model.safetensors.index.json"),
               R"({"metadata":{"total_size":28},"weight_map":)" +
                   (weight_map.empty() ? R"({"layer.weight":"model-00001-of-00002.safetensors",
                        "norm":"model-00001-of-00002.safetensors",
                        "layer.bias":"model-00002-of-00002.safetensors"})"
                                       : weight_map) +
                   "}");
  }
  std::string index() const { return dir.file("model.safetensors.index.json"); }
};

// The error opening `path`: its status and message ("" when it opens).
std::pair<woq::Status, std::string> open_failure(const std::string& path) {
  try {
    woq::import::Safetensors::open(path);
  } catch (const woq::Error& e) {
    return {e.status(), e.what()};
  }
  return {woq::Status::Ok, ""};
}

}  // namespace

TEST(Safetensors, ReadsAShardedCheckpointThroughItsIndexOrItsDirectory) {
  ShardedCheckpoint c;
  for (const std::string& path : {c.index(), c.dir.path(), c.dir.path() + "/"}) {
    SCOPED_TRACE(path);
    auto f = woq::import::Safetensors::open(path);
    EXPECT_EQ(f->path().substr(f->path().rfind('/') + 1), "model.safetensors.index.json");
    EXPECT_EQ(f->shard_count(), 2u);
    ASSERT_EQ(f->tensors().size(), 3u);
    EXPECT_EQ(f->tensors()[0].name, "layer.weight");  // shards in name order, each in file order
    EXPECT_EQ(f->tensors()[1].name, "norm");
    EXPECT_EQ(f->tensors()[2].name, "layer.bias");
    const woq::import::SafeTensor* bias = f->find("layer.bias");
    ASSERT_NE(bias, nullptr);
    EXPECT_EQ(bias->to_f32(), (std::vector<float>{6, 7}));
    EXPECT_EQ(f->find("layer.weight")->to_f32(), (std::vector<float>{1, 2, 3, 4}));
    EXPECT_EQ(f->find("missing"), nullptr);
    EXPECT_EQ(f->metadata().at("format"), "pt");  // the first shard's where they differ
    EXPECT_EQ(f->metadata().at("a"), "1");
    EXPECT_EQ(f->metadata().at("b"), "2");
  }
}

TEST(Safetensors, ADirectoryWithOneFileOpensIt) {
  woq::test::TempDir dir;
  woq::test::write_file(dir.file("weights.safetensors"), shard({{"w", {1, 2}}}));
  auto f = woq::import::Safetensors::open(dir.path());
  EXPECT_EQ(f->shard_count(), 1u);
  EXPECT_EQ(f->find("w")->to_f32(), (std::vector<float>{1, 2}));
  // model.safetensors is preferred to any other file.
  woq::test::write_file(dir.file("model.safetensors"), shard({{"v", {3}}}));
  EXPECT_NE(woq::import::Safetensors::open(dir.path())->find("v"), nullptr);
}

TEST(Safetensors, RefusesAmbiguousDirectories) {
  woq::test::TempDir dir;
  EXPECT_EQ(open_failure(dir.path()).first, woq::Status::Io);
  EXPECT_NE(open_failure(dir.path()).second.find("0 *.safetensors.index.json and 0 *.safetensors"), std::string::npos);
  woq::test::write_file(dir.file("a.safetensors"), shard({{"w", {1}}}));
  woq::test::write_file(dir.file("b.safetensors"), shard({{"v", {1}}}));
  EXPECT_NE(open_failure(dir.path()).second.find("and 2 *.safetensors files: name the checkpoint's file"),
            std::string::npos);
}

TEST(Safetensors, RefusesHostileIndexes) {
  const std::string one = R"("model-00001-of-00002.safetensors")";
  const struct {
    const char* what;
    std::string weight_map;  // replaces the index's map ("" keeps it, with the index's text replaced below)
    std::string index_text;  // when not empty: the whole index
    woq::Status status;
    const char* message;
  } cases[] = {
      {"not JSON", "", "{\"weight_map\":", woq::Status::Format, "is not valid JSON"},
      {"no map", "", R"({"metadata":{}})", woq::Status::Format, "has no \"weight_map\" object"},
      {"map is a list", "", R"({"weight_map":["a"]})", woq::Status::Format, "has no \"weight_map\" object"},
      {"empty map", "{}", "", woq::Status::Format, "lists no tensors"},
      {"shard is a number", R"({"norm":7})", "", woq::Status::Format, "tensor 'norm' maps to 7, not a file name"},
      {"parent directory", R"({"norm":"../model-00001-of-00002.safetensors"})", "", woq::Status::Format,
       "not a plain file name"},
      {"absolute path", R"({"norm":"/etc/passwd"})", "", woq::Status::Format, "not a plain file name"},
      {"subdirectory", R"({"norm":"sub/x.safetensors"})", "", woq::Status::Format, "not a plain file name"},
      {"dot dot", R"({"norm":".."})", "", woq::Status::Format, "not a plain file name"},
      {"NUL in the name", R"({"norm":"model-00001-of-00002.safetensors\u0000.x"})", "", woq::Status::Format,
       "not a plain file name"},
      {"missing shard", R"({"norm":"model-00009-of-00009.safetensors"})", "", woq::Status::Io, "cannot open"},
      {"wrong shard", R"({"norm":"model-00002-of-00002.safetensors"})", "", woq::Status::Format,
       "puts tensor 'norm' in 'model-00002-of-00002.safetensors', which does not hold it"},
      {"absent tensor", R"({"ghost":)" + one + "}", "", woq::Status::Format, "puts tensor 'ghost' in"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.what);
    ShardedCheckpoint ckpt(c.weight_map);
    if (!c.index_text.empty()) write_text(ckpt.index(), c.index_text);
    const auto [status, message] = open_failure(ckpt.index());
    EXPECT_EQ(status, c.status) << message;
    EXPECT_NE(message.find(c.message), std::string::npos) << message;
    EXPECT_NE(message.find(c.status == woq::Status::Io ? "model-00009" : "model.safetensors.index.json"),
              std::string::npos)
        << message;
  }
}

TEST(Safetensors, RefusesATensorThatTwoShardsHold) {
  ShardedCheckpoint c;
  woq::test::write_file(c.dir.file("model-00002-of-00002.safetensors"), shard({{"norm", {9}}}));
  const auto [status, message] = open_failure(c.index());
  EXPECT_EQ(status, woq::Status::Format);
  EXPECT_NE(message.find("tensor 'norm' is in both '"), std::string::npos) << message;
  EXPECT_NE(message.find("model-00002-of-00002.safetensors' and an earlier shard"), std::string::npos) << message;
}
