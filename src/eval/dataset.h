// Scoring whole folders: pairing prediction and GT files by name, and a bounded thread pool that
// scores the pairs and aggregates them in file order. Used by `biref eval`; reusable by a server.
#pragma once
#include <array>
#include <functional>
#include <string>
#include <vector>

#include "eval/metrics.h"

namespace biref::eval {

// The image extensions that are paired (case-insensitive), in order of preference when one
// folder holds the same name twice (a.png and a.jpg: a.png is used and the other reported).
const std::vector<std::string>& image_extensions();

struct Pair {
  std::string name;  // file name without extension: the key of the pairing and of reports
  std::string pred_path, gt_path;
};

struct Problem {
  std::string file;     // the file (or expected file) concerned
  std::string message;  // "missing prediction", "unreadable", ...
};

struct Pairing {
  std::vector<Pair> pairs;  // sorted by name
  std::vector<Problem> problems;
};

// Lists both folders (not recursively) and pairs files by name. GT files without a prediction,
// predictions without a GT and duplicate names are reported in `problems`; the rest is paired.
// Throws biref::Error when a folder cannot be read.
Pairing pair_folders(const std::string& pred_dir, const std::string& gt_dir);

struct ImageResult {
  std::string name;
  std::array<double, kNumKeys> values;
};

struct DatasetResult {
  SetScores set;
  std::vector<ImageResult> images;  // in name order; only with keep_images
  std::vector<Problem> problems;    // unreadable files (the pairing's problems are the caller's)
};

struct RunOptions {
  unsigned groups = kAllGroups;
  int threads = 0;           // 0: the number of hardware threads
  bool keep_images = false;  // keep the per-image values
  // Images above this many pixels are reported and skipped without being decoded;
  // 0: biref::default_max_image_pixels().
  int64_t max_image_pixels = 0;
  // Called after each image (from the aggregating thread, serialised): done, total.
  std::function<void(size_t, size_t)> progress;
};

// Scores the pairs with `threads` workers. Each worker reads and scores one pair at a time, so
// memory stays at a few images per worker whatever the folder size; results are added to the
// set in pair order (so the sums are reproducible), holding early finishers until their turn.
// An unreadable file, or a pair that score_image refuses (an image too large, ...), is reported
// in `problems` and skipped. Any other failure (the progress callback throws, out of memory while
// adding a result) stops the workers; once every thread has been joined it is thrown as
// biref::Error naming the file being handled. OpenCV's thread count is restored on every path.
DatasetResult evaluate_pairs(const std::vector<Pair>& pairs, const RunOptions& options);

}  // namespace biref::eval
