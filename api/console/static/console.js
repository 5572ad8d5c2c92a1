// The operator's console: sign in, the jobs, a new job, one job's page. Hash routes
// (#/jobs, #/new, #/job/{id}); every view polls what it shows and stops when left.
import { Api, ApiError, forgetCredentials, saveCredentials, savedCredentials } from "./api.js";
import { badge, flash, h, table, when } from "./dom.js";

const main = document.getElementById("main");
const state = { api: null, timers: [], cleanups: [] };
window.onairConsole = state; // for a look from the browser's devtools (and the tests)

function every(seconds, work) {
  let running = false;
  const tick = async () => {
    if (running) return;
    running = true;
    try {
      await work();
    } catch (error) {
      flash(error.message);
    } finally {
      running = false;
    }
  };
  tick();
  state.timers.push(setInterval(tick, seconds * 1000));
}

function leaveView() {
  for (const timer of state.timers) clearInterval(timer);
  for (const cleanup of state.cleanups) {
    try { cleanup(); } catch { /* the view is gone anyway */ }
  }
  state.timers = [];
  state.cleanups = [];
  flash(null);
}

function show(...children) {
  main.replaceChildren(...children);
  main.focus();
}

// -- sign in ------------------------------------------------------------------------

function signInView() {
  const projectId = h("input", { type: "text", id: "project-id", name: "projectId",
    autocomplete: "username", required: true, spellcheck: false });
  const apiKey = h("input", { type: "password", id: "api-key", name: "apiKey",
    autocomplete: "current-password", required: true });
  const error = h("p", { className: "error", id: "signin-error", role: "alert" });
  const form = h("form", { className: "signin", onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    const credentials = { projectId: projectId.value.trim(), apiKey: apiKey.value.trim() };
    const api = new Api(credentials);
    try {
      await api.get(api.jobs("/jobtemplates?pageSize=1"));
    } catch (failure) {
      error.textContent = failure.message;
      apiKey.focus();
      return;
    }
    saveCredentials(credentials);
    state.api = api;
    document.getElementById("nav").hidden = false;
    location.hash = "#/jobs";
    route();
  } },
  h("h1", {}, "Sign in"),
  h("p", { className: "muted" }, "The project id and API key `onair project create` printed."),
  h("label", { for: "project-id" }, "Project id"), projectId,
  h("label", { for: "api-key" }, "API key"), apiKey,
  h("p", {}, h("button", { type: "submit", id: "sign-in" }, "Sign in")), error);
  show(form);
  projectId.focus();
}

// -- jobs ---------------------------------------------------------------------------

function jobsView() {
  const api = state.api;
  const body = h("div", { id: "jobs" }, h("p", { className: "muted" }, "Loading…"));
  const search = h("input", { type: "search", id: "jobs-search", placeholder: "search",
    "aria-label": "Search jobs", value: state.jobSearch || "" });
  show(h("h1", {}, "Live jobs"),
    h("div", { className: "row" }, search, h("a", { href: "#/new" }, "New job")),
    h("section", { className: "card" }, body));
  const health = new Map();
  every(3, async () => {
    const query = new URLSearchParams({ pageSize: "50" });
    if (search.value.trim()) query.set("search", search.value.trim());
    const jobs = await api.get(api.jobs(`/livejobs?${query}`));
    await Promise.all(jobs.slice(0, 20).filter((j) => j.status !== "Offline").map(async (job) => {
      try {
        const [stats] = await api.get(api.jobs(`/livejobs/${job.id}/stats`));
        health.set(job.id, stats ? stats.healthStatusName : "Unknown");
      } catch { health.set(job.id, "?"); }
    }));
    body.replaceChildren(table(["Job", "Status", "Health", "Description", "Started"],
      jobs.map((job) => [
        h("a", { href: `#/job/${job.id}`, dataset: { jobId: String(job.id) } }, `#${job.id} ${job.filePath}`),
        h("span", { className: "job-status", dataset: { jobId: String(job.id) } }, badge(job.status)),
        job.status === "Offline" ? "—" : badge(health.get(job.id) || "Unknown"),
        job.description || "", when(job.startDateTime),
      ]), "No live job yet: create one."));
  });
  search.addEventListener("change", () => {
    state.jobSearch = search.value;
    route();
  });
}

// -- new job ------------------------------------------------------------------------

async function newJobView() {
  const api = state.api;
  const templates = await api.get(api.jobs("/jobtemplates?pageSize=100"));
  const field = (id, label, props = {}) => [h("label", { for: id }, label),
    h("input", { type: "text", id, name: id, ...props })];
  const select = (id, label, options) => [h("label", { for: id }, label),
    h("select", { id, name: id }, options.map(([value, text]) => h("option", { value }, text)))];
  const error = h("p", { className: "error", id: "create-error", role: "alert" });
  const form = h("form", { id: "create-job", onsubmit: async (event) => {
    event.preventDefault();
    error.textContent = "";
    const value = (id) => form.querySelector(`#${id}`).value.trim();
    const body = {
      jobTemplateId: Number(value("template")),
      destination: value("destination"),
      bucket: value("bucket"),
      description: value("description") || undefined,
      input: {
        filePath: value("file-path"),
        serverType: Number(value("server-type")),
        inputClass: Number(value("input-class")),
      },
    };
    try {
      const job = await api.post(api.jobs("/livejobs"), body);
      location.hash = `#/job/${job.id}`;
    } catch (failure) {
      error.textContent = failure.message;
    }
  } },
  ...select("template", "Template", templates.map((t) => [t.id, `${t.name} — ${t.description || ""}`])),
  ...field("destination", "Destination", { required: true, value: "live" }),
  ...field("file-path", "File path", { required: true }),
  ...field("bucket", "Bucket", { required: true }),
  ...field("description", "Description"),
  ...select("server-type", "Server type", [[0, "RTMP"], [1, "SRT"], [2, "HLS"]]),
  ...select("input-class", "Input class", [[0, "Single"], [1, "Standard (primary + backup)"]]),
  h("p", {}, h("button", { type: "submit", id: "create" }, "Create job")), error);
  show(h("h1", {}, "New live job"), h("section", { className: "card" }, form));
}

// -- one job ------------------------------------------------------------------------

async function jobView(id) {
  const { jobPage } = await import("./job.js");
  await jobPage(state, id, { show, every });
}

// -- routing ------------------------------------------------------------------------

async function route() {
  leaveView();
  if (!state.api) {
    const saved = savedCredentials();
    if (saved) state.api = new Api(saved);
  }
  document.getElementById("nav").hidden = !state.api;
  if (!state.api) return signInView();
  const path = location.hash.replace(/^#/, "") || "/jobs";
  const job = path.match(/^\/job\/([^/]+)$/);
  try {
    if (path === "/new") await newJobView();
    else if (job) await jobView(decodeURIComponent(job[1]));
    else jobsView();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      forgetCredentials();
      state.api = null;
      signInView();
      document.getElementById("signin-error").textContent = error.message;
      return;
    }
    show(h("h1", {}, "Something went wrong"), h("p", { className: "error" }, error.message),
      h("p", {}, h("a", { href: "#/jobs" }, "Back to the jobs")));
  }
}

document.getElementById("sign-out").addEventListener("click", () => {
  forgetCredentials();
  state.api = null;
  location.hash = "";
  route();
});
window.addEventListener("hashchange", route);
window.addEventListener("error", (event) => flash(`console error: ${event.message}`));
window.addEventListener("unhandledrejection", (event) => flash(`console error: ${event.reason}`));
route();
