// Image decoding with the size known first: biref reads the header of each format it accepts
// itself (a few dozen bytes), checks the declared size against the pixel limit, then lets OpenCV
// decode straight into the output buffer. OpenCV alone would allocate whatever a header declares
// (a 1 MB PNG can declare 20000x20000 pixels) before reading a single pixel.
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

#include "core/atomic_file.h"
#include "core/check.h"
#include "core/file.h"
#include "image/codec.h"

namespace biref {

namespace fs = std::filesystem;

namespace {

uint32_t be16(const uint8_t* p) {
  return uint32_t(p[0]) << 8 | p[1];
}
uint32_t be32(const uint8_t* p) {
  return be16(p) << 16 | be16(p + 2);
}
uint32_t le16(const uint8_t* p) {
  return uint32_t(p[1]) << 8 | p[0];
}
uint32_t le32(const uint8_t* p) {
  return le16(p + 2) << 16 | le16(p);
}
uint64_t le64(const uint8_t* p) {
  return uint64_t(le32(p + 4)) << 32 | le32(p);
}
uint64_t be64(const uint8_t* p) {
  return uint64_t(be32(p)) << 32 | be32(p + 4);
}

bool starts_with(const uint8_t* data, size_t size, const char* magic, size_t n) {
  return size >= n && std::memcmp(data, magic, n) == 0;
}

// Sets the size once, checking that it is positive and fits an int.
void set_size(ImageInfo& info, uint64_t w, uint64_t h, const std::string& name) {
  BIREF_CHECK(w > 0 && h > 0, "image '", name, "': its ", info.format, " header declares ", w, "x",
              h, " pixels");
  BIREF_CHECK(w <= uint64_t(INT32_MAX) && h <= uint64_t(INT32_MAX), "image '", name, "': its ",
              info.format, " header declares ", w, "x", h, " pixels, more than any decoder takes");
  info.width = int(w);
  info.height = int(h);
}

[[noreturn]] void truncated(const ImageInfo& info, const std::string& name) {
  fail("image '", name, "' is not a valid ", info.format,
       " file: its header is truncated or malformed");
}

// JPEG: markers from SOI up to the first start-of-frame, whose payload holds the size.
void probe_jpeg(const uint8_t* d, size_t n, ImageInfo& info, const std::string& name) {
  size_t i = 2;
  while (true) {
    if (i + 1 >= n || d[i] != 0xFF) truncated(info, name);
    while (i + 1 < n && d[i + 1] == 0xFF) ++i;  // fill bytes
    if (i + 1 >= n) truncated(info, name);
    const uint8_t m = d[i + 1];
    i += 2;
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) continue;  // no payload
    if (m == 0xD9 || m == 0xDA) truncated(info, name);  // end of image / scan before any frame
    if (i + 2 > n) truncated(info, name);
    const size_t len = be16(d + i);
    if (len < 2 || i + len > n) truncated(info, name);
    const bool sof = m >= 0xC0 && m <= 0xCF && m != 0xC4 && m != 0xC8 && m != 0xCC;
    if (sof) {
      if (len < 8) truncated(info, name);
      // After the length: precision (1 byte), height, width. A height of 0 (set later by a DNL
      // marker) is refused.
      set_size(info, be16(d + i + 5), be16(d + i + 3), name);
      return;
    }
    i += len;
  }
}

// A JPEG whose data stops early decodes (libjpeg fills the rest with gray and warns) into a
// picture that looks plausible: require the end-of-image marker after the first scan. Inside
// entropy-coded data every 0xFF byte is followed by 0x00 or a restart marker, so FF D9 after the
// start of scan is the end of the image (thumbnails inside EXIF come before the scan).
bool jpeg_is_complete(const uint8_t* d, size_t n) {
  size_t sos = 2;
  while (sos + 3 < n) {  // the first start-of-scan marker, walking the marker segments
    if (d[sos] != 0xFF) return false;
    const uint8_t m = d[sos + 1];
    if (m == 0xFF) {
      ++sos;
      continue;
    }
    if (m == 0xDA) break;
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
      sos += 2;
      continue;
    }
    sos += 2 + be16(d + sos + 2);
  }
  if (sos + 3 >= n) return false;
  for (size_t i = n - 1; i > sos + 1; --i)
    if (d[i - 1] == 0xFF && d[i] == 0xD9) return true;
  return false;
}

