// Odd input images are decoded as the official pipeline's cv2.imread(path) (IMREAD_COLOR) decodes
// them: EXIF orientation, 16-bit samples, alpha, palettes, gray and 1-bit images. The files are
// written here byte by byte from the formats' specifications (PNG, TIFF, EXIF, Netpbm; JPEG and
// WebP bitstreams come from cv::imencode), and each decoded image is checked three ways:
//   - against an expectation computed here from the known source pixels (the orientation
//     transforms written from the EXIF definition, v >> 8 or round(v / 257) for 16 bits, ...),
//   - against cv::imread(path, IMREAD_COLOR) + BGR -> RGB (IMREAD_GRAYSCALE for one channel),
//   - read_image on the file against decode_image on the same bytes in memory.
// What OpenCV (4.6, the version biref links) does, case by case, is written at each test.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <string>
#include <vector>

#include "biref/image.h"
#include "test_util.h"

namespace biref {
namespace {

namespace fs = std::filesystem;

// ---- byte writers ----------------------------------------------------------------------------

void put_be16(std::string& s, uint32_t v) {
  s += char((v >> 8) & 255);
  s += char(v & 255);
}
void put_be32(std::string& s, uint32_t v) {
  put_be16(s, v >> 16);
  put_be16(s, v & 0xFFFF);
}
void put_le16(std::string& s, uint32_t v) {
  s += char(v & 255);
  s += char((v >> 8) & 255);
}
void put_le32(std::string& s, uint32_t v) {
  put_le16(s, v & 0xFFFF);
  put_le16(s, v >> 16);
}

// Samples (row-major, interleaved) packed `bits` to a sample, each row starting on a byte: 1, 2
// and 4 bits most significant first, 16 bits big-endian (PNG) or little-endian (TIFF "II").
std::string pack_rows(int w, int h, int spp, int bits, const std::vector<uint16_t>& samples,
                      bool big_endian, bool filter_byte) {
  std::string out;
  const size_t row = size_t(w) * spp;
  for (int y = 0; y < h; ++y) {
    if (filter_byte) out += '\0';  // PNG filter type 0 (none)
    const uint16_t* s = samples.data() + size_t(y) * row;
    if (bits == 16) {
      for (size_t i = 0; i < row; ++i) (big_endian ? put_be16 : put_le16)(out, s[i]);
    } else if (bits == 8) {
      for (size_t i = 0; i < row; ++i) out += char(s[i]);
    } else {
      uint32_t acc = 0;
      int used = 0;
      for (size_t i = 0; i < row; ++i) {
        acc = acc << bits | s[i];
        used += bits;
        if (used == 8) {
          out += char(acc);
          acc = 0;
          used = 0;
        }
      }
      if (used) out += char(acc << (8 - used));
    }
  }
  return out;
}

uint32_t crc32_of(const std::string& s) {  // PNG's CRC (ISO 3309), bit by bit
  uint32_t c = 0xFFFFFFFFu;
  for (const unsigned char b : s) {
    c ^= b;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
  }
  return ~c;
}

// A zlib stream of stored (uncompressed) deflate blocks, with its Adler-32.
std::string zlib_stored(const std::string& raw) {
  std::string z = "\x78\x01";
  size_t at = 0;
  do {
    const size_t n = std::min<size_t>(65535, raw.size() - at);
    z += char(at + n == raw.size() ? 1 : 0);  // BFINAL on the last block, BTYPE 00
    put_le16(z, uint32_t(n));
    put_le16(z, uint32_t(~n & 0xFFFF));
    z += raw.substr(at, n);
    at += n;
  } while (at < raw.size());
  uint32_t a = 1, b = 0;
  for (const unsigned char c : raw) {
    a = (a + c) % 65521;
    b = (b + a) % 65521;
  }
  put_be32(z, b << 16 | a);
  return z;
}

std::string png_chunk(const std::string& type, const std::string& data) {
  std::string c;
  put_be32(c, uint32_t(data.size()));
  c += type + data;
  put_be32(c, crc32_of(type + data));
  return c;
}

// PNG colour types: 0 gray, 2 RGB, 3 palette, 4 gray + alpha, 6 RGBA.
std::string png_file(int w, int h, int bits, int color_type, const std::vector<uint16_t>& samples,
                     const std::string& chunks_before_idat = "") {
  const int spp = color_type == 2 ? 3 : color_type == 4 ? 2 : color_type == 6 ? 4 : 1;
  std::string ihdr;
  put_be32(ihdr, uint32_t(w));
  put_be32(ihdr, uint32_t(h));
  ihdr += char(bits);
  ihdr += char(color_type);
  ihdr += std::string(3, '\0');  // deflate, adaptive filtering, no interlace
  const std::string raw = pack_rows(w, h, spp, bits, samples, true, true);
  return std::string("\x89PNG\r\n\x1a\n", 8) + png_chunk("IHDR", ihdr) + chunks_before_idat +
         png_chunk("IDAT", zlib_stored(raw)) + png_chunk("IEND", "");
}

// A little-endian, uncompressed, single-strip TIFF. photometric: 0 min-is-white, 1 min-is-black,
// 2 RGB. orientation 0: no Orientation tag. extra_sample: the ExtraSamples value of a last
// (alpha) sample, 1 associated, 2 unassociated; -1: none.
std::string tiff_file(int w, int h, int bits, int spp, int photometric,
                      const std::vector<uint16_t>& samples, int orientation = 0,
                      int extra_sample = -1) {
  struct Entry {
    uint16_t tag, type;
    uint32_t count, value;
  };
  const int entries = 10 + (orientation ? 1 : 0) + (extra_sample >= 0 ? 1 : 0);
  const uint32_t after_ifd = 8 + 2 + 12 * uint32_t(entries) + 4;
  std::string tail;  // BitsPerSample out of line when it does not fit four bytes
  uint32_t bps = uint32_t(bits);
  if (spp == 2) bps = uint32_t(bits) | uint32_t(bits) << 16;
  if (spp > 2) {
    bps = after_ifd;
    for (int i = 0; i < spp; ++i) put_le16(tail, uint32_t(bits));
  }
  const std::string data = pack_rows(w, h, spp, bits, samples, false, false);
  const uint32_t data_at = after_ifd + uint32_t(tail.size());
  std::vector<Entry> es = {{256, 4, 1, uint32_t(w)},            // ImageWidth
                           {257, 4, 1, uint32_t(h)},            // ImageLength
                           {258, 3, uint32_t(spp), bps},        // BitsPerSample
                           {259, 3, 1, 1},                      // Compression: none
                           {262, 3, 1, uint32_t(photometric)},  // PhotometricInterpretation
                           {273, 4, 1, data_at}};               // StripOffsets
  if (orientation) es.push_back({274, 3, 1, uint32_t(orientation)});
  es.push_back({277, 3, 1, uint32_t(spp)});          // SamplesPerPixel
  es.push_back({278, 4, 1, uint32_t(h)});            // RowsPerStrip
  es.push_back({279, 4, 1, uint32_t(data.size())});  // StripByteCounts
  es.push_back({284, 3, 1, 1});                      // PlanarConfiguration: chunky
  if (extra_sample >= 0) es.push_back({338, 3, 1, uint32_t(extra_sample)});  // ExtraSamples
  std::string t = "II";
  put_le16(t, 42);
  put_le32(t, 8);
  put_le16(t, uint32_t(es.size()));
  for (const Entry& e : es) {
    put_le16(t, e.tag);
    put_le16(t, e.type);
    put_le32(t, e.count);
    put_le32(t, e.value);  // a SHORT sits in the first two bytes (little-endian)
  }
  put_le32(t, 0);  // no next IFD
  return t + tail + data;
}

// The TIFF structure inside EXIF, IFD0 holding only Orientation (tag 0x0112, SHORT, count 1).
std::string exif_tiff(int orientation, bool big_endian) {
  std::string t = big_endian ? "MM" : "II";
  auto u16 = [&](uint32_t v) { (big_endian ? put_be16 : put_le16)(t, v); };
  auto u32 = [&](uint32_t v) { (big_endian ? put_be32 : put_le32)(t, v); };
  u16(42);
  u32(8);  // IFD0 right after the header
  u16(1);  // one entry
  u16(0x0112);
  u16(3);
  u32(1);
  u16(uint32_t(orientation));
  u16(0);  // the value field's unused half
  u32(0);  // no IFD1
  return t;
}

// An APP1 "Exif" segment spliced right after the SOI marker.
std::string jpeg_with_exif(const std::string& jpeg, int orientation, bool big_endian) {
  const std::string payload = std::string("Exif\0\0", 6) + exif_tiff(orientation, big_endian);
  std::string app1 = "\xFF\xE1";
  put_be16(app1, uint32_t(payload.size() + 2));
  return jpeg.substr(0, 2) + app1 + payload + jpeg.substr(2);
}

// An extended WebP (VP8X) around the VP8L chunk of a simple lossless file, with an EXIF chunk.
std::string webp_with_exif(const std::string& webp, int w, int h, const std::string& exif) {
  std::string body = "WEBP";
  body += "VP8X";
  put_le32(body, 10);
  body += char(0x08);  // EXIF present, no alpha
  body += std::string(3, '\0');
  for (const uint32_t v : {uint32_t(w - 1), uint32_t(h - 1)}) {
    put_le16(body, v & 0xFFFF);
    body += char(v >> 16);
  }
  body += webp.substr(12);  // the VP8L chunk
  body += "EXIF";
  put_le32(body, uint32_t(exif.size()));
  body += exif;
  if (exif.size() % 2) body += '\0';
  std::string riff = "RIFF";
  put_le32(riff, uint32_t(body.size()));
  return riff + body;
}

std::string encoded(const cv::Mat& m, const std::string& ext, const std::vector<int>& params = {}) {
  std::vector<uint8_t> b;
  EXPECT_TRUE(cv::imencode(ext, m, b, params)) << ext;
  return std::string(b.begin(), b.end());
}

// ---- images and expectations -----------------------------------------------------------------

Image make_image(int w, int h, int c) {
  Image im;
  im.width = w;
  im.height = h;
  im.channels = c;
  im.pixels.assign(size_t(w) * h * c, 0);
  return im;
}
uint8_t& at(Image& im, int x, int y, int c) {
  return im.pixels[(size_t(y) * im.width + x) * im.channels + c];
}
uint8_t at(const Image& im, int x, int y, int c) {
  return im.pixels[(size_t(y) * im.width + x) * im.channels + c];
}

// A cv::Mat (8-bit BGR or gray) of `im` (RGB or gray).
cv::Mat to_bgr_mat(const Image& im) {
  cv::Mat m(im.height, im.width, im.channels == 3 ? CV_8UC3 : CV_8UC1);
  for (int y = 0; y < im.height; ++y)
    for (int x = 0; x < im.width; ++x)
      for (int c = 0; c < im.channels; ++c)
        m.ptr<uint8_t>(y)[x * im.channels + c] = at(im, x, y, im.channels == 3 ? 2 - c : c);
  return m;
}

// The image shown upright for EXIF / TIFF orientation `o`, from the definition of the tag: the
// stored row 0 and column 0 are the visual (1) top/left, (2) top/right, (3) bottom/right,
// (4) bottom/left, (5) left/top, (6) right/top, (7) right/bottom, (8) left/bottom.
Image oriented(const Image& s, int o) {
  const int W = s.width, H = s.height;
  const bool swap = o >= 5;
  Image out = make_image(swap ? H : W, swap ? W : H, s.channels);
  for (int y = 0; y < out.height; ++y)
    for (int x = 0; x < out.width; ++x) {
      int sx = x, sy = y;
      switch (o) {
        case 2:
          sx = W - 1 - x;
          break;
        case 3:
          sx = W - 1 - x, sy = H - 1 - y;
          break;
        case 4:
          sy = H - 1 - y;
          break;
        case 5:
          sx = y, sy = x;
          break;  // transpose
        case 6:
          sx = y, sy = H - 1 - x;
          break;  // rotate 90 degrees clockwise
        case 7:
          sx = W - 1 - y, sy = H - 1 - x;
          break;  // transverse
        case 8:
          sx = W - 1 - y, sy = x;
          break;  // rotate 90 degrees counter-clockwise
        default:
          break;
      }
      for (int c = 0; c < s.channels; ++c) at(out, x, y, c) = at(s, sx, sy, c);
    }
  return out;
}

// Three equal channels from a gray image.
Image gray_to_rgb(const Image& g) {
  Image out = make_image(g.width, g.height, 3);
  for (size_t i = 0; i < g.pixels.size(); ++i)
    for (int c = 0; c < 3; ++c) out.pixels[i * 3 + c] = g.pixels[i];
  return out;
}

// ITU-R BT.601 luma of an RGB image, rounded: what every gray conversion of OpenCV and libpng
// approximates (within one level: their fixed-point weights and rounding differ).
Image luma(const Image& rgb) {
  Image out = make_image(rgb.width, rgb.height, 1);
  for (size_t i = 0; i < out.pixels.size(); ++i) {
    const uint8_t* p = rgb.pixels.data() + i * 3;
    out.pixels[i] = uint8_t(std::lround(0.299 * p[0] + 0.587 * p[1] + 0.114 * p[2]));
  }
  return out;
}

// "" when `got` has `want`'s size and channels and every value within `tol`; else what differs.
std::string difference(const Image& got, const Image& want, int tol = 0) {
  char buf[200];
  if (got.width != want.width || got.height != want.height || got.channels != want.channels) {
    std::snprintf(buf, sizeof buf, "got %dx%dx%d, want %dx%dx%d", got.width, got.height,
                  got.channels, want.width, want.height, want.channels);
    return buf;
  }
  const test::ByteDiff d =
      test::byte_diff(got.pixels.data(), want.pixels.data(), got.pixels.size());
  if (d.max <= tol) return "";
  for (size_t i = 0; i < got.pixels.size(); ++i)
    if (std::abs(int(got.pixels[i]) - int(want.pixels[i])) > tol) {
      const size_t px = i / size_t(got.channels);
      std::snprintf(buf, sizeof buf,
                    "%lld values differ by up to %d (tolerance %d); first at x=%d y=%d channel "
                    "%d: got %d, want %d",
                    (long long)d.count, d.max, tol, int(px % size_t(got.width)),
                    int(px / size_t(got.width)), int(i % size_t(got.channels)), got.pixels[i],
                    want.pixels[i]);
      break;
    }
  return buf;
}

// ---- decoding, checked against OpenCV and between file and memory ------------------------------

// A folder of its own per test, removed at the end.
struct TempDir {
  fs::path path;
  TempDir() {
    const auto* t = ::testing::UnitTest::GetInstance()->current_test_info();
    path = fs::temp_directory_path() / ("biref-inputs-" + std::string(t->test_suite_name()) + "-" +
                                        t->name() + "-" + std::to_string(getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// Writes `bytes` to dir/name and decodes the file with biref (1 or 3 channels). Checks, on the
// way, that decode_image on the bytes in memory gives the same image, and that the image is
// exactly cv::imread(path, IMREAD_COLOR) in RGB order (IMREAD_GRAYSCALE for one channel).
Image decode_checked(const TempDir& dir, const std::string& name, const std::string& bytes,
                     int channels = 3) {
  SCOPED_TRACE(name + (channels == 1 ? " (gray)" : " (colour)"));
  const std::string path = (dir.path / name).string();
  test::write_file(path, bytes);
  DecodeOptions options;
  options.channels = channels;
  Image from_file, from_memory;
  try {
    from_file = read_image(path, options);
    from_memory =
        decode_image(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), name, options);
  } catch (const Error& e) {
    ADD_FAILURE() << e.what();
    return {};
  }
  EXPECT_EQ(difference(from_memory, from_file), "") << "decode_image differs from read_image";

  const cv::Mat cv_img = cv::imread(path, channels == 3 ? cv::IMREAD_COLOR : cv::IMREAD_GRAYSCALE);
  EXPECT_FALSE(cv_img.empty()) << "cv::imread cannot read it";
  if (!cv_img.empty()) {
    EXPECT_EQ(cv_img.depth(), CV_8U);
    EXPECT_EQ(cv_img.channels(), channels);
    Image want = make_image(cv_img.cols, cv_img.rows, channels);
    for (int y = 0; y < cv_img.rows; ++y)
      for (int x = 0; x < cv_img.cols; ++x)
        for (int c = 0; c < channels; ++c)
          at(want, x, y, c) = cv_img.ptr<uint8_t>(y)[x * channels + (channels == 3 ? 2 - c : c)];
    EXPECT_EQ(difference(from_file, want), "") << "biref differs from cv::imread";
  }
  return from_file;
}

// One input file and the RGB image it must decode to (within `tol` for lossy formats).
struct Case {
  std::string name;  // file name, its extension only for the reader's eyes
  std::string bytes;
  Image want;
  int tol = 0;
};

// Decodes `k` in colour (against k.want) and in gray (DecodeOptions::channels = 1, what
// `biref eval` uses): a gray source gives its own values, a colour one its luma within one level.
void check_case(const TempDir& dir, const Case& k) {
  SCOPED_TRACE(k.name);
  EXPECT_EQ(difference(decode_checked(dir, k.name, k.bytes, 3), k.want, k.tol), "");
  bool gray = true;
  Image want_gray = make_image(k.want.width, k.want.height, 1);
  for (size_t i = 0; i < want_gray.pixels.size(); ++i) {
    const uint8_t* p = k.want.pixels.data() + i * 3;
    gray = gray && p[0] == p[1] && p[1] == p[2];
    want_gray.pixels[i] = p[0];
  }
  if (!gray) want_gray = luma(k.want);
  EXPECT_EQ(difference(decode_checked(dir, k.name, k.bytes, 1), want_gray, k.tol + (gray ? 0 : 1)),
            "");
}

// A small asymmetric image (every pixel distinct, odd sizes) for the exact orientation checks.
Image asymmetric_rgb(int w, int h) {
  Image im = make_image(w, h, 3);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      at(im, x, y, 0) = uint8_t(20 + 45 * x);
      at(im, x, y, 1) = uint8_t(30 + 70 * y);
      at(im, x, y, 2) = uint8_t(200 - 13 * (x + w * y));
    }
  return im;
}

std::vector<uint16_t> samples_of(const Image& im) {
  return std::vector<uint16_t>(im.pixels.begin(), im.pixels.end());
}

// "o<orientation><rest>". (Built with +=: GCC 12 warns falsely, -Wrestrict, on "o" + string.)
std::string file_name(int orientation, const char* rest) {
  std::string s = "o";
  s += std::to_string(orientation);
  s += rest;
  return s;
}

// ---- 1. orientation ------------------------------------------------------------------------

// JPEG with an EXIF APP1 segment: OpenCV applies orientations 1..8 (IMREAD_COLOR and
// IMREAD_GRAYSCALE; only IMREAD_UNCHANGED and IMREAD_IGNORE_ORIENTATION leave it), with the
// EXIF block in either byte order. JPEG is lossy, so the geometry is checked on 16x16 flat blocks
// (one per chroma-subsampled MCU) within a tolerance, and exactly against the file without EXIF
// decoded and transformed here.
TEST(ImageInputs, JpegExifOrientationIsApplied) {
  TempDir dir;
  const int bw = 4, bh = 3, block = 16;  // 4x3 blocks of 12 distinct colours: 64x48 pixels
  const uint8_t colours[12][3] = {{255, 0, 0},   {0, 255, 0},   {0, 0, 255}, {255, 255, 0},
                                  {0, 255, 255}, {255, 0, 255}, {0, 0, 0},   {255, 255, 255},
                                  {128, 0, 0},   {0, 128, 0},   {0, 0, 128}, {128, 128, 128}};
  Image src = make_image(bw * block, bh * block, 3);
  Image blocks = make_image(bw, bh, 3);  // one pixel per block: its colour
  for (int y = 0; y < src.height; ++y)
    for (int x = 0; x < src.width; ++x)
      for (int c = 0; c < 3; ++c) at(src, x, y, c) = colours[(y / block) * bw + x / block][c];
  for (int y = 0; y < bh; ++y)
    for (int x = 0; x < bw; ++x)
      for (int c = 0; c < 3; ++c) at(blocks, x, y, c) = colours[y * bw + x][c];
  const std::string jpeg = encoded(to_bgr_mat(src), ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95});
  // The pixel at the centre of each block (near the edges the subsampled chroma blends).
  auto centres = [&](const Image& im) {
    Image out = make_image(im.width / block, im.height / block, 3);
    for (int y = 0; y < out.height; ++y)
      for (int x = 0; x < out.width; ++x)
        for (int c = 0; c < 3; ++c)
          at(out, x, y, c) = at(im, x * block + block / 2, y * block + block / 2, c);
    return out;
  };
  const Image plain = decode_checked(dir, "plain.jpg", jpeg);
  const Image plain_gray = decode_checked(dir, "plain.jpg", jpeg, 1);
  ASSERT_EQ(difference(centres(plain), blocks, 12), "");

  for (const bool big_endian : {true, false}) {
    for (int o = 1; o <= 8; ++o) {
      SCOPED_TRACE(file_name(o, big_endian ? " MM" : " II"));
      const std::string name = file_name(o, big_endian ? "mm.jpg" : "ii.jpg");
      const std::string bytes = jpeg_with_exif(jpeg, o, big_endian);
      const Image got = decode_checked(dir, name, bytes);
      ASSERT_EQ(got.width % block + got.height % block, 0);
      EXPECT_EQ(difference(got, oriented(plain, o)), "");
      EXPECT_EQ(difference(decode_checked(dir, name, bytes, 1), oriented(plain_gray, o)), "");
      // Geometry from the source colours alone: the centre of each block.
      EXPECT_EQ(difference(centres(got), oriented(blocks, o), 12), "");
    }
  }
}

// PNG with an eXIf chunk (EXIF's TIFF structure, no "Exif\0\0" prefix): OpenCV 4.6 applies it.
TEST(ImageInputs, PngExifChunkOrientationIsApplied) {
  TempDir dir;
  const Image src = asymmetric_rgb(5, 3);
  for (int o = 1; o <= 8; ++o) {
    const std::string chunk = png_chunk("eXIf", exif_tiff(o, o % 2 == 0));
    check_case(dir, {file_name(o, ".png"), png_file(5, 3, 8, 2, samples_of(src), chunk),
                     oriented(src, o)});
  }
}

// TIFF's own Orientation tag (274): OpenCV applies 1..8 (the same transforms as EXIF).
TEST(ImageInputs, TiffOrientationTagIsApplied) {
  TempDir dir;
  const Image src = asymmetric_rgb(5, 3);
  check_case(dir, {"none.tif", tiff_file(5, 3, 8, 3, 2, samples_of(src)), src});
  for (int o = 1; o <= 8; ++o)
    check_case(dir, {file_name(o, ".tif"), tiff_file(5, 3, 8, 3, 2, samples_of(src), o),
                     oriented(src, o)});
}

// WebP with an EXIF chunk (extended format, VP8X): OpenCV 4.6 reads no metadata from WebP, so
// the orientation is NOT applied. (Should a later OpenCV apply it, this test says so.)
TEST(ImageInputs, WebpExifOrientationIsIgnoredAsOpenCvDoes) {
  TempDir dir;
  const Image src = asymmetric_rgb(5, 3);
  const std::string webp = encoded(to_bgr_mat(src), ".webp", {cv::IMWRITE_WEBP_QUALITY, 101});
  ASSERT_EQ(webp.substr(12, 4), "VP8L");  // lossless
  for (const int o : {3, 6, 8}) {
    check_case(dir, {file_name(o, ".webp"), webp_with_exif(webp, 5, 3, exif_tiff(o, true)), src});
    check_case(dir,
               {file_name(o, "x.webp"),
                webp_with_exif(webp, 5, 3, std::string("Exif\0\0", 6) + exif_tiff(o, false)), src});
  }
}

// ---- 2. 16-bit samples -----------------------------------------------------------------------

// All 65536 values in a 256x256 image: v = 256 y + x. A colour image holds v, 65535 - v and a
// scrambled v in its three channels.
std::vector<uint16_t> all_16bit_values(int spp) {
  std::vector<uint16_t> s;
  for (uint32_t v = 0; v < 65536; ++v) {
    s.push_back(uint16_t(v));
    if (spp == 3) {
      s.push_back(uint16_t(65535 - v));
      s.push_back(uint16_t((v * 7919) & 0xFFFF));
    }
  }
  return s;
}

Image reduced(const std::vector<uint16_t>& s, int spp, int (*to8)(int)) {
  Image im = make_image(256, 256, 3);
  for (size_t i = 0; i < 65536; ++i)
    for (int c = 0; c < 3; ++c)
      im.pixels[i * 3 + c] = uint8_t(to8(s[i * spp + (spp == 3 ? c : 0)]));
  return im;
}

int high_byte(int v) {
  return v >> 8;
}
int rounded_257(int v) {
  return (v + 128) / 257;
}  // round(v / 257), never a tie: 257 is odd

// PNG (gray and RGB, also with alpha), and TIFF and PGM gray: the high byte, v >> 8 (libpng's
// png_set_strip_16; OpenCV's own 16 -> 8 bit shift). TIFF RGB goes through libtiff's RGBA
// reader, whose table is round(v / 257) = (v + 128) / 257. So 255 -> 0 in all but TIFF RGB,
// where it gives 1; 0x80FF -> 128 everywhere; 65535 -> 255, 32767 -> 127, 32768 -> 128.
TEST(ImageInputs, SixteenBitSamplesAreReducedAsOpenCvDoes) {
  TempDir dir;
  const std::vector<uint16_t> gray = all_16bit_values(1), rgb = all_16bit_values(3);
  const Image gray_high = reduced(gray, 1, high_byte), rgb_high = reduced(rgb, 3, high_byte);
  check_case(dir, {"gray16.png", png_file(256, 256, 16, 0, gray), gray_high});
  check_case(dir, {"rgb16.png", png_file(256, 256, 16, 2, rgb), rgb_high});
  check_case(dir, {"gray16.tif", tiff_file(256, 256, 16, 1, 1, gray), gray_high});
  check_case(dir, {"rgb16.tif", tiff_file(256, 256, 16, 3, 2, rgb), reduced(rgb, 3, rounded_257)});
  std::string pgm = "P5\n256 256\n65535\n";
  for (const uint16_t v : gray) put_be16(pgm, v);
  check_case(dir, {"gray16.pgm", pgm, gray_high});

  // The values named in the brief, spelled out.
  const Image png = decode_checked(dir, "rgb16.png", png_file(256, 256, 16, 2, rgb));
  const Image tif = decode_checked(dir, "rgb16.tif", tiff_file(256, 256, 16, 3, 2, rgb));
  ASSERT_EQ(png.pixels.size(), size_t(65536 * 3));
  ASSERT_EQ(tif.pixels.size(), size_t(65536 * 3));
  const int values[][3] = {{0, 0, 0},          {255, 0, 1},        {256, 1, 1},
                           {32767, 127, 127},  {32768, 128, 128},  {0x80FF, 128, 128},
                           {0x807F, 128, 128}, {0x8080, 128, 128}, {65279, 254, 254},
                           {65407, 255, 255},  {65535, 255, 255}};  // v, PNG, TIFF RGB
  for (const auto& v : values) {
    EXPECT_EQ(png.pixels[size_t(v[0]) * 3], v[1]) << "PNG " << v[0];
    EXPECT_EQ(tif.pixels[size_t(v[0]) * 3], v[2]) << "TIFF " << v[0];
  }

  // With alpha (PNG gray + alpha, RGBA): the alpha is dropped, the colour's high byte kept.
  std::vector<uint16_t> ga, rgba;
  Image ga_want = make_image(4, 1, 3), rgba_want = make_image(4, 1, 3);
  const uint16_t vals[4] = {0x00FF, 0x1234, 0x80FF, 0xFFFF}, alphas[4] = {0, 0x8000, 1, 0xFFFF};
  for (int i = 0; i < 4; ++i) {
    ga.insert(ga.end(), {vals[i], alphas[i]});
    rgba.insert(rgba.end(), {vals[i], uint16_t(~vals[i]), uint16_t(vals[i] ^ 0x5A5A), alphas[i]});
    for (int c = 0; c < 3; ++c) {
      at(ga_want, i, 0, c) = uint8_t(vals[i] >> 8);
      at(rgba_want, i, 0, c) = uint8_t(rgba[size_t(i) * 4 + c] >> 8);
    }
  }
  check_case(dir, {"graya16.png", png_file(4, 1, 16, 4, ga), ga_want});
  check_case(dir, {"rgba16.png", png_file(4, 1, 16, 6, rgba), rgba_want});
}

// Netpbm's maxval is not used to rescale by OpenCV 4.6: a PGM with maxval 100 gives its samples
// as they are (100 stays 100, not 255), one with maxval 1000 (16-bit samples) gives v >> 8.
TEST(ImageInputs, PgmMaxvalIsNotRescaledAsOpenCvDoes) {
  TempDir dir;
  Image want8 = make_image(4, 1, 3), want16 = make_image(5, 1, 3);
  std::string p8 = "P5\n4 1\n100\n", p16 = "P5\n5 1\n1000\n";
  const int v8[4] = {0, 50, 99, 100}, v16[5] = {0, 255, 256, 999, 1000};
  for (int i = 0; i < 4; ++i) {
    p8 += char(v8[i]);
    for (int c = 0; c < 3; ++c) at(want8, i, 0, c) = uint8_t(v8[i]);
  }
  for (int i = 0; i < 5; ++i) {
    put_be16(p16, uint32_t(v16[i]));
    for (int c = 0; c < 3; ++c) at(want16, i, 0, c) = uint8_t(v16[i] >> 8);
  }
  check_case(dir, {"max100.pgm", p8, want8});
  check_case(dir, {"max1000.pgm", p16, want16});
}

// ---- 3. alpha --------------------------------------------------------------------------------

// The alpha channel is dropped and the colours kept as stored, not premultiplied: PNG RGBA,
// gray + alpha, palette with tRNS, gray with tRNS, WebP lossless RGBA, TIFF with associated
// alpha. The one exception is TIFF with unassociated alpha (ExtraSamples = 2): libtiff's RGBA
// reader, which OpenCV uses for it, premultiplies, (v a + 127) / 255.
TEST(ImageInputs, AlphaIsDroppedAsOpenCvDoes) {
  TempDir dir;
  const uint8_t px[5][4] = {
      {10, 20, 30, 255}, {200, 100, 50, 128}, {1, 2, 3, 1}, {250, 251, 252, 0}, {90, 80, 70, 64}};
  std::vector<uint16_t> rgba;
  Image colours = make_image(5, 1, 3), premultiplied = make_image(5, 1, 3);
  for (int i = 0; i < 5; ++i) {
    rgba.insert(rgba.end(), px[i], px[i] + 4);
    for (int c = 0; c < 3; ++c) {
      at(colours, i, 0, c) = px[i][c];
      at(premultiplied, i, 0, c) = uint8_t((px[i][c] * px[i][3] + 127) / 255);
    }
  }
  check_case(dir, {"rgba.png", png_file(5, 1, 8, 6, rgba), colours});
  check_case(dir, {"rgba-assoc.tif", tiff_file(5, 1, 8, 4, 2, rgba, 0, 1), colours});
  check_case(dir, {"rgba-unassoc.tif", tiff_file(5, 1, 8, 4, 2, rgba, 0, 2), premultiplied});

  // WebP lossless: libwebp's encoder may rewrite the colour under alpha 0 (it is invisible), so
  // alpha runs from 1 here; (1, 2, 3) under alpha 1 would be (0, 0, 0) if premultiplied.
  cv::Mat bgra(1, 5, CV_8UC4);
  Image webp_want = make_image(5, 1, 3);
  for (int i = 0; i < 5; ++i) {
    const uint8_t a = std::max<uint8_t>(px[i][3], 1);
    bgra.at<cv::Vec4b>(0, i) = cv::Vec4b(px[i][2], px[i][1], px[i][0], a);
    for (int c = 0; c < 3; ++c) at(webp_want, i, 0, c) = px[i][c];
  }
  const std::string webp = encoded(bgra, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101});
  ASSERT_EQ(webp.substr(12, 4), "VP8L");
  check_case(dir, {"rgba.webp", webp, webp_want});

