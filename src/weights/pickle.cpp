#include "weights/pickle.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <unordered_map>

#include "core/check.h"

namespace biref::pickle {

using Kind = Object::Kind;

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::None:
      return "None";
    case Kind::Bool:
      return "bool";
    case Kind::Int:
      return "int";
    case Kind::BigInt:
      return "int";
    case Kind::Float:
      return "float";
    case Kind::Str:
      return "str";
    case Kind::Bytes:
      return "bytes";
    case Kind::Tuple:
      return "tuple";
    case Kind::List:
      return "list";
    case Kind::Dict:
      return "dict";
    case Kind::Global:
      return "global";
    case Kind::Storage:
      return "storage";
    case Kind::Tensor:
      return "tensor";
  }
  return "?";
}

const Object* Object::get(std::string_view key) const {
  if (kind != Kind::Dict) return nullptr;
  const Object* found = nullptr;
  for (size_t i = 0; i + 1 < items.size(); i += 2) {
    if (items[i]->kind == Kind::Str && items[i]->s == key) found = items[i + 1];
  }
  return found;
}

namespace {

// Objects are the bulk of what a pickle costs; see Limits.
static_assert(sizeof(Object) <= 96, "keep pickle::Object small");

// The storage classes a state_dict's tensors may live in, by their pickled global name.
bool storage_dtype(const std::string& global, DType& dt) {
  static const std::pair<const char*, DType> table[] = {
      {"torch.FloatStorage", DType::F32}, {"torch.DoubleStorage", DType::F64},
      {"torch.HalfStorage", DType::F16},  {"torch.BFloat16Storage", DType::BF16},
      {"torch.LongStorage", DType::I64},  {"torch.IntStorage", DType::I32},
      {"torch.ShortStorage", DType::I16}, {"torch.CharStorage", DType::I8},
      {"torch.ByteStorage", DType::U8},   {"torch.BoolStorage", DType::Bool},
  };
  for (const auto& [name, t] : table) {
    if (global == name) {
      dt = t;
      return true;
    }
  }
  return false;
}

// Globals whose "call" we interpret. Anything else — a class of the training code, builtins,
// os.system — stops the load before anything is built from it.
bool allowed_global(const std::string& g) {
  DType dt;
  return g == "collections.OrderedDict" || g == "torch._utils._rebuild_tensor_v2" ||
         g == "torch._utils._rebuild_tensor" || g == "torch._utils._rebuild_parameter" ||
         g == "torch._utils._rebuild_parameter_with_state" || g == "_codecs.encode" ||
         g == "__builtin__.bytes" || g == "builtins.bytes" || storage_dtype(g, dt);
}

// The bytes of a str whose code points are all below 256 (Python's s.encode('latin1')), from
// its UTF-8 form; false when a code point is larger or the UTF-8 is malformed.
bool latin1_bytes(const std::string& utf8, std::string& out) {
  out.clear();
  for (size_t i = 0; i < utf8.size(); ++i) {
    const unsigned char c = static_cast<unsigned char>(utf8[i]);
    if (c < 0x80) {
      out.push_back(char(c));
    } else if ((c & 0xE0) == 0xC0 && c <= 0xC3 && i + 1 < utf8.size() &&
               (static_cast<unsigned char>(utf8[i + 1]) & 0xC0) == 0x80) {
      out.push_back(char(((c & 0x1F) << 6) | (static_cast<unsigned char>(utf8[i + 1]) & 0x3F)));
      ++i;
    } else {
      return false;
    }
  }
  return true;
}

std::string printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 80)) {
    const unsigned char u = static_cast<unsigned char>(c);
    out += (u >= 32 && u < 127) ? c : '?';
  }
  if (s.size() > 80) out += "...";
  return out;
}

class Machine {
 public:
  Machine(std::string_view data, const std::string& what, Result& out, const Limits& lim)
      : d_(data),
        what_(what),
        out_(out),
        lim_(lim),
        max_objects_(std::min(lim.max_objects, data.size())),
        max_items_(std::min(lim.max_items, data.size())) {}

