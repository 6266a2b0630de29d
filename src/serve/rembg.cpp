// rembg's HTTP parameters mapped onto biref (see rembg.h).
#include "serve/rembg.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>

#include "core/check.h"

namespace biref::serve {

namespace {

// How each of rembg's session names (rembg/sessions/*.py, name()) is served.
enum class Mapping { Counterpart, Default, Refused };
struct RembgModel {
  const char* name;
  Mapping mapping;
  const char* ours;  // Counterpart: our zoo name; Refused: why
};
const RembgModel kRembgModels[] = {
    {"birefnet-general", Mapping::Counterpart, "general"},
    {"birefnet-general-lite", Mapping::Counterpart, "lite"},
    {"birefnet-portrait", Mapping::Counterpart, "portrait"},
    {"birefnet-dis", Mapping::Counterpart, "DIS5K"},
    {"birefnet-hrsod", Mapping::Counterpart, "HRSOD"},
    {"birefnet-cod", Mapping::Counterpart, "COD"},
    {"birefnet-massive", Mapping::Default, ""},
    {"isnet-anime", Mapping::Default, ""},
    {"isnet-general-use", Mapping::Default, ""},
    {"silueta", Mapping::Default, ""},
    {"u2net", Mapping::Default, ""},
    {"u2netp", Mapping::Default, ""},
    {"u2net_human_seg", Mapping::Counterpart, "portrait"},
    {"bria-rmbg", Mapping::Default, ""},
    {"u2net_cloth_seg", Mapping::Refused,
     "it answers three garment masks (upper body, lower body, full body) stacked vertically, "
     "not a foreground mask"},
    {"sam", Mapping::Refused, "it segments what prompt points in extras select"},
    {"u2net_custom", Mapping::Refused, "it runs a model file named in extras"},
    {"dis_custom", Mapping::Refused, "it runs a model file named in extras"},
    {"ben_custom", Mapping::Refused, "it runs a model file named in extras"},
};

std::string joined(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

// The value of `key`, or nullptr when absent or empty.
const std::string* field(const std::map<std::string, std::string>& fields, const char* key) {
  const auto it = fields.find(key);
  return it == fields.end() || it->second.empty() ? nullptr : &it->second;
}

bool parse_bool(const std::map<std::string, std::string>& fields, const char* key) {
  const std::string* v = field(fields, key);
  if (!v) return false;
  std::string s = *v;
  std::transform(s.begin(), s.end(), s.begin(),
                 [](char c) { return char(std::tolower(static_cast<unsigned char>(c))); });
  for (const char* t : {"1", "true", "t", "yes", "y", "on"})
    if (s == t) return true;
  for (const char* f : {"0", "false", "f", "no", "n", "off"})
    if (s == f) return false;
  fail("rembg parameter '", key, "': '", *v,
       "' is not a boolean (use true/false, 1/0, yes/no, on/off)");
}

// A decimal integer in [lo, hi], with surrounding spaces and a leading '+' allowed.
int64_t parse_int(std::string_view text, int64_t lo, int64_t hi, const std::string& what) {
  std::string_view s = text;
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  int64_t x = 0;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), x);
  BIREF_CHECK(!s.empty() && ec != std::errc::invalid_argument && end == s.data() + s.size(), what,
              ": '", text, "' is not an integer");
  BIREF_CHECK(ec != std::errc::result_out_of_range && x >= lo && x <= hi, what, ": ", text,
              " is out of range ", lo, "..", hi);
  return x;
}

void check_int(const std::map<std::string, std::string>& fields, const char* key, int64_t lo,
               int64_t hi) {
  if (const std::string* v = field(fields, key))
    parse_int(*v, lo, hi, str_cat("rembg parameter '", key, "'"));
}

std::string resolve_model(const std::string& requested, const std::vector<std::string>& ours) {
  BIREF_CHECK_KIND(!ours.empty(), ErrorKind::Internal, "rembg: no models are served");
  if (std::find(ours.begin(), ours.end(), requested) != ours.end()) return requested;
  for (const RembgModel& m : kRembgModels) {
    if (requested != m.name) continue;
    switch (m.mapping) {
      case Mapping::Counterpart:
        if (std::find(ours.begin(), ours.end(), m.ours) != ours.end()) return m.ours;
        return ours.front();
      case Mapping::Default:
        return ours.front();
      case Mapping::Refused:
        fail("rembg parameter 'model': '", requested, "' is not served by biref: ", m.ours);
    }
  }
  fail_kind(ErrorKind::NotFound, "rembg parameter 'model': unknown model '", requested,
            "' (served: ", joined(ours),
            "; rembg names mapped onto them: ", joined(rembg_model_names()), ")");
}

}  // namespace

std::vector<std::string> rembg_model_names() {
  std::vector<std::string> names;
  for (const RembgModel& m : kRembgModels)
    if (m.mapping != Mapping::Refused) names.push_back(m.name);
  return names;
}

