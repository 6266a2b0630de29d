#include "eval/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sstream>

#include "core/check.h"
#include "eval/output.h"

namespace biref::eval {

namespace {

// The figure is built once as a list of shapes, then rendered by both writers, so the PNG and
// the SVG always show the same thing.
struct Color {
  int r, g, b;
};
struct Shape {
  enum Kind { kLine, kRect, kText } kind;
  std::vector<cv::Point2d> points;  // line: a polyline; rect: two corners; text: its anchor
  Color color;
  double width = 1;     // stroke width (line, rect)
  bool filled = false;  // rect
  std::string text;
  double font = 14;       // text height in px
  int anchor = 0;         // text: 0 left, 1 centre, 2 right
  bool vertical = false;  // text: rotated 90° counter-clockwise (reads bottom to top)
};

const Color kPalette[] = {{31, 119, 180},  {255, 127, 14}, {44, 160, 44},   {214, 39, 40},
                          {148, 103, 189}, {140, 86, 75},  {227, 119, 194}, {127, 127, 127},
                          {188, 189, 34},  {23, 190, 207}};
const Color kBlack{0, 0, 0}, kGrid{225, 225, 225}, kWhite{255, 255, 255};

constexpr int kFont = cv::FONT_HERSHEY_SIMPLEX;
double font_scale(double px) {
  return px / 22.0;
}  // Hershey simplex: ~22 px tall at scale 1

double text_width(const std::string& s, double px) {
  int baseline = 0;
  return cv::getTextSize(s, kFont, font_scale(px), 1, &baseline).width;
}

struct Figure {
  int width = 0, height = 0;
  std::vector<Shape> shapes;
  void line(std::vector<cv::Point2d> pts, Color c, double w) {
    shapes.push_back({Shape::kLine, std::move(pts), c, w, false, {}, 0, 0, false});
  }
  void rect(cv::Point2d a, cv::Point2d b, Color c, double w, bool filled) {
    shapes.push_back({Shape::kRect, {a, b}, c, w, filled, {}, 0, 0, false});
  }
  void text(cv::Point2d at, const std::string& s, double px, int anchor, Color c = kBlack,
            bool vertical = false) {
    shapes.push_back({Shape::kText, {at}, c, 1, false, s, px, anchor, vertical});
  }
};

std::string fmt_tick(double v, bool integer) {
  char buf[32];
  std::snprintf(buf, sizeof buf, integer ? "%.0f" : "%.1f", v);
  return buf;
}

// One panel: axes box at (x0, y0)-(x1, y1) in px, data ranges [xmin, xmax] × [0, 1].
// x ticks every x_step from 0 to xmax; y ticks every 0.1 (labels every 0.2).
void panel(Figure& fig, double x0, double y0, double x1, double y1, double xmax, double x_step,
           bool integer_x, const std::string& title, const std::string& xlabel,
           const std::string& ylabel, const std::vector<std::vector<cv::Point2d>>& curves) {
  auto px = [&](double x, double y) {
    return cv::Point2d(x0 + (x1 - x0) * x / xmax, y1 - (y1 - y0) * y);
  };
  for (double x = 0; x <= xmax + 1e-9; x += x_step) {
    fig.line({px(x, 0), px(x, 1)}, kGrid, 1);
    const cv::Point2d bx = px(x, 0);
    fig.line({bx, bx + cv::Point2d(0, 5)}, kBlack, 1);
    fig.text(bx + cv::Point2d(0, 22), fmt_tick(x, integer_x), 13, 1);
  }
  for (int i = 0; i <= 10; ++i) {
    const double t = i / 10.0;
    fig.line({px(0, t), px(xmax, t)}, kGrid, 1);
    const cv::Point2d ly = px(0, t);
    fig.line({ly, ly - cv::Point2d(i % 2 ? 3 : 5, 0)}, kBlack, 1);
    if (i % 2 == 0) fig.text(ly + cv::Point2d(-8, 5), fmt_tick(t, false), 13, 2);
  }
  for (size_t c = 0; c < curves.size(); ++c) {
    std::vector<cv::Point2d> pts;
    for (const auto& p : curves[c]) pts.push_back(px(p.x, p.y));
    fig.line(pts, kPalette[c % 10], 2);
  }
  fig.rect({x0, y0}, {x1, y1}, kBlack, 1, false);
  fig.text({(x0 + x1) / 2, y0 - 14}, title, 17, 1);
  fig.text({(x0 + x1) / 2, y1 + 52}, xlabel, 15, 1);
  fig.text({x0 - 46, (y0 + y1) / 2}, ylabel, 15, 1, kBlack, true);
}

// A NaN or infinite value would become an undefined pixel coordinate: refuse it.
void check_finite(const PlotRow& row) {
  for (const PlotSeries& s : row.series)
    for (const Curve* c : {&s.precision, &s.recall, &s.f})
      for (int k = 0; k < kNumThresholds; ++k)
        BIREF_CHECK(std::isfinite((*c)[size_t(k)]), "cannot plot the curves of '", s.label, "'",
                    row.title.empty() ? "" : " on '", row.title, row.title.empty() ? "" : "'",
                    ": a value is not finite (", (*c)[size_t(k)], " at threshold ", 255 - k, ")");
}

// A pixel coordinate, kept well inside int (the figure's own points are always inside it).
int to_px(double v) {
  return int(std::lround(std::clamp(v, -1e6, 1e6)));
}

Figure build(const std::vector<PlotRow>& rows) {
  for (const PlotRow& row : rows) check_finite(row);
  constexpr double kPanelW = 480, kPanelH = 380, kLeft = 70, kGap = 90, kTop = 60;
  constexpr double kLegendLine = 24, kBottom = 88;
  Figure fig;
  fig.width = int(kLeft + kPanelW + kGap + kPanelW + 30);
  double y = 0;
  for (const PlotRow& row : rows) {
    // Legend layout first: entries wrap over the figure's width.
    std::vector<cv::Point2d> legend_at;
    double lx = kLeft, ly = 0;
    for (const auto& s : row.series) {
      const double w = 40 + text_width(s.label, 14) + 24;
      if (lx + w > fig.width - 10 && lx > kLeft) {
        lx = kLeft;
        ly += kLegendLine;
      }
      legend_at.push_back({lx, ly});
      lx += w;
    }
    const double legend_h = row.series.empty() ? 0 : ly + kLegendLine;
    const double top = y + kTop, bottom = top + kPanelH;

    std::vector<std::vector<cv::Point2d>> pr, fcurve;
    for (const auto& s : row.series) {
      std::vector<cv::Point2d> a, b;
      for (int k = 0; k < kNumThresholds; ++k) {
        a.push_back({s.recall[size_t(k)], s.precision[size_t(k)]});
        b.push_back({double(255 - k), s.f[size_t(k)]});
      }
      pr.push_back(std::move(a));
      fcurve.push_back(std::move(b));
    }
    const std::string suffix = row.title.empty() ? "" : " - " + row.title;
    panel(fig, kLeft, top, kLeft + kPanelW, bottom, 1.0, 0.2, false, "Precision-recall" + suffix,
          "Recall", "Precision", pr);
    const double x2 = kLeft + kPanelW + kGap;
    panel(fig, x2, top, x2 + kPanelW, bottom, 255.0, 50.0, true, "F-measure vs threshold" + suffix,
          "Threshold", "F-measure (beta^2 = 0.3)", fcurve);
    const double legend_top = bottom + kBottom;
    for (size_t i = 0; i < row.series.size(); ++i) {
      const cv::Point2d at = legend_at[i] + cv::Point2d(0, legend_top);
      fig.line({at + cv::Point2d(0, -5), at + cv::Point2d(30, -5)}, kPalette[i % 10], 3);
      fig.text(at + cv::Point2d(38, 0), row.series[i].label, 14, 0);
    }
    y = legend_top + legend_h;
  }
  fig.height = int(y + 10);
  return fig;
}

std::vector<uint8_t> render_png(const Figure& fig) {
  cv::Mat img(fig.height, fig.width, CV_8UC3, cv::Scalar(255, 255, 255));
  auto bgr = [](Color c) { return cv::Scalar(c.b, c.g, c.r); };
  for (const Shape& s : fig.shapes) {
    switch (s.kind) {
      case Shape::kLine: {
        std::vector<cv::Point> pts;
        for (const auto& p : s.points) pts.push_back(cv::Point(to_px(p.x), to_px(p.y)));
        cv::polylines(img, pts, false, bgr(s.color), int(s.width), cv::LINE_AA);
        break;
      }
      case Shape::kRect:
        cv::rectangle(img, cv::Point(to_px(s.points[0].x), to_px(s.points[0].y)),
                      cv::Point(to_px(s.points[1].x), to_px(s.points[1].y)), bgr(s.color),
                      s.filled ? cv::FILLED : int(s.width), cv::LINE_8);
        break;
      case Shape::kText: {
        const double w = text_width(s.text, s.font);
        const double shift = s.anchor == 1 ? w / 2 : s.anchor == 2 ? w : 0;
        if (!s.vertical) {
          cv::putText(img, s.text, cv::Point(to_px(s.points[0].x - shift), to_px(s.points[0].y)),
                      kFont, font_scale(s.font), bgr(s.color), 1, cv::LINE_AA);
          break;
        }
        // Draw horizontally on a white strip, rotate it, and darken the figure with it.
        const int tw = int(w) + 4, th = int(s.font * 1.6);
        cv::Mat strip(th, tw, CV_8UC3, cv::Scalar(255, 255, 255)), rotated;
        cv::putText(strip, s.text, cv::Point(2, int(s.font * 1.1)), kFont, font_scale(s.font),
                    bgr(s.color), 1, cv::LINE_AA);
        cv::rotate(strip, rotated, cv::ROTATE_90_COUNTERCLOCKWISE);
        // Anchor: the text's baseline centre line runs vertically at x; it is centred on y.
        cv::Rect r(to_px(s.points[0].x - s.font * 1.1), to_px(s.points[0].y - shift - 2),
                   rotated.cols, rotated.rows);
        r &= cv::Rect(0, 0, img.cols, img.rows);
        if (r.area() > 0) {
          cv::Mat dst = img(r);
          cv::min(dst, rotated(cv::Rect(0, 0, r.width, r.height)), dst);
        }
        break;
      }
    }
  }
  std::vector<uint8_t> png;
  bool ok = false;
  try {
    ok = cv::imencode(".png", img, png);
  } catch (const cv::Exception& e) {
    fail("cannot encode the curve plot as PNG: ", e.what());
  }
  BIREF_CHECK(ok && !png.empty(), "cannot encode the curve plot as PNG");
  return png;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string render_svg(const Figure& fig) {
  std::ostringstream os;
  os.precision(6);
  auto rgb = [](Color c) { return str_cat("rgb(", c.r, ",", c.g, ",", c.b, ")"); };
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << fig.width << "\" height=\""
     << fig.height << "\" viewBox=\"0 0 " << fig.width << " " << fig.height
     << "\" font-family=\"DejaVu Sans, Arial, sans-serif\">\n"
     << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  for (const Shape& s : fig.shapes) {
    switch (s.kind) {
      case Shape::kLine:
        os << "<polyline fill=\"none\" stroke=\"" << rgb(s.color) << "\" stroke-width=\"" << s.width
           << "\" stroke-linejoin=\"round\" points=\"";
        for (const auto& p : s.points) os << p.x << "," << p.y << " ";
        os << "\"/>\n";
        break;
      case Shape::kRect:
        os << "<rect x=\"" << s.points[0].x << "\" y=\"" << s.points[0].y << "\" width=\""
           << s.points[1].x - s.points[0].x << "\" height=\"" << s.points[1].y - s.points[0].y
           << "\" "
           << (s.filled ? "fill=\"" + rgb(s.color) + "\""
                        : "fill=\"none\" stroke=\"" + rgb(s.color) + "\"")
           << "/>\n";
        break;
      case Shape::kText:
        os << "<text x=\"" << s.points[0].x << "\" y=\"" << s.points[0].y << "\" font-size=\""
           << s.font << "\" fill=\"" << rgb(s.color) << "\" text-anchor=\""
           << (s.anchor == 1   ? "middle"
               : s.anchor == 2 ? "end"
                               : "start")
           << "\"";
        if (s.vertical)
          os << " transform=\"rotate(-90 " << s.points[0].x << " " << s.points[0].y << ")\"";
        os << ">" << xml_escape(s.text) << "</text>\n";
        break;
    }
  }
  os << "</svg>\n";
  return os.str();
}

}  // namespace

CurvePlots render_curve_plots(const std::vector<PlotRow>& rows) {
  const Figure fig = build(rows);
  return {render_png(fig), render_svg(fig)};
}

void write_curve_plots(const std::vector<PlotRow>& rows, const std::string& png_path,
                       const std::string& svg_path) {
  OutputFiles out;  // both files or neither
  if (!png_path.empty()) out.add(png_path);
  if (!svg_path.empty()) out.add(svg_path);
  if (out.paths().empty()) return;
  const CurvePlots plots = render_curve_plots(rows);
  if (!png_path.empty())
    out.write(png_path,
              std::string_view(reinterpret_cast<const char*>(plots.png.data()), plots.png.size()));
  if (!svg_path.empty()) out.write(svg_path, plots.svg);
  out.commit();
}

}  // namespace biref::eval
