// Following a conversation's event log: `GET …/stream?follow=true` as NDJSON,
// read with fetch, resumed with `Last-Event-ID` (docs/web.md, "Transport").
//
// Why fetch and not EventSource or the WebSocket: the page must send
// `Authorization` when the server has API keys, which EventSource cannot,
// and fetch lets the page own its resume (the last seq it applied), its
// backoff and what it does with 401, 404 and 409. Commands go over plain HTTP
// requests, which answer with real statuses.
//
// Exactly once: every event carries its `seq`; an event whose seq is not
// greater than the last one applied is dropped, and a reconnect asks for
// what follows the last one applied (`Last-Event-ID`). Without a seq yet
// (a fresh page) the stream replays the retained log from its start, which
// is how the page shows the history on load.

const BACKOFF_MS = [250, 500, 1000, 2000, 3000];
const SILENCE_MS = 45_000; // the server pings every 15 s: this long without a byte is a dead link
const OFFLINE_AFTER = 3; // failed attempts in a row before "offline" instead of "reconnecting"

function delay(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}

export class LogStream {
  /**
   * @param {object} options
   * @param {string} options.url          the stream URL (with `follow=true`)
   * @param {() => object} options.headers   request headers (Authorization)
   * @param {(events: object[]) => void} options.onEvents  new events, in seq order
   * @param {(state: string, detail?: string) => void} options.onState
   *        "connecting" | "connected" | "reconnecting" | "offline" | "stopped"
   * @param {(error: object) => string} options.onError  a refused request
   *        (an ApiError-like {status, code, message}): the answer says what
   *        to do, "retry" (back off), "restart" (replay from the start,
   *        after the caller cleared its view), or "stop"
   * @param {(response: Response) => Promise<object>} options.errorOf
   */
  constructor(options) {
    this.options = options;
    this.lastSeq = 0;
    this.stopped = false;
    this.failures = 0;
    this.state = "";
    this.waker = new AbortController();
    this.request = null;
    this.onOnline = () => this.wake();
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOnline);
  }

  start() {
    this.run();
    return this;
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOnline);
    this.request?.abort();
    this.waker.abort();
    this.setState("stopped");
  }

  /** Reconnect now instead of after the backoff (network back, "retry now"). */
  wake() {
    this.waker.abort();
  }

  /** Forget the position: the next connection replays the log from its start. */
  rewind() {
    this.lastSeq = 0;
  }

  setState(state, detail) {
    if (state === this.state && !detail) return;
    this.state = state;
    this.options.onState(state, detail);
  }

  async run() {
    this.setState("connecting");
    while (!this.stopped) {
      let outcome;
      try {
        outcome = await this.connect();
      } catch {
        outcome = { received: false };
      }
      if (this.stopped) return;
      if (outcome.action === "stop") {
        this.stop();
        return;
      }
      if (outcome.action === "restart") {
        this.failures = 0;
        continue;
      }
      // the connection ended (server restart, shutdown hint, network): resume
      this.failures = outcome.received ? 1 : this.failures + 1;
      const offline = !navigator.onLine || this.failures > OFFLINE_AFTER;
      const base = BACKOFF_MS[Math.min(this.failures, BACKOFF_MS.length) - 1];
      const wait = Math.max(base, (outcome.retryAfter || 0) * 1000) * (0.8 + Math.random() * 0.4);
      this.setState(offline ? "offline" : "reconnecting");
      this.waker = new AbortController();
      await delay(wait, this.waker.signal);
    }
  }

  async connect() {
    const { url, headers, onEvents, onError, errorOf } = this.options;
    const controller = new AbortController();
    this.request = controller;
    const requestHeaders = { ...headers(), Accept: "application/x-ndjson" };
    if (this.lastSeq > 0) requestHeaders["Last-Event-ID"] = String(this.lastSeq);
    let silence = null;
    const watch = () => {
      clearTimeout(silence);
      silence = setTimeout(() => controller.abort(), SILENCE_MS);
    };
    watch();
    let received = false;
    try {
      const response = await fetch(url, {
        headers: requestHeaders,
        signal: controller.signal,
        cache: "no-store",
      });
      if (!response.ok) {
        const error = await errorOf(response);
        const action = onError(error);
        if (action === "restart") this.rewind();
        return { action, retryAfter: error.retryAfter, received: false };
      }
      this.setState("connected");
      this.failures = 0;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.stopped) break;
        watch();
        buffer += value;
        const lines = buffer.split("\n");
        buffer = lines.pop();
        const fresh = [];
        for (const line of lines) {
          if (!line.trim()) continue;
          let envelope;
          try {
            envelope = JSON.parse(line);
          } catch {
            continue; // a line cut by a dying server: the resume gets it whole
          }
          const seq = envelope.seq;
          if (!Number.isInteger(seq)) continue; // ping, resume hint
          if (seq <= this.lastSeq) continue; // seen already: never twice
          this.lastSeq = seq;
          fresh.push(envelope);
        }
        if (fresh.length && !this.stopped) {
          received = true;
          onEvents(fresh);
        }
      }
      return { received };
    } finally {
      clearTimeout(silence);
      controller.abort();
    }
  }
}
