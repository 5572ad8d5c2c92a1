// One live job's page: ingest, online toggle, key rotation, previews, charts (fed by the
// telemetry socket, /stats polled when it is down), timings,
// restreams, cuts and their videos, webhook deliveries.
import { ApiError } from "./api.js";
import { JobCharts } from "./charts.js";
import { badge, copy, flash, h, table, when } from "./dom.js";
import { HlsPreview, WebSocketPreview } from "./players.js";
import { Telemetry } from "./telemetry.js";

function section(id, title, ...children) {
  return h("section", { className: "card", id, "aria-labelledby": `${id}-title` },
    h("h2", { id: `${id}-title` }, title), ...children);
}

function copyable(label, value, id, secret) {
  // A URL carrying the stream key shows it masked unless the key is shown.
  const shown = value && secret ? value.split(secret).join("••••••••") : value;
  const code = h("code", { id }, shown || "—");
  const button = h("button", { type: "button", className: "secondary",
    "aria-label": `Copy ${label}`, disabled: !value, onclick: () => copy(value, button) }, "Copy");
  return [h("span", {}, label), h("span", {}, code, " ", button)];
}

export async function jobPage(state, id, { show, every }) {
  const api = state.api;
  let job = await api.get(api.jobs(`/livejobs/${encodeURIComponent(id)}`));
  const title = h("h1", {}, `Job #${job.id} `, h("span", { id: "job-status" }, badge("…")),
    " ", h("span", { id: "job-health" }, ""));
  const message = (text) => flash(text, "info");

  // Ingest and stream key
  const ingest = h("div", { className: "kv" });
  let keyShown = false;
  const renderIngest = () => {
    const keyCode = h("code", { id: "stream-key" }, keyShown ? job.key : "•••••••• (hidden)");
    const showKey = h("button", { type: "button", className: "secondary", id: "show-key",
      "aria-pressed": String(keyShown),
      onclick: () => { keyShown = !keyShown; renderIngest(); } }, keyShown ? "Hide" : "Show");
    const copyKey = h("button", { type: "button", className: "secondary", id: "copy-key",
      onclick: () => copy(job.key, copyKey) }, "Copy");
    ingest.replaceChildren(
      ...copyable("RTMP server", job.rtmpServer, "rtmp-server"),
      ...copyable("Ingest URL", job.ingestUrl, "ingest-url", keyShown ? null : job.key),
      ...copyable("Backup ingest URL", job.backupIngestUrl, "backup-ingest-url",
        keyShown ? null : job.key),
      h("span", {}, "Stream key"), h("span", {}, keyCode, " ", showKey, copyKey),
      h("span", {}, "Master playlist"), h("span", {}, h("code", {}, job.storageMasterFile || "—")));
  };
  renderIngest();

  const onlineButton = h("button", { type: "button", id: "online-toggle", onclick: async () => {
    onlineButton.disabled = true;
    try {
      await api.post(api.jobs(`/livejobs/${encodeURIComponent(job.key)}`), { online: !job.online });
      await refreshJob();
      message(job.online ? "The job is online: publish to its ingest URL." : "The job is offline.");
    } catch (error) { flash(error.message); } finally { onlineButton.disabled = false; }
  } });
  let confirmRotate = false;
  const rotateButton = h("button", { type: "button", className: "secondary", id: "rotate-key",
    onclick: async () => {
      if (!confirmRotate) {
        confirmRotate = true;
        rotateButton.textContent = "Confirm: rotate the stream key";
        return;
      }
      confirmRotate = false;
      rotateButton.textContent = "Rotate stream key";
      try {
        job = await api.post(api.jobs(`/livejobs/${job.id}/key`));
        renderIngest();
        message("New stream key: the old one is refused for new publishers.");
      } catch (error) { flash(error.message); }
    } }, "Rotate stream key");

  const STATUS_NAMES = { 1: "Offline", 2: "Processing", 3: "Live", 4: "Interrupted" };
  function showStatus() {
    document.getElementById("job-status")?.replaceChildren(badge(STATUS_NAMES[job.status] || job.status));
    onlineButton.textContent = job.online ? "Take offline" : "Put online";
    onlineButton.className = job.online ? "danger" : "";
  }

  async function refreshJob() {
    job = await api.get(api.jobs(`/livejobs/${job.id}`));
    showStatus();
    renderIngest();
  }

  // Preview (hls.js) with a level picker and the cut's timeline
  const video = h("video", { id: "preview", muted: true, autoplay: true, playsInline: true,
    controls: true });
  video.muted = true;
  const levels = h("select", { id: "preview-level", "aria-label": "Rendition" },
    h("option", { value: "-1" }, "Auto"));
  const source = h("select", { id: "preview-source", "aria-label": "Playlist" },
    h("option", { value: "live" }, "Live (master)"),
    h("option", { value: "dvr" }, "DVR (recorded timeline, for cuts)"));
  const previewError = h("p", { className: "error", id: "preview-error", role: "status" });
  const preview = new HlsPreview(video, (found) => {
    levels.replaceChildren(h("option", { value: "-1" }, "Auto"),
      ...found.map((l) => h("option", { value: String(l.index) },
        `${l.height}p · ${Math.round(l.bitrate / 1000)} kbit/s`)));
    previewError.textContent = "";
  }, (text) => { previewError.textContent = text; });
  state.cleanups.push(() => preview.stop());
  levels.addEventListener("change", () => preview.setLevel(Number(levels.value)));
  const playSource = () => {
    const src = source.value === "dvr" ? job.storageDvrMasterFile : job.storageMasterFile;
    if (src) preview.play(src);
  };
  source.addEventListener("change", () => { preview.stop(); playSource(); });
  const startPreview = h("button", { type: "button", id: "preview-start", onclick: playSource },
    "Play preview");

  const timeline = h("input", { type: "range", id: "timeline", min: "0", max: "0", step: "0.1",
    value: "0", "aria-label": "Preview timeline (seconds)" });
  const position = h("span", { id: "timeline-position", className: "muted" }, "0.0 s");
  timeline.addEventListener("input", () => { video.currentTime = Number(timeline.value); });
  video.addEventListener("timeupdate", () => {
    const ranges = video.seekable;
    if (ranges.length) timeline.max = String(ranges.end(ranges.length - 1));
    if (document.activeElement !== timeline) timeline.value = String(video.currentTime);
    position.textContent = `${video.currentTime.toFixed(1)} s`;
  });
  const fromInput = h("input", { type: "number", id: "cut-from", min: "0", step: "0.1" });
  const toInput = h("input", { type: "number", id: "cut-to", min: "0", step: "0.1" });
  const markFrom = h("button", { type: "button", className: "secondary", id: "mark-from",
    onclick: () => { fromInput.value = video.currentTime.toFixed(1); } }, "Mark from");
  const markTo = h("button", { type: "button", className: "secondary", id: "mark-to",
    onclick: () => { toInput.value = video.currentTime.toFixed(1); } }, "Mark to");
  const cutTitle = h("input", { type: "text", id: "cut-title", placeholder: "title",
    "aria-label": "Video title" });
  const cutStatus = h("p", { id: "cut-status", role: "status" });
  const cutButton = h("button", { type: "button", id: "cut", onclick: () => cut() }, "Cut a video");

  async function cut() {
    const from = Math.round(Number(fromInput.value) * 1000);
    const to = Math.round(Number(toInput.value) * 1000);
    if (!(to > from)) {
      cutStatus.className = "error";
      cutStatus.textContent = "Mark a range first: its end after its start.";
      return;
    }
    cutButton.disabled = true;
    cutStatus.className = "";
    const body = { fromMilisecond: from, toMilisecond: to, title: cutTitle.value || undefined };
    const url = api.project(`/live-videos/${encodeURIComponent(job.name)}/cut-and-publish`, "v2");
    const deadline = Date.now() + 60_000;
    try {
      for (;;) {
        try {
          const made = await api.post(url, body);
          cutStatus.textContent = `Cutting: video ${made.videoPublicId}`;
          await refreshVideos();
          return;
        } catch (error) {
          // The range's end is not recorded yet: ask again shortly, as the API says.
          if (!(error instanceof ApiError) || error.status !== 400
            || !/recorded/.test(error.message) || Date.now() > deadline) throw error;
          cutStatus.textContent = `Waiting for the range to be recorded (${error.message})`;
          await new Promise((resolve) => setTimeout(resolve, 1000));
        }
      }
    } catch (error) {
      cutStatus.className = "error";
      cutStatus.textContent = error.message;
    } finally {
      cutButton.disabled = false;
    }
  }

  // WebSocket preview (mpegts.js), through a view token
  const wsVideo = h("video", { id: "ws-preview", muted: true, autoplay: true, playsInline: true,
    controls: true });
  wsVideo.muted = true;
  const wsRendition = h("input", { type: "text", id: "ws-rendition", placeholder: "source",
    "aria-label": "Rendition (source or a rendition name)" });
  const wsStatus = h("p", { id: "ws-status", role: "status", className: "muted" });
  const wsPlayer = new WebSocketPreview(wsVideo, (text) => {
    wsStatus.className = "error";
    wsStatus.textContent = text;
  });
  wsVideo.addEventListener("playing", () => {
    wsStatus.className = "muted";
    wsStatus.textContent = "Playing over the WebSocket";
  });
  state.cleanups.push(() => wsPlayer.stop());
  const wsStart = h("button", { type: "button", id: "ws-start", onclick: async () => {
    wsStatus.className = "muted";
    wsStatus.textContent = "Asking for a view token…";
    try {
      const token = await api.post(api.jobs(`/livejobs/${job.id}/tokens`), { purpose: "view" });
      let url = token.url;
      if (wsRendition.value.trim()) url += `&rendition=${encodeURIComponent(wsRendition.value.trim())}`;
      wsStatus.textContent = `Connecting (token until ${when(token.expiresAt)})…`;
      await wsPlayer.play(url);
    } catch (error) {
      wsStatus.className = "error";
      wsStatus.textContent = error instanceof ApiError && (error.status === 404 || error.status === 405)
        ? "WebSocket preview not available" : error.message;
    }
  } }, "Start WebSocket preview");

  // Restreams
  const restreamList = h("div", { id: "restreams" });
  const rsTitle = h("input", { type: "text", id: "restream-title", required: true });
  const rsUrl = h("input", { type: "url", id: "restream-url", required: true,
    placeholder: "rtmp://a.rtmp.youtube.com/live2" });
  const rsKey = h("input", { type: "password", id: "restream-key", required: true });
  const rsError = h("p", { className: "error", id: "restream-error", role: "alert" });
  const rsForm = h("form", { id: "restream-form", onsubmit: async (event) => {
    event.preventDefault();
    rsError.textContent = "";
    try {
      await api.post(api.project("/restreams"), { videoId: job.name, title: rsTitle.value,
        streamUrl: rsUrl.value, streamKey: rsKey.value, status: true });
      rsForm.reset();
      await refreshRestreams();
    } catch (error) { rsError.textContent = error.message; }
  } },
  h("label", { for: "restream-title" }, "Title"), rsTitle,
  h("label", { for: "restream-url" }, "Stream URL"), rsUrl,
  h("label", { for: "restream-key" }, "Stream key"), rsKey,
  h("p", {}, h("button", { type: "submit", id: "restream-add" }, "Add restream")), rsError);

  async function refreshRestreams() {
    const rows = await api.get(api.project(`/live-video/${encodeURIComponent(job.name)}/restreams?pageSize=100`));
    restreamList.replaceChildren(table(["Title", "Target", "Enabled", "State", "Last error", ""],
      rows.map((r) => [r.title, r.streamUrl,
        h("span", { className: "restream-enabled", dataset: { restreamId: String(r.id) } },
          r.status ? "enabled" : "disabled"),
        badge(r.state || "—"), r.lastError || "",
        h("span", {},
          h("button", { type: "button", className: "secondary restream-toggle",
            dataset: { restreamId: String(r.id) }, onclick: async () => {
              try {
                await api.call("PUT", api.project(`/restreams/${r.id}/toggle`));
                await refreshRestreams();
              } catch (error) { flash(error.message); }
            } }, r.status ? "Disable" : "Enable"),
          h("button", { type: "button", className: "danger", onclick: async () => {
            try {
              await api.call("DELETE", api.project(`/restreams/${r.id}`));
              await refreshRestreams();
            } catch (error) { flash(error.message); }
          } }, "Delete"))]), "No restream."));
  }

  // Videos cut from this live
  const videoList = h("div", { id: "videos" });
  const vodVideo = h("video", { id: "video-player", controls: true, playsInline: true, muted: true });
  const vodPlayer = new HlsPreview(vodVideo, () => {}, (text) => flash(text));
  state.cleanups.push(() => vodPlayer.stop());
  async function refreshVideos() {
    const rows = await api.get(api.project(`/videos?liveJobId=${job.id}&pageSize=50`));
    videoList.replaceChildren(table(["Title", "Status", "Range", "Duration", ""],
      rows.map((v) => [v.title || v.name || v.videoPublicId,
        h("span", { className: "video-status", dataset: { videoId: v.videoPublicId } },
          badge(v.status)),
        `${(v.fromMilisecond / 1000).toFixed(1)}–${(v.toMilisecond / 1000).toFixed(1)} s`,
        v.duration ? `${(v.duration / 1000).toFixed(1)} s` : "—",
        v.status === "Ready" && v.playbackUrl ? h("button", { type: "button",
          className: "secondary video-play", onclick: () => vodPlayer.play(v.playbackUrl) }, "Play")
          : (v.error || "")]), "No video cut yet."));
  }

  // Timings and webhook deliveries
  const timings = h("div", { id: "timings" });
  async function refreshTimings() {
    const rows = await api.get(api.jobs(`/livejobs/${job.id}/timings?pageSize=50`));
    timings.replaceChildren(table(["When", "Status", "Event", "Comment"],
      rows.map((t) => [when(t.startDateTime), String(t.status), t.childStatus, t.messageComment || ""])));
  }
  const deliveries = h("div", { id: "deliveries" });
  async function refreshDeliveries() {
    const rows = await api.get(api.project(`/webhooks/deliveries?liveJobId=${job.id}&pageSize=20`));
    deliveries.replaceChildren(table(["Created", "Event", "State", "Attempts", "Last answer"],
      rows.map((d) => [when(d.createdAt), d.type, badge(d.state), String(d.attempts),
        d.lastStatusCode ? String(d.lastStatusCode) : (d.lastError || "—")]),
      job.input.callbackUrl ? "No delivery yet." : "No callbackUrl: no webhook is sent."));
  }

  // Charts, fed by the telemetry socket (a message a second); /stats polled when it is down
  const chartBox = h("div", { id: "charts" });
  const statsLine = h("p", { id: "stats-line", className: "muted" });
  const telemetryNote = h("p", { id: "telemetry-note", className: "muted", role: "status" });
  show(title,
    h("p", { className: "muted" }, job.description || "", " ", h("code", {}, job.name)),
    h("div", { className: "row" }, onlineButton, rotateButton),
    section("ingest", "Ingest", ingest),
    h("div", { className: "grid" },
      section("preview-card", "Preview (HLS)", video,
        h("div", { className: "row" }, startPreview, source, levels),
        h("div", { className: "row" }, timeline, position), previewError,
        h("div", { className: "row" }, markFrom, markTo,
          h("label", { for: "cut-from" }, "from (s)"), fromInput,
          h("label", { for: "cut-to" }, "to (s)"), toInput),
        h("div", { className: "row" }, cutTitle, cutButton), cutStatus),
      section("ws-card", "Preview (WebSocket)", wsVideo,
        h("div", { className: "row" }, wsRendition, wsStart), wsStatus)),
    section("charts-card", "Input and outputs", telemetryNote, statsLine, chartBox),
    section("restreams-card", "Restreams", restreamList, rsForm),
    section("videos-card", "Videos cut from this live", videoList, vodVideo),
    section("timings-card", "Timings", timings),
    section("deliveries-card", "Webhook deliveries", deliveries));
  const charts = new JobCharts(chartBox);
  state.charts = charts;
  state.cleanups.push(() => { charts.destroy(); state.charts = null; });

  const describe = (stats, dropped) => {
    statsLine.textContent = `${stats.width}x${stats.height} · ${stats.framerate} fps · video`
      + ` ${stats.videoDataRate} kbit/s · audio ${stats.audioDataRate} kbit/s`
      + (dropped === undefined ? "" : ` · dropped ${dropped}`);
  };
  const telemetry = new Telemetry(api, job.id, {
    onMessage: (message) => {
      const wasLive = job.status === 3;
      if (message.status !== undefined) job.status = message.status;
      if (message.online !== undefined) job.online = message.online;
      showStatus();
      if (job.status === 3 && !wasLive && !preview.hls) playSource();
      if (!message.statistics) return;
      charts.add(Date.now() / 1000, { ...message.statistics, outputs: message.outputs || [] },
        "socket");
      describe(message.statistics);
    },
    onState: (now, problem) => {
      telemetryNote.dataset.state = now;
      telemetryNote.className = now === "unavailable" ? "error" : "muted";
      telemetryNote.textContent = now === "open" ? "Live telemetry (WebSocket)"
        : now === "unavailable" ? `Telemetry socket unavailable: polling /stats (${problem})`
          : now === "closed" ? "Telemetry socket closed: reconnecting…" : "Telemetry socket connecting…";
    },
  });
  state.telemetry = telemetry;
  state.cleanups.push(() => { telemetry.stop(); state.telemetry = null; });

  await refreshJob();
  if (job.online) playSource();
  telemetry.start();
  // /stats: the input's health (the socket does not carry it) every 6 s; and the charts'
  // samples, every 2 s, only while the socket gives nothing.
  let lastStatsAt = 0;
  every(2, async () => {
    const fallback = telemetry.down();
    if (!fallback && Date.now() - lastStatsAt < 6000) return;
    lastStatsAt = Date.now();
    const [stats] = await api.get(api.jobs(`/livejobs/${job.id}/stats`));
    if (!stats) return;
    document.getElementById("job-health")?.replaceChildren(badge(stats.healthStatusName));
    if (!fallback) return;
    charts.add(Date.now() / 1000, stats, "stats");
    describe(stats, stats.droppedFrames);
  });
  every(3, async () => {
    const wasLive = job.status === 3;
    await refreshJob();
    if (job.status === 3 && !wasLive && !preview.hls) playSource();
  });
  every(5, () => Promise.all([refreshTimings(), refreshRestreams(), refreshVideos(),
    refreshDeliveries()]));
}