// The first `count` decimal fields of a Netpbm header (after "Px"), skipping whitespace and
// #-comments. Returns the offset just past the last field, or 0 when a field is missing or has
// 10 digits or more.
size_t pnm_fields(const uint8_t* d, size_t n, int count, uint64_t* out) {
  size_t i = 2;
  for (int f = 0; f < count; ++f) {
    while (i < n && (std::isspace(d[i]) || d[i] == '#')) {
      if (d[i] == '#')
        while (i < n && d[i] != '\n' && d[i] != '\r') ++i;
      else
        ++i;
    }
    uint64_t v = 0;
    size_t digits = 0;
    for (; i < n && std::isdigit(d[i]) && digits < 10; ++i, ++digits) v = v * 10 + (d[i] - '0');
    if (digits == 0 || digits == 10) return 0;
    out[f] = v;
  }
  return i;
}

// Whether the data holds everything its header announces, for the formats whose decoders would
// otherwise print their own complaint (libpng, OpenCV's BMP and PNM readers) or decode a partial
// picture: a truncated file is then one clear error. Formats and variants whose size cannot be
// known from the header (compressed BMP, ASCII PNM) are left to the decoder.
bool is_complete(const ImageInfo& info, const uint8_t* d, size_t n) {
  if (info.format == "JPEG") return jpeg_is_complete(d, n);
  if (info.format == "PNG") {  // every chunk whole, up to IEND
    for (size_t at = 8; at + 12 <= n;) {
      const uint64_t len = be32(d + at);
      if (len > n - at - 12) return false;
      if (std::memcmp(d + at + 4, "IEND", 4) == 0) return true;
      at += 12 + size_t(len);
    }
    return false;
  }
  if (info.format == "WebP") return n - 8 >= le32(d + 4);  // the RIFF size
  if (info.format == "BMP") {
    const uint32_t dib = le32(d + 14);
    const uint64_t bpp = dib == 12 ? le16(d + 24) : (n >= 34 ? le16(d + 28) : 0);
    const uint32_t compression = dib == 12 || n < 34 ? 0 : le32(d + 30);
    if (bpp == 0 || (compression != 0 && compression != 3)) return true;  // RLE, JPEG, PNG inside
    const uint64_t row = (uint64_t(info.width) * bpp + 31) / 32 * 4;
    return uint64_t(le32(d + 10)) + row * uint64_t(info.height) <= n;
  }
  if (info.format == "PNM" && d[1] >= '4') {  // binary: one whitespace after maxval, then data
    uint64_t fields[3] = {0, 0, 1};           // width, height, maxval (P4 has none)
    size_t i = pnm_fields(d, n, d[1] == '4' ? 2 : 3, fields);
    if (i == 0) return false;  // no maxval
    const uint64_t maxval = fields[2];
    ++i;  // the single whitespace before the data
    const uint64_t channels = d[1] == '6' ? 3 : 1, sample = maxval > 255 ? 2 : 1;
    const uint64_t bytes = d[1] == '4'
                               ? (uint64_t(info.width) + 7) / 8 * uint64_t(info.height)
                               : uint64_t(info.width) * uint64_t(info.height) * channels * sample;
    return i <= n && n - i >= bytes;
  }
  return true;
}

// TIFF (classic and BigTIFF), either byte order: ImageWidth (256) and ImageLength (257) of the
// first image file directory, the page OpenCV decodes.
void probe_tiff(const uint8_t* d, size_t n, ImageInfo& info, const std::string& name) {
  const bool le = d[0] == 'I';
  auto u16 = [&](size_t at) -> uint64_t { return le ? le16(d + at) : be16(d + at); };
  auto u32 = [&](size_t at) -> uint64_t { return le ? le32(d + at) : be32(d + at); };
  auto u64 = [&](size_t at) -> uint64_t { return le ? le64(d + at) : be64(d + at); };
  const bool big = u16(2) == 43;
  uint64_t ifd, count;
  size_t entry_size, count_size;
  if (big) {
    if (n < 16 || u16(4) != 8) truncated(info, name);
    ifd = u64(8);
    entry_size = 20;
    count_size = 8;
  } else {
    ifd = u32(4);
    entry_size = 12;
    count_size = 2;
  }
  if (ifd < 8 || ifd > n || n - ifd < count_size) truncated(info, name);
  count = big ? u64(size_t(ifd)) : u16(size_t(ifd));
  const size_t first = size_t(ifd) + count_size;
  if (count > (n - first) / entry_size) truncated(info, name);
  uint64_t w = 0, h = 0;
  for (uint64_t e = 0; e < count; ++e) {
    const size_t at = first + size_t(e) * entry_size;
    const uint64_t tag = u16(at), type = u16(at + 2);
    if (tag != 256 && tag != 257) continue;
    const size_t value = at + (big ? 12 : 8);
    uint64_t v;
    if (type == 3) {  // SHORT
      v = u16(value);
    } else if (type == 4) {  // LONG
      v = u32(value);
    } else if (type == 16 && big) {  // LONG8
      v = u64(value);
    } else {
      truncated(info, name);
    }
    (tag == 256 ? w : h) = v;
  }
  set_size(info, w, h, name);
}

