// Curve plots of `biref eval --plot`: for each dataset, the mean precision-recall curve and the
// mean F-measure-vs-threshold curve of every method, written as PNG (drawn with OpenCV) and SVG.
#pragma once
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

// One row of two panels per dataset. Throws biref::Error when a file cannot be written.
void write_curve_plots(const std::vector<PlotRow>& rows, const std::string& png_path,
                       const std::string& svg_path);

}  // namespace biref::eval
