// Reference kernels: the plainest loops that compute each op as the PyTorch model defines it,
// accumulating in double. They are the oracle the optimised kernels are tested against. The
// heavy ones spread independent outputs over threads; every sum still runs in its plain order.
#include <cmath>
#include <cstring>
#include <vector>

#include "core/check.h"
#include "ops/ops.h"

namespace biref {

namespace {

float activate(double v, Act act) {
  switch (act) {
    case Act::None: return float(v);
    case Act::Relu: return float(v > 0 ? v : 0);
    case Act::Gelu: return float(0.5 * v * (1.0 + std::erf(v / std::sqrt(2.0))));
    case Act::Sigmoid: return float(1.0 / (1.0 + std::exp(-v)));
  }
  return float(v);
}

// Region label of a padded coordinate for the shift mask: [0, n−w), [n−w, n−s), [n−s, n).
int region(int p, int n, int window, int shift) {
  if (p < n - window) return 0;
  if (p < n - shift) return 1;
  return 2;
}

// torchvision's bilinear sampling for deform_conv2d: zero outside, each corner checked.
double deform_sample(const float* x, int H, int W, int C, int c, double y, double xx) {
  if (y <= -1 || y >= H || xx <= -1 || xx >= W) return 0.0;
  const int y0 = int(std::floor(y)), x0 = int(std::floor(xx));
  const int y1 = y0 + 1, x1 = x0 + 1;
  const double ly = y - y0, lx = xx - x0, hy = 1 - ly, hx = 1 - lx;
  auto at = [&](int yy, int xc) -> double {
    if (yy < 0 || yy >= H || xc < 0 || xc >= W) return 0.0;
    return x[(int64_t(yy) * W + xc) * C + c];
  };
  return hy * hx * at(y0, x0) + hy * lx * at(y0, x1) + ly * hx * at(y1, x0) + ly * lx * at(y1, x1);
}

class RefBackend final : public Backend {
 public:
  const char* name() const override { return "reference"; }
  std::unique_ptr<Backend> fork() const override { return std::make_unique<RefBackend>(); }

  void linear(const Linear& l, const float* x, int64_t rows, int64_t ldx, float* y, int64_t ldy,
              Act act, bool accumulate) override {
#pragma omp parallel for schedule(static)  // rows are independent; each sum stays sequential
    for (int64_t m = 0; m < rows; ++m) {
      for (int o = 0; o < l.out; ++o) {
        double s = l.bias.empty() ? 0.0 : l.bias[o];
        for (int i = 0; i < l.in; ++i) s += double(x[m * ldx + i]) * l.weight[size_t(o) * l.in + i];
        const float v = activate(s, act);
        y[m * ldy + o] = accumulate ? y[m * ldy + o] + v : v;
      }
    }
  }

  void conv2d(const Conv2d& c, const Tensor& x, Tensor& y) override {
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3);
    const int64_t Ho = y.dim(1), Wo = y.dim(2);
    BIREF_CHECK(Ci == c.in && y.dim(3) == c.out, "conv2d '", c.name, "': channels do not match");
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t oy = 0; oy < Ho; ++oy)
        for (int64_t ox = 0; ox < Wo; ++ox)
          for (int o = 0; o < c.out; ++o) {
            double s = c.bias.empty() ? 0.0 : c.bias[o];
            for (int ky = 0; ky < c.k; ++ky) {
              const int64_t iy = oy * c.stride - c.pad + ky;
              if (iy < 0 || iy >= H) continue;
              for (int kx = 0; kx < c.k; ++kx) {
                const int64_t ix = ox * c.stride - c.pad + kx;
                if (ix < 0 || ix >= W) continue;
                const float* xp = x.data + ((b * H + iy) * W + ix) * Ci;
                for (int i = 0; i < c.in; ++i)
                  s += double(xp[i]) * c.weight[((size_t(o) * c.in + i) * c.k + ky) * c.k + kx];
              }
            }
            y.data[((b * Ho + oy) * Wo + ox) * c.out + o] = activate(s, c.act);
          }
  }

  void layer_norm(const LayerNorm& ln, const float* x, int64_t rows, float* y) override {
    const int D = ln.dim;
    for (int64_t m = 0; m < rows; ++m) {
      double mean = 0, var = 0;
      for (int i = 0; i < D; ++i) mean += x[m * D + i];
      mean /= D;
      for (int i = 0; i < D; ++i) var += (x[m * D + i] - mean) * (x[m * D + i] - mean);
      var /= D;
      const double inv = 1.0 / std::sqrt(var + ln.eps);
      for (int i = 0; i < D; ++i)
        y[m * D + i] = float((x[m * D + i] - mean) * inv * ln.weight[i] + ln.bias[i]);
    }
  }

