// Compatibility with rembg's HTTP server (`rembg s`, danielgatis/rembg,
// rembg/commands/s_command.py, FastAPI), so its clients can point at `biref serve`.
//
// rembg's routes:
//   POST /api/remove  multipart/form-data: the image in the file field `file`; the form fields
//                     model, a, af, ab, ae, om, ppm; bgc and extras are read from the query
//                     string (FastAPI Query), not the form.
//   GET  /api/remove?url=URL&...  every parameter in the query string; the server downloads
//                     URL (http/https only, public addresses, at most 50 MiB, 5 redirects).
// Parameters (FastAPI/pydantic types; unknown names are ignored):
//   model  str   default "u2net"; one of rembg's session names (rembg_model_names())
//   a      bool  default false: alpha matting (pymatting) of the cut-out
//   af     int   default 240, 0..255: alpha matting foreground threshold
//   ab     int   default 10, 0..255: alpha matting background threshold
//   ae     int   default 10, >= 0: alpha matting erode size
//   om     bool  default false: answer the mask only
//   ppm    bool  default false: post-process the mask (opening with disk(1), Gaussian
//                sigma 2, threshold at 127)
//   bgc    str   default none: background colour "R,G,B,A" (tuple(map(int, bgc.split(","))))
//   extras str   default none: a JSON object of extra session/remove() keyword arguments
// Booleans as pydantic parses them: 1/0, true/false, t/f, yes/no, y/n, on/off, any case.
// Answers: 200 with Content-Type image/png: with om the mask as an 8-bit gray PNG; otherwise an
// RGBA PNG, the cut-out of PIL's Image.composite(img, transparent black, mask): alpha = mask,
// and colours multiplied by mask/255 unless extras has "putalpha": true (colours untouched);
// with bgc that cut-out alpha-composited over the colour (Image.alpha_composite), still RGBA.
// Bad parameters: 422 with FastAPI's {"detail": [...]}; a bad url: 400 {"detail": "..."}.
// biref answers its own JSON error body with 400 (or 404 for an unknown model) instead.
#pragma once
#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "biref/image.h"

namespace biref::serve {

// The rembg request mapped onto biref.
struct RembgRequest {
  std::string model;            // one of our model names
  std::string requested_model;  // the client's model ("u2net" when absent: rembg's default)
  bool only_mask = false;       // om: answer the 8-bit gray mask
  // bgc: composite the cut-out over this R, G, B, A colour (A = 255 when given as R,G,B);
  // nullopt when absent, and when only_mask (rembg ignores bgc then).
  std::optional<std::array<uint8_t, 4>> bgcolor;
  // rembg's default cut-out has its colours multiplied by alpha (PIL Image.composite over
  // transparent black); false when extras has "putalpha": true (colours untouched).
  bool premultiplied = true;
};

// rembg's model (session) names, as its server accepts them.
std::vector<std::string> rembg_model_names();

// Maps rembg's parameters (`fields`: the query parameters, and for POST the form fields other
// than `file`, merged) onto biref. `our_model_names` are the models served; the first is the
// default. Empty values count as absent. Unknown parameter names are ignored, as rembg does.
//
// model: one of ours is used as is. A rembg name maps to the model that answers the same
// question: birefnet-general/-general-lite/-portrait/-dis/-hrsod/-cod to our general, lite,
// portrait, DIS5K, HRSOD, COD when served, else to the default; u2net_human_seg to portrait
// when served, else the default; rembg's other whole-image foreground models (u2net, u2netp,
// silueta, isnet-general-use, isnet-anime, bria-rmbg, birefnet-massive) to the default. They
// are mapped, not refused, because rembg itself uses u2net when a client names no model:
// naming u2net asks for nothing more than naming none, and a BiRefNet mask answers it. Refused
// (InvalidInput) are the models whose answer is of another kind: u2net_cloth_seg (three garment
// masks stacked), sam (needs prompt points) and u2net_custom/dis_custom/ben_custom (a model
// file on rembg's host). Any other name: NotFound, listing the accepted names.
//
// Errors (InvalidInput, naming the parameter and why): a malformed bool or int, af/ab outside
// 0..255, ae < 0; a=true (biref has no alpha matting: BiRefNet's mask is already soft; matting
// models such as "matting" can be served instead); ppm=true (not implemented); bgc not three
// or four integers 0..255; extras not a JSON object, or with a key other than "putalpha".
RembgRequest parse_rembg_params(const std::map<std::string, std::string>& fields,
                                const std::vector<std::string>& our_model_names);

// rembg's answer image for an RGB image and its mask, with Pillow's integer arithmetic: the
// mask (only_mask); else the cut-out of Image.composite(rgba, transparent black, mask) (colours
// DIV255(c·m) when premultiplied, alpha m), alpha-composited (Image.alpha_composite) over bgcolor
// when given. RGBA, or 1 channel for the mask.
Image rembg_render(const Image& rgb, const Image& mask, const RembgRequest& request);

}  // namespace biref::serve
