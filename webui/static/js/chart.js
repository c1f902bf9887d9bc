// Live time-series charts on the vendored uPlot (webui/static/vendor/uplot).

import uPlot from "../vendor/uplot/uPlot.esm.js";
import { fmtBytes, fmtRate } from "./ui.js";

const COLORS = ["#2f5bd3", "#e07b16"];

/**
 * A chart of two series over time (seconds). `el` is its container; update(t, a, b) redraws.
 * The width follows the container (ResizeObserver); destroy() frees it.
 */
export function rateChart(el, { labels, bytes = false }) {
  const fmt = bytes ? (v) => (v == null ? "—" : `${fmtBytes(v)}/s`) : (v) => (v == null ? "—" : `${fmtRate(v)}/s`);
  const opts = {
    width: Math.max(280, el.clientWidth || 600),
    height: 220,
    cursor: { drag: { x: false, y: false } },
    legend: { live: true },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(bytes ? 1024 : 1, max * 1.15)] } },
    axes: [
      { stroke: "#5b6678", grid: { stroke: "#eef1f6" } },
      { stroke: "#5b6678", grid: { stroke: "#eef1f6" }, size: 70, values: (u, vals) => vals.map((v) => (bytes ? fmtBytes(v) : fmtRate(v))) },
    ],
    series: [
      {},
      { label: labels[0], stroke: COLORS[0], width: 2, fill: "rgba(47,91,211,0.08)", value: (u, v) => fmt(v), spanGaps: false },
      { label: labels[1], stroke: COLORS[1], width: 2, value: (u, v) => fmt(v), spanGaps: false },
    ],
  };
  const plot = new uPlot(opts, [[], [], []], el);
  const ro = new ResizeObserver(() => {
    const w = Math.max(280, el.clientWidth);
    if (Math.abs(w - plot.width) > 2) plot.setSize({ width: w, height: 220 });
  });
  ro.observe(el);
  return {
    update(t, a, b) { plot.setData([t, a, b]); },
    destroy() { ro.disconnect(); plot.destroy(); },
  };
}