  void window_partition(const Tensor& x, const WindowGeometry& g, Tensor& win) override {
    const int64_t C = x.dim(3);
    for_each_window_token(g, x.dim(0), [&](int64_t b, int py, int px, int64_t t) {
      for (int64_t c = 0; c < C; ++c)
        win.data[t * C + c] = (py < g.h && px < g.w) ? x.data[((b * g.h + py) * g.w + px) * C + c] : 0.f;
    });
  }

  void window_reverse_add(const Tensor& win, const WindowGeometry& g, Tensor& x) override {
    const int64_t C = x.dim(3);
    for_each_window_token(g, x.dim(0), [&](int64_t b, int py, int px, int64_t t) {
      if (py >= g.h || px >= g.w) return;
      for (int64_t c = 0; c < C; ++c) x.data[((b * g.h + py) * g.w + px) * C + c] += win.data[t * C + c];
    });
  }

  // Every token of the band's windows: fn(b, py, px, t) with (py, px) its position in the padded
  // grid — the shifted frame's (wy·w + i, wx·w + j) is the grid's at (+s) mod size — and t its
  // index in the [B, nW, w·w] windows tensor.
  template <typename Fn>
  static void for_each_window_token(const WindowGeometry& g, int64_t B, Fn fn) {
    const int w = g.window;
    for (int64_t b = 0; b < B; ++b)
      for (int wy = g.row0; wy < g.row0 + g.rows; ++wy)
        for (int wx = 0; wx < g.nww(); ++wx)
          for (int i = 0; i < w; ++i)
            for (int j = 0; j < w; ++j)
              fn(b, (wy * w + i + g.shift) % g.hp, (wx * w + j + g.shift) % g.wp,
                 ((b * g.windows() + (wy - g.row0) * g.nww() + wx) * w + i) * w + j);
  }

  void window_attention(const float* qkv, int64_t batch, const WindowGeometry& g, int heads,
                        int hd, const float* rel_bias, float* out) override {
    const int N = g.tokens(), w = g.window, C = heads * hd;
    const double scale = 1.0 / std::sqrt(double(hd));
#pragma omp parallel for schedule(static)
    for (int64_t bw = 0; bw < batch * g.windows(); ++bw) {
      std::vector<double> a(size_t(N) * N);
      const int widx = int(bw % g.windows());
      const int wy = g.row0 + widx / g.nww(), wx = widx % g.nww();
      const float* base = qkv + bw * N * 3 * C;
      for (int h = 0; h < heads; ++h) {
        for (int n = 0; n < N; ++n) {
          double mx = -INFINITY;
          for (int m = 0; m < N; ++m) {
            double s = 0;
            for (int d = 0; d < hd; ++d)
              s += double(base[n * 3 * C + h * hd + d]) * scale * base[m * 3 * C + C + h * hd + d];
            s += rel_bias[(size_t(h) * N + n) * N + m];
            if (g.shift > 0) {
              auto label = [&](int t) {
                return region(wy * w + t / w, g.hp, w, g.shift) * 3 +
                       region(wx * w + t % w, g.wp, w, g.shift);
              };
              if (label(n) != label(m)) s = -INFINITY;
            }
            a[size_t(n) * N + m] = s;
            mx = std::max(mx, s);
          }
          double sum = 0;
          for (int m = 0; m < N; ++m) sum += (a[size_t(n) * N + m] = std::exp(a[size_t(n) * N + m] - mx));
          for (int d = 0; d < hd; ++d) {
            double o = 0;
            for (int m = 0; m < N; ++m) o += a[size_t(n) * N + m] / sum * base[m * 3 * C + 2 * C + h * hd + d];
            out[(bw * N + n) * C + h * hd + d] = float(o);
          }
        }
      }
    }
  }

