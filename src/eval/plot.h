// Curve plots of `biref eval --plot`: for each dataset, the mean precision-recall curve and the
// mean F-measure-vs-threshold curve of every method, written as PNG (drawn with OpenCV) and SVG.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "eval/metrics.h"

namespace biref::eval {

struct PlotSeries {
  std::string label;           // the method
  Curve precision, recall, f;  // mean curves, index k = threshold 255 - k
};

struct PlotRow {
  std::string title;  // the dataset
  std::vector<PlotSeries> series;
};

// The figure, one row of two panels per dataset, encoded in memory. Throws biref::Error when a
// curve holds a value that is not finite (naming the dataset and the method) or when the PNG
// cannot be encoded.
struct CurvePlots {
  std::vector<uint8_t> png;
  std::string svg;
};
CurvePlots render_curve_plots(const std::vector<PlotRow>& rows);

// Renders and writes both files, or neither (see eval/output.h); an empty path skips that file.
// Throws biref::Error naming the file that cannot be written.
void write_curve_plots(const std::vector<PlotRow>& rows, const std::string& png_path,
                       const std::string& svg_path);

}  // namespace biref::eval
