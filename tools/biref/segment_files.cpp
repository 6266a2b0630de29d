#include "segment_files.h"

#include <glob.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <set>

#include "biref/image.h"
#include "core/check.h"

namespace biref::cli {

namespace fs = std::filesystem;

const std::vector<std::string>& input_extensions() {
  static const std::vector<std::string> e = {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff",
                                             ".bmp", ".pgm",  ".ppm", ".pbm",  ".pnm"};
  return e;
}

namespace {

bool has_image_extension(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return char(std::tolower(c)); });
  const auto& e = input_extensions();
  return std::find(e.begin(), e.end(), ext) != e.end();
}

bool is_glob(const std::string& s) {
  return s.find_first_of("*?[") != std::string::npos;
}

std::string without_extension(const fs::path& rel) {
  return (rel.parent_path() / rel.stem()).string();
}

// (device, inode) of an existing file: how "the same file" is recognised.
std::pair<dev_t, ino_t> identity(const std::string& path, bool& ok) {
  struct stat st {};
  ok = ::stat(path.c_str(), &st) == 0;
  return {st.st_dev, st.st_ino};
}

}  // namespace

std::vector<InputImage> expand_inputs(const std::vector<std::string>& args, bool recursive,
                                      size_t& skipped_folders) {
  BIREF_CHECK(!args.empty(), "no input: name an image, a folder or a glob");
  std::vector<InputImage> out;
  std::set<std::pair<dev_t, ino_t>> seen;
  skipped_folders = 0;
  auto add = [&](const fs::path& path, const std::string& stem) {
    bool ok = false;
    const auto id = identity(path.string(), ok);
    if (ok && !seen.insert(id).second) return;  // the same file twice
    out.push_back({path.string(), stem});
  };
  for (const std::string& arg : args) {
    std::error_code ec;
    BIREF_CHECK(!arg.empty(), "an input is the empty string");
    const fs::file_status st = fs::status(arg, ec);
    if (fs::is_directory(st)) {
      std::vector<fs::path> files;
      const auto opts = fs::directory_options::skip_permission_denied;
      auto visit = [&](const fs::directory_entry& e) {
        std::error_code e2;
        if (e.is_directory(e2)) {
          if (!recursive) ++skipped_folders;
          return;
        }
        if (has_image_extension(e.path()) && e.is_regular_file(e2)) files.push_back(e.path());
      };
      if (recursive) {
        for (fs::recursive_directory_iterator it(arg, opts, ec), end; !ec && it != end;
             it.increment(ec))
          visit(*it);
      } else {
        for (fs::directory_iterator it(arg, opts, ec), end; !ec && it != end; it.increment(ec))
          visit(*it);
      }
      BIREF_CHECK(!ec, "cannot list the folder '", arg, "': ", ec.message());
      BIREF_CHECK(!files.empty(), "the folder '", arg, "' holds no images (",
                  recursive ? "" : "not searched recursively; ",
                  "looked for .jpg, .png, .webp, .tif, .bmp, .pnm)");
      std::sort(files.begin(), files.end());
      for (const fs::path& f : files) add(f, without_extension(f.lexically_relative(arg)));
    } else if (fs::exists(st)) {
      add(arg, fs::path(arg).stem().string());  // any file: the content decides the format
    } else if (is_glob(arg)) {
      glob_t g{};
      const int rc = ::glob(arg.c_str(), GLOB_ERR, nullptr, &g);
      std::vector<std::string> matches;
      if (rc == 0)
        for (size_t i = 0; i < g.gl_pathc; ++i) matches.emplace_back(g.gl_pathv[i]);
      globfree(&g);
      BIREF_CHECK(rc == 0 || rc == GLOB_NOMATCH, "cannot expand '", arg, "'");
      size_t files = 0;
      for (const std::string& m : matches)  // glob sorts its matches
        if (fs::is_regular_file(m, ec)) {
          add(m, fs::path(m).stem().string());
          ++files;
        }
      BIREF_CHECK(files > 0, "no file matches '", arg, "'");
    } else {
      fail("input '", arg, "' does not exist");
    }
  }
  return out;
}

OutputPlan plan_outputs(const std::vector<InputImage>& inputs, bool single_file_input,
                        const std::string& out, const std::vector<std::string>& kinds) {
  BIREF_CHECK(!out.empty(), "no output: pass -o FILE or -o FOLDER");
  std::error_code ec;
  OutputPlan plan;
  const bool out_is_dir = fs::is_directory(out, ec);
  plan.folder = !single_file_input || kinds.size() > 1 || out_is_dir || out.back() == '/';
  if (!plan.folder) {
    plan.paths = {{out}};
  } else {
    if (!out_is_dir) {
      BIREF_CHECK(!fs::exists(out, ec), "-o '", out, "' must be a folder (",
                  kinds.size() > 1 ? "several output kinds" : "several inputs or a folder",
                  "), but it is a file");
      BIREF_CHECK(!biref::can_write_image(out), "-o '", out, "' must be a folder: ",
                  kinds.size() > 1    ? "there are several output kinds"
                  : inputs.size() > 1 ? "there are several inputs"
                                      : "the input '" + inputs[0].path + "' is a folder or glob",
                  " (e.g. -o out/)");
      const fs::path parent = fs::absolute(fs::path(out)).parent_path();
      BIREF_CHECK(fs::is_directory(parent.empty() ? fs::path(".") : parent, ec),
                  "cannot make the output folder '", out, "': folder '", parent.string(),
                  "' does not exist");
    }
    plan.paths.reserve(inputs.size());
    for (const InputImage& in : inputs) {
      std::vector<std::string> p;
      for (const std::string& k : kinds)
        p.push_back((fs::path(out) / (in.stem + "." + k + ".png")).lexically_normal().string());
      plan.paths.push_back(std::move(p));
    }
  }
  // Two images that would write the same file, and outputs that are inputs: refused now.
  std::map<std::string, size_t> owner;
  std::map<std::pair<dev_t, ino_t>, size_t> input_ids;
  for (size_t i = 0; i < inputs.size(); ++i) {
    bool ok = false;
    const auto id = identity(inputs[i].path, ok);
    if (ok) input_ids.emplace(id, i);
  }
  for (size_t i = 0; i < plan.paths.size(); ++i)
    for (const std::string& p : plan.paths[i]) {
      const std::string key = fs::weakly_canonical(fs::absolute(p), ec).string();
      const auto [it, fresh] = owner.emplace(key, i);
      BIREF_CHECK(fresh || it->second == i, "'", inputs[it->second].path, "' and '", inputs[i].path,
                  "' would both be written to '", p,
                  "': rename one, or segment them into different folders");
      BIREF_CHECK(fresh, "two outputs name the same file '", p, "'");
      bool exists = false;
      const auto id = identity(p, exists);
      if (!exists) continue;
      const auto in = input_ids.find(id);
      BIREF_CHECK(in == input_ids.end(), "output '", p, "' is the input image '",
                  inputs[in->second].path,
                  "': refusing to overwrite an input (choose another output name)");
    }
  return plan;
}

}  // namespace biref::cli
