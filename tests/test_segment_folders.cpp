// `biref segment` on many images: folders, globs, mirrored output names, name collisions,
// failures that do not stop the run, --skip-existing, batches, ensembles and flip TTA through
// the command.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <opencv2/imgcodecs.hpp>
#include <set>
#include <sstream>

#include "biref/image.h"
#include "serve_harness.h"
#include "test_util.h"

namespace biref {
namespace {

namespace fs = std::filesystem;

const std::string kModel = " --model synthetic:swin_v1_t --size 64x64";

class SegmentFolders : public testing::Test {
 protected:
  void SetUp() override {
    dir = fs::path(testing::TempDir()) /
          ("biref_folders_" +
           std::string(testing::UnitTest::GetInstance()->current_test_info()->name()));
    fs::remove_all(dir);
    fs::create_directories(dir / "in" / "sub");
    in = dir / "in";
    out = dir / "out";
  }
  void TearDown() override { fs::remove_all(dir); }

  void image(const fs::path& p, int w, int h, int seed) {
    cv::Mat m(h, w, CV_8UC3);
    cv::randu(m, cv::Scalar::all(seed), cv::Scalar::all(seed + 100));
    ASSERT_TRUE(cv::imwrite(p.string(), m));
  }
  // Every file under `root`, relative, sorted.
  static std::set<std::string> files(const fs::path& root) {
    std::set<std::string> s;
    if (!fs::exists(root)) return s;
    for (const auto& e : fs::recursive_directory_iterator(root))
      if (e.is_regular_file()) s.insert(fs::relative(e.path(), root).string());
    return s;
  }
  // The lines of `s` that contain `needle`.
  static int lines_naming(const std::string& s, const std::string& needle) {
    int n = 0;
    std::istringstream in(s);
    for (std::string line; std::getline(in, line);) n += line.find(needle) != std::string::npos;
    return n;
  }
  fs::path dir, in, out;
};

// Bad files are reported one line each, the good ones are written, the exit code says some
// failed, and no partial or temporary file is left.
TEST_F(SegmentFolders, FailuresAreReportedAndTheRestIsWritten) {
  image(in / "a.jpg", 80, 60, 0);
  image(in / "b.png", 50, 70, 50);
  image(in / "sub" / "c.png", 40, 40, 90);
  image(in / "big.png", 400, 400, 20);  // above --max-image-pixels below
  const std::string b = test::read_file((in / "b.png").string());
  test::write_file((in / "cut.png").string(), b.substr(0, b.size() / 2));
  test::write_file((in / "empty.png").string(), "");
  test::write_file((in / "garbage.jpg").string(), "this is not an image at all");
  test::write_file((in / "notes.txt").string(), "not listed: not an image extension");
  const auto r = test::run_cli("segment " + in.string() + " -o " + out.string() + kModel +
                               " --max-image-pixels 100000");
  EXPECT_EQ(r.code, 1) << r.all();
  for (const std::string bad : {"cut.png", "empty.png", "garbage.jpg", "big.png"}) {
    EXPECT_EQ(lines_naming(r.err, bad), 1) << bad << "\n" << r.err;
  }
  EXPECT_NE(r.err.find("above the limit"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("4 of 6 images failed"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("1 subfolder not searched (use --recursive)"), std::string::npos) << r.err;
  EXPECT_EQ(files(out), (std::set<std::string>{"a.mask.png", "b.mask.png"}));
  // The same folder recursively: the subfolder is mirrored.
  fs::remove_all(out);
  for (const std::string bad : {"cut.png", "empty.png", "garbage.jpg", "big.png"})
    fs::remove(in / bad);
  const auto r2 = test::run_cli("segment " + in.string() + " -r -o " + out.string() + kModel +
                                " --output mask,rgba");
  EXPECT_EQ(r2.code, 0) << r2.all();
  EXPECT_EQ(files(out), (std::set<std::string>{"a.mask.png", "a.rgba.png", "b.mask.png",
                                               "b.rgba.png", "sub/c.mask.png", "sub/c.rgba.png"}));
  EXPECT_NE(r2.err.find("segmented 3 of 3 images"), std::string::npos) << r2.err;
  // Each output equals what a single-image run writes.
  const fs::path single = dir / "single.png";
  ASSERT_EQ(test::run_cli("segment " + (in / "sub" / "c.png").string() + " -o " + single.string() +
                          kModel)
                .code,
            0);
  EXPECT_EQ(test::read_file(single.string()),
            test::read_file((out / "sub" / "c.mask.png").string()));
  const Image rgba = read_image((out / "a.rgba.png").string(), {0, 3});
  EXPECT_EQ(rgba.width, 80);
}

// Two images that would write the same file, or an output that is an input: refused before
// anything is written, naming both files.
TEST_F(SegmentFolders, NameCollisionsAreRefusedBeforeAnythingRuns) {
  image(in / "a.jpg", 40, 40, 0);
  image(in / "a.png", 40, 40, 10);
  auto r = test::run_cli("segment " + in.string() + " -o " + out.string() + kModel);
  EXPECT_EQ(r.code, 1) << r.all();
  EXPECT_NE(r.err.find("a.jpg"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("a.png"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("would both be written to"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  // Two files of the same name in different folders given on the command line.
  fs::remove(in / "a.png");
  image(in / "sub" / "a.png", 40, 40, 20);
  r = test::run_cli("segment " + (in / "a.jpg").string() + " " + (in / "sub" / "a.png").string() +
                    " -o " + out.string() + kModel);
  EXPECT_EQ(r.code, 1) << r.all();
  EXPECT_NE(r.err.find("would both be written to"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(out));
  // An input named like another input's output, segmented into its own folder.
  fs::remove_all(in / "sub");
  image(in / "a.mask.png", 40, 40, 30);
  const std::string before = test::read_file((in / "a.mask.png").string());
  r = test::run_cli("segment " + in.string() + " -o " + in.string() + kModel);
  EXPECT_EQ(r.code, 1) << r.all();
  EXPECT_NE(r.err.find("refusing to overwrite an input"), std::string::npos) << r.err;
  EXPECT_EQ(test::read_file((in / "a.mask.png").string()), before);
  // A missing input, a glob that matches nothing, a file as the output folder.
  r = test::run_cli("segment " + (in / "nope.jpg").string() + " -o " + out.string() + kModel);
  EXPECT_NE(r.err.find("nope.jpg' does not exist"), std::string::npos) << r.err;
  r = test::run_cli("segment '" + (in / "*.webp").string() + "' -o " + out.string() + kModel);
  EXPECT_NE(r.err.find("no file matches"), std::string::npos) << r.err;
  r = test::run_cli("segment " + in.string() + " -o " + (in / "a.jpg").string() + kModel);
  EXPECT_NE(r.err.find("must be a folder"), std::string::npos) << r.err;
  EXPECT_EQ(r.code, 1);
}

// --skip-existing resumes: images whose outputs exist are not run again.
TEST_F(SegmentFolders, SkipExistingResumesAnInterruptedRun) {
  for (int i = 0; i < 4; ++i) image(in / ("p" + std::to_string(i) + ".png"), 48, 40, i * 20);
  auto r = test::run_cli("segment '" + (in / "*.png").string() + "' -o " + out.string() + kModel +
                         " --batch 2");
  ASSERT_EQ(r.code, 0) << r.all();
  ASSERT_EQ(files(out).size(), 4u);
  const std::string p0 = test::read_file((out / "p0.mask.png").string());
  const auto t1 = fs::last_write_time(out / "p1.mask.png");
  fs::remove(out / "p0.mask.png");  // "interrupted" before p0 was written
  r = test::run_cli("segment " + in.string() + " -o " + out.string() + kModel + " --skip-existing");
  ASSERT_EQ(r.code, 0) << r.all();
  EXPECT_NE(r.err.find("3 skipped"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("segmented 1 of 1 images"), std::string::npos) << r.err;
  EXPECT_EQ(fs::last_write_time(out / "p1.mask.png"), t1);
  // batch 2 wrote the same bytes as batch 1 does
  EXPECT_EQ(test::read_file((out / "p0.mask.png").string()), p0);
  r = test::run_cli("segment " + in.string() + " -o " + out.string() + kModel + " --skip-existing");
  EXPECT_EQ(r.code, 0) << r.all();
  EXPECT_NE(r.err.find("nothing to do"), std::string::npos) << r.err;
}

// Several models and flip TTA through the command; plain lines (no terminal) per image.
// --shard K/N: N runs write disjoint slices that together are the whole folder, each equal to
// what one run writes.
TEST_F(SegmentFolders, ShardsSplitTheInputsDisjointlyAndCoverThemAll) {
  for (int i = 0; i < 5; ++i) image(in / ("i" + std::to_string(i) + ".png"), 40, 32, i * 30);
  image(in / "sub" / "s.png", 32, 40, 7);
  std::set<std::string> all;
  size_t total = 0;
  for (int k = 0; k < 3; ++k) {
    const fs::path o = dir / ("shard" + std::to_string(k));
    const auto r = test::run_cli("segment " + in.string() + " -r -o " + o.string() + kModel +
                                 " --shard " + std::to_string(k) + "/3");
    ASSERT_EQ(r.code, 0) << r.all();
    const auto got = files(o);
    EXPECT_EQ(got.size(), 2u) << "6 images in 3 shards";
    total += got.size();
    all.insert(got.begin(), got.end());
  }
  EXPECT_EQ(total, all.size()) << "the shards overlap";
  EXPECT_EQ(all, (std::set<std::string>{"i0.mask.png", "i1.mask.png", "i2.mask.png", "i3.mask.png",
                                        "i4.mask.png", "sub/s.mask.png"}));
  const auto whole = test::run_cli("segment " + in.string() + " -r -o " + out.string() + kModel);
  ASSERT_EQ(whole.code, 0) << whole.all();
  for (int k = 0; k < 3; ++k)
    for (const auto& f : files(dir / ("shard" + std::to_string(k))))
      EXPECT_EQ(test::read_file((dir / ("shard" + std::to_string(k)) / f).string()),
                test::read_file((out / f).string()))
          << f;
  for (const std::string bad : {"3/3", "1", "a/2", "-1/2", "0/0", "1/2/3"}) {
    const auto r = test::run_cli("segment " + in.string() + " -o " + out.string() + kModel +
                                 " --shard " + bad);
    EXPECT_EQ(r.code, 1) << bad;
    EXPECT_NE(r.err.find("--shard"), std::string::npos) << r.err;
  }
}

TEST_F(SegmentFolders, EnsembleAndFlipThroughTheCommand) {
  image(in / "a.png", 64, 48, 0);
  image(in / "b.png", 64, 48, 100);
  const auto one =
      test::run_cli("segment " + in.string() + " -o " + (dir / "one").string() + kModel);
  const auto ens = test::run_cli("segment " + in.string() + " -o " + (dir / "ens").string() +
                                 kModel + " --model synthetic:swin_v1_t:7 --tta flip");
  ASSERT_EQ(one.code, 0) << one.all();
  ASSERT_EQ(ens.code, 0) << ens.all();
  EXPECT_NE(ens.err.find("[2/2] "), std::string::npos) << ens.err;
  EXPECT_NE(ens.err.find("×2"), std::string::npos) << ens.err;
  EXPECT_NE(test::read_file((dir / "one" / "a.mask.png").string()),
            test::read_file((dir / "ens" / "a.mask.png").string()));
}

// Ctrl-C in the middle of a folder: the images being written are finished, nothing half-written
// is left (no temporary file), exit code 130, and --skip-existing completes the rest.
TEST_F(SegmentFolders, InterruptStopsCleanlyAndResumes) {
  for (int i = 0; i < 8; ++i)
    image(in / std::string("q").append(std::to_string(i)).append(".png"), 300, 300, i * 10);
  const std::string cmd = "segment " + in.string() + " -o " + out.string() +
                          " --model synthetic:swin_v1_t --size 384x384";
  // SIGINT once the first image is reported (a fixed delay raced the run on a fast machine),
  // then SIGKILL after 120 s if the command ever ignored it.
  const std::string log = (dir / "interrupted.log").string();
  test::Process p({BIREF_CLI, "segment", in.string(), "-o", out.string(), "--model",
                   "synthetic:swin_v1_t", "--size", "384x384"},
                  log);
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (p.running() && p.log().find("[1/8]") == std::string::npos &&
         std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  const int status = p.stop(SIGINT, 120);
  const std::string err = test::read_file(log);
  ASSERT_TRUE(status >= 0 && WIFEXITED(status)) << err;
  EXPECT_EQ(WEXITSTATUS(status), 130) << err;
  EXPECT_NE(err.find("interrupted after"), std::string::npos) << err;
  fs::remove(log);
  const std::set<std::string> written = files(out);
  EXPECT_LT(written.size(), 8u) << err;
  for (const std::string& f : written)
    EXPECT_TRUE(f.size() > 9 && f.substr(f.size() - 9) == ".mask.png" && f[0] != '.') << f;
  const auto rest = test::run_cli(cmd + " --skip-existing");
  EXPECT_EQ(rest.code, 0) << rest.all();
  EXPECT_EQ(files(out).size(), 8u);
}

// On a terminal: a progress bar with the rate and the time left, redrawn in place, instead of
// a line per image (the terminal is made by util-linux's `script`).
TEST_F(SegmentFolders, ProgressBarOnATerminal) {
  if (std::system("command -v script >/dev/null 2>&1") != 0) GTEST_SKIP() << "no script(1)";
  for (int i = 0; i < 3; ++i)
    image(in / std::string("t").append(std::to_string(i)).append(".png"), 40, 40, i);
  const std::string cmd =
      std::string(BIREF_CLI) + " segment " + in.string() + " -o " + out.string() + kModel;
  const fs::path log = dir / "tty.log";
  const int status = std::system(
      ("script -qec '" + cmd + "' /dev/null >" + log.string() + " 2>&1 </dev/null").c_str());
  EXPECT_EQ(status, 0);
  const std::string tty = test::read_file(log.string());  // what the terminal showed
  EXPECT_NE(tty.find("3/3"), std::string::npos) << tty;
  EXPECT_NE(tty.find("img/s  ETA"), std::string::npos) << tty;
  EXPECT_NE(tty.find("\r"), std::string::npos) << tty;
  EXPECT_EQ(tty.find("[1/3] "), std::string::npos) << tty;  // no per-image lines
  EXPECT_EQ(files(out).size(), 3u);
}

}  // namespace
}  // namespace biref
