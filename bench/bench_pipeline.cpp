// Benchmarks of the image pipeline around the model: refine_foreground (the official blur-fusion
// foreground estimate) at 1024² and at a 6000×4000 scan. Run:
//   build/bench/biref_microbench --benchmark_filter=Foreground
#include <benchmark/benchmark.h>

#include <cmath>

#include "biref/pipeline.h"

namespace biref {
namespace {

// A photo-like RGB image and a soft disc mask, w × h.
void make_inputs(int w, int h, Image& rgb, Image& mask) {
  rgb.width = mask.width = w;
  rgb.height = mask.height = h;
  rgb.channels = 3;
  mask.channels = 1;
  rgb.pixels.resize(size_t(w) * h * 3);
  mask.pixels.resize(size_t(w) * h);
  const double cx = w / 2.0, cy = h / 2.0, r = std::min(w, h) / 3.0;
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x) {
      const size_t i = size_t(y) * w + x;
      for (int c = 0; c < 3; ++c)
        rgb.pixels[i * 3 + c] = uint8_t((x * (c + 1) + y * (3 - c)) & 255);
      const double d = std::hypot(x - cx, y - cy) - r;  // soft edge of ~16 px
      mask.pixels[i] = uint8_t(std::clamp(127.5 - d * 8, 0.0, 255.0));
    }
}

void BM_Foreground(benchmark::State& st) {
  Image rgb, mask;
  make_inputs(int(st.range(0)), int(st.range(1)), rgb, mask);
  for (auto _ : st) benchmark::DoNotOptimize(refine_foreground(rgb, mask));
  st.counters["Mpix/s"] = benchmark::Counter(double(rgb.width) * rgb.height / 1e6,
                                             benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Foreground)
    ->Args({1024, 1024})
    ->Args({6000, 4000})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace biref
