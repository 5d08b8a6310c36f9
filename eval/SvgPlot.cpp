// SVG line and scatter plots (see SvgPlot.h).
//
// Text widths are estimated (0.6 em per character, about sans-serif's average) to size the margins
// and wrap the legend; a browser's real font differs by a few pixels, which the padding absorbs.
// Scatter points are zero-length path segments drawn with round caps, one "M x y h0" each, about a
// quarter of the bytes of a <circle> element, so thousands of cells keep a figure small.
#include "eval/SvgPlot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace latentcell::eval {
namespace {

constexpr double kGlyphWidth = 0.6;  // average character width in em
constexpr int kTitleSize = 14, kLabelSize = 12, kTickSize = 11, kLegendSize = 12;
constexpr int kLegendRow = 17;  // pixels per legend row

double textWidth(const std::string& text, double fontSize) { return double(text.size()) * kGlyphWidth * fontSize; }

// SVG coordinates with one decimal: enough for a screen, and compact.
std::string px(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f", v);
  return buf;
}

// A linear tick label with as many decimals as the tick step needs.
std::string tickText(double v, double step) {
  if (std::abs(v) < step * 1e-9) v = 0;
  char buf[48];
  const double a = std::abs(v);
  if (a != 0 && (a >= 1e5 || step < 1e-3)) {
    std::snprintf(buf, sizeof buf, "%.3g", v);
  } else {
    const int decimals = std::max(0, int(std::ceil(-std::log10(step) - 1e-9)));
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  }
  return buf;
}

// A log-axis tick label for 10^exponent-scale values.
std::string logTickText(double v) {
  char buf[48];
  if (v >= 1e-3 && v < 1e5) std::snprintf(buf, sizeof buf, "%g", v);
  else std::snprintf(buf, sizeof buf, "%.0e", v);
  return buf;
}

struct Range {
  double lo = 0, hi = 1;
};

// The finite values' range, widened when degenerate and padded by 4% on each side.
Range paddedRange(const std::vector<double>& values) {
  double lo = INFINITY, hi = -INFINITY;
  for (double v : values)
    if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
  if (!(lo <= hi)) return {0, 1};
  if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {
    const double half = std::max(0.5, 0.1 * std::abs(hi));
    lo -= half, hi += half;
  }
  const double pad = 0.04 * (hi - lo);
  return {lo - pad, hi + pad};
}

struct Axis {
  Range range;
  std::vector<double> ticks;        // in plot units (log10 of the value on a log axis)
  std::vector<std::string> labels;  // tick texts
};

Axis linearAxis(Range range, int target) {
  Axis axis{range, {}, {}};
  axis.ticks = niceTicks(range.lo, range.hi, target);
  const double step = axis.ticks.size() >= 2 ? axis.ticks[1] - axis.ticks[0] : std::abs(range.hi - range.lo);
  for (double t : axis.ticks) axis.labels.push_back(tickText(t, step > 0 ? step : 1));
  return axis;
}

// A log10 axis: ticks at the powers of ten inside the range, or at nice values when it spans
// less than two decades.
Axis logAxis(Range range) {
  Axis axis{range, {}, {}};
  for (double e = std::ceil(range.lo); e <= range.hi + 1e-9; e += 1) axis.ticks.push_back(e);
  if (axis.ticks.size() >= 3) {
    for (double e : axis.ticks) axis.labels.push_back(logTickText(std::pow(10.0, e)));
    return axis;
  }
  axis.ticks.clear();
  const std::vector<double> values = niceTicks(std::pow(10.0, range.lo), std::pow(10.0, range.hi), 4);
  const double step = values.size() >= 2 ? values[1] - values[0] : 1;
  for (double v : values)
    if (v > 0) axis.ticks.push_back(std::log10(v)), axis.labels.push_back(tickText(v, step));
  return axis;
}

struct LegendEntry {
  const PlotSeries* series;
  double x, y;  // swatch start, row baseline
};

}  // namespace

std::vector<double> niceTicks(double lo, double hi, int target) {
  if (!std::isfinite(lo) || !std::isfinite(hi)) return {};
  if (hi < lo) std::swap(lo, hi);
  if (hi == lo) return {lo};
  const double raw = (hi - lo) / double(std::max(1, target));
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / magnitude;
  const double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * magnitude;
  std::vector<double> ticks;
  const double first = std::ceil(lo / step - 1e-9);
  for (double i = first; i * step <= hi + step * 1e-9; i += 1) ticks.push_back(i * step);
  return ticks;
}