// Netpbm: "P1".."P6", whitespace and #-comments, width, height.
void probe_pnm(const uint8_t* d, size_t n, ImageInfo& info, const std::string& name) {
  uint64_t dims[2] = {0, 0};
  if (pnm_fields(d, n, 2, dims) == 0) truncated(info, name);
  set_size(info, dims[0], dims[1], name);
}

std::string limit_text(int64_t pixels) {
  return str_cat(pixels, " pixels (", pixels / 1000000, " megapixels)");
}

}  // namespace

int64_t default_max_image_pixels() {
  const char* env = std::getenv("BIREF_MAX_IMAGE_PIXELS");
  if (!env || !*env) return kDefaultMaxImagePixels;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(env, &end, 10);
  BIREF_CHECK(errno == 0 && end && *end == '\0' && v > 0, "BIREF_MAX_IMAGE_PIXELS='", env,
              "' is not a positive number of pixels");
  return v;
}

ImageInfo probe_image(const uint8_t* d, size_t n, const std::string& name) {
  ImageInfo info;
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) {
    info.format = "JPEG";
    probe_jpeg(d, n, info, name);
  } else if (starts_with(d, n, "\x89PNG\r\n\x1a\n", 8)) {
    info.format = "PNG";
    if (n < 24 || std::memcmp(d + 12, "IHDR", 4) != 0) truncated(info, name);
    set_size(info, be32(d + 16), be32(d + 20), name);
  } else if (starts_with(d, n, "RIFF", 4) && n >= 12 && std::memcmp(d + 8, "WEBP", 4) == 0) {
    info.format = "WebP";
    if (n < 30) truncated(info, name);
    if (std::memcmp(d + 12, "VP8 ", 4) == 0) {  // lossy: key frame start code, 14-bit sizes
      if (d[23] != 0x9D || d[24] != 0x01 || d[25] != 0x2A) truncated(info, name);
      set_size(info, le16(d + 26) & 0x3FFF, le16(d + 28) & 0x3FFF, name);
    } else if (std::memcmp(d + 12, "VP8L", 4) == 0) {  // lossless: 14-bit sizes minus one
      if (d[20] != 0x2F) truncated(info, name);
      const uint32_t bits = le32(d + 21);
      set_size(info, (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, name);
    } else if (std::memcmp(d + 12, "VP8X", 4) == 0) {  // extended: 24-bit canvas sizes minus one
      if (n < 31) truncated(info, name);
      set_size(info, (le32(d + 24) & 0xFFFFFF) + 1, (le32(d + 27) & 0xFFFFFF) + 1, name);
    } else {
      truncated(info, name);
    }
  } else if (n >= 8 && (starts_with(d, n, "II", 2) || starts_with(d, n, "MM", 2)) &&
             ((d[0] == 'I' && (le16(d + 2) == 42 || le16(d + 2) == 43)) ||
              (d[0] == 'M' && (be16(d + 2) == 42 || be16(d + 2) == 43)))) {
    info.format = "TIFF";
    probe_tiff(d, n, info, name);
  } else if (starts_with(d, n, "BM", 2)) {
    info.format = "BMP";
    if (n < 26) truncated(info, name);
    const uint32_t dib = le32(d + 14);
    if (dib == 12) {
      set_size(info, le16(d + 18), le16(d + 20), name);
    } else {
      const int32_t w = int32_t(le32(d + 18)), h = int32_t(le32(d + 22));  // h < 0: top-down
      if (w <= 0 || h == INT32_MIN) truncated(info, name);
      set_size(info, uint64_t(w), uint64_t(h < 0 ? -int64_t(h) : h), name);
    }
  } else if (n >= 3 && d[0] == 'P' && d[1] >= '1' && d[1] <= '6' && std::isspace(d[2])) {
    info.format = "PNM";
    probe_pnm(d, n, info, name);
  } else {
    fail("image '", name, "' is not an image biref reads (JPEG, PNG, WebP, TIFF, BMP or PNM)",
         n == 0 ? ": the file is empty" : "");
  }
  return info;
}

