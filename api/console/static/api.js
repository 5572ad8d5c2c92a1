// The control API as the console calls it: the operator's key on every call, the
// envelope unwrapped, an error carrying what the API said.

const STORE = "onair.console.credentials";

export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

export function savedCredentials() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE) || "null");
    return saved && saved.projectId && saved.apiKey ? saved : null;
  } catch {
    return null;
  }
}

export function saveCredentials(credentials) {
  sessionStorage.setItem(STORE, JSON.stringify(credentials));
}

export function forgetCredentials() {
  sessionStorage.removeItem(STORE);
}

export class Api {
  constructor({ projectId, apiKey }) {
    this.projectId = projectId;
    this.apiKey = apiKey;
  }

  // `/api/v1/projects/{projectId}` + path: the live jobs' routes.
  jobs(path) {
    return `/api/v1/projects/${encodeURIComponent(this.projectId)}${path}`;
  }

  // `/api/{version}/{projectId}` + path: restreams, videos, webhooks, live videos.
  project(path, version = "v1") {
    return `/api/${version}/${encodeURIComponent(this.projectId)}${path}`;
  }

  async call(method, url, body) {
    const headers = { Authorization: `Bearer ${this.apiKey}`, Accept: "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      throw new ApiError(0, `cannot reach the service (${error.message})`, null);
    }
    let envelope = null;
    try {
      envelope = await response.json();
    } catch {
      envelope = null;
    }
    if (!response.ok || (envelope && envelope.success === false)) {
      const said = envelope && envelope.errors && envelope.errors.length
        ? envelope.errors.join("; ")
        : `${response.status} ${response.statusText}`;
      const message = response.status === 401 && !/invalid API key/i.test(said)
        ? `invalid API key (${said})` : said;
      throw new ApiError(response.status, message, envelope);
    }
    if (!envelope) throw new ApiError(response.status, "the service answered no JSON", null);
    return envelope;
  }

  async get(url) {
    return (await this.call("GET", url)).result;
  }

  async post(url, body) {
    return (await this.call("POST", url, body)).result;
  }
}