std::string xmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string renderSvgPlot(const std::vector<PlotSeries>& series, const PlotSpec& spec) {
  const double width = spec.width, height = spec.height;
  // Values in plot units: y is log10'd on a log axis (values <= 0 become NaN and are skipped).
  auto yUnit = [&](double v) { return spec.logY ? (v > 0 ? std::log10(v) : NAN) : v; };
  std::vector<double> xs, ys;
  for (const auto& s : series) {
    xs.insert(xs.end(), s.x.begin(), s.x.end());
    for (double v : s.y) ys.push_back(yUnit(v));
  }
  Range xRange = paddedRange(xs), yRange = paddedRange(ys);
  if (spec.sameAxes && !spec.logY) {
    xs.insert(xs.end(), ys.begin(), ys.end());
    xRange = yRange = paddedRange(xs);
  }

  // Title, then the legend band, then the plot area.
  const double titleSize = std::max(9.0, std::min<double>(kTitleSize, std::floor((width - 12) / (kGlyphWidth * std::max<size_t>(1, spec.title.size())))));
  std::vector<LegendEntry> legend;
  double legendX = 12, legendRowY = 26 + kLegendSize;
  for (const auto& s : series) {
    if (s.label.empty()) continue;
    const double w = 22 + textWidth(s.label, kLegendSize) + 16;
    if (legendX > 12 && legendX + w > width - 8) legendX = 12, legendRowY += kLegendRow;
    legend.push_back({&s, legendX, legendRowY});
    legendX += w;
  }
  const double top = legend.empty() ? 30 : legendRowY + 10;

  const int yTarget = std::max(3, int((height - top - 44) / 50));
  const int xTarget = std::max(3, int(width / 90));
  const Axis yAxis = spec.logY ? logAxis(yRange) : linearAxis(yRange, yTarget);
  const Axis xAxis = linearAxis(xRange, xTarget);
  double widestY = 0;
  for (const auto& l : yAxis.labels) widestY = std::max(widestY, textWidth(l, kTickSize));
  const double left = 24 + widestY + 8;
  const double lastX = xAxis.labels.empty() ? 0 : textWidth(xAxis.labels.back(), kTickSize) / 2;
  const double right = width - std::max(14.0, lastX + 4);
  const double bottom = height - 44;
  auto mapX = [&](double v) { return left + (v - xRange.lo) / (xRange.hi - xRange.lo) * (right - left); };
  auto mapY = [&](double v) { return bottom - (v - yRange.lo) / (yRange.hi - yRange.lo) * (bottom - top); };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << spec.width << "\" height=\"" << spec.height
      << "\" viewBox=\"0 0 " << spec.width << ' ' << spec.height
      << "\" font-family=\"DejaVu Sans, Arial, Helvetica, sans-serif\" role=\"img\"";
  for (const auto& [name, value] : spec.attributes) svg << ' ' << name << "=\"" << xmlEscape(value) << '"';
  svg << ">\n<title>" << xmlEscape(spec.title) << "</title>\n";
  svg << "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
  svg << "<text x=\"" << px(width / 2) << "\" y=\"19\" text-anchor=\"middle\" font-size=\"" << titleSize
      << "\" font-weight=\"bold\">" << xmlEscape(spec.title) << "</text>\n";

  // Grid and ticks.
  svg << "<g stroke=\"#e3e3e3\" stroke-width=\"1\">";
  for (double t : xAxis.ticks) svg << "<line x1=\"" << px(mapX(t)) << "\" y1=\"" << px(top) << "\" x2=\"" << px(mapX(t)) << "\" y2=\"" << px(bottom) << "\"/>";
  for (double t : yAxis.ticks) svg << "<line x1=\"" << px(left) << "\" y1=\"" << px(mapY(t)) << "\" x2=\"" << px(right) << "\" y2=\"" << px(mapY(t)) << "\"/>";
  svg << "</g>\n<g stroke=\"#333333\" stroke-width=\"1\">";
  svg << "<line x1=\"" << px(left) << "\" y1=\"" << px(bottom) << "\" x2=\"" << px(right) << "\" y2=\"" << px(bottom) << "\"/>";
  svg << "<line x1=\"" << px(left) << "\" y1=\"" << px(top) << "\" x2=\"" << px(left) << "\" y2=\"" << px(bottom) << "\"/>";
  for (double t : xAxis.ticks) svg << "<line x1=\"" << px(mapX(t)) << "\" y1=\"" << px(bottom) << "\" x2=\"" << px(mapX(t)) << "\" y2=\"" << px(bottom + 4) << "\"/>";
  for (double t : yAxis.ticks) svg << "<line x1=\"" << px(left - 4) << "\" y1=\"" << px(mapY(t)) << "\" x2=\"" << px(left) << "\" y2=\"" << px(mapY(t)) << "\"/>";
  svg << "</g>\n<g font-size=\"" << kTickSize << "\" fill=\"#333333\">";
  for (size_t i = 0; i < xAxis.ticks.size(); ++i)
    svg << "<text x=\"" << px(mapX(xAxis.ticks[i])) << "\" y=\"" << px(bottom + 16) << "\" text-anchor=\"middle\">" << xmlEscape(xAxis.labels[i]) << "</text>";
  for (size_t i = 0; i < yAxis.ticks.size(); ++i)
    svg << "<text x=\"" << px(left - 7) << "\" y=\"" << px(mapY(yAxis.ticks[i]) + 4) << "\" text-anchor=\"end\">" << xmlEscape(yAxis.labels[i]) << "</text>";
  svg << "</g>\n";
  svg << "<text x=\"" << px((left + right) / 2) << "\" y=\"" << px(height - 8) << "\" text-anchor=\"middle\" font-size=\""
      << kLabelSize << "\">" << xmlEscape(spec.xLabel) << "</text>\n";
  svg << "<text transform=\"translate(15," << px((top + bottom) / 2) << ") rotate(-90)\" text-anchor=\"middle\" font-size=\""
      << kLabelSize << "\">" << xmlEscape(spec.yLabel) << "</text>\n";

  if (spec.identityLine) {
    const double lo = std::max(xRange.lo, yRange.lo), hi = std::min(xRange.hi, yRange.hi);
    if (lo < hi)
      svg << "<line x1=\"" << px(mapX(lo)) << "\" y1=\"" << px(mapY(lo)) << "\" x2=\"" << px(mapX(hi)) << "\" y2=\""
          << px(mapY(hi)) << "\" stroke=\"#888888\" stroke-width=\"1\" stroke-dasharray=\"5,4\"/>\n";
  }

  // Data: lines break at non-finite points; a point is a round-capped zero-length segment.
  for (const auto& s : series) {
    const size_t n = std::min(s.x.size(), s.y.size());
    if (s.style == SeriesStyle::Line) {
      svg << "<path fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"1.8\" stroke-linejoin=\"round\" stroke-linecap=\"round\"";
      if (s.opacity < 1) svg << " stroke-opacity=\"" << s.opacity << '"';
      svg << " d=\"";
      bool open = false;
      for (size_t i = 0; i < n; ++i) {
        const double y = yUnit(s.y[i]);
        if (!std::isfinite(s.x[i]) || !std::isfinite(y)) {
          open = false;
          continue;
        }
        svg << (open ? 'L' : 'M') << px(mapX(s.x[i])) << ' ' << px(mapY(y));
        if (!open && (i + 1 == n || !std::isfinite(yUnit(s.y[i + 1])))) svg << "h0";  // a lone point stays visible
        open = true;
      }
      svg << "\"/>\n";
    } else {
      svg << "<path fill=\"none\" stroke=\"" << s.color << "\" stroke-width=\"" << px(2 * s.pointRadius)
          << "\" stroke-linecap=\"round\"";
      if (s.opacity < 1) svg << " stroke-opacity=\"" << s.opacity << '"';
      svg << " d=\"";
      for (size_t i = 0; i < n; ++i) {
        const double y = yUnit(s.y[i]);
        if (std::isfinite(s.x[i]) && std::isfinite(y)) svg << 'M' << px(mapX(s.x[i])) << ' ' << px(mapY(y)) << "h0";
      }
      svg << "\"/>\n";
    }
  }

  for (const auto& e : legend) {
    const PlotSeries& s = *e.series;
    const double mid = e.y - 4;
    if (s.style == SeriesStyle::Line)
      svg << "<line x1=\"" << px(e.x) << "\" y1=\"" << px(mid) << "\" x2=\"" << px(e.x + 18) << "\" y2=\"" << px(mid)
          << "\" stroke=\"" << s.color << "\" stroke-width=\"2.5\"/>";
    else
      svg << "<circle cx=\"" << px(e.x + 9) << "\" cy=\"" << px(mid) << "\" r=\"4.5\" fill=\"" << s.color << "\"/>";
    svg << "<text x=\"" << px(e.x + 22) << "\" y=\"" << px(e.y) << "\" font-size=\"" << kLegendSize << "\">"
        << xmlEscape(s.label) << "</text>\n";
  }
  svg << "</svg>";
  return svg.str();
}

}  // namespace latentcell::eval