  void patch_merge(const Tensor& x, Tensor& y) override {
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
    const int64_t Ho = y.dim(1), Wo = y.dim(2);
    const int dy[4] = {0, 1, 0, 1}, dx[4] = {0, 0, 1, 1};
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < Ho; ++i)
        for (int64_t j = 0; j < Wo; ++j)
          for (int q = 0; q < 4; ++q)
            for (int64_t c = 0; c < C; ++c) {
              const int64_t sy = 2 * i + dy[q], sx = 2 * j + dx[q];
              y.data[((b * Ho + i) * Wo + j) * 4 * C + q * C + c] =
                  (sy < H && sx < W) ? x.data[((b * H + sy) * W + sx) * C + c] : 0.f;
            }
  }

  void resize_bilinear_ac(const Tensor& x, Tensor& y) override {
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
    const int64_t Ho = y.dim(1), Wo = y.dim(2);
    const double sy = Ho > 1 ? double(H - 1) / double(Ho - 1) : 0.0;
    const double sx = Wo > 1 ? double(W - 1) / double(Wo - 1) : 0.0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < Ho; ++i)
        for (int64_t j = 0; j < Wo; ++j) {
          const double fy = i * sy, fx = j * sx;
          const int64_t y0 = std::min<int64_t>(int64_t(fy), H - 1), x0 = std::min<int64_t>(int64_t(fx), W - 1);
          const int64_t y1 = std::min<int64_t>(y0 + 1, H - 1), x1 = std::min<int64_t>(x0 + 1, W - 1);
          const double ly = fy - y0, lx = fx - x0;
          for (int64_t c = 0; c < C; ++c) {
            auto at = [&](int64_t yy, int64_t xx) { return double(x.data[((b * H + yy) * W + xx) * C + c]); };
            y.data[((b * Ho + i) * Wo + j) * C + c] =
                float((1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) +
                      ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1)));
          }
        }
  }

  void concat_channels(const std::vector<const Tensor*>& parts, Tensor& y) override {
    const int64_t P = y.numel() / y.dim(3), Cy = y.dim(3);
    int64_t c0 = 0;
    for (const Tensor* t : parts) {
      const int64_t C = t->dim(3);
      for (int64_t p = 0; p < P; ++p)
        for (int64_t c = 0; c < C; ++c) y.data[p * Cy + c0 + c] = t->data[p * C + c];
      c0 += C;
    }
    BIREF_CHECK(c0 == Cy, "concat: ", c0, " channels into ", Cy);
  }

  void image_patches(const Tensor& x, int g, Tensor& y) override {
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), C = x.dim(3);
    const int64_t h = H / g, w = W / g;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c)
        for (int r = 0; r < g; ++r)
          for (int q = 0; q < g; ++q)
            for (int64_t i = 0; i < h; ++i)
              for (int64_t j = 0; j < w; ++j)
                y.data[((b * h + i) * w + j) * (C * g * g) + c * g * g + r * g + q] =
                    x.data[((b * H + r * h + i) * W + q * w + j) * C + c];
  }

  void deform_conv(const DeformConv& d, const Tensor& x, const Tensor& om, Tensor& y,
                   int c_offset) override {
    const Conv2d& rc = d.regular;
    const int64_t B = x.dim(0), H = x.dim(1), W = x.dim(2), Ci = x.dim(3), Cy = y.dim(3);
    const int k = d.k, kk = k * k;
#pragma omp parallel for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t p = 0; p < H; ++p)
        for (int64_t q = 0; q < W; ++q) {
          const float* o = om.data + ((b * H + p) * W + q) * 3 * kk;
          const float* xb = x.data + b * H * W * Ci;
          for (int oc = 0; oc < rc.out; ++oc) {
            double s = rc.bias.empty() ? 0.0 : rc.bias[oc];
            for (int i = 0; i < k; ++i)
              for (int j = 0; j < k; ++j) {
                const int n = i * k + j;
                const double sy = double(p - d.pad + i) + o[2 * n];
                const double sx = double(q - d.pad + j) + o[2 * n + 1];
                const double mask = 2.0 / (1.0 + std::exp(-double(o[2 * kk + n])));
                for (int64_t c = 0; c < Ci; ++c)
                  s += mask * deform_sample(xb, int(H), int(W), int(Ci), int(c), sy, sx) *
                       rc.weight[((size_t(oc) * Ci + c) * k + i) * k + j];
              }
            y.data[((b * H + p) * W + q) * Cy + c_offset + oc] = activate(s, rc.act);
          }
        }
  }

  void global_avg_pool(const Tensor& x, Tensor& y) override {
    const int64_t B = x.dim(0), P = x.dim(1) * x.dim(2), C = x.dim(3);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < C; ++c) {
        double s = 0;
        for (int64_t p = 0; p < P; ++p) s += x.data[(b * P + p) * C + c];
        y.data[b * C + c] = float(s / double(P));
      }
  }

  void broadcast_channels(const Tensor& v, Tensor& y, int c_offset) override {
    const int64_t B = y.dim(0), P = y.dim(1) * y.dim(2), Cy = y.dim(3), C = v.dim(3);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t p = 0; p < P; ++p)
        for (int64_t c = 0; c < C; ++c) y.data[(b * P + p) * Cy + c_offset + c] = v.data[b * C + c];
  }

  void add(const Tensor& x, Tensor& y) override {
    for (int64_t i = 0; i < y.numel(); ++i) y.data[i] += x.data[i];
  }

  void mul_gate(const Tensor& g, Tensor& p) override {
    const int64_t P = p.numel() / p.dim(3), C = p.dim(3);
    for (int64_t i = 0; i < P; ++i)
      for (int64_t c = 0; c < C; ++c) p.data[i * C + c] *= g.data[i];
  }
};

}  // namespace

std::unique_ptr<Backend> make_ref_backend() { return std::make_unique<RefBackend>(); }

}  // namespace biref