  void run() {
    for (;;) {
      const size_t at = pos_;
      const unsigned char op = u8();
      if (op == '.') {  // STOP
        BIREF_CHECK(stack_.size() == 1 && marks_.empty(), what_, ": malformed pickle: STOP with ",
                    stack_.size(), " values on the stack");
        out_.root = stack_.back();
        out_.consumed = pos_;
        return;
      }
      step(op, at);
    }
  }

 private:
  std::string_view d_;
  const std::string& what_;
  Result& out_;
  const Limits& lim_;
  // The limits scaled to the input: an attacker must supply (at least) a byte per object and
  // per container item, and can never exceed the fixed caps of `lim_` however many it supplies.
  const size_t max_objects_, max_items_;
  size_t items_ = 0;  // items adopted into containers so far
  size_t pos_ = 0;
  std::vector<Object*> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, Object*> memo_;

  [[noreturn]] void bad(const std::string& msg) const { fail(what_, ": ", msg); }

  // --- input -----------------------------------------------------------------------------
  void need(size_t n) const {
    if (n > d_.size() - pos_) {
      fail(what_, ": truncated pickle (needs ", n, " more bytes at offset ", pos_, ", has ",
           d_.size() - pos_, ")");
    }
  }
  unsigned char u8() {
    need(1);
    return static_cast<unsigned char>(d_[pos_++]);
  }
  uint64_t uint_le(int n) {
    need(size_t(n));
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(d_[pos_ + i]);
    pos_ += size_t(n);
    return v;
  }
  std::string_view bytes(uint64_t n) {
    BIREF_CHECK(n <= d_.size() - pos_, what_, ": truncated pickle (a string of ", n,
                " bytes at offset ", pos_, " runs past the end)");
    std::string_view s = d_.substr(pos_, size_t(n));
    pos_ += size_t(n);
    return s;
  }
  std::string_view line() {  // text argument of the protocol-0 opcodes, up to '\n'
    const size_t nl = d_.find('\n', pos_);
    BIREF_CHECK(nl != std::string_view::npos, what_, ": truncated pickle (unterminated line)");
    std::string_view s = d_.substr(pos_, nl - pos_);
    pos_ = nl + 1;
    return s;
  }
  int64_t decimal(std::string_view s) {
    if (!s.empty() && s.back() == 'L') s.remove_suffix(1);  // python 2 longs
    std::string str(s);
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(str.c_str(), &end, 10);
    BIREF_CHECK(!str.empty() && end == str.c_str() + str.size() && errno == 0, what_,
                ": malformed pickle: bad integer '", printable(s), "'");
    return v;
  }

  // --- objects -----------------------------------------------------------------------------
  Object* make(Kind k) {
    BIREF_CHECK(out_.arena.size() < max_objects_, what_, ": pickle of ", d_.size(),
                " bytes creates more than ", max_objects_, " objects (a pickle bomb?)");
    Object& o = out_.arena.emplace_back();
    o.kind = k;
    return &o;
  }
  Object* make_int(int64_t v) {
    Object* o = make(Kind::Int);
    o->i = v;
    return o;
  }
  Object* make_str(Kind k, std::string_view s) {
    Object* o = make(k);
    o->s.assign(s);
    return o;
  }
  void adopt(Object* parent, Object* child) {
    BIREF_CHECK(items_ < max_items_, what_, ": pickle of ", d_.size(), " bytes puts more than ",
                max_items_, " items in containers (a pickle bomb?)");
    ++items_;
    parent->items.push_back(child);
    if (child->depth + 1 > parent->depth) {
      parent->depth = child->depth + 1;
      BIREF_CHECK(parent->depth <= lim_.max_depth, what_, ": containers nested more than ",
                  lim_.max_depth, " deep (a pickle bomb?)");
    }
  }
  Object* container(Kind k, std::vector<Object*>::iterator b, std::vector<Object*>::iterator e) {
    Object* o = make(k);
    o->depth = 1;
    for (auto it = b; it != e; ++it) adopt(o, *it);
    return o;
  }

