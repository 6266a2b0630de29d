// PyTorch .pth reader: the recorded fixtures, hand-built archives for the forms the fixtures do
// not cover, and every rejection (each a biref::Error with a clear message, never a crash).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "biref/error.h"
#include "test_util.h"
#include "weights/checkpoint.h"
#include "weights/pickle.h"
#include "weights/pth.h"
#include "weights/safetensors.h"

namespace biref {
namespace {

namespace fs = std::filesystem;

using test::read_file;
using test::write_file;

std::string temp_path(const std::string& name) {
  const fs::path dir = fs::temp_directory_path() / ("biref-test-pth-" + std::to_string(getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

// Expects `fn` to throw biref::Error whose message contains every one of `parts`.
template <typename Fn>
void expect_error(Fn fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one mentioning '" << *parts.begin() << "'";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line error: " << msg;
  }
}

// ---- the recorded fixtures ---------------------------------------------------------------

DType dtype_of(const std::string& torch_name) {
  if (torch_name == "float32") return DType::F32;
  if (torch_name == "float16") return DType::F16;
  if (torch_name == "bfloat16") return DType::BF16;
  if (torch_name == "int64") return DType::I64;
  throw std::runtime_error("unknown dtype " + torch_name);
}

void expect_matches_fixture(const Checkpoint& ck) {
  std::ifstream f(test::data_path("checkpoints/expected.json"));
  const auto expected = nlohmann::json::parse(f);
  const auto& tensors = expected.at("tensors");
  EXPECT_EQ(ck.tensors.size(), tensors.size());
  for (auto it = tensors.begin(); it != tensors.end(); ++it) {
    SCOPED_TRACE(it.key());
    auto t = ck.tensors.find(it.key());
    ASSERT_NE(t, ck.tensors.end());
    EXPECT_EQ(t->second.dtype, dtype_of(it.value().at("dtype")));
    EXPECT_EQ(t->second.shape, it.value().at("shape").get<std::vector<int64_t>>());
    const std::vector<float> v = t->second.to_f32();
    double sum = 0;
    for (float x : v) sum += x;
    const double want = it.value().at("sum").get<double>();
    EXPECT_NEAR(sum, want, 1e-5 * std::max(1.0, std::fabs(want)));
    const auto first = it.value().at("first").get<std::vector<double>>();
    ASSERT_LE(first.size(), v.size());
    for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(v[i], float(first[i])) << "element " << i;
  }
}

TEST(Pth, PlainZip) {
  const Checkpoint ck = load_pth(test::data_path("checkpoints/plain.pth"));
  EXPECT_EQ(ck.format, "pth");
  expect_matches_fixture(ck);
}

TEST(Pth, PrefixedKeysAreStripped) {
  const Checkpoint ck = load_pth(test::data_path("checkpoints/prefixed.pth"));
  expect_matches_fixture(ck);
}

TEST(Pth, NestedStateDictIsFound) {
  const Checkpoint ck = load_pth(test::data_path("checkpoints/nested.pth"));
  expect_matches_fixture(ck);
  EXPECT_EQ(ck.metadata.at("pth.state_dict"), "model_state_dict");
}

TEST(Pth, LegacyFormat) {
  const Checkpoint ck = load_pth(test::data_path("checkpoints/legacy.pth"));
  expect_matches_fixture(ck);
  EXPECT_NE(ck.metadata.at("pth.format").find("legacy"), std::string::npos);
}

TEST(Pth, LoadCheckpointDispatchesByContent) {
  for (const char* name : {"plain.pth", "prefixed.pth", "nested.pth", "legacy.pth"}) {
    SCOPED_TRACE(name);
    const Checkpoint ck = load_checkpoint(test::data_path(std::string("checkpoints/") + name));
    EXPECT_EQ(ck.format, "pth");
    expect_matches_fixture(ck);
  }
}

TEST(Pth, SafetensorsStartingWith0x80IsNotTakenForPth) {
  // A safetensors header length whose low byte is 0x80 (or whose bytes read "PK") must still go
  // to the safetensors reader.
  auto v = std::make_shared<float>(1.5f);
  TensorData t;
  t.shape = {1};
  t.data = v.get();
  t.owner = v;
  const std::string path = temp_path("x80.safetensors");
  for (const uint64_t target : {uint64_t(0x180), uint64_t(0x4b50)}) {
    auto header_len = [&](size_t pad) {
      save_safetensors(path, {{"w", t}}, {{"pad", std::string(pad, 'x')}});
      const std::string bytes = read_file(path);
      uint64_t len = 0;
      for (int i = 7; i >= 0; --i) len = len << 8 | static_cast<unsigned char>(bytes[i]);
      return len;
    };
    const uint64_t base = header_len(0);  // each pad byte adds one, before rounding up to 8
    bool hit = false;
    for (size_t pad = target - base - 8; pad <= target - base + 8 && !hit; ++pad) {
      hit = header_len(pad) == target;
    }
    ASSERT_TRUE(hit);
    ASSERT_EQ(read_file(path)[0], target == 0x180 ? '\x80' : 'P');
    const Checkpoint ck = load_checkpoint(path);
    EXPECT_EQ(ck.format, "safetensors");
    EXPECT_EQ(ck.tensors.at("w").to_f32(), std::vector<float>{1.5f});
  }
  expect_error([&] { load_pth(path); }, {"not a PyTorch checkpoint"});
}

TEST(Pth, ContiguousTensorsShareTheirStorage) {
  const Checkpoint ck = load_pth(test::data_path("checkpoints/plain.pth"));
  // view.row_slice is rows 2..4 of the 4x6 storage that view.transposed reads transposed: the
  // slice points into the storage, the transposed view is a contiguous copy.
  const TensorData& slice = ck.tensors.at("view.row_slice");
  const TensorData& transposed = ck.tensors.at("view.transposed");
  EXPECT_EQ(slice.owner.get(), static_cast<const char*>(slice.data) - 8 * 4);
  EXPECT_NE(transposed.owner.get(), slice.owner.get());
}

// ---- hand-built archives ------------------------------------------------------------------

// Writes pickle opcodes (protocol 2 unless noted), enough to build state_dicts and break them.
struct Pickle {
  std::string b = "\x80\x02";
  Pickle& raw(const std::string& s) {
    b += s;
    return *this;
  }
  Pickle& op(char c) {
    b += c;
    return *this;
  }
  Pickle& u32(uint32_t v) {
    for (int i = 0; i < 4; ++i) b += char((v >> (8 * i)) & 0xff);
    return *this;
  }
  Pickle& str(const std::string& s) { return op('X').u32(uint32_t(s.size())).raw(s); }
  Pickle& integer(int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) return op('J').u32(uint32_t(int32_t(v)));
    op('\x8a').op(8);
    for (int i = 0; i < 8; ++i) b += char((uint64_t(v) >> (8 * i)) & 0xff);
    return *this;
  }
  Pickle& global(const std::string& mod, const std::string& name) {
    return op('c').raw(mod + "\n" + name + "\n");
  }
  Pickle& ints(const std::vector<int64_t>& v) {
    op('(');
    for (int64_t x : v) integer(x);
    return op('t');
  }
  Pickle& tensor(const std::string& storage_type, const std::string& key, int64_t numel,
                 int64_t offset, const std::vector<int64_t>& shape,
                 const std::vector<int64_t>& stride) {
    global("torch._utils", "_rebuild_tensor_v2").op('(');
    op('(').str("storage").global("torch", storage_type).str(key).str("cpu").integer(numel);
    op('t').op('Q');
    integer(offset).ints(shape).ints(stride).op('\x89');
    global("collections", "OrderedDict").op(')').op('R');
    return op('t').op('R');
  }
  Pickle& stop() { return op('.'); }
};

std::string floats(const std::vector<float>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4);
}

// archive/data.pkl + archive/data/KEY records + byteorder, like torch.save.
std::string write_pth(const std::string& name, const std::string& pkl,
                      const std::vector<std::pair<std::string, std::string>>& storages,
                      const std::string& archive = "archive", const std::string& order = "little") {
  std::vector<std::pair<std::string, std::string>> entries{{archive + "/data.pkl", pkl}};
  if (!order.empty()) entries.emplace_back(archive + "/byteorder", order);
  for (const auto& [k, v] : storages) entries.emplace_back(archive + "/data/" + k, v);
  entries.emplace_back(archive + "/version", "3\n");
  const std::string path = temp_path(name);
  write_zip(path, entries);
  return path;
}

std::vector<float> iota(int n) {
  std::vector<float> v(n);
  for (int i = 0; i < n; ++i) v[i] = float(i);
  return v;
}

TEST(Pth, NonContiguousViewsAreMaterialised) {
  // Storage 0..11; "t" = its 3x4 transposed (shape 4x3, stride 1x4); "s" = every other column of
  // rows 1..2 (offset 4, shape 2x2, stride 4x2); "w" = the whole storage as 2x6.
  Pickle p;
  p.op('}').op('(');
  p.str("t").tensor("FloatStorage", "0", 12, 0, {4, 3}, {1, 4});
  p.str("s").tensor("FloatStorage", "0", 12, 4, {2, 2}, {4, 2});
  p.str("w").tensor("FloatStorage", "0", 12, 0, {2, 6}, {6, 1});
  p.str("bcast").tensor("FloatStorage", "0", 12, 5, {3, 2}, {0, 1});  // expand()ed rows
  p.op('u').stop();
  const Checkpoint ck = load_pth(write_pth("views.pth", p.b, {{"0", floats(iota(12))}}));
  EXPECT_EQ(ck.tensors.at("t").to_f32(),
            (std::vector<float>{0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11}));
  EXPECT_EQ(ck.tensors.at("s").to_f32(), (std::vector<float>{4, 6, 8, 10}));
  EXPECT_EQ(ck.tensors.at("w").to_f32(), iota(12));
  EXPECT_EQ(ck.tensors.at("bcast").to_f32(), (std::vector<float>{5, 6, 5, 6, 5, 6}));
  EXPECT_EQ(ck.tensors.at("w").owner.get(), ck.tensors.at("w").data);  // in place, not copied
}

TEST(Pth, RealStateDictFormsAreUnderstood) {
  // An OrderedDict carrying `_metadata` through BUILD (as model.state_dict() pickles), a
  // Parameter, protocol-4 opcodes (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL), non-tensor
  // entries, and int64 / bool / uint8 / int32 storages.
  Pickle p;
  p.b = "\x80\x04\x95";
  p.raw(std::string(8, '\0'));
  p.op('\x8c').op(11).raw("collections").op('\x94').op('\x8c').op(11).raw("OrderedDict");
  p.op('\x94').op('\x93').op('\x94').op(')').op('R').op('\x94').op('(');
  p.str("module.conv.weight");
  p.global("torch._utils", "_rebuild_parameter");
  p.op('(').tensor("FloatStorage", "0", 4, 0, {2, 2}, {2, 1}).op('\x88');
  p.global("collections", "OrderedDict").op(')').op('R').op('t').op('R');
  p.str("_orig_mod.bn.num_batches_tracked").tensor("LongStorage", "1", 1, 0, {}, {});
  p.str("mask").tensor("BoolStorage", "2", 3, 0, {3}, {1});
  p.str("bytes").tensor("ByteStorage", "3", 2, 1, {1}, {1});
  p.str("ints").tensor("IntStorage", "4", 2, 0, {2}, {1});
  p.str("an_int").integer(7).str("a_float").op('G').raw(std::string("\x3f\xf0\0\0\0\0\0\0", 8));
  p.str("nothing").op('N');
  p.op('u');
  p.op('}').str("_metadata").op('}').op('s').op('b');  // BUILD with {'_metadata': {}}
  p.stop();
  const std::string i64 = std::string("\x39\x05\0\0\0\0\0\0", 8);        // 1337
  const std::string i32 = std::string("\xff\xff\xff\xff\x02\0\0\0", 8);  // -1, 2
  const Checkpoint ck = load_pth(write_pth("forms.pth", p.b,
                                           {{"0", floats({1, 2, 3, 4})},
                                            {"1", i64},
                                            {"2", std::string("\1\0\1", 3)},
                                            {"3", "\x07\x09"},
                                            {"4", i32}},
                                           "my model-v2"));
  ASSERT_EQ(ck.tensors.size(), 5u);
  EXPECT_EQ(ck.tensors.at("conv.weight").to_f32(), (std::vector<float>{1, 2, 3, 4}));
  EXPECT_EQ(ck.tensors.at("bn.num_batches_tracked").dtype, DType::I64);
  EXPECT_EQ(ck.tensors.at("bn.num_batches_tracked").to_f32(), std::vector<float>{1337});
  EXPECT_EQ(ck.tensors.at("mask").dtype, DType::Bool);
  EXPECT_EQ(ck.tensors.at("mask").to_f32(), (std::vector<float>{1, 0, 1}));
  EXPECT_EQ(ck.tensors.at("bytes").to_f32(), std::vector<float>{9});
  EXPECT_EQ(ck.tensors.at("ints").to_f32(), (std::vector<float>{-1, 2}));
  EXPECT_EQ(ck.metadata.at("pth.ignored_entries"), "3");
}

TEST(Pth, BytesValuesAsProtocol2PicklesThem) {
  // Protocol 2 has no bytes opcode: Python writes b"\x00\xffab" as
  // _codecs.encode("\x00\xffab", "latin1") (the str in UTF-8) and b"" as bytes(). A checkpoint
  // carrying such values (a hash, a config blob) next to its tensors loads; the values are ignored.
  Pickle p;
  p.op('}').op('(');
  p.str("w").tensor("FloatStorage", "0", 2, 0, {2}, {1});
  p.str("digest")
      .global("_codecs", "encode")
      .str(std::string("\x00\xc3\xbf"
                       "ab",
                       5))
      .str("latin1");
  p.op('\x86').op('R');
  p.str("empty").global("__builtin__", "bytes").op(')').op('R');
  p.op('u').stop();
  const Checkpoint ck = load_pth(write_pth("bytes.pth", p.b, {{"0", floats({1.5f, -2.f})}}));
  EXPECT_EQ(ck.tensors.size(), 1u);
  EXPECT_EQ(ck.tensors.at("w").to_f32(), (std::vector<float>{1.5f, -2.f}));
  EXPECT_EQ(ck.metadata.at("pth.ignored_entries"), "2");
  // The pickle reader itself gives the bytes back.
  pickle::Result r;
  Pickle q;
  q.global("_codecs", "encode")
      .str(std::string("\x00\xc3\xbf"
                       "ab",
                       5))
      .str("latin1")
      .op('\x86')
      .op('R')
      .stop();
  pickle::load(q.b, "bytes", r);
  ASSERT_EQ(r.root->kind, pickle::Object::Kind::Bytes);
  EXPECT_EQ(r.root->s, std::string("\x00\xff"
                                   "ab",
                                   4));
  // Anything else through _codecs.encode is still refused.
  Pickle bad;
  bad.global("_codecs", "encode").str("\xe2\x82\xac").str("latin1").op('\x86').op('R').stop();
  EXPECT_NE(test::error_of([&] { pickle::load(bad.b, "euro", r); }).find("_codecs.encode"),
            std::string::npos);
  Pickle rot;
  rot.global("_codecs", "encode").str("abc").str("rot13").op('\x86').op('R').stop();
  EXPECT_NE(test::error_of([&] { pickle::load(rot.b, "rot13", r); }).find("_codecs.encode"),
            std::string::npos);
}

TEST(Pth, BigEndianArchivesAreSwapped) {
  Pickle p;
  p.op('}').op('(').str("x").tensor("HalfStorage", "0", 2, 0, {2}, {1}).op('u').stop();
  const Checkpoint ck =
      load_pth(write_pth("be.pth", p.b, {{"0", std::string("\x3c\x00\xc0\x00", 4)}}, "a", "big"));
  EXPECT_EQ(ck.tensors.at("x").to_f32(), (std::vector<float>{1.0f, -2.0f}));
}

TEST(Pth, NestedUnderEmaAndStateDict) {
  Pickle p;
  p.op('}').op('(').str("epoch").integer(3).str("optimizer").op('}');
  p.str("ema").op('}').op('(').str("state_dict").op('}').op('(');
  p.str("w").tensor("FloatStorage", "0", 1, 0, {1}, {1});
  p.op('u').op('u').op('u').stop();
  const Checkpoint ck = load_pth(write_pth("ema.pth", p.b, {{"0", floats({5})}}));
  EXPECT_EQ(ck.metadata.at("pth.state_dict"), "ema.state_dict");
  EXPECT_EQ(ck.tensors.at("w").to_f32(), std::vector<float>{5});
}

// ---- rejections ---------------------------------------------------------------------------

std::string one_tensor_pkl(const std::vector<int64_t>& shape, const std::vector<int64_t>& stride,
                           int64_t offset = 0, int64_t numel = 16) {
  Pickle p;
  p.op('}').op('(').str("w").tensor("FloatStorage", "0", numel, offset, shape, stride);
  return p.op('u').stop().b;
}

TEST(PthReject, UnknownGlobalIsNamed) {
  Pickle p;
  p.global("os", "system").str("echo pwned").op('\x85').op('R').stop();
  const std::string path = write_pth("global.pth", p.b, {});
  expect_error([&] { load_pth(path); }, {"unsupported global 'os.system'", "global.pth"});
  // A whole pickled model instead of its state_dict.
  Pickle m;
  m.global("models.birefnet", "BiRefNet").op(')').op('\x81').stop();
  const std::string mpath = write_pth("model.pth", m.b, {});
  expect_error([&] { load_pth(mpath); }, {"'models.birefnet.BiRefNet'", "state_dict()"});
  // builtins reached through STACK_GLOBAL are refused the same way.
  Pickle s;
  s.op('\x8c').op(8).raw("builtins").op('\x8c').op(4).raw("eval").op('\x93').stop();
  const std::string spath = write_pth("stack_global.pth", s.b, {});
  expect_error([&] { load_pth(spath); }, {"unsupported global 'builtins.eval'"});
}

TEST(PthReject, UnknownOpcodeIsNamed) {
  Pickle p;
  p.op('}').op('\xff').stop();
  const std::string path = write_pth("opcode.pth", p.b, {});
  expect_error([&] { load_pth(path); }, {"unsupported pickle opcode 0xff", "opcode.pth"});
  Pickle inst;
  inst.op('(').raw("ios\nsystem\n").stop();  // INST: the protocol-0 way to call a class
  const std::string ipath = write_pth("inst.pth", inst.b, {});
  expect_error([&] { load_pth(ipath); }, {"INST"});
  Pickle set;
  set.op('\x8f').stop();
  const std::string spath = write_pth("set.pth", set.b, {});
  expect_error([&] { load_pth(spath); }, {"EMPTY_SET"});
}

TEST(PthReject, TruncatedZipAtEveryLength) {
  const std::string bytes = read_file(test::data_path("checkpoints/plain.pth"));
  const std::string path = temp_path("truncated.pth");
  int errors = 0;
  for (size_t n = 2; n < bytes.size(); n += 37) {
    write_file(path, bytes.substr(0, n));
    try {
      load_pth(path);
    } catch (const Error& e) {
      ++errors;
      EXPECT_NE(std::string(e.what()).find("truncated.pth"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(errors, int((bytes.size() - 2 + 36) / 37));  // every cut is an error
  write_file(path, bytes.substr(0, bytes.size() / 2));
  expect_error([&] { load_checkpoint(path); }, {"truncated or corrupt"});
}

TEST(PthReject, TruncatedLegacyAtEveryLength) {
  const std::string bytes = read_file(test::data_path("checkpoints/legacy.pth"));
  const std::string path = temp_path("truncated_legacy.pth");
  for (size_t n = 2; n < bytes.size(); n += 29) {
    write_file(path, bytes.substr(0, n));
    EXPECT_THROW(load_pth(path), Error) << "cut at " << n;
  }
  write_file(path, bytes.substr(0, bytes.size() - 10));
  expect_error([&] { load_pth(path); }, {"truncated", "storage"});
}

TEST(PthReject, CorruptBytesNeverCrash) {
  // Flip bytes all over the fixtures: every result is either a clean load of well-formed tensors
  // whose data can be read in full, or a one-line biref::Error naming the file. Any other
  // exception escapes and fails the test; a crash or an out-of-bounds read (under ASan) too.
  std::mt19937 rng(7);
  for (const char* name : {"plain.pth", "legacy.pth"}) {
    SCOPED_TRACE(name);
    const std::string bytes = read_file(test::data_path(std::string("checkpoints/") + name));
    const std::string path = temp_path(std::string("corrupt_") + name);
    constexpr int kTrials = 300;
    int loaded = 0, refused = 0, unchanged = 0;
    for (int trial = 0; trial < kTrials; ++trial) {
      std::string b = bytes;
      for (int k = 0; k < 3; ++k) b[rng() % b.size()] = char(rng());
      unchanged += b == bytes;
      write_file(path, b);
      try {
        const Checkpoint ck = load_pth(path);
        ++loaded;
        EXPECT_EQ(ck.format, "pth");
        for (const auto& [tname, t] : ck.tensors) {
          int64_t n = 1;
          for (int64_t d : t.shape) {
            ASSERT_GE(d, 0) << tname;
            n *= d;
          }
          ASSERT_EQ(t.numel(), n) << tname;
          ASSERT_TRUE(n == 0 || t.data != nullptr) << tname;
          ASSERT_EQ(int64_t(t.to_f32().size()), n) << tname;  // reads every element
        }
      } catch (const Error& e) {
        ++refused;
        const std::string msg = e.what();
        EXPECT_NE(msg.find(path), std::string::npos) << "does not name the file: " << msg;
        EXPECT_EQ(msg.find('\n'), std::string::npos) << "multi-line error: " << msg;
      }
    }
    std::printf("corrupt %s: %d of %d loaded, %d refused (%d left unchanged by the flips)\n", name,
                loaded, kTrials, refused, unchanged);
    EXPECT_EQ(loaded + refused, kTrials);
    EXPECT_GT(refused, kTrials / 10) << "corruption is hardly ever noticed";
    // the reader is not left in a bad state: the intact file still loads as recorded
    write_file(path, bytes);
    expect_matches_fixture(load_pth(path));
  }
}

TEST(PthReject, StorageShorterThanItsTensor) {
  const std::string path =
      write_pth("short.pth", one_tensor_pkl({4, 4}, {4, 1}), {{"0", floats(iota(10))}});
  expect_error([&] { load_pth(path); },
               {"tensor 'w'", "needs 16 elements", "holds only 10", "short.pth"});
  const std::string missing = write_pth("missing.pth", one_tensor_pkl({4, 4}, {4, 1}), {});
  expect_error([&] { load_pth(missing); }, {"no record 'archive/data/0'"});
  const std::string ragged =
      write_pth("ragged.pth", one_tensor_pkl({1}, {1}), {{"0", std::string(6, '\0')}});
  expect_error([&] { load_pth(ragged); }, {"not a whole number"});
}

TEST(PthReject, ShapeOrStrideOutOfBounds) {
  const std::vector<std::pair<std::string, std::string>> storage{{"0", floats(iota(16))}};
  expect_error(
      [&] {
        load_pth(write_pth("stride.pth", one_tensor_pkl({4, 4}, {4, 100}), storage));
      },
      {"tensor 'w'", "stride [4, 100]", "out of bounds"});
  expect_error(
      [&] {
        load_pth(write_pth("offset.pth", one_tensor_pkl({4, 4}, {4, 1}, 1), storage));
      },
      {"offset 1", "needs 17 elements"});
  expect_error(
      [&] {
        load_pth(write_pth("neg.pth", one_tensor_pkl({4, 4}, {-4, 1}, 12), storage));
      },
      {"negative stride"});
  expect_error(
      [&] {
        load_pth(write_pth("negdim.pth", one_tensor_pkl({-1, 4}, {4, 1}), storage));
      },
      {"negative dimension"});
  expect_error(
      [&] {
        load_pth(
            write_pth("huge.pth", one_tensor_pkl({1 << 30, 1 << 30, 1 << 30}, {1, 1, 1}), storage));
      },
      {"too large"});
  expect_error(
      [&] {
        load_pth(write_pth("overflow.pth",
                           one_tensor_pkl({2, 2}, {int64_t(1) << 62, int64_t(1) << 62}), storage));
      },
      {"overflows"});
  expect_error(
      [&] {
        load_pth(write_pth("rank.pth", one_tensor_pkl({4, 4}, {4}), storage));
      },
      {"differ in length"});
}

// ---- memory bombs: small files that ask for gigabytes -----------------------------------

// Peak resident memory of this process so far, in MiB (VmHWM), or -1 where unknown.
long peak_rss_mib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6)) / 1024;
  }
  return -1;
}

TEST(PthReject, ExpandedViewBomb) {
  // shape [2^28], stride [0] over one float: a 1 GiB copy asked for by a ~500-byte file.
  const std::string path = write_pth(
      "expand_bomb.pth", one_tensor_pkl({int64_t(1) << 28}, {0}, 0, 1), {{"0", floats({1})}});
  EXPECT_LT(fs::file_size(path), 1000u);
  expect_error([&] { load_pth(path); }, {"expand_bomb.pth", "tensor 'w'", "[268435456]",
                                         "stride [0]", "1073741824 bytes", "non-contiguous view"});
}

TEST(PthReject, ManyExpandedViewsShareOneBudget) {
  // 64 views of 16 MiB each over the same float: each alone fits the 64 MiB allowance, together
  // they would take 1 GiB. The first four are copied, the fifth is refused.
  Pickle p;
  p.op('}').op('(');
  for (int i = 0; i < 64; ++i) {
    p.str("e" + std::to_string(i)).tensor("FloatStorage", "0", 1, 0, {int64_t(1) << 22}, {0});
  }
  p.op('u').stop();
  const long before = peak_rss_mib();
  const std::string path = write_pth("expand_many.pth", p.b, {{"0", floats({2})}});
  expect_error([&] { load_pth(path); },
               {"tensor 'e4'", "non-contiguous view", "of which 67108864"});
  if (before > 0) {
    EXPECT_LT(peak_rss_mib() - before, 200) << "MiB more at peak";
  }
  // The same views as one with a storage of 16 MiB: the budget grows with what the file holds.
  Pickle q;
  q.op('}').op('(');
  q.str("w").tensor("FloatStorage", "0", int64_t(1) << 22, 0, {int64_t(1) << 22}, {1});
  for (int i = 0; i < 5; ++i) {
    q.str("e" + std::to_string(i)).tensor("FloatStorage", "0", 1, 0, {int64_t(1) << 22}, {0});
  }
  q.op('u').stop();
  const Checkpoint ck =
      load_pth(write_pth("expand_budget.pth", q.b, {{"0", std::string(size_t(4) << 22, '\0')}}));
  EXPECT_EQ(ck.tensors.size(), 6u);
  EXPECT_EQ(ck.tensors.at("e4").numel(), int64_t(1) << 22);
}

TEST(PthReject, ViewExtentOverflowIsCaught) {
  // offset + (shape - 1) * stride past int64: an error, never a wrapped (small) extent.
  const std::vector<std::pair<std::string, std::string>> storage{{"0", floats(iota(16))}};
  expect_error(
      [&] {
        load_pth(write_pth(
            "extent.pth",
            one_tensor_pkl({2, 3}, {int64_t(1) << 62, int64_t(1) << 61}, int64_t(1) << 61),
            storage));
      },
      {"tensor 'w'", "overflows"});
  expect_error(
      [&] { load_pth(write_pth("max_offset.pth", one_tensor_pkl({}, {}, INT64_MAX), storage)); },
      {"tensor 'w'", "needs 9223372036854775808 elements"});
}

TEST(PthReject, ObjectBombPickle) {
  // PROTO, "N0" (push None, pop it) 8M times, then an empty dict: 16 MB that deflate to ~16 KB,
  // and would build 8M objects (2 GB at 256 bytes each before the limits were scaled down).
  std::string pkl = "\x80\x02";
  for (int i = 0; i < 8 << 20; ++i) pkl += "N0";
  pkl += "}.";
  const long before = peak_rss_mib();
  for (const bool deflate : {false, true}) {
    SCOPED_TRACE(deflate ? "deflated" : "stored");
    const std::string path = temp_path(deflate ? "n0_deflated.pth" : "n0_stored.pth");
    write_zip(path, {{"archive/data.pkl", pkl}}, deflate);
    if (deflate) {
      EXPECT_LT(fs::file_size(path), 200u << 10);
    }
    expect_error([&] { load_pth(path); }, {"creates more than 1048576 objects", "pickle bomb"});
  }
  if (before > 0) {
    EXPECT_LT(peak_rss_mib() - before, 300) << "MiB more at peak";
  }
}

TEST(PthReject, InflatedPickleIsCapped) {
  // A deflated data.pkl that would inflate past 64 MiB is refused before it is inflated.
  const std::string path = temp_path("big_pkl.pth");
  write_zip(path, {{"archive/data.pkl", std::string(size_t(65) << 20, 'N')}}, true);
  EXPECT_LT(fs::file_size(path), 1u << 20);
  expect_error([&] { load_pth(path); }, {"data.pkl is 68157440 bytes", "inflated", "64 MiB"});
  // Deflated within the cap is fine: a re-zipped checkpoint still loads.
  const std::string zipped = temp_path("rezipped.pth");
  Pickle p;
  p.op('}').op('(').str("w").tensor("FloatStorage", "0", 4, 0, {2, 2}, {1, 2}).op('u').stop();
  write_zip(zipped, {{"a/data.pkl", p.b}, {"a/data/0", floats({1, 2, 3, 4})}}, true);
  EXPECT_EQ(load_pth(zipped).tensors.at("w").to_f32(), (std::vector<float>{1, 3, 2, 4}));
}

TEST(PthReject, InflatedStoragesAreCapped) {
  // 100 MiB of zeros deflate to ~100 KB: a storage record may not claim gigabytes that way.
  const std::string path = temp_path("zero_bomb.pth");
  const int64_t n = int64_t(100) << 18;  // 100 MiB of float32
  Pickle p;
  p.op('}').op('(').str("w").tensor("FloatStorage", "0", n, 0, {n}, {1}).op('u').stop();
  write_zip(path, {{"a/data.pkl", p.b}, {"a/data/0", std::string(size_t(n) * 4, '\0')}}, true);
  EXPECT_LT(fs::file_size(path), 1u << 20);
  expect_error([&] { load_pth(path); }, {"deflated storages expand", "zip bomb"});
}

TEST(PthReject, ContainerItemBomb) {
  // OrderedDict([(None, None)] * 1000) called again and again on the same memoised list: each
  // 7-byte call would unpack 2000 items (20M in all from 70 KB). Items are held to the bytes.
  Pickle p;
  p.global("collections", "OrderedDict").op('q').op(1);
  p.op(']').op('(').op('N').op('N').op('\x86');
  for (int i = 0; i < 999; ++i) p.op('2');
  p.op('e').op('q').op(0).op('0').op('0');
  for (int i = 0; i < 10000; ++i) p.op('h').op(1).op('h').op(0).op('\x85').op('R').op('0');
  p.op('}').stop();
  expect_error([&] { load_pth(write_pth("items.pth", p.b, {})); },
               {"items in containers", "pickle bomb"});
}

TEST(PthReject, MemoBomb) {
  Pickle p;  // one None memoised under 2M indices by MEMOIZE, one byte each
  p.b = "\x80\x04N";
  p.raw(std::string(2 << 20, '\x94')).op('0').op('}').stop();
  expect_error([&] { load_pth(write_pth("memo_bomb.pth", p.b, {})); },
               {"memo exceeds 1048576 entries"});
}

TEST(PthReject, DeepNestingIsABomb) {
  Pickle lists;  // [[[[...]]]] 100000 deep
  for (int i = 0; i < 100000; ++i) lists.op(']');
  for (int i = 0; i < 99999; ++i) lists.op('a');
  lists.stop();
  expect_error([&] { load_pth(write_pth("deep.pth", lists.b, {})); }, {"nested more than"});
  Pickle tuples;  // ((((...)))) through TUPLE1
  tuples.op(')');
  for (int i = 0; i < 100000; ++i) tuples.op('\x85');
  tuples.stop();
  expect_error([&] { load_pth(write_pth("deep_tuple.pth", tuples.b, {})); }, {"nested more than"});
  Pickle marks;
  for (int i = 0; i < 100000; ++i) marks.op('(');
  marks.stop();
  expect_error([&] { load_pth(write_pth("marks.pth", marks.b, {})); }, {"nested MARKs"});
  // A list that contains itself: no infinite loop, no leak, just "no state_dict".
  Pickle cycle;
  cycle.op('}').op('q').op(0).str("state_dict").op('h').op(0).op('s').stop();
  expect_error([&] { load_pth(write_pth("cycle.pth", cycle.b, {})); }, {"no state_dict"});
}

TEST(PthReject, NotAStateDict) {
  Pickle list;
  list.op(']').stop();
  expect_error([&] { load_pth(write_pth("list.pth", list.b, {})); }, {"holds a list"});
  Pickle meta;
  meta.op('}').op('(').str("epoch").integer(1).str("optimizer").op('}').op('u').stop();
  expect_error([&] { load_pth(write_pth("meta.pth", meta.b, {})); },
               {"no state_dict", "'epoch', 'optimizer'"});
  const std::string nopkl = temp_path("nopkl.pth");
  write_zip(nopkl, {{"a/readme.txt", "hello"}});
  expect_error([&] { load_pth(nopkl); }, {"no ARCHIVE/data.pkl"});
  Pickle dup;
  dup.op('}').op('(');
  dup.str("module.w").tensor("FloatStorage", "0", 1, 0, {1}, {1});
  dup.str("w").tensor("FloatStorage", "0", 1, 0, {1}, {1});
  dup.op('u').stop();
  expect_error(
      [&] {
        load_pth(write_pth("dup.pth", dup.b, {{"0", floats({1})}}));
      },
      {"appears twice"});
  // The same key set twice in the pickle (torch.save never writes that) is refused too, rather
  // than one of the two values being picked silently.
  Pickle same;
  same.op('}').op('(');
  same.str("w").tensor("FloatStorage", "0", 2, 0, {1}, {1});
  same.str("w").tensor("FloatStorage", "0", 2, 1, {1}, {1});
  same.op('u').stop();
  expect_error(
      [&] {
        load_pth(write_pth("same_key.pth", same.b, {{"0", floats({1, 2})}}));
      },
      {"tensor 'w' appears twice"});
}

TEST(PthReject, MalformedPickles) {
  expect_error([&] { load_pth(write_pth("empty_stack.pth", Pickle().op('R').stop().b, {})); },
               {"empty stack"});
  expect_error([&] { load_pth(write_pth("memo.pth", Pickle().op('h').op(5).stop().b, {})); },
               {"memo entry 5"});
  expect_error([&] { load_pth(write_pth("nostop.pth", Pickle().op('}').b, {})); },
               {"truncated pickle"});
  expect_error(
      [&] {
        load_pth(write_pth("longstr.pth", Pickle().op('X').u32(1000).raw("ab").stop().b, {}));
      },
      {"truncated pickle"});
  Pickle pid;  // a persistent id that is not a storage
  pid.op('}').op('(').str("w").str("evil").op('Q').op('u').stop();
  expect_error([&] { load_pth(write_pth("pid.pth", pid.b, {})); }, {"persistent id"});
}

}  // namespace
}  // namespace biref

