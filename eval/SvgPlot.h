// Small SVG charts for reports (`latentcell report`): line and scatter plots with axes, ticks, axis
// labels, a title and a legend, each written as one self-contained <svg> element (no scripts, no
// external fonts or style sheets) that an HTML page inlines and an XML parser reads.
//
// A figure is a plain description (PlotSpec plus its series) rendered by one function rather than
// a stateful canvas: the report draws only a few kinds of figure, and a description is easy to build
// and to test. Axis ranges come from the data, padded by 4%; ticks are nice numbers (1, 2 or 5 x
// 10^k), a log axis ticks at powers of ten. The legend sits in its own band between the title and the
// plot area, so it never hides data. Non-finite points are skipped (on a log axis also values <= 0).
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace latentcell::eval {

enum class SeriesStyle { Line, Points };

struct PlotSeries {
  std::string label;  // legend text; empty: not in the legend
  std::string color;  // CSS colour, e.g. "#1f77b4"
  SeriesStyle style = SeriesStyle::Line;
  std::vector<double> x, y;  // same length
  double pointRadius = 2.0;  // Points
  double opacity = 1.0;
};

struct PlotSpec {
  std::string title, xLabel, yLabel;
  int width = 480, height = 360;  // pixels
  bool logY = false;
  bool sameAxes = false;      // x and y share one range (two estimates of one quantity)
  bool identityLine = false;  // a dashed grey y = x line under the data
  // Extra attributes of the <svg> element, e.g. data-* values a test or a script reads back.
  std::vector<std::pair<std::string, std::string>> attributes;
};

// The figure as an <svg> element (xmlns set, width and height in pixels, a viewBox).
std::string renderSvgPlot(const std::vector<PlotSeries>& series, const PlotSpec& spec);

// Tick values inside [lo, hi], about `target` of them, at multiples of a nice step (1, 2 or 5 x 10^k).
std::vector<double> niceTicks(double lo, double hi, int target);

// `text` with & < > " ' escaped, for XML and HTML content and attribute values.
std::string xmlEscape(const std::string& text);

}  // namespace latentcell::eval