RembgRequest parse_rembg_params(const std::map<std::string, std::string>& fields,
                                const std::vector<std::string>& our_model_names) {
  RembgRequest r;
  const std::string* model = field(fields, "model");
  r.requested_model = model ? *model : "u2net";
  r.model = resolve_model(r.requested_model, our_model_names);

  BIREF_CHECK(!parse_bool(fields, "a"), "rembg parameter 'a' (alpha matting): biref does not ",
              "implement alpha matting (BiRefNet's mask is already soft; serve a matting model ",
              "for hair and fur); send a=false or leave it out");
  check_int(fields, "af", 0, 255);
  check_int(fields, "ab", 0, 255);
  check_int(fields, "ae", 0, INT64_MAX);
  r.only_mask = parse_bool(fields, "om");
  BIREF_CHECK(!parse_bool(fields, "ppm"), "rembg parameter 'ppm' (post-process mask): biref ",
              "does not implement rembg's mask post-processing; send ppm=false or leave it out");

  if (const std::string* bgc = field(fields, "bgc")) {
    std::vector<std::string_view> parts;
    std::string_view rest = *bgc;
    for (size_t comma; (comma = rest.find(',')) != std::string_view::npos;) {
      parts.push_back(rest.substr(0, comma));
      rest.remove_prefix(comma + 1);
    }
    parts.push_back(rest);
    BIREF_CHECK(parts.size() == 3 || parts.size() == 4, "rembg parameter 'bgc': '", *bgc,
                "' is not R,G,B,A or R,G,B (integers 0..255)");
    std::array<uint8_t, 4> c = {0, 0, 0, 255};
    for (size_t i = 0; i < parts.size(); ++i)
      c[i] = uint8_t(parse_int(parts[i], 0, 255,
                               str_cat("rembg parameter 'bgc' ('", *bgc, "') component ", i + 1)));
    if (!r.only_mask) r.bgcolor = c;
  }

  if (const std::string* extras = field(fields, "extras")) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(*extras);
    } catch (const nlohmann::json::exception& e) {
      fail("rembg parameter 'extras': not valid JSON (", e.what(), ")");
    }
    BIREF_CHECK(j.is_object(), "rembg parameter 'extras': expected a JSON object, got ",
                j.type_name());
    for (const auto& [key, value] : j.items()) {
      BIREF_CHECK(key == "putalpha", "rembg parameter 'extras': key '", key,
                  "' is not supported by biref (only \"putalpha\")");
      BIREF_CHECK(value.is_boolean(), "rembg parameter 'extras': \"putalpha\" must be true or ",
                  "false, got ", value.dump());
      r.premultiplied = !value.get<bool>();
    }
  }
  return r;
}

namespace {
// Pillow's exact division by 255 with rounding (Paste.c, AlphaComposite.c).
inline uint32_t div255(uint32_t a) {
  const uint32_t t = a + 128;
  return ((t >> 8) + t) >> 8;
}
inline uint32_t shift_div255(uint32_t a) {
  return ((a >> 8) + a) >> 8;
}
}  // namespace

Image rembg_render(const Image& rgb, const Image& mask, const RembgRequest& request) {
  BIREF_CHECK(rgb.channels == 3 && mask.channels == 1 && rgb.width == mask.width &&
                  rgb.height == mask.height,
              "rembg_render: needs an RGB image and a mask of its size");
  if (request.only_mask) return mask;
  Image out;
  out.width = rgb.width;
  out.height = rgb.height;
  out.channels = 4;
  const size_t n = size_t(rgb.width) * size_t(rgb.height);
  out.pixels.resize(n * 4);
  for (size_t i = 0; i < n; ++i) {
    const uint32_t m = mask.pixels[i];
    uint8_t* o = &out.pixels[i * 4];
    for (int c = 0; c < 3; ++c) {
      const uint32_t v = rgb.pixels[i * 3 + size_t(c)];
      o[c] = uint8_t(request.premultiplied ? div255(v * m) : v);
    }
    o[3] = uint8_t(m);
    if (!request.bgcolor) continue;
    // alpha_composite(background, cut-out): the cut-out is the source over the colour
    const auto& bg = *request.bgcolor;
    const uint32_t sa = o[3];
    if (sa == 0) {
      for (int c = 0; c < 4; ++c) o[c] = bg[size_t(c)];
      continue;
    }
    constexpr uint32_t kBits = 7;
    const uint32_t blend = uint32_t(bg[3]) * (255 - sa);
    const uint32_t outa255 = sa * 255 + blend;
    const uint32_t coef1 = uint32_t(uint64_t(sa) * 255 * 255 * (1u << kBits) / outa255);
    const uint32_t coef2 = 255 * (1u << kBits) - coef1;
    for (int c = 0; c < 3; ++c) {
      const uint32_t t = uint32_t(o[c]) * coef1 + uint32_t(bg[size_t(c)]) * coef2;
      o[c] = uint8_t(shift_div255(t + (0x80u << kBits)) >> kBits);
    }
    o[3] = uint8_t(shift_div255(outa255 + 0x80));
  }
  return out;
}

}  // namespace biref::serve