// Used by test_convert.cpp: writes `tensors` as a torch.save zip state_dict, each tensor in its
// own storage, keys prefixed with `prefix`, nested under `nest_key` when not empty.
namespace biref::pth_test {

void save_state_dict_pth(const std::string& path,
                         const std::vector<std::pair<std::string, TensorData>>& tensors,
                         const std::string& prefix, const std::string& nest_key) {
  static const std::map<DType, std::string> storage = {{DType::F32, "FloatStorage"},
                                                       {DType::F16, "HalfStorage"},
                                                       {DType::BF16, "BFloat16Storage"},
                                                       {DType::I64, "LongStorage"}};
  Pickle p;
  if (!nest_key.empty()) p.op('}').str("epoch").integer(1).op('s').str(nest_key);
  p.global("collections", "OrderedDict").op(')').op('R').op('(');
  std::vector<std::pair<std::string, std::string>> records;
  for (const auto& [name, t] : tensors) {
    const std::string key = std::to_string(records.size());
    std::vector<int64_t> stride(t.shape.size());
    for (int64_t i = int64_t(t.shape.size()) - 1, s = 1; i >= 0; --i) {
      stride[i] = s;
      s *= t.shape[i];
    }
    p.str(prefix + name).tensor(storage.at(t.dtype), key, t.numel(), 0, t.shape, stride);
    records.emplace_back(key, std::string(static_cast<const char*>(t.data), t.nbytes()));
  }
  p.op('u');
  if (!nest_key.empty()) p.op('s');
  p.stop();
  std::vector<std::pair<std::string, std::string>> entries{{"ckpt/data.pkl", p.b},
                                                           {"ckpt/byteorder", "little"}};
  for (auto& [k, v] : records) entries.emplace_back("ckpt/data/" + k, std::move(v));
  write_zip(path, entries);
}

}  // namespace biref::pth_test