  // Gray + alpha: three equal channels, the gray kept.
  const uint8_t ga[4][2] = {{0, 255}, {100, 0}, {200, 128}, {255, 7}};
  std::vector<uint16_t> ga_samples;
  Image ga_want = make_image(4, 1, 3);
  for (int i = 0; i < 4; ++i) {
    ga_samples.insert(ga_samples.end(), ga[i], ga[i] + 2);
    for (int c = 0; c < 3; ++c) at(ga_want, i, 0, c) = ga[i][0];
  }
  check_case(dir, {"graya.png", png_file(4, 1, 8, 4, ga_samples), ga_want});

  // Palette with a tRNS chunk (entry 0 fully transparent, 1 half): the palette colours.
  std::string plte;
  for (int i = 0; i < 4; ++i) plte.append(reinterpret_cast<const char*>(px[i]), 3);
  const std::string trns("\x00\x80", 2);  // entries 2 and 3 stay opaque
  const std::vector<uint16_t> idx = {0, 1, 2, 3, 3, 0};
  Image pal_want = make_image(6, 1, 3);
  for (int i = 0; i < 6; ++i)
    for (int c = 0; c < 3; ++c) at(pal_want, i, 0, c) = px[idx[size_t(i)]][c];
  const std::string chunks = png_chunk("PLTE", plte) + png_chunk("tRNS", trns);
  check_case(dir, {"palette-trns.png", png_file(6, 1, 8, 3, idx, chunks), pal_want});
  check_case(dir, {"palette2-trns.png", png_file(6, 1, 2, 3, idx, chunks), pal_want});

