// The conversation as the log tells it: user bubbles, answers, reasoning, tool
// cards and run notices, built from wire events (docs/protocol.md).
//
// Items are keyed like `GET …/history` keys them (kind + `item_id`): every
// chunk of a paragraph, reasoning block or tool call lands in its item. Agent
// text goes through renderMarkdown (text nodes only); markdown is re-rendered
// at most once per animation frame per item, so a long streamed answer costs
// one render per frame, not one per chunk.

import { renderMarkdown } from "./markdown.js";

const DELIVERY_LABEL = { prompt: "prompt", steer: "steer", follow_up: "follow-up" };
const TOOL_STATE_LABEL = {
  running: "running",
  result: "done",
  error: "error",
  skipped: "skipped",
  cancelled: "cancelled",
};

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/** The text of a `tool_result`: ValueCell's JSON string `[{"content": …}]`. */
export function toolResultText(raw) {
  if (typeof raw !== "string") return raw == null ? "" : JSON.stringify(raw, null, 2);
  try {
    const parts = JSON.parse(raw);
    if (Array.isArray(parts)) {
      return parts.map((part) => (part && typeof part === "object" ? String(part.content ?? "") : String(part))).join("");
    }
  } catch {
    // not the ValueCell encoding: show it as it is
  }
  return raw;
}

export class Timeline {
  /**
   * @param {HTMLElement} root  where the items go
   * @param {object} hooks  onRunState(running, runId), onTitle(text)
   */
  constructor(root, hooks) {
    this.root = root;
    this.hooks = hooks;
    this.reset();
  }

  reset() {
    this.items = new Map();
    this.dirty = new Set();
    this.frame = null;
    this.running = false;
    this.runId = null;
    this.streaming = null;
    this.titled = false;
    this.root.replaceChildren();
  }

  get empty() {
    return this.items.size === 0 && this.root.childElementCount === 0;
  }

  apply(envelope) {
    const { event, data } = envelope;
    const payload = data.payload || {};
    switch (event) {
      case "task_started":
        this.setRunning(true, data.task_id || null);
        break;
      case "thread_started":
        this.userMessage(data, payload);
        break;
      case "message_chunk":
        this.appendText("message", data, payload.content || "");
        break;
      case "message":
        this.appendText("message", data, payload.content || "", true);
        break;
      case "reasoning_started":
        this.reasoning(data);
        break;
      case "reasoning":
        this.appendText("reasoning", data, payload.content || "");
        break;
      case "reasoning_completed":
        this.reasoningDone(data);
        break;
      case "tool_call_started":
        this.toolStarted(data, payload);
        break;
      case "tool_call_completed":
        this.toolCompleted(data, payload);
        break;
      case "task_cancelled":
        this.notice("stopped", "Stopped. Queued messages are kept.");
        break;
      case "task_failed":
        this.notice("error", payload.content || payload.error || "The run failed.");
        break;
      case "system_failed":
        this.notice("error", payload.content || payload.message || "The run was lost.");
        break;
      case "done":
        this.runEnded(payload.stop_reason);
        break;
      default:
        // conversation_started, task_completed, message_queued, queue_updated
        // (the queue panel's), and events this page does not show
        break;
    }
  }

  setRunning(running, runId) {
    this.running = running;
    this.runId = running ? runId : null;
    this.hooks.onRunState(running, this.runId);
  }

  add(node) {
    this.root.append(node);
    return node;
  }

  endStreaming() {
    if (this.streaming) {
      this.streaming.classList.remove("streaming");
      this.streaming = null;
    }
  }

  userMessage(data, payload) {
    this.endStreaming();
    const text = String(payload.content ?? "");
    const delivery = (data.metadata && data.metadata.delivery) || "prompt";
    const wrap = el("div", `turn user delivery-${delivery}`);
    wrap.dataset.itemId = data.item_id;
    const meta = el("div", "meta");
    meta.append(el("span", "who", "You"));
    const badge = el("span", `badge delivery ${delivery}`, DELIVERY_LABEL[delivery] || delivery);
    meta.append(badge);
    const bubble = el("div", "bubble", text); // the user's own text, shown as typed
    wrap.append(meta, bubble);
    this.items.set(`user_message:${data.item_id}`, { node: wrap });
    this.add(wrap);
    if (!this.titled) {
      this.titled = true;
      this.hooks.onTitle(text);
    }
  }

