// Live charts (uPlot) of one job's input and outputs, fed a sample at a time (from the
// telemetry socket, or from /stats when it is down); a few minutes kept.
import uPlot from "./vendor/uPlot.esm.js";

const KEEP_SECONDS = 300;
const COLORS = ["#0b62c4", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#1098ad"];

function chart(element, title, unit, names) {
  const width = Math.max(280, Math.min(element.clientWidth || 500, 1000));
  const series = [{}].concat(
    names.map((name, i) => ({ label: name, stroke: COLORS[i % COLORS.length], width: 2 })),
  );
  const options = {
    title,
    width,
    height: 180,
    series,
    scales: { x: { time: true } },
    axes: [{}, { label: unit, size: 60 }],
  };
  const data = [[]].concat(names.map(() => []));
  return { plot: new uPlot(options, data, element), data, names };
}

export class JobCharts {
  constructor(container) {
    this.container = container;
    this.container.replaceChildren();
    this.input = this.make("Input bitrate", "kbit/s", ["video", "audio"]);
    this.fps = this.make("Frame rate", "fps", ["input fps"]);
    this.outputs = null;
    this.outputNames = "";
    this.bySource = { socket: 0, stats: 0 }; // samples drawn, by where they came from
  }

  make(title, unit, names) {
    const element = document.createElement("div");
    element.className = "chart";
    this.container.append(element);
    return chart(element, title, unit, names);
  }

  // One sample at time `at` (seconds since the epoch): the input's figures (width,
  // height, framerate, videoDataRate, audioDataRate) and `outputs` (name, bitrateBps);
  // `source`: "socket" or "stats".
  add(at, stats, source = "stats") {
    this.bySource[source] = (this.bySource[source] || 0) + 1;
    const names = (stats.outputs || []).map((o) => o.name);
    if (names.join(",") !== this.outputNames && names.length) {
      if (this.outputs) {
        this.outputs.plot.destroy();
        this.outputs.plot.root.parentElement?.remove();
      }
      this.outputs = this.make("Output bitrate per rendition", "kbit/s", names);
      this.outputNames = names.join(",");
    }
    push(this.input, at, [stats.videoDataRate || 0, stats.audioDataRate || 0]);
    push(this.fps, at, [stats.framerate || 0]);
    if (this.outputs) {
      const byName = Object.fromEntries((stats.outputs || []).map((o) => [o.name, o]));
      push(this.outputs, at, this.outputs.names.map((n) => (byName[n]?.bitrateBps || 0) / 1000));
    }
  }

  points() {
    return [this.input, this.fps, this.outputs].filter(Boolean).map((c) => c.data[0].length);
  }

  destroy() {
    for (const c of [this.input, this.fps, this.outputs]) c?.plot.destroy();
  }
}

function push(target, at, values) {
  target.data[0].push(at);
  values.forEach((v, i) => target.data[i + 1].push(v));
  while (target.data[0].length && target.data[0][0] < at - KEEP_SECONDS) {
    for (const column of target.data) column.shift();
  }
  target.plot.setData(target.data);
}