  // Gray with a tRNS colour key (value 0 transparent): the gray values.
  Image key_want = make_image(4, 1, 3);
  const std::vector<uint16_t> key = {0, 64, 128, 255};
  for (int i = 0; i < 4; ++i)
    for (int c = 0; c < 3; ++c) at(key_want, i, 0, c) = uint8_t(key[size_t(i)]);
  check_case(dir, {"gray-trns.png",
                   png_file(4, 1, 8, 0, key, png_chunk("tRNS", std::string(2, '\0'))), key_want});
}

// ---- 4. gray and 1-bit -----------------------------------------------------------------------

// 8-bit gray in every format: three equal channels (and, with channels = 1, the values as they
// are). Gray JPEG is lossy: flat 16x16 blocks, within a tolerance, and its three channels equal.
TEST(ImageInputs, GrayBecomesThreeEqualChannels) {
  TempDir dir;
  Image g = make_image(7, 3, 1);
  for (size_t i = 0; i < g.pixels.size(); ++i) g.pixels[i] = uint8_t((i * 37 + 5) % 256);
  g.pixels[0] = 0;
  g.pixels[1] = 255;
  const Image want = gray_to_rgb(g);
  const std::vector<uint16_t> s = samples_of(g);
  check_case(dir, {"gray.png", png_file(7, 3, 8, 0, s), want});
  check_case(dir, {"gray.tif", tiff_file(7, 3, 8, 1, 1, s), want});
  check_case(dir, {"gray.bmp", encoded(to_bgr_mat(g), ".bmp"), want});  // 8-bit palette BMP
  std::string p5 = "P5\n# a comment\n7 3\n255\n", p2 = "P2\n7 3\n255\n";
  for (const uint8_t v : g.pixels) {
    p5 += char(v);
    p2 += std::to_string(v) + " ";
  }
  check_case(dir, {"gray.pgm", p5, want});
  check_case(dir, {"gray-ascii.pgm", p2, want});
  check_case(dir,
             {"gray.webp", encoded(to_bgr_mat(g), ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}), want});

