// A job's telemetry socket (`.../livejobs/{id}/events`): one JSON message a second
// with its status, input statistics and outputs. It opens with a short-lived token
// (POST .../tokens, purpose events); when it closes (the token expired, the service
// restarted) a new token is asked for and the socket reopened, with a short backoff.
// `down()` says when the page should poll /stats instead.

const FRESH_MS = 5000; // a socket with no message for this long is down
const BACKOFF_MS = [500, 1000, 2000, 5000, 10000];

export class Telemetry {
  constructor(api, jobId, { onMessage, onState }) {
    this.api = api;
    this.jobId = jobId;
    this.onMessage = onMessage;
    this.onState = onState;
    this.state = "connecting"; // connecting, open, closed, unavailable
    this.messages = 0; // messages received, all connections together
    this.connections = 0; // sockets opened
    this.failures = 0; // attempts in a row that got no message
    this.startedAt = Date.now();
    this.lastMessageAt = 0;
    this.socket = null;
    this.timer = null;
    this.stopped = false;
    this.problem = "";
  }

  start() {
    this.connect();
    return this;
  }

  // The socket gives nothing now: not open after a few seconds, or silent.
  down() {
    if (this.lastMessageAt) return Date.now() - this.lastMessageAt > FRESH_MS;
    return this.state === "unavailable" || Date.now() - this.startedAt > FRESH_MS;
  }

  setState(state, problem = "") {
    this.state = state;
    this.problem = problem;
    this.onState?.(state, problem);
  }

  async connect() {
    if (this.stopped) return;
    this.setState("connecting");
    let token;
    try {
      token = await this.api.post(this.api.jobs(`/livejobs/${this.jobId}/tokens`),
        { purpose: "events" });
    } catch (error) {
      this.retry(`no telemetry token (${error.message})`);
      return;
    }
    if (this.stopped) return;
    let socket;
    try {
      socket = new WebSocket(token.url);
    } catch (error) {
      this.retry(`the telemetry socket cannot open (${error.message})`);
      return;
    }
    this.socket = socket;
    let received = false;
    socket.addEventListener("open", () => {
      this.connections += 1;
      this.setState("open");
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      received = true;
      this.failures = 0;
      this.messages += 1;
      this.lastMessageAt = Date.now();
      if (this.state !== "open") this.setState("open");
      this.onMessage?.(message);
    });
    socket.addEventListener("close", (event) => {
      if (this.socket === socket) this.socket = null;
      if (this.stopped) return;
      if (received) {
        // It worked: closed (the token's time is up, or the service went): reopen soon.
        this.failures = 0;
        this.setState("closed");
        this.schedule(BACKOFF_MS[0]);
      } else {
        this.retry(`the telemetry socket closed before any message (code ${event.code})`);
      }
    });
  }

  retry(problem) {
    if (this.stopped) return;
    this.failures += 1;
    this.setState("unavailable", problem);
    this.schedule(BACKOFF_MS[Math.min(this.failures - 1, BACKOFF_MS.length - 1)]);
  }

  schedule(ms) {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), ms);
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.socket?.close();
    this.socket = null;
  }
}
