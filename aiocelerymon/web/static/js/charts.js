// Time-series charts on the vendored uPlot (static/vendor/uplot, see VENDORED.md).

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { h } from "./dom.js";

const PALETTE = {
  succeeded: "--ok", failed: "--err", retried: "--warn",
};
const EXTRA = ["--c1", "--c2", "--c3", "--c4", "--c5", "--c6"];

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

export class Chart {
  // labels: series names; colors: CSS variable names (one per series)
  constructor(parent, { title, labels, colors, yLabel = "" }) {
    this.el = h("div", { class: "chart", "data-chart": title });
    this.titleEl = h("h3", { class: "chart-title" }, title);
    this.plotEl = h("div", { class: "chart-plot" });
    this.el.append(this.titleEl, this.plotEl);
    parent.append(this.el);
    this.labels = labels;
    this.colors = colors || labels.map((l, i) => PALETTE[l] || EXTRA[i % EXTRA.length]);
    this.yLabel = yLabel;
    this.plot = null;
    this.observer = new ResizeObserver(() => this.resize());
    this.observer.observe(this.el);
  }

  size() {
    const width = Math.max(200, this.plotEl.clientWidth || this.el.clientWidth || 300);
    return { width, height: width < 500 ? 160 : 200 };
  }

  build(data) {
    const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--grid"), width: 1 },
      ticks: { stroke: cssVar("--grid") } };
    const opts = {
      ...this.size(),
      scales: { x: { time: true } },
      axes: [axis, { ...axis, label: this.yLabel, size: 50 }],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
      series: [{}, ...this.labels.map((label, i) => ({
        label, stroke: cssVar(this.colors[i]), width: 1.5, points: { show: false },
      }))],
    };
    this.plot = new uPlot(opts, data, this.plotEl);
  }

  // data: [xs, ys1, ys2, ...] (x in Unix seconds)
  update(data, labels) {
    if (labels && labels.join("\u0000") !== this.labels.join("\u0000")) {
      this.labels = labels;
      this.colors = labels.map((l, i) => PALETTE[l] || EXTRA[i % EXTRA.length]);
      if (this.plot) this.plot.destroy();
      this.plot = null;
    }
    // For tests and people alike: how many samples it shows, and how many are not zero.
    const ys = data.slice(1).flat();
    this.el.dataset.points = String(ys.filter((y) => y !== null && y !== undefined).length);
    this.el.dataset.nonzero = String(ys.filter((y) => y).length);
    if (!this.plot) this.build(data);
    else this.plot.setData(data);
  }

  resize() {
    if (this.plot) this.plot.setSize(this.size());
  }

  destroy() {
    this.observer.disconnect();
    if (this.plot) this.plot.destroy();
    this.el.remove();
  }
}

// {succeeded: [...], failed: [...], retried: [...]} -> uPlot data
export function rateData(t, series) {
  return [t, series.succeeded, series.failed, series.retried];
}

export const RATE_LABELS = ["succeeded", "failed", "retried"];
