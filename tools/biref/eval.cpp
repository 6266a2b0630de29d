// `biref eval`: the DIS / SOD metrics of prediction folders against GT folders, equal to the
// official BiRefNet evaluator. See docs/eval.md.
//
//   biref eval --gt DIR --pred DIR [--pred DIR ...] [--metrics LIST|all]
//              [--format table|json|csv] [--per-image] [--plot FILE] [--threads N] [-o FILE]
//
// Several datasets: repeat --gt (NAME=DIR, or DIR named after its folder); each --pred folder
// then holds one subfolder per dataset name (the official layout PRED_ROOT/METHOD/DATASET).
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "command.h"
#include "common.h"
#include "core/check.h"
#include "eval/dataset.h"
#include "eval/metrics.h"
#include "eval/output.h"
#include "eval/plot.h"

namespace biref::cli {

namespace fs = std::filesystem;
using namespace biref::eval;

namespace {

struct EvalOptions {
  std::vector<std::string> gt, pred;
  std::string metrics = "all", format = "table", plot, output;
  bool per_image = false, quiet = false;
  int threads = 0;
  int64_t max_image_pixels = 0;  // 0: the default limit
};

struct Named {
  std::string name, dir;
};

// "NAME=DIR" or "DIR". Without a name: the folder's name, or its parent's when the folder is
// called gt / GT / masks (DIS5K/DIS-VD/gt -> DIS-VD).
Named parse_named(const std::string& arg, bool is_gt) {
  Named n;
  const size_t eq = arg.find('=');
  std::error_code ec;
  if (eq != std::string::npos && eq > 0 && arg.substr(0, eq).find('/') == std::string::npos &&
      !fs::exists(arg, ec)) {
    n.name = arg.substr(0, eq);
    n.dir = arg.substr(eq + 1);
  } else {
    n.dir = arg;
  }
  BIREF_CHECK(!n.dir.empty(), "empty folder in '", arg, "'");
  if (n.name.empty()) {
    fs::path p = fs::path(n.dir).lexically_normal();
    if (p.filename().empty()) p = p.parent_path();
    std::string base = p.filename().string();
    if (is_gt && (base == "gt" || base == "GT" || base == "masks" || base == "mask") &&
        !p.parent_path().filename().empty())
      base = p.parent_path().filename().string();
    if (base.empty() || base == ".") base = fs::absolute(p).lexically_normal().filename().string();
    n.name = base;
  }
  return n;
}

struct Job {
  std::string dataset, method, gt_dir, pred_dir;
  Pairing pairing;
  DatasetResult result;
};

std::string fixed3(double v) {
  if (std::isnan(v)) return "nan";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);  // correctly rounded, ties to even
  return buf;
}

std::string full(double v) {
  if (std::isnan(v)) return "nan";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string cell(Key k, double v) {
  if (k == kHCE && !std::isnan(v)) return std::to_string(int64_t(std::nearbyint(v)));
  return fixed3(v);
}

void print_table(std::ostream& os, const std::vector<Job>& jobs, const std::vector<Key>& keys,
                 bool per_image) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head = {"Dataset", "Method"};
  if (per_image) head.push_back("Image");
  head.push_back("N");
  for (Key k : keys) head.push_back(key_info(k).table_name);
  rows.push_back(head);
  for (const Job& j : jobs) {
    if (per_image)
      for (const ImageResult& im : j.result.images) {
        std::vector<std::string> r = {j.dataset, j.method, im.name, "1"};
        for (Key k : keys) r.push_back(cell(k, im.values[k]));
        rows.push_back(r);
      }
    std::vector<std::string> r = {j.dataset, j.method};
    if (per_image) r.push_back("ALL");
    r.push_back(std::to_string(j.result.set.count));
    for (Key k : keys) r.push_back(cell(k, j.result.set.values[k]));
    rows.push_back(r);
  }
  std::vector<size_t> width(head.size(), 0);
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); ++c) width[c] = std::max(width[c], r[c].size());
  const size_t text_cols = per_image ? 3 : 2;  // left-aligned; numbers right-aligned
  auto rule = [&] {
    for (size_t c = 0; c < width.size(); ++c) os << (c ? "-+-" : "") << std::string(width[c], '-');
    os << "\n";
  };
  for (size_t i = 0; i < rows.size(); ++i) {
    for (size_t c = 0; c < rows[i].size(); ++c) {
      const std::string& s = rows[i][c];
      const std::string pad(width[c] - s.size(), ' ');
      os << (c ? " | " : "") << (c < text_cols ? s + pad : pad + s);
    }
    os << "\n";
    if (i == 0) rule();
  }
}

