// The preview players: hls.js on a job's playlists, mpegts.js on its WebSocket.
import Hls from "./vendor/hls.mjs";

export class HlsPreview {
  constructor(video, onLevels, onError) {
    this.video = video;
    this.onLevels = onLevels;
    this.onError = onError;
    this.hls = null;
    this.src = null;
  }

  play(src) {
    if (this.src === src && this.hls) return;
    this.stop();
    this.src = src;
    if (!Hls.isSupported()) {
      if (this.video.canPlayType("application/vnd.apple.mpegurl")) {
        this.video.src = src;
        this.video.play().catch(() => {});
      } else {
        this.onError("this browser cannot play HLS (no MediaSource)");
      }
      return;
    }
    const hls = new Hls({ enableWorker: true, liveDurationInfinity: true });
    this.hls = hls;
    hls.on(Hls.Events.MANIFEST_PARSED, (_, data) => {
      this.onLevels(data.levels.map((l, i) => ({ index: i, height: l.height, bitrate: l.bitrate })));
      this.video.play().catch(() => {});
    });
    hls.on(Hls.Events.ERROR, (_, data) => {
      if (!data.fatal) return;
      this.onError(`preview: ${data.details}`);
      if (data.type === Hls.ErrorTypes.NETWORK_ERROR) {
        // Not published yet (a new live's master comes with its first segments), or
        // the store hiccuped: a fresh player in a moment.
        setTimeout(() => {
          if (this.hls !== hls) return;
          this.stop();
          this.play(src);
        }, 2000);
      } else if (data.type === Hls.ErrorTypes.MEDIA_ERROR) {
        hls.recoverMediaError();
      }
    });
    hls.loadSource(src);
    hls.attachMedia(this.video);
  }

  setLevel(index) {
    if (this.hls) this.hls.nextLevel = index; // at the next fragment (-1: automatic)
  }

  stop() {
    if (this.hls) this.hls.destroy();
    this.hls = null;
    this.src = null;
    this.video.removeAttribute("src");
  }
}

let mpegtsLoading = null;

// mpegts.js ships as UMD only: loaded once, as a classic script from this origin.
function loadMpegts() {
  if (window.mpegts) return Promise.resolve(window.mpegts);
  if (!mpegtsLoading) {
    mpegtsLoading = new Promise((resolve, reject) => {
      const script = document.createElement("script");
      script.src = "vendor/mpegts.js";
      script.onload = () => resolve(window.mpegts);
      script.onerror = () => reject(new Error("vendor/mpegts.js did not load"));
      document.head.append(script);
    });
  }
  return mpegtsLoading;
}

export class WebSocketPreview {
  constructor(video, onError) {
    this.video = video;
    this.onError = onError;
    this.player = null;
  }

  async play(url) {
    this.stop();
    const mpegts = await loadMpegts();
    if (!mpegts.isSupported()) throw new Error("this browser cannot play MPEG-TS (no MediaSource)");
    const player = mpegts.createPlayer({ type: "mpegts", isLive: true, url });
    this.player = player;
    player.on(mpegts.Events.ERROR, (type, detail) => this.onError(`WebSocket preview: ${type} ${detail}`));
    player.attachMediaElement(this.video);
    player.load();
    await Promise.resolve(player.play()).catch(() => {});
  }

  stop() {
    if (!this.player) return;
    this.player.pause();
    this.player.unload();
    this.player.detachMediaElement();
    this.player.destroy();
    this.player = null;
  }
}