  // JPEG: a single-component (gray) file.
  Image blocks = make_image(64, 48, 1);
  for (int y = 0; y < 48; ++y)
    for (int x = 0; x < 64; ++x) at(blocks, x, y, 0) = uint8_t(((y / 16) * 4 + x / 16) * 23);
  const std::string jpeg = encoded(to_bgr_mat(blocks), ".jpg", {cv::IMWRITE_JPEG_QUALITY, 95});
  ASSERT_EQ(uint8_t(jpeg[jpeg.find("\xFF\xC0") + 9]), 1) << "not a one-component JPEG";
  const Image rgb = decode_checked(dir, "gray.jpg", jpeg);
  const Image one = decode_checked(dir, "gray.jpg", jpeg, 1);
  EXPECT_EQ(difference(rgb, gray_to_rgb(one)), "");  // three channels, all equal to the gray
  EXPECT_EQ(difference(one, blocks, 3), "");
}

// Low bit depths are stretched to 0..255: PNG 1, 2 and 4-bit gray v * 255 / (2^bits - 1);
// PBM (P1, P4): 1 is black, 0 white; TIFF 1-bit by its PhotometricInterpretation.
TEST(ImageInputs, LowBitDepthsAreStretched) {
  TempDir dir;
  const std::vector<uint16_t> bits = {1, 0, 1, 0, 0, 1, 0, 1, 1, 0, 1};  // 11: a partial byte
  auto levels = [](const std::vector<uint16_t>& v, int scale) {
    Image im = make_image(int(v.size()), 1, 3);
    for (size_t i = 0; i < v.size(); ++i)
      for (int c = 0; c < 3; ++c) im.pixels[i * 3 + c] = uint8_t(v[i] * scale);
    return im;
  };
  std::vector<uint16_t> inverted;
  for (const uint16_t b : bits) inverted.push_back(uint16_t(1 - b));
  const Image one_is_white = levels(bits, 255), one_is_black = levels(inverted, 255);
  check_case(dir, {"1bit.png", png_file(11, 1, 1, 0, bits), one_is_white});
  check_case(dir, {"2bit.png", png_file(4, 1, 2, 0, {0, 1, 2, 3}), levels({0, 1, 2, 3}, 85)});
  check_case(dir,
             {"4bit.png", png_file(5, 1, 4, 0, {0, 1, 7, 9, 15}), levels({0, 1, 7, 9, 15}, 17)});
  check_case(dir, {"min-is-black.tif", tiff_file(11, 1, 1, 1, 1, bits), one_is_white});
  check_case(dir, {"min-is-white.tif", tiff_file(11, 1, 1, 1, 0, bits), one_is_black});
  std::string p4 = "P4\n11 1\n", p1 = "P1\n11 1\n";
  p4 += pack_rows(11, 1, 1, 1, bits, true, false);
  for (const uint16_t b : bits) p1 += std::to_string(b) + " ";
  check_case(dir, {"bits.pbm", p4, one_is_black});
  check_case(dir, {"bits-ascii.pbm", p1, one_is_black});
}

// ---- 5. DecodeOptions::channels = 1 on colour sources -------------------------------------------

// Every colour source in gray is cv::imread's IMREAD_GRAYSCALE (decode_checked compares them
// exactly) and, independently, the BT.601 luma within one level: libpng converts with its own
// weights (pure green 149), OpenCV's cvtColor with others (150).
TEST(ImageInputs, GrayOptionOnColourSourcesMatchesImreadGrayscale) {
  TempDir dir;
  const Image src = asymmetric_rgb(5, 3);
  const cv::Mat bgr = to_bgr_mat(src);
  check_case(dir, {"rgb.png", png_file(5, 3, 8, 2, samples_of(src)), src});
  check_case(dir, {"rgb.tif", tiff_file(5, 3, 8, 3, 2, samples_of(src)), src});
  check_case(dir, {"rgb.bmp", encoded(bgr, ".bmp"), src});
  check_case(dir, {"rgb.ppm", encoded(bgr, ".ppm"), src});
  check_case(dir, {"rgb.webp", encoded(bgr, ".webp", {cv::IMWRITE_WEBP_QUALITY, 101}), src});
  Image primaries = make_image(3, 1, 3);
  for (int i = 0; i < 3; ++i) at(primaries, i, 0, i) = 255;
  check_case(dir, {"primaries.png", png_file(3, 1, 8, 2, samples_of(primaries)), primaries});
  check_case(dir, {"primaries.bmp", encoded(to_bgr_mat(primaries), ".bmp"), primaries});
}

}  // namespace
}  // namespace biref