  appendText(kind, data, text, replace = false) {
    const key = `${kind}:${data.item_id}`;
    let item = this.items.get(key);
    if (!item) {
      if (kind === "reasoning") {
        item = this.reasoning(data);
      } else {
        this.endStreaming();
        const node = el("div", "turn agent message streaming");
        node.dataset.itemId = data.item_id;
        const body = el("div", "markdown");
        node.append(body);
        item = { node, body, text: "" };
        this.items.set(key, item);
        this.add(node);
        this.streaming = node;
      }
    }
    item.text = replace ? text : item.text + text;
    this.dirty.add(item);
    this.schedule();
  }

  reasoning(data) {
    const key = `reasoning:${data.item_id}`;
    const existing = this.items.get(key);
    if (existing) return existing;
    this.endStreaming();
    const node = el("details", "turn agent reasoning active");
    node.dataset.itemId = data.item_id;
    const summary = el("summary", "", "Thinking…");
    const body = el("div", "markdown");
    node.append(summary, body);
    const item = { node, body, summary, text: "", reasoning: true };
    this.items.set(key, item);
    this.add(node);
    return item;
  }

  reasoningDone(data) {
    const item = this.reasoning(data);
    item.node.classList.remove("active");
    item.summary.textContent = "Reasoning";
  }

  toolStarted(data, payload) {
    this.endStreaming();
    const key = `tool_call:${data.item_id}`;
    if (this.items.has(key)) return;
    const node = el("details", "turn agent tool");
    node.dataset.itemId = data.item_id;
    const summary = el("summary");
    const name = el("span", "tool-name", payload.tool_name || "tool");
    const state = el("span", "badge tool-state");
    summary.append(el("span", "tool-icon", "⚙"), name, state);
    const args = el("pre", "tool-args");
    args.textContent = JSON.stringify(payload.tool_args ?? {}, null, 2);
    const argsLabel = el("div", "tool-label", "Arguments");
    const resultLabel = el("div", "tool-label", "Result");
    const result = el("pre", "tool-result");
    resultLabel.hidden = true;
    result.hidden = true;
    node.append(summary, argsLabel, args, resultLabel, result);
    const item = { node, state, result, resultLabel, status: "running" };
    this.items.set(key, item);
    this.setToolState(item, "running");
    this.add(node);
  }

  toolCompleted(data, payload) {
    const key = `tool_call:${data.item_id}`;
    if (!this.items.has(key)) this.toolStarted(data, payload);
    const item = this.items.get(key);
    const text = toolResultText(payload.tool_result);
    let status = "result";
    if (payload.skipped) status = "skipped";
    else if (payload.is_error) status = /^cancelled\b/i.test(text.trim()) ? "cancelled" : "error";
    item.result.textContent = text;
    item.result.hidden = false;
    item.resultLabel.hidden = false;
    this.setToolState(item, status);
  }

  setToolState(item, status) {
    item.status = status;
    item.node.dataset.state = status;
    item.state.textContent = TOOL_STATE_LABEL[status];
  }

  notice(kind, text) {
    this.endStreaming();
    const last = this.root.lastElementChild;
    if (last && last.classList.contains("notice") && last.textContent === text) {
      return; // a lost run says it twice (system_failed, then task_failed)
    }
    const node = el("div", `notice ${kind}`);
    node.setAttribute("role", "note");
    node.textContent = text;
    this.add(node);
  }

  runEnded(stopReason) {
    this.endStreaming();
    for (const item of this.items.values()) {
      if (item.status === "running") {
        // no result will come: the run ended (aborted, failed, or lost in a crash)
        this.setToolState(item, "cancelled");
      }
      if (item.reasoning && item.node.classList.contains("active")) {
        item.node.classList.remove("active");
        item.summary.textContent = "Reasoning";
      }
    }
    this.render(); // the run's last words, now
    this.setRunning(false, null);
    this.lastStopReason = stopReason;
  }

  schedule() {
    if (this.frame) return;
    // a frame, or a timer where frames do not run (a hidden tab)
    const render = () => this.render();
    this.frame = { raf: requestAnimationFrame(render), timer: setTimeout(render, 250) };
  }

  /** Render the items that changed since the last render. */
  render() {
    if (this.frame) {
      cancelAnimationFrame(this.frame.raf);
      clearTimeout(this.frame.timer);
    }
    this.frame = null;
    for (const item of this.dirty) item.body.replaceChildren(renderMarkdown(item.text));
    this.dirty.clear();
  }
}