nlohmann::ordered_json values_json(const std::vector<Key>& keys,
                                   const std::array<double, kNumKeys>& v) {
  nlohmann::ordered_json o = nlohmann::ordered_json::object();
  for (Key k : keys) {
    const double x = v[k];
    o[key_info(k).name] =
        std::isnan(x) ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(x);
  }
  return o;
}

// The keys in the order of expected.json (maxF, meanF, adpF, maxE, ...), for JSON and CSV.
std::vector<Key> in_key_order(std::vector<Key> keys) {
  std::sort(keys.begin(), keys.end());
  return keys;
}

void print_json(std::ostream& os, const std::vector<Job>& jobs, std::vector<Key> keys,
                bool per_image) {
  keys = in_key_order(keys);
  nlohmann::ordered_json out;
  out["metrics"] = nlohmann::ordered_json::array();
  for (Key k : keys) out["metrics"].push_back(key_info(k).name);
  out["results"] = nlohmann::ordered_json::array();
  out["problems"] = nlohmann::ordered_json::array();
  for (const Job& j : jobs) {
    nlohmann::ordered_json r = {{"dataset", j.dataset},
                                {"method", j.method},
                                {"gt_dir", j.gt_dir},
                                {"pred_dir", j.pred_dir},
                                {"count", j.result.set.count}};
    r.update(values_json(keys, j.result.set.values));
    if (per_image) {
      nlohmann::ordered_json images = nlohmann::ordered_json::object();
      for (const ImageResult& im : j.result.images) images[im.name] = values_json(keys, im.values);
      r["images"] = images;
    }
    out["results"].push_back(r);
    for (const auto* list : {&j.pairing.problems, &j.result.problems})
      for (const Problem& p : *list)
        out["problems"].push_back({{"dataset", j.dataset},
                                   {"method", j.method},
                                   {"file", p.file},
                                   {"problem", p.message}});
  }
  os << out.dump(1) << "\n";
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

void print_csv(std::ostream& os, const std::vector<Job>& jobs, std::vector<Key> keys,
               bool per_image) {
  keys = in_key_order(keys);
  os << "dataset,method,image,count";
  for (Key k : keys) os << "," << key_info(k).name;
  os << "\n";
  for (const Job& j : jobs) {
    auto row = [&](const std::string& image, int64_t count, const std::array<double, kNumKeys>& v) {
      os << csv_field(j.dataset) << "," << csv_field(j.method) << "," << csv_field(image) << ","
         << count;
      for (Key k : keys) os << "," << full(v[k]);
      os << "\n";
    };
    if (per_image)
      for (const ImageResult& im : j.result.images) row(im.name, 1, im.values);
    row("", j.result.set.count, j.result.set.values);
  }
}

// "\r[DIS-VD / BiRefNet] [#######.....] 120/500" on a terminal only.
struct Progress {
  bool on = false;
  std::string label;
  std::chrono::steady_clock::time_point last{};
  void operator()(size_t done, size_t total) {
    if (!on) return;
    const auto now = std::chrono::steady_clock::now();
    if (done != total && now - last < std::chrono::milliseconds(100)) return;
    last = now;
    constexpr int kBar = 30;
    const int filled = total ? int(kBar * done / total) : kBar;
    std::fprintf(stderr, "\r%s [%s%s] %zu/%zu", label.c_str(),
                 std::string(size_t(filled), '#').c_str(),
                 std::string(size_t(kBar - filled), '.').c_str(), done, total);
    if (done == total) std::fprintf(stderr, "\n");
    std::fflush(stderr);
  }
};

int run_eval(const EvalOptions& o) {
  BIREF_CHECK(o.format == "table" || o.format == "json" || o.format == "csv", "unknown --format '",
              o.format, "' (table, json or csv)");
  const std::vector<Key> keys = parse_metric_list(o.metrics);
  check_threads(o.threads, "--threads");
  BIREF_CHECK(o.max_image_pixels >= 0, "--max-image-pixels must be positive");
  const unsigned groups = groups_of(keys) | (o.plot.empty() ? 0u : unsigned(kGroupF));

  std::vector<Named> datasets, methods;
  for (const auto& a : o.gt) datasets.push_back(parse_named(a, true));
  for (const auto& a : o.pred) methods.push_back(parse_named(a, false));
  for (size_t i = 0; i < datasets.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      BIREF_CHECK(datasets[i].name != datasets[j].name, "two --gt folders are named '",
                  datasets[i].name, "': name them with --gt NAME=DIR");
  for (size_t i = 0; i < methods.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      BIREF_CHECK(methods[i].name != methods[j].name, "two --pred folders are named '",
                  methods[i].name, "': name them with --pred NAME=DIR");

  // The output files are checked now (their folders exist, they are not folders), so that a bad
  // path fails before the scoring, and written together at the end: complete or absent.
  OutputFiles outputs;
  if (!o.output.empty()) outputs.add(o.output);
  std::string png, svg;
  if (!o.plot.empty()) {
    fs::path base(o.plot);
    const std::string ext = base.extension().string();
    if (ext == ".png" || ext == ".svg") base.replace_extension();
    png = base.string() + ".png";
    svg = base.string() + ".svg";
    outputs.add(png);
    outputs.add(svg);
  }

  std::vector<Job> jobs;
  for (const Named& d : datasets)
    for (const Named& m : methods) {
      Job j{d.name, m.name, d.dir, m.dir, {}, {}};
      std::error_code ec;
      const fs::path sub = fs::path(m.dir) / d.name;
      if (fs::is_directory(sub, ec)) {
        j.pred_dir = sub.string();
      } else {
        BIREF_CHECK(datasets.size() == 1, "no folder ", sub.string(), " for dataset '", d.name,
                    "' of method '", m.name, "' (with several --gt, each --pred folder holds one",
                    " subfolder per dataset)");
      }
      j.pairing = pair_folders(j.pred_dir, j.gt_dir);
      jobs.push_back(std::move(j));
    }
  // No output may replace or join the images: an existing file in a GT or prediction folder, or
  // an image file there (it would be paired the next time), is refused before anything runs.
  for (const std::string& out : {o.output, png, svg}) {
    if (out.empty()) continue;
    const fs::path parent = fs::absolute(out).parent_path();
    std::error_code ec;
    const bool exists = fs::exists(out, ec);
    std::string ext = fs::path(out).extension().string();
    for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
    const auto& exts = image_extensions();
    const bool image_name = std::find(exts.begin(), exts.end(), ext) != exts.end();
    for (const Job& j : jobs)
      for (const auto& [dir, what] :
           {std::pair{j.gt_dir, "GT"}, std::pair{j.pred_dir, "prediction"}})
        BIREF_CHECK(!((exists || image_name) && fs::equivalent(parent, dir, ec)), "output '", out,
                    "' lies in the ", what, " folder '", dir,
                    "': refusing to write into an input folder (choose another output path)");
  }

  const bool tty = isatty(fileno(stderr)) && !o.quiet;
  const auto t0 = std::chrono::steady_clock::now();
  size_t scored = 0;
  for (Job& j : jobs) {
    for (const Problem& p : j.pairing.problems)
      std::fprintf(stderr, "biref eval: warning: [%s / %s] %s: %s\n", j.dataset.c_str(),
                   j.method.c_str(), p.file.c_str(), p.message.c_str());
    Progress progress;
    progress.on = tty;
    progress.label = "[" + j.dataset + " / " + j.method + "]";
    RunOptions ro;
    ro.groups = groups;
    ro.threads = o.threads;
    ro.keep_images = o.per_image;
    ro.max_image_pixels = o.max_image_pixels;
    ro.progress = [&progress](size_t done, size_t total) { progress(done, total); };
    j.result = evaluate_pairs(j.pairing.pairs, ro);
    for (const Problem& p : j.result.problems)
      std::fprintf(stderr, "biref eval: warning: [%s / %s] %s: %s\n", j.dataset.c_str(),
                   j.method.c_str(), p.file.c_str(), p.message.c_str());
    if (j.result.set.count == 0)
      std::fprintf(stderr, "biref eval: warning: [%s / %s] no image pair could be scored\n",
                   j.dataset.c_str(), j.method.c_str());
    scored += size_t(j.result.set.count);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  BIREF_CHECK(scored > 0, "no image pair could be scored (see the warnings above)");

  std::ostringstream text;
  if (o.format == "table") print_table(text, jobs, keys, o.per_image);
  if (o.format == "json") print_json(text, jobs, keys, o.per_image);
  if (o.format == "csv") print_csv(text, jobs, keys, o.per_image);
  if (!o.output.empty()) outputs.write(o.output, text.str());

  if (!o.plot.empty()) {
    std::vector<PlotRow> rows;
    for (const Named& d : datasets) {
      PlotRow row;
      row.title = datasets.size() > 1 ? d.name : "";
      if (datasets.size() == 1) row.title = d.name;
      for (const Job& j : jobs)
        if (j.dataset == d.name && j.result.set.count > 0)
          row.series.push_back(
              {j.method, j.result.set.precision, j.result.set.recall, j.result.set.f});
      rows.push_back(std::move(row));
    }
    const CurvePlots plots = render_curve_plots(rows);
    outputs.write(
        png, std::string_view(reinterpret_cast<const char*>(plots.png.data()), plots.png.size()));
    outputs.write(svg, plots.svg);
  }
  // Everything was produced: only now do the files appear, and the report on standard output.
  outputs.commit();
  if (o.output.empty()) {
    std::cout << text.str() << std::flush;
    BIREF_CHECK(std::cout.good(), "cannot write the report to standard output");
  }
  if (!o.plot.empty())
    std::fprintf(stderr, "biref eval: wrote %s and %s\n", png.c_str(), svg.c_str());
  if (!o.quiet)
    std::fprintf(stderr, "biref eval: %zu image pairs scored in %.2f s (%.1f images/s)\n", scored,
                 secs, secs > 0 ? double(scored) / secs : 0.0);
  return 0;
}

}  // namespace

BIREF_COMMAND(eval, "Score prediction folders against GT folders (DIS / SOD metrics)",
              [](CLI::App& app) -> RunFn {
                auto o = std::make_shared<EvalOptions>();
                app.add_option("--gt", o->gt,
                               "GT folder, [NAME=]DIR; repeat for several datasets (each --pred "
                               "folder then holds a subfolder per dataset NAME)")
                    ->required();
                app.add_option("--pred", o->pred,
                               "Prediction folder of one method, [NAME=]DIR; repeat for several "
                               "methods")
                    ->required();
                app.add_option("--metrics", o->metrics,
                               "all, or a comma list of F E S wF MAE MSE HCE MBA BIoU and/or keys "
                               "(maxF, adpE, ...)")
                    ->capture_default_str();
                app.add_option("--format", o->format, "table, json or csv")
                    ->capture_default_str()
                    ->check(CLI::IsMember({"table", "json", "csv"}));
                app.add_flag("--per-image", o->per_image, "Also report every image");
                app.add_option("--plot", o->plot,
                               "Write the PR and F-vs-threshold curves to FILE.png and FILE.svg");
                app.add_option("--threads", o->threads, "Worker threads (0: all cores)")
                    ->capture_default_str();
                app.add_option("-o,--output", o->output, "Write the report to this file");
                add_max_image_pixels(app, o->max_image_pixels);
                app.add_flag("-q,--quiet", o->quiet, "No progress bar and no timing line");
                return [o] { return run_eval(*o); };
              });

}  // namespace biref::cli
