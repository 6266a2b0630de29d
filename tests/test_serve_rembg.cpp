// rembg's server parameters mapped onto biref: defaults, rembg's value formats, the model
// mapping, and a clear error for each parameter biref cannot honour.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "biref/error.h"
#include "serve/rembg.h"

namespace biref::serve {
namespace {

using Fields = std::map<std::string, std::string>;
const std::vector<std::string> kOurs = {"general", "lite", "portrait"};

std::string error_of(const Fields& fields, ErrorKind kind = ErrorKind::InvalidInput,
                     const std::vector<std::string>& ours = kOurs) {
  try {
    parse_rembg_params(fields, ours);
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), kind) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

TEST(ServeRembg, DefaultsAreRembgs) {
  const RembgRequest r = parse_rembg_params({}, kOurs);
  EXPECT_EQ(r.requested_model, "u2net");
  EXPECT_EQ(r.model, "general");
  EXPECT_FALSE(r.only_mask);
  EXPECT_FALSE(r.bgcolor.has_value());
  EXPECT_TRUE(r.premultiplied);
  // rembg's own defaults spelled out, and the fields of the routes themselves, are accepted.
  const RembgRequest d = parse_rembg_params({{"model", "u2net"},
                                             {"a", "false"},
                                             {"af", "240"},
                                             {"ab", "10"},
                                             {"ae", "10"},
                                             {"om", "false"},
                                             {"ppm", "false"},
                                             {"url", "http://example.com/a.png"},
                                             {"unknown", "x"}},
                                            kOurs);
  EXPECT_EQ(d.model, "general");
  EXPECT_FALSE(d.only_mask);
  // Empty values count as absent.
  EXPECT_EQ(parse_rembg_params({{"model", ""}, {"om", ""}, {"bgc", ""}}, kOurs).model, "general");
}

TEST(ServeRembg, BooleansAsPydantic) {
  for (const char* t : {"1", "true", "True", "TRUE", "t", "yes", "Y", "on", "ON"})
    EXPECT_TRUE(parse_rembg_params({{"om", t}}, kOurs).only_mask) << t;
  for (const char* f : {"0", "false", "False", "f", "no", "N", "off", "Off"})
    EXPECT_FALSE(parse_rembg_params({{"om", f}}, kOurs).only_mask) << f;
  EXPECT_EQ(error_of({{"om", "2"}}),
            "rembg parameter 'om': '2' is not a boolean (use true/false, 1/0, yes/no, on/off)");
  EXPECT_NE(error_of({{"a", "maybe"}}).find("'a': 'maybe' is not a boolean"), std::string::npos);
}

TEST(ServeRembg, ModelMapping) {
  const auto model = [](const std::string& name, const std::vector<std::string>& ours = kOurs) {
    return parse_rembg_params({{"model", name}}, ours).model;
  };
  // Ours first, as is.
  EXPECT_EQ(model("lite"), "lite");
  EXPECT_EQ(model("portrait"), "portrait");
  // rembg's BiRefNet variants to their counterparts when served, else the default.
  EXPECT_EQ(model("birefnet-general"), "general");
  EXPECT_EQ(model("birefnet-general-lite"), "lite");
  EXPECT_EQ(model("birefnet-portrait"), "portrait");
  EXPECT_EQ(model("birefnet-dis"), "general");
  EXPECT_EQ(model("birefnet-dis", {"lite", "DIS5K"}), "DIS5K");
  EXPECT_EQ(model("birefnet-cod", {"lite", "COD"}), "COD");
  EXPECT_EQ(model("birefnet-hrsod", {"lite", "HRSOD"}), "HRSOD");
  EXPECT_EQ(model("birefnet-general", {"lite"}), "lite");
  EXPECT_EQ(model("birefnet-massive"), "general");
  // Other foreground models to the default; human segmentation to portrait when served.
  for (const char* name :
       {"u2net", "u2netp", "silueta", "isnet-general-use", "isnet-anime", "bria-rmbg"})
    EXPECT_EQ(model(name, {"lite", "general"}), "lite") << name;
  EXPECT_EQ(model("u2net_human_seg"), "portrait");
  EXPECT_EQ(model("u2net_human_seg", {"general"}), "general");
  const RembgRequest r = parse_rembg_params({{"model", "isnet-general-use"}}, kOurs);
  EXPECT_EQ(r.requested_model, "isnet-general-use");
  // Every name rembg_model_names lists maps.
  const std::vector<std::string> names = rembg_model_names();
  EXPECT_EQ(names.size(), 14u);
  for (const std::string& name : names) EXPECT_NO_THROW(model(name)) << name;
  EXPECT_EQ(std::count(names.begin(), names.end(), "sam"), 0);
}

TEST(ServeRembg, ModelsOfAnotherKindAndUnknownNames) {
  EXPECT_NE(error_of({{"model", "u2net_cloth_seg"}})
                .find("'model': 'u2net_cloth_seg' is not served by biref: it answers three "
                      "garment masks"),
            std::string::npos);
  EXPECT_NE(error_of({{"model", "sam"}}).find("prompt points"), std::string::npos);
  for (const char* name : {"u2net_custom", "dis_custom", "ben_custom"})
    EXPECT_NE(error_of({{"model", name}}).find("a model file named in extras"), std::string::npos);
  const std::string unknown = error_of({{"model", "U2NET"}}, ErrorKind::NotFound);
  EXPECT_NE(unknown.find("unknown model 'U2NET' (served: general, lite, portrait; rembg names"),
            std::string::npos)
      << unknown;
  EXPECT_NE(unknown.find("isnet-general-use"), std::string::npos);
  EXPECT_NE(error_of({}, ErrorKind::Internal, {}).find("no models"), std::string::npos);
}

TEST(ServeRembg, UnsupportedOptionsAreErrors) {
  EXPECT_NE(error_of({{"a", "true"}}).find("'a' (alpha matting): biref does not implement"),
            std::string::npos);
  EXPECT_NE(error_of({{"ppm", "1"}}).find("'ppm' (post-process mask)"), std::string::npos);
  // Thresholds are checked like rembg's even when alpha matting is off.
  EXPECT_EQ(error_of({{"af", "256"}}), "rembg parameter 'af': 256 is out of range 0..255");
  EXPECT_NE(error_of({{"ab", "-1"}}).find("'ab': -1 is out of range"), std::string::npos);
  EXPECT_NE(error_of({{"ae", "-3"}}).find("'ae': -3 is out of range"), std::string::npos);
  EXPECT_NE(error_of({{"ae", "1.5"}}).find("'ae': '1.5' is not an integer"), std::string::npos);
  EXPECT_NE(error_of({{"af", "99999999999999999999"}}).find("out of range"), std::string::npos);
  EXPECT_NO_THROW(parse_rembg_params({{"ae", "100000"}, {"af", " +0 "}}, kOurs));
}

TEST(ServeRembg, BackgroundColour) {
  auto r = parse_rembg_params({{"bgc", "255,0,10,128"}}, kOurs);
  ASSERT_TRUE(r.bgcolor.has_value());
  EXPECT_EQ(*r.bgcolor, (std::array<uint8_t, 4>{255, 0, 10, 128}));
  r = parse_rembg_params({{"bgc", "1, 2 ,3"}}, kOurs);
  EXPECT_EQ(*r.bgcolor, (std::array<uint8_t, 4>{1, 2, 3, 255}));
  // Ignored with only_mask, as rembg does.
  EXPECT_FALSE(parse_rembg_params({{"bgc", "1,2,3,4"}, {"om", "true"}}, kOurs).bgcolor);
  EXPECT_NE(error_of({{"bgc", "#ffffff"}}).find("'bgc': '#ffffff' is not R,G,B,A or R,G,B"),
            std::string::npos);
  EXPECT_NE(error_of({{"bgc", "1,2"}}).find("is not R,G,B,A"), std::string::npos);
  EXPECT_NE(error_of({{"bgc", "1,2,3,4,5"}}).find("is not R,G,B,A"), std::string::npos);
  EXPECT_EQ(error_of({{"bgc", "1,2,300"}}),
            "rembg parameter 'bgc' ('1,2,300') component 3: 300 is out of range 0..255");
  EXPECT_NE(error_of({{"bgc", "1,,3"}}).find("component 2: '' is not an integer"),
            std::string::npos);
  // Checked even when om makes it unused.
  EXPECT_NE(error_of({{"bgc", "x"}, {"om", "1"}}).find("'bgc'"), std::string::npos);
}

TEST(ServeRembg, Extras) {
  EXPECT_TRUE(parse_rembg_params({{"extras", "{}"}}, kOurs).premultiplied);
  EXPECT_FALSE(parse_rembg_params({{"extras", "{\"putalpha\": true}"}}, kOurs).premultiplied);
  EXPECT_TRUE(parse_rembg_params({{"extras", "{\"putalpha\": false}"}}, kOurs).premultiplied);
  EXPECT_NE(error_of({{"extras", "{\"sam_prompt\": []}"}})
                .find("'extras': key 'sam_prompt' is not supported by biref"),
            std::string::npos);
  EXPECT_NE(error_of({{"extras", "{\"putalpha\": 1}"}}).find("must be true or false, got 1"),
            std::string::npos);
  EXPECT_NE(error_of({{"extras", "[1]"}}).find("expected a JSON object, got array"),
            std::string::npos);
  EXPECT_NE(error_of({{"extras", "{oops"}}).find("'extras': not valid JSON"), std::string::npos);
}

}  // namespace
}  // namespace biref::serve