  // --- stack -------------------------------------------------------------------------------
  void push(Object* o) {
    BIREF_CHECK(stack_.size() < lim_.max_stack, what_, ": pickle stack exceeds ", lim_.max_stack,
                " values (a pickle bomb?)");
    stack_.push_back(o);
  }
  Object* pop(const char* op) {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() <= floor) bad(str_cat("malformed pickle: ", op, " on an empty stack"));
    Object* o = stack_.back();
    stack_.pop_back();
    return o;
  }
  Object* top(const char* op) {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() <= floor) bad(str_cat("malformed pickle: ", op, " on an empty stack"));
    return stack_.back();
  }
  size_t pop_mark(const char* op) {
    if (marks_.empty()) bad(str_cat("malformed pickle: ", op, " without a MARK"));
    const size_t m = marks_.back();
    marks_.pop_back();
    return m;
  }
  void memo_put(uint64_t idx) {
    Object* o = top("PUT");
    if (!memo_.count(idx)) {
      BIREF_CHECK(memo_.size() < lim_.max_memo, what_, ": pickle memo exceeds ", lim_.max_memo,
                  " entries (a pickle bomb?)");
    }
    memo_[idx] = o;
  }
  void memo_get(uint64_t idx) {
    auto it = memo_.find(idx);
    BIREF_CHECK(it != memo_.end(), what_, ": malformed pickle: memo entry ", idx,
                " read before it is written");
    push(it->second);
  }

  // --- dicts and lists ---------------------------------------------------------------------
  void set_items(Object* dict, std::vector<Object*>::iterator b, std::vector<Object*>::iterator e,
                 const char* op) {
    if (dict->kind != Kind::Dict) {
      bad(str_cat("unsupported pickle: ", op, " on a ", kind_name(dict->kind), ", not a dict"));
    }
    if ((e - b) % 2) bad(str_cat("malformed pickle: ", op, " with an odd number of values"));
    for (auto it = b; it != e; ++it) adopt(dict, *it);
  }
  void append_items(Object* list, std::vector<Object*>::iterator b,
                    std::vector<Object*>::iterator e, const char* op) {
    if (list->kind != Kind::List) {
      bad(str_cat("unsupported pickle: ", op, " on a ", kind_name(list->kind), ", not a list"));
    }
    for (auto it = b; it != e; ++it) adopt(list, *it);
  }

  // --- the torch rebuild functions ---------------------------------------------------------
  int64_t as_int(const Object* o, const char* what) const {
    if (o->kind != Kind::Int)
      bad(str_cat("malformed tensor: ", what, " is a ", kind_name(o->kind)));
    return o->i;
  }
  std::vector<int64_t> as_ints(const Object* o, const char* what) const {
    if (o->kind != Kind::Tuple && o->kind != Kind::List) {
      bad(str_cat("malformed tensor: ", what, " is a ", kind_name(o->kind), ", not a tuple"));
    }
    std::vector<int64_t> v;
    for (const Object* x : o->items) v.push_back(as_int(x, what));
    return v;
  }
  Object* rebuild_tensor(const std::string& fn, const Object* args) {
    const auto& a = args->items;
    const size_t min_args = fn == "torch._utils._rebuild_tensor" ? 4 : 6;
    if (a.size() < min_args || a.size() > min_args + 1) {
      bad(str_cat("malformed tensor: ", fn, " called with ", a.size(), " arguments"));
    }
    if (a[0]->kind != Kind::Storage) {
      bad(str_cat("malformed tensor: ", fn, " needs a storage, got a ", kind_name(a[0]->kind)));
    }
    Object* t = make(Kind::Tensor);
    TensorRef& tr = out_.tensors.emplace_back();
    t->tensor = &tr;
    tr.storage = a[0]->storage;
    tr.offset = as_int(a[1], "the storage offset");
    tr.shape = as_ints(a[2], "the size");
    tr.stride = as_ints(a[3], "the stride");
    if (tr.shape.size() != tr.stride.size()) {
      bad(str_cat("malformed tensor: size ", shape_str(tr.shape), " and stride ",
                  shape_str(tr.stride), " differ in length"));
    }
    // requires_grad, backward_hooks (an empty OrderedDict) and metadata carry nothing we use.
    return t;
  }
  Object* call(const Object* fn, const Object* args, const char* op) {
    if (fn->kind != Kind::Global) {
      bad(str_cat("unsupported pickle: ", op, " calls a ", kind_name(fn->kind)));
    }
    if (args->kind != Kind::Tuple) {
      bad(str_cat("malformed pickle: ", op, " arguments are a ", kind_name(args->kind)));
    }
    const std::string& g = fn->s;
    if (g == "collections.OrderedDict") {
      Object* d = make(Kind::Dict);
      d->depth = 1;
      if (args->items.empty()) return d;
      // OrderedDict([(k, v), ...]) as very old picklers write it.
      const Object* pairs = args->items[0];
      if (args->items.size() == 1 && pairs->kind == Kind::List) {
        for (const Object* p : pairs->items) {
          if ((p->kind != Kind::Tuple && p->kind != Kind::List) || p->items.size() != 2) {
            bad("malformed pickle: OrderedDict built from something other than (key, value) pairs");
          }
          adopt(d, p->items[0]);
          adopt(d, p->items[1]);
        }
        return d;
      }
      bad("unsupported pickle: OrderedDict called with unexpected arguments");
    }
    if (g == "torch._utils._rebuild_tensor_v2" || g == "torch._utils._rebuild_tensor") {
      return rebuild_tensor(g, args);
    }
    // Protocol 2 (torch.save's default) has no bytes opcode: Python pickles b"..." as
    // _codecs.encode("...", "latin1"), and b"" as bytes().
    if (g == "_codecs.encode") {
      const auto& a = args->items;
      std::string b;
      if (a.size() != 2 || a[0]->kind != Kind::Str || a[1]->kind != Kind::Str ||
          (a[1]->s != "latin1" && a[1]->s != "latin-1") || !latin1_bytes(a[0]->s, b)) {
        bad("unsupported pickle: _codecs.encode is only read as bytes pickled by Python "
            "(a str and 'latin1')");
      }
      return make_str(Kind::Bytes, b);
    }
    if (g == "__builtin__.bytes" || g == "builtins.bytes") {
      if (!args->items.empty()) bad("unsupported pickle: bytes() called with arguments");
      return make_str(Kind::Bytes, "");
    }
    if (g == "torch._utils._rebuild_parameter" ||
        g == "torch._utils._rebuild_parameter_with_state") {
      // A Parameter is its data tensor; requires_grad, hooks and state are training details.
      if (args->items.empty() || args->items[0]->kind != Kind::Tensor) {
        bad(str_cat("malformed pickle: ", g, " without a tensor"));
      }
      return args->items[0];
    }
    bad(str_cat("unsupported pickle: ", op, " calls '", g, "'"));
  }

  Object* persistent_storage(Object* pid) {
    const auto& a = pid->items;
    if (pid->kind != Kind::Tuple || a.size() < 5 || a.size() > 6 || a[0]->kind != Kind::Str ||
        a[0]->s != "storage") {
      bad(str_cat("unsupported persistent id (a ", kind_name(pid->kind),
                  "); only ('storage', type, key, location, size) is understood"));
    }
    DType dt;
    if (a[1]->kind != Kind::Global || !storage_dtype(a[1]->s, dt)) {
      bad(str_cat("unsupported storage type ",
                  a[1]->kind == Kind::Global ? "'" + a[1]->s + "'" : kind_name(a[1]->kind)));
    }
    auto key = [&](const Object* o) {
      if (o->kind == Kind::Str) return o->s;
      if (o->kind == Kind::Int) return std::to_string(o->i);
      bad(str_cat("malformed persistent id: the storage key is a ", kind_name(o->kind)));
    };
    if (a[3]->kind != Kind::Str) bad("malformed persistent id: the location is not a string");
    Object* s = make(Kind::Storage);
    StorageRef& sr = out_.storages.emplace_back();
    s->storage = &sr;
    sr.dtype = dt;
    sr.key = key(a[2]);
    sr.numel = as_int(a[4], "the storage size");
    BIREF_CHECK(sr.numel >= 0, what_, ": storage '", sr.key, "' has size ", sr.numel);
    if (a.size() == 6 && a[5]->kind != Kind::None) {
      // Legacy view: (view_key, offset, view_size) into the storage `key`.
      const Object* v = a[5];
      if (v->kind != Kind::Tuple || v->items.size() != 3) bad("malformed storage view");
      sr.is_view = true;
      sr.view_key = key(v->items[0]);
      sr.view_offset = as_int(v->items[1], "the view offset");
      sr.view_numel = as_int(v->items[2], "the view size");
      BIREF_CHECK(sr.view_offset >= 0 && sr.view_numel >= 0, what_, ": storage view '", sr.view_key,
                  "' has a negative offset or size");
    }
    return s;
  }

  void step(unsigned char op, size_t at) {
    switch (op) {
      // Framing and structure.
      case 0x80: {  // PROTO
        const int proto = u8();
        BIREF_CHECK(proto <= 5, what_, ": unsupported pickle protocol ", proto);
        return;
      }
      case 0x95:
        uint_le(8);
        return;  // FRAME: a length hint only
      case '(':  // MARK
        BIREF_CHECK(marks_.size() < lim_.max_marks, what_, ": more than ", lim_.max_marks,
                    " nested MARKs (a pickle bomb?)");
        marks_.push_back(stack_.size());
        return;
      case '0':
        pop("POP");
        return;
      case '1':
        stack_.resize(pop_mark("POP_MARK"));
        return;
      case '2':
        push(top("DUP"));
        return;

      // Constants and numbers.
      case 'N':
        push(make(Kind::None));
        return;
      case 0x88:
      case 0x89: {
        Object* o = make(Kind::Bool);
        o->i = op == 0x88;
        push(o);
        return;
      }
      case 'K':
        push(make_int(int64_t(uint_le(1))));
        return;
      case 'M':
        push(make_int(int64_t(uint_le(2))));
        return;
      case 'J':
        push(make_int(int64_t(int32_t(uint32_t(uint_le(4))))));
        return;
      case 'I': {
        const std::string_view s = line();
        if (s == "00" || s == "01") {
          Object* o = make(Kind::Bool);
          o->i = s == "01";
          push(o);
        } else {
          push(make_int(decimal(s)));
        }
        return;
      }
      case 'L':
        push(make_int(decimal(line())));
        return;
      case 0x8a:
      case 0x8b: {  // LONG1, LONG4: little-endian two's complement of n bytes
        const uint64_t n = op == 0x8a ? uint_le(1) : uint_le(4);
        const std::string_view b = bytes(n);
        if (n <= 8) {
          uint64_t v = 0;
          for (size_t i = n; i-- > 0;) v = v << 8 | static_cast<unsigned char>(b[i]);
          if (n > 0 && n < 8 && (static_cast<unsigned char>(b[n - 1]) & 0x80)) {
            v |= ~uint64_t(0) << (8 * n);  // sign-extend
          }
          push(make_int(int64_t(v)));
        } else {
          push(make_str(Kind::BigInt, b));
        }
        return;
      }
      case 'G': {  // BINFLOAT: big-endian IEEE double
        need(8);
        uint64_t u = 0;
        for (int i = 0; i < 8; ++i) u = u << 8 | static_cast<unsigned char>(d_[pos_ + i]);
        pos_ += 8;
        Object* o = make(Kind::Float);
        std::memcpy(&o->f, &u, 8);
        push(o);
        return;
      }
      case 'F': {
        const std::string s(line());
        char* end = nullptr;
        Object* o = make(Kind::Float);
        o->f = std::strtod(s.c_str(), &end);
        BIREF_CHECK(!s.empty() && end == s.c_str() + s.size(), what_,
                    ": malformed pickle: bad float '", printable(s), "'");
        push(o);
        return;
      }

      // Strings.
      case 'X':
        push(make_str(Kind::Str, bytes(uint_le(4))));
        return;
      case 0x8c:
        push(make_str(Kind::Str, bytes(uint_le(1))));
        return;
      case 0x8d:
        push(make_str(Kind::Str, bytes(uint_le(8))));
        return;
      case 'T':
        push(make_str(Kind::Str, bytes(uint_le(4))));
        return;  // python 2 str
      case 'U':
        push(make_str(Kind::Str, bytes(uint_le(1))));
        return;
      case 'B':
        push(make_str(Kind::Bytes, bytes(uint_le(4))));
        return;
      case 'C':
        push(make_str(Kind::Bytes, bytes(uint_le(1))));
        return;
      case 0x8e:
        push(make_str(Kind::Bytes, bytes(uint_le(8))));
        return;
      case 'V': {
        const std::string_view s = line();
        BIREF_CHECK(s.find('\\') == std::string_view::npos, what_,
                    ": unsupported pickle: escaped UNICODE string '", printable(s), "'");
        push(make_str(Kind::Str, s));
        return;
      }

      // Containers.
      case ')': {
        Object* o = make(Kind::Tuple);
        o->depth = 1;
        push(o);
        return;
      }
      case 0x85:
      case 0x86:
      case 0x87: {  // TUPLE1..3
        const size_t n = op - 0x84u;
        const size_t floor = marks_.empty() ? 0 : marks_.back();
        if (stack_.size() < floor + n) bad("malformed pickle: TUPLEn on a short stack");
        Object* t = container(Kind::Tuple, stack_.end() - long(n), stack_.end());
        stack_.resize(stack_.size() - n);
        push(t);
        return;
      }
      case 't': {
        const size_t m = pop_mark("TUPLE");
        Object* t = container(Kind::Tuple, stack_.begin() + long(m), stack_.end());
        stack_.resize(m);
        push(t);
        return;
      }
      case ']': {
        Object* o = make(Kind::List);
        o->depth = 1;
        push(o);
        return;
      }
      case 'l': {
        const size_t m = pop_mark("LIST");
        Object* l = container(Kind::List, stack_.begin() + long(m), stack_.end());
        stack_.resize(m);
        push(l);
        return;
      }
      case '}': {
        Object* o = make(Kind::Dict);
        o->depth = 1;
        push(o);
        return;
      }
      case 'd': {
        const size_t m = pop_mark("DICT");
        Object* dict = make(Kind::Dict);
        dict->depth = 1;
        set_items(dict, stack_.begin() + long(m), stack_.end(), "DICT");
        stack_.resize(m);
        push(dict);
        return;
      }
      case 'a': {
        Object* v = pop("APPEND");
        Object* l = top("APPEND");
        std::vector<Object*> one{v};
        append_items(l, one.begin(), one.end(), "APPEND");
        return;
      }
      case 'e': {
        const size_t m = pop_mark("APPENDS");
        if (m == 0 || (!marks_.empty() && m <= marks_.back()))
          bad("malformed pickle: APPENDS without a list");
        append_items(stack_[m - 1], stack_.begin() + long(m), stack_.end(), "APPENDS");
        stack_.resize(m);
        return;
      }
      case 's': {
        Object* v = pop("SETITEM");
        Object* k = pop("SETITEM");
        std::vector<Object*> kv{k, v};
        set_items(top("SETITEM"), kv.begin(), kv.end(), "SETITEM");
        return;
      }
      case 'u': {
        const size_t m = pop_mark("SETITEMS");
        if (m == 0 || (!marks_.empty() && m <= marks_.back()))
          bad("malformed pickle: SETITEMS without a dict");
        set_items(stack_[m - 1], stack_.begin() + long(m), stack_.end(), "SETITEMS");
        stack_.resize(m);
        return;
      }

      // Memo.
      case 'q':
        memo_put(uint_le(1));
        return;
      case 'r':
        memo_put(uint_le(4));
        return;
      case 'p':
        memo_put(uint64_t(decimal(line())));
        return;
      case 0x94:
        memo_put(memo_.size());
        return;  // MEMOIZE
      case 'h':
        memo_get(uint_le(1));
        return;
      case 'j':
        memo_get(uint_le(4));
        return;
      case 'g':
        memo_get(uint64_t(decimal(line())));
        return;

      // Globals and the calls we interpret.
      case 'c': {
        const std::string module(line());
        const std::string name(line());
        push_global(module + "." + name);
        return;
      }
      case 0x93: {  // STACK_GLOBAL
        Object* name = pop("STACK_GLOBAL");
        Object* module = pop("STACK_GLOBAL");
        if (name->kind != Kind::Str || module->kind != Kind::Str) {
          bad("malformed pickle: STACK_GLOBAL with non-string names");
        }
        push_global(module->s + "." + name->s);
        return;
      }
      case 'R': {
        Object* args = pop("REDUCE");
        Object* fn = pop("REDUCE");
        push(call(fn, args, "REDUCE"));
        return;
      }
      case 0x81: {  // NEWOBJ: cls.__new__(cls, *args); only an empty OrderedDict makes sense
        Object* args = pop("NEWOBJ");
        Object* cls = pop("NEWOBJ");
        if (cls->kind != Kind::Global || cls->s != "collections.OrderedDict") {
          bad(str_cat("unsupported pickle: NEWOBJ of ",
                      cls->kind == Kind::Global ? "'" + cls->s + "'" : kind_name(cls->kind)));
        }
        push(call(cls, args, "NEWOBJ"));
        return;
      }
      case 'b': {  // BUILD: the state of a dict subclass (a state_dict's `_metadata`) is dropped
        Object* state = pop("BUILD");
        Object* obj = top("BUILD");
        if (obj->kind != Kind::Dict || (state->kind != Kind::Dict && state->kind != Kind::None)) {
          bad(str_cat("unsupported pickle: BUILD of a ", kind_name(obj->kind), " from a ",
                      kind_name(state->kind)));
        }
        return;
      }
      case 'Q': {
        Object* pid = pop("BINPERSID");
        push(persistent_storage(pid));
        return;
      }
      default:
        break;
    }
    bad(str_cat("unsupported pickle opcode ", opcode_name(op), " at offset ", at,
                " (a checkpoint may only hold tensors and plain data)"));
  }

  void push_global(const std::string& g) {
    if (!allowed_global(g)) {
      fail(what_, ": unsupported global '", printable(g),
           "' in the pickle; a checkpoint may only hold tensors and plain data (biref never "
           "runs code from a file). If this is a whole pickled model, save its state_dict() "
           "instead");
    }
    push(make_str(Kind::Global, g));
  }

  static std::string opcode_name(unsigned char op) {
    static const std::pair<unsigned char, const char*> names[] = {
        {'i', "INST"},         {'o', "OBJ"},
        {'P', "PERSID"},       {'S', "STRING"},
        {0x82, "EXT1"},        {0x83, "EXT2"},
        {0x84, "EXT4"},        {0x8f, "EMPTY_SET"},
        {0x90, "ADDITEMS"},    {0x91, "FROZENSET"},
        {0x92, "NEWOBJ_EX"},   {0x96, "BYTEARRAY8"},
        {0x97, "NEXT_BUFFER"}, {0x98, "READONLY_BUFFER"}};
    char hex[8];
    std::snprintf(hex, sizeof hex, "0x%02x", op);
    for (const auto& [c, n] : names) {
      if (c == op) return str_cat(n, " (", hex, ")");
    }
    return hex;
  }
};

}  // namespace

void load(std::string_view data, const std::string& what, Result& out, const Limits& lim) {
  Machine m(data, what, out, lim);
  m.run();
}

}  // namespace biref::pickle
