// Live connections, reconnecting with backoff: the page's own digest (api/page/live: what
// changed, four times a second, whatever the event rate) and, for the event tail, the push
// API (api/events/ws: every event). Listeners get every message.

export class Live {
  constructor(params = {}, onStatus = () => {}, path = "api/events/ws") {
    this.params = params;
    this.path = path;
    this.onStatus = onStatus;
    this.listeners = new Set();
    this.delay = 500;
    this.closed = false;
    this.socket = null;
    this.connect();
  }

  url() {
    const url = new URL(this.path, location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    for (const [key, value] of Object.entries(this.params)) {
      for (const item of [].concat(value)) if (item) url.searchParams.append(key, item);
    }
    return url.toString();
  }

  connect() {
    if (this.closed) return;
    this.onStatus("connecting");
    const socket = new WebSocket(this.url());
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.delay = 500;
      this.onStatus("live");
      this.emit({ kind: "open" });
    });
    socket.addEventListener("message", (message) => {
      let data;
      try {
        data = JSON.parse(message.data);
      } catch {
        return;
      }
      this.emit(data);
    });
    socket.addEventListener("close", () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.closed) return;
      this.onStatus("offline");
      setTimeout(() => this.connect(), this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    });
    // An error is followed by close, which reconnects; nothing to log.
    socket.addEventListener("error", () => {});
  }

  emit(data) {
    for (const fn of this.listeners) {
      try {
        fn(data);
      } catch (error) {
        console.warn("live listener failed", error);
      }
    }
  }

  on(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  close() {
    this.closed = true;
    if (this.socket) this.socket.close(1000);
    this.socket = null;
  }
}
