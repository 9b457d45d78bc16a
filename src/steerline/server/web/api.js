// The HTTP API of the server (docs/server.md), with the API key when one is set.
//
// The key is sent as `Authorization: Bearer <key>` on every request and kept
// in sessionStorage (this tab only; gone when the tab closes). A 401 calls
// `onUnauthorized`, which asks the user for a key.

const KEY_STORAGE = "steerline.apiKey";

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null, options = undefined) {
    super(message, options);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** The error of a failed response: the server's `{error: {code, message}}` when it sent one. */
export async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) {
      code = String(body.error.code || code);
      message = String(body.error.message || message);
    }
  } catch {
    // not JSON: keep the status line
  }
  const retry = Number.parseFloat(response.headers.get("retry-after") || "");
  return new ApiError(response.status, code, message, Number.isFinite(retry) ? retry : null);
}

export function randomId(prefix) {
  const bytes = new Uint8Array(8);
  crypto.getRandomValues(bytes);
  return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export class Api {
  constructor(base) {
    this.base = new URL("api/v1/", base);
    this.onUnauthorized = () => {};
    try {
      this.key = sessionStorage.getItem(KEY_STORAGE) || "";
    } catch {
      this.key = "";
    }
  }

  setKey(key) {
    this.key = key;
    try {
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage disabled: the key lives as long as the page
    }
  }

  url(path) {
    return new URL(path, this.base).href;
  }

  conversationUrl(id, rest = "") {
    return this.url(`conversations/${encodeURIComponent(id)}${rest}`);
  }

  headers(extra = {}) {
    const headers = { ...extra };
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    return headers;
  }

  /** A JSON request; the parsed answer (null for 204), or an ApiError. */
  async request(method, url, body = undefined) {
    const init = { method, headers: this.headers({ Accept: "application/json" }), cache: "no-store" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (cause) {
      throw new ApiError(0, "network_error", "the server cannot be reached", null, { cause });
    }
    if (response.status === 401) {
      const error = await errorOf(response);
      this.onUnauthorized(error);
      throw error;
    }
    if (!response.ok) throw await errorOf(response);
    if (response.status === 204) return null;
    return response.json();
  }

  conversations() {
    return this.request("GET", this.url("conversations?limit=100"));
  }

  agents() {
    return this.request("GET", this.url("agents"));
  }

  queue(id) {
    return this.request("GET", this.conversationUrl(id, "/queue"));
  }

  /**
   * Send a message that starts a run when the conversation is idle (or does
   * not exist yet: it is created with this id), and is a steer or a
   * follow-up while one is running: `POST /agents/stream`, whose answer is
   * not read (the page follows the conversation's log instead), only its
   * status.
   */
  async start(conversationId, text, mode, messageId, agentName) {
    const body = { query: text, conversation_id: conversationId, mode, message_id: messageId };
    if (agentName) body.agent_name = agentName;
    const controller = new AbortController();
    let response;
    try {
      response = await fetch(this.url("agents/stream"), {
        method: "POST",
        headers: this.headers({ Accept: "application/x-ndjson", "Content-Type": "application/json" }),
        body: JSON.stringify(body),
        cache: "no-store",
        signal: controller.signal,
      });
    } catch (cause) {
      throw new ApiError(0, "network_error", "the server cannot be reached", null, { cause });
    }
    if (response.status === 401) {
      const error = await errorOf(response);
      this.onUnauthorized(error);
      throw error;
    }
    if (!response.ok) throw await errorOf(response);
    controller.abort(); // accepted: the stream of its answer is not needed
  }

  /** Steer or follow up while a run is active: `POST …/messages` (202). */
  message(id, text, mode, messageId) {
    return this.request("POST", this.conversationUrl(id, "/messages"), {
      content: text,
      mode,
      id: messageId,
    });
  }

  abort(id) {
    return this.request("POST", this.conversationUrl(id, "/abort"), { clear_queues: false });
  }

  editQueued(id, messageId, change) {
    return this.request(
      "PATCH",
      this.conversationUrl(id, `/queue/${encodeURIComponent(messageId)}`),
      change,
    );
  }

  removeQueued(id, messageId) {
    return this.request("DELETE", this.conversationUrl(id, `/queue/${encodeURIComponent(messageId)}`));
  }

  sendNow(id) {
    return this.request("POST", this.conversationUrl(id, "/queue/send"));
  }

  clearQueue(id) {
    return this.request("DELETE", this.conversationUrl(id, "/queue?lane=all"));
  }
}