Image decode_image(const uint8_t* data, size_t size, const std::string& name,
                   const DecodeOptions& options) {
  BIREF_CHECK(options.channels == 1 || options.channels == 3, "decode_image: ", options.channels,
              " channels requested (1 or 3)");
  const int64_t limit = options.max_pixels > 0 ? options.max_pixels : default_max_image_pixels();
  const ImageInfo info = probe_image(data, size, name);
  const int64_t pixels = int64_t(info.width) * info.height;
  BIREF_CHECK_KIND(pixels <= limit, ErrorKind::TooLarge, "image '", name, "' is ", info.width, "x", info.height, " = ",
              limit_text(pixels), ", above the limit of ", limit_text(limit),
              "; raise it with --max-image-pixels or BIREF_MAX_IMAGE_PIXELS if this is intended");
  BIREF_CHECK(is_complete(info, data, size), "image '", name, "' is a truncated ", info.format,
              " file (", size, " bytes; its data ends before the end its header announces)");

  // OpenCV decodes into a matrix of its own (a destination passed in could not tell a decoder
  // that failed on the header from one that succeeded), then the colour conversion writes
  // straight into the returned buffer: two full-size copies at the peak, not three.
  BIREF_CHECK(size <= size_t(INT32_MAX), "image '", name, "' is larger than 2 GiB");
  const cv::Mat buf(1, int(size), CV_8U, const_cast<uint8_t*>(data));
  const int flags = options.channels == 3 ? cv::IMREAD_COLOR : cv::IMREAD_GRAYSCALE;
  cv::Mat decoded;
  try {
    decoded = cv::imdecode(buf, flags);
  } catch (const cv::Exception& e) {
    fail("cannot decode image '", name, "' (", info.format, "): ", e.err);
  }
  BIREF_CHECK(!decoded.empty(), "cannot decode image '", name, "': the ", info.format,
              " data is corrupt or truncated");
  const int type = options.channels == 3 ? CV_8UC3 : CV_8UC1;
  // The same size, or swapped by an EXIF rotation.
  BIREF_CHECK(decoded.type() == type && int64_t(decoded.rows) * decoded.cols == pixels, "image '",
              name, "' decoded to ", decoded.cols, "x", decoded.rows,
              " although its header declares ", info.width, "x", info.height);
  Image im;
  im.width = decoded.cols;
  im.height = decoded.rows;
  im.channels = options.channels;
  im.pixels.resize(size_t(pixels) * size_t(options.channels));
  cv::Mat out(im.height, im.width, type, im.pixels.data());
  if (options.channels == 3)
    cv::cvtColor(decoded, out, cv::COLOR_BGR2RGB);
  else
    decoded.copyTo(out);
  return im;
}

Image read_image(const std::string& path, const DecodeOptions& options) {
  const MappedFile file(path, "image");
  return decode_image(file.data(), file.size(), path, options);
}

bool can_write_image(const std::string& path) {
  const std::string ext = fs::path(path).extension().string();
  return !ext.empty() && cv::haveImageWriter("x" + ext);
}

void check_image(const Image& image, const char* what) {
  BIREF_CHECK(image.width > 0 && image.height > 0 &&
                  (image.channels == 1 || image.channels == 3 || image.channels == 4),
              what, ": not an image (", image.width, "x", image.height, ", ", image.channels,
              " channels)");
  BIREF_CHECK(image.pixels.size() == size_t(image.width) * image.height * image.channels, what,
              ": ", image.pixels.size(), " bytes of pixels for ", image.width, "x", image.height,
              "x", image.channels);
}

std::vector<uint8_t> encode_image(const Image& image, const std::string& ext) {
  check_image(image, "encode_image");
  const int type = image.channels == 1 ? CV_8UC1 : (image.channels == 3 ? CV_8UC3 : CV_8UC4);
  cv::Mat m(image.height, image.width, type, const_cast<uint8_t*>(image.pixels.data()));
  cv::Mat out;
  if (image.channels == 3) {
    cv::cvtColor(m, out, cv::COLOR_RGB2BGR);
  } else if (image.channels == 4) {
    cv::cvtColor(m, out, cv::COLOR_RGBA2BGRA);
  } else {
    out = m;
  }
  std::vector<uchar> buf;
  bool ok = false;
  try {
    ok = !ext.empty() && cv::imencode(ext, out, buf);
  } catch (const cv::Exception&) {
    ok = false;
  }
  BIREF_CHECK(ok, "cannot encode an image as '", ext, "': unsupported format");
  return buf;
}

void write_image(const std::string& path, const Image& image) {
  const std::string ext = fs::path(path).extension().string();
  BIREF_CHECK(!ext.empty(), "output '", path, "' has no extension (e.g. .png)");
  std::vector<uint8_t> buf;
  try {
    buf = encode_image(image, ext);
  } catch (const Error& e) {
    fail("cannot write '", path, "': ", e.what());
  }
  AtomicFile file(path);
  FILE* f = std::fopen(file.temp_path().c_str(), "wb");
  BIREF_CHECK(f, "cannot write '", path, "': ", std::strerror(errno));
  const size_t n = std::fwrite(buf.data(), 1, buf.size(), f);
  const bool flushed = n == buf.size() && std::fflush(f) == 0;
  const bool good = std::fclose(f) == 0 && flushed;  // close reports delayed write errors
  BIREF_CHECK(good, "error writing '", path, "' (disk full?)");
  file.commit();
}

}  // namespace biref
