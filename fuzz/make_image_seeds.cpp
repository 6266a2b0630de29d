// Writes the seed corpus of fuzz_image: each source image, shrunk to a few pixels so that the
// fuzzer runs fast, encoded in every format and variant the decoder has a path for (JPEG
// baseline / progressive / gray / with an EXIF orientation, PNG 8 / 16-bit, gray / RGBA, WebP
// lossy / lossless, TIFF, BMP, binary and ASCII PBM / PGM / PPM). Every file is written twice,
// behind a first byte of 0 and of 1, which fuzz_image reads as "decode to RGB" and "to gray".
//
// Usage: fuzz_image_seeds OUT_DIR IMAGE...
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace {

using Bytes = std::vector<uchar>;

void write_seed(const std::string& dir, const std::string& name, const Bytes& bytes) {
  for (const char prefix : {'\0', '\1'}) {
    std::ofstream f(dir + "/" + name + (prefix ? ".gray" : ".rgb"), std::ios::binary);
    f.put(prefix);
    f.write(reinterpret_cast<const char*>(bytes.data()), std::streamsize(bytes.size()));
  }
}

Bytes encode(const std::string& ext, const cv::Mat& image, const std::vector<int>& params = {}) {
  Bytes out;
  if (!cv::imencode(ext, image, out, params)) {
    std::fprintf(stderr, "fuzz_image_seeds: cannot encode %s\n", ext.c_str());
    std::exit(1);
  }
  return out;
}

// A JPEG with an APP1 Exif segment right after SOI, holding one IFD entry: Orientation
// (tag 0x0112, SHORT) = `orientation`, in a big-endian TIFF structure.
Bytes with_exif_orientation(const Bytes& jpeg, int orientation) {
  // One row per field.
  // clang-format off
  const Bytes app1 = {
      0xFF, 0xE1, 0x00, 0x22,                          // APP1, length 34 (itself included)
      'E',  'x',  'i',  'f',  0x00, 0x00,              // Exif identifier
      'M',  'M',  0x00, 0x2A, 0x00, 0x00, 0x00, 0x08,  // TIFF header, first IFD at 8
      0x00, 0x01,                                      // one entry
      0x01, 0x12, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01,  // Orientation, SHORT, count 1
      0x00, uchar(orientation), 0x00, 0x00,            // the value, padded to 4 bytes
      0x00, 0x00, 0x00, 0x00,                          // no next IFD
  };
  // clang-format on
  Bytes out(jpeg.begin(), jpeg.begin() + 2);  // SOI
  out.insert(out.end(), app1.begin(), app1.end());
  out.insert(out.end(), jpeg.begin() + 2, jpeg.end());
  return out;
}

void write_all_formats(const std::string& dir, const std::string& stem, const cv::Mat& bgr) {
  cv::Mat gray, bgra, bgr16, gray16, bilevel;
  cv::cvtColor(bgr, gray, cv::COLOR_BGR2GRAY);
  cv::cvtColor(bgr, bgra, cv::COLOR_BGR2BGRA);
  for (int y = 0; y < bgra.rows; ++y) bgra.at<cv::Vec4b>(y, 0)[3] = 0;  // some transparency
  bgr.convertTo(bgr16, CV_16U, 257);
  gray.convertTo(gray16, CV_16U, 257);
  cv::threshold(gray, bilevel, 127, 255, cv::THRESH_BINARY);

  const Bytes jpeg = encode(".jpg", bgr, {cv::IMWRITE_JPEG_QUALITY, 90});
  write_seed(dir, stem + ".jpg", jpeg);
  write_seed(dir, stem + ".progressive.jpg",
             encode(".jpg", bgr, {cv::IMWRITE_JPEG_PROGRESSIVE, 1}));
  write_seed(dir, stem + ".gray.jpg", encode(".jpg", gray));
  write_seed(dir, stem + ".exif6.jpg", with_exif_orientation(jpeg, 6));
  write_seed(dir, stem + ".exif3.jpg", with_exif_orientation(jpeg, 3));
  write_seed(dir, stem + ".png", encode(".png", bgr));
  write_seed(dir, stem + ".gray.png", encode(".png", gray));
  write_seed(dir, stem + ".rgba.png", encode(".png", bgra));
  write_seed(dir, stem + ".16.png", encode(".png", bgr16));
  write_seed(dir, stem + ".gray16.png", encode(".png", gray16));
  write_seed(dir, stem + ".bilevel.png", encode(".png", bilevel, {cv::IMWRITE_PNG_BILEVEL, 1}));
  write_seed(dir, stem + ".webp", encode(".webp", bgr, {cv::IMWRITE_WEBP_QUALITY, 80}));
  write_seed(dir, stem + ".lossless.webp", encode(".webp", bgra, {cv::IMWRITE_WEBP_QUALITY, 101}));
  write_seed(dir, stem + ".tif", encode(".tiff", bgr));
  write_seed(dir, stem + ".16.tif", encode(".tiff", gray16));
  write_seed(dir, stem + ".bmp", encode(".bmp", bgr));
  write_seed(dir, stem + ".gray.bmp", encode(".bmp", gray));
  for (const int binary : {1, 0}) {
    const std::string kind = binary ? "" : ".ascii";
    write_seed(dir, stem + kind + ".ppm", encode(".ppm", bgr, {cv::IMWRITE_PXM_BINARY, binary}));
    write_seed(dir, stem + kind + ".pgm", encode(".pgm", gray, {cv::IMWRITE_PXM_BINARY, binary}));
    write_seed(dir, stem + kind + ".pbm",
               encode(".pbm", bilevel, {cv::IMWRITE_PXM_BINARY, binary}));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: fuzz_image_seeds OUT_DIR IMAGE...\n");
    return 2;
  }
  const std::string dir = argv[1];
  for (int i = 2; i < argc; ++i) {
    const cv::Mat source = cv::imread(argv[i], cv::IMREAD_COLOR);
    if (source.empty()) {
      std::fprintf(stderr, "fuzz_image_seeds: cannot read %s\n", argv[i]);
      return 1;
    }
    // Small sizes keep each run short; an odd, non-square one exercises row padding (BMP rows
    // are padded to 4 bytes, PBM rows to 8 pixels).
    for (const cv::Size size : {cv::Size(24, 16), cv::Size(5, 3)}) {
      cv::Mat small;
      cv::resize(source, small, size, 0, 0, cv::INTER_AREA);
      std::string stem = argv[i];
      stem = stem.substr(stem.find_last_of('/') + 1);
      stem = stem.substr(0, stem.find('.')) + "-" + std::to_string(size.width) + "x" +
             std::to_string(size.height);
      write_all_formats(dir, stem, small);
    }
  }
  return 0;
}
