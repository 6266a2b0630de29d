#include "eval/dataset.h"

#include <algorithm>
#include <atomic>
#include <cctype>
#include <exception>
#include <filesystem>
#include <map>
#include <mutex>
#include <opencv2/core/utility.hpp>
#include <stdexcept>
#include <thread>

#include "biref/image.h"
#include "core/check.h"

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
  int threads = options.threads > 0 ? options.threads : int(std::thread::hardware_concurrency());
  threads = std::max(1, std::min<int>(threads, int(std::max<size_t>(total, 1))));

  // Parallel over images only: OpenCV's own threads inside each worker would oversubscribe.
  const CvThreadsGuard cv_threads(threads > 1);

  std::mutex mu;
  std::atomic<size_t> next{0};
  std::atomic<bool> stop{false};  // set on the first error: the workers stop taking pairs
  size_t next_to_add = 0, done = 0;
  struct Finished {
    bool ok;
    ImageScores scores;
    std::string error_file, error;
  };
  std::map<size_t, Finished> pending;  // finished out of order, waiting for their turn
  std::exception_ptr first_error;      // the first failure outside the scoring of one pair
  std::string error_file;              // the file being handled when it happened

  auto work = [&](size_t& current) {
    while (!stop.load()) {
      const size_t i = next.fetch_add(1);
      if (i >= total) return;
      current = i;
      const Pair& pair = pairs[i];
      Finished f{false, {}, {}, {}};
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
        f.ok = false;
        f.error_file = u.file;
        f.error = u.message + ", skipped";
      } catch (const std::exception& e) {  // a decoder error, a too large image, out of memory
        f.ok = false;
        f.error_file = pair.pred_path;
        f.error = str_cat("cannot score against ", pair.gt_path, " (", e.what(), "), skipped");
      }
      std::lock_guard<std::mutex> lock(mu);
      pending.emplace(i, std::move(f));
      while (!pending.empty() && pending.begin()->first == next_to_add) {
        current = next_to_add;
        Finished& ready = pending.begin()->second;
        if (ready.ok) {
          acc.add(ready.scores);
          if (options.keep_images)
            result.images.push_back({pairs[next_to_add].name, ready.scores.values});
        } else {
          result.problems.push_back({ready.error_file, ready.error});
        }
        pending.erase(pending.begin());
        ++next_to_add;
      }
      current = i;
      ++done;
      if (options.progress) options.progress(done, total);
    }
  };
  // Never lets an exception out of a thread: the first one is kept for the caller, and every
  // worker stops at its next pair.
  auto worker = [&]() noexcept {
    size_t current = total;
    try {
      work(current);
    } catch (...) {
      stop.store(true);
      try {
        std::lock_guard<std::mutex> lock(mu);
        if (!first_error) {
          first_error = std::current_exception();
          error_file = current < total ? pairs[current].pred_path : std::string();
        }
      } catch (...) {  // the mutex itself failed: stop is set, the error is lost
      }
    }
  };
  {
    // std::jthread joins on destruction, so every path out of this block joins every worker.
    std::vector<std::jthread> pool;
    try {
      pool.reserve(size_t(threads - 1));
      for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
    } catch (const std::exception&) {
      // No more threads (std::system_error) or no memory for them: carry on with those started
      // and this one, which is enough to score every pair.
    }
    worker();
  }
  if (first_error) {
    if (!error_file.empty()) fail("evaluation failed at ", error_file, ": ", what_of(first_error));
    fail("evaluation failed: ", what_of(first_error));
  }
  BIREF_CHECK(next_to_add == total, "evaluation stopped after ", next_to_add, " of ", total,
              " pairs");
  result.set = acc.finish();
  return result;
}

}  // namespace biref::eval
