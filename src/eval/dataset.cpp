#include "eval/dataset.h"

#include <algorithm>
#include <cctype>
#include <exception>
#include <filesystem>
#include <map>
#include <opencv2/core/utility.hpp>
#include <stdexcept>
#include <thread>

#include "biref/image.h"
#include "biref/threads.h"
#include "core/check.h"
#include "core/pool.h"

namespace biref::eval {

namespace fs = std::filesystem;

namespace {

std::string lower(std::string s) {
  for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// name -> path of the images of one folder, with duplicates reported.
std::map<std::string, std::string> list_images(const std::string& dir, const char* what,
                                               std::vector<Problem>& problems) {
  std::error_code ec;
  BIREF_CHECK(fs::is_directory(dir, ec), what, " folder not found: ", dir);
  const auto& exts = image_extensions();
  struct Found {
    std::string path;
    size_t rank;
  };
  std::map<std::string, std::vector<Found>> by_name;
  fs::directory_iterator it(dir, ec);
  BIREF_CHECK(!ec, "cannot list ", what, " folder ", dir, ": ", ec.message());
  for (const auto& entry : it) {
    if (!entry.is_regular_file(ec)) continue;
    const fs::path& p = entry.path();
    const std::string ext = lower(p.extension().string());
    const auto rank = std::find(exts.begin(), exts.end(), ext);
    if (rank == exts.end()) continue;
    by_name[p.stem().string()].push_back({p.string(), size_t(rank - exts.begin())});
  }
  std::map<std::string, std::string> out;
  for (auto& [name, found] : by_name) {
    std::sort(found.begin(), found.end(), [](const Found& a, const Found& b) {
      return a.rank != b.rank ? a.rank < b.rank : a.path < b.path;
    });
    out[name] = found[0].path;
    for (size_t i = 1; i < found.size(); ++i)
      problems.push_back({found[i].path, str_cat("duplicate ", what, " name, ignored (using ",
                                                 found[0].path, ")")});
  }
  return out;
}

}  // namespace

const std::vector<std::string>& image_extensions() {
  static const std::vector<std::string> exts = {".png",  ".jpg", ".jpeg", ".bmp", ".tif", ".tiff",
                                                ".webp", ".pgm", ".pnm",  ".ppm", ".pbm"};
  return exts;
}

Pairing pair_folders(const std::string& pred_dir, const std::string& gt_dir) {
  Pairing r;
  const auto gts = list_images(gt_dir, "GT", r.problems);
  const auto preds = list_images(pred_dir, "prediction", r.problems);
  for (const auto& [name, gt_path] : gts) {
    const auto p = preds.find(name);
    if (p == preds.end()) {
      r.problems.push_back({gt_path, str_cat("missing prediction: no ", name,
                                             ".{png,jpg,jpeg,bmp,tif,tiff,webp} in ", pred_dir)});
      continue;
    }
    r.pairs.push_back({name, p->second, gt_path});
  }
  for (const auto& [name, pred_path] : preds)
    if (!gts.count(name))
      r.problems.push_back(
          {pred_path, str_cat("prediction without a GT of that name in ", gt_dir)});
  return r;
}

namespace {

// A GT or prediction file that could not be read or decoded: reported and skipped.
struct UnreadableFile {
  std::string file, message;
};

// Restores OpenCV's thread count on every path out of evaluate_pairs.
class CvThreadsGuard {
 public:
  explicit CvThreadsGuard(bool single) : saved_(cv::getNumThreads()), changed_(single) {
    if (changed_) cv::setNumThreads(1);
  }
  ~CvThreadsGuard() {
    if (changed_) cv::setNumThreads(saved_);
  }
  CvThreadsGuard(const CvThreadsGuard&) = delete;
  CvThreadsGuard& operator=(const CvThreadsGuard&) = delete;

 private:
  int saved_;
  bool changed_;
};

std::string what_of(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::bad_alloc&) {
    return "out of memory";
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown exception";
  }
}

}  // namespace

DatasetResult evaluate_pairs(const std::vector<Pair>& pairs, const RunOptions& options) {
  DatasetResult result;
  SetAccumulator acc(options.groups);
  const size_t total = pairs.size();
  // 0: the CPUs this process may use (affinity mask, cgroup quota), not the machine's count
  int threads = options.threads > 0 ? options.threads : cpu_budget().threads;
  threads = std::max(1, std::min<int>(threads, int(std::max<size_t>(total, 1))));

  // Parallel over images only: OpenCV's own threads inside each worker would oversubscribe.
  const CvThreadsGuard cv_threads(threads > 1);

  struct Finished {
    bool ok = false;
    ImageScores scores;
    std::string error_file, error;
  };
  // Each worker reads and scores one pair at a time; at most two pairs per worker are in flight,
  // and the results are added in pair order on this thread.
  auto score = [&](size_t i) {
    const Pair& pair = pairs[i];
    Finished f;
    try {
      // Both read as 8-bit gray, as the official evaluator's cv2.imread(p, IMREAD_GRAYSCALE),
      // with the pixel limit checked before decoding.
      DecodeOptions gray;
      gray.channels = 1;
      gray.max_pixels = options.max_image_pixels;
      Image gt, pred;
      bool reading_gt = true;
      try {
        gt = read_image(pair.gt_path, gray);
        reading_gt = false;
        pred = read_image(pair.pred_path, gray);
      } catch (const Error& e) {
        throw UnreadableFile{
            reading_gt ? pair.gt_path : pair.pred_path,
            str_cat(reading_gt ? "unreadable GT image (" : "unreadable prediction (", e.what(),
                    ")")};
      }
      const cv::Mat gt_mat(gt.height, gt.width, CV_8UC1, gt.pixels.data());
      const cv::Mat pred_mat(pred.height, pred.width, CV_8UC1, pred.pixels.data());
      f.scores = score_image(pred_mat, gt_mat, options.groups);
      f.ok = true;
    } catch (const UnreadableFile& u) {
      f.error_file = u.file;
      f.error = u.message + ", skipped";
    } catch (const std::exception& e) {  // a decoder error, a too large image, out of memory
      f.error_file = pair.pred_path;
      f.error = str_cat("cannot score against ", pair.gt_path, " (", e.what(), "), skipped");
    }
    return f;
  };
  size_t added = 0;
  auto add = [&](size_t i, Finished& f) {
    try {
      if (f.ok) {
        acc.add(f.scores);
        if (options.keep_images) result.images.push_back({pairs[i].name, f.scores.values});
      } else {
        result.problems.push_back({f.error_file, f.error});
      }
      added = i + 1;
      if (options.progress) options.progress(i + 1, total);
    } catch (const std::exception& e) {
      fail("evaluation failed at ", pairs[i].pred_path, ": ",
           dynamic_cast<const std::bad_alloc*>(&e) ? "out of memory" : e.what());
    }
  };
  try {
    ordered_map<Finished>(total, threads, size_t(2 * threads), score, add);
  } catch (const Error&) {
    throw;
  } catch (...) {
    fail("evaluation failed: ", what_of(std::current_exception()));
  }
  BIREF_CHECK(added == total, "evaluation stopped after ", added, " of ", total, " pairs");
  result.set = acc.finish();
  return result;
}

}  // namespace biref::eval
