// The steerline web page: conversations, a streaming answer, the live queue.
// See docs/web.md. No framework and no build step: ES modules as served.

import { Api, ApiError, errorOf, randomId } from "./api.js";
import { QueuePanel } from "./queue.js";
import { LogStream } from "./stream.js";
import { Timeline } from "./timeline.js";

const BASE = new URL("./", document.baseURI);
const TITLES_STORAGE = "steerline.titles";
const LIST_REFRESH_MS = 20_000;
const CONNECTION_TEXT = {
  idle: "Not connected",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  stopped: "Not connected",
};

const $ = (id) => document.getElementById(id);
const ui = {
  app: $("app"),
  sidebar: $("sidebar"),
  toggleSidebar: $("toggle-sidebar"),
  newChat: $("new-chat"),
  list: $("conversation-list"),
  listEmpty: $("list-empty"),
  title: $("conv-title"),
  meta: $("conv-meta"),
  runStatus: $("run-status"),
  connection: $("connection"),
  connectionText: $("connection-text"),
  retry: $("retry"),
  scroller: $("scroller"),
  timeline: $("timeline"),
  empty: $("empty"),
  agent: $("agent"),
  agentField: $("agent-field"),
  queue: $("queue"),
  composer: $("composer"),
  message: $("message"),
  send: $("send"),
  followUp: $("follow-up"),
  stop: $("stop"),
  keyDialog: $("key-dialog"),
  keyForm: $("key-form"),
  keyInput: $("api-key"),
  keyError: $("key-error"),
  toasts: $("toasts"),
};

const api = new Api(BASE);

const state = {
  conversationId: null, // null: a new chat, created by its first message
  exists: false,
  running: false,
  stream: null,
  conversations: [],
  pendingSend: null, // {text, id}: a send that failed, resent with the same id
  needKey: false,
};

// -- small helpers ------------------------------------------------------------------
function toast(text, kind = "error") {
  const node = document.createElement("div");
  node.className = `toast ${kind}`;
  node.textContent = text;
  ui.toasts.append(node);
  setTimeout(() => node.remove(), 6000);
}

function describe(error) {
  if (error instanceof ApiError) {
    if (error.status === 0) return "The server cannot be reached.";
    const known = {
      already_delivered: "That message was already delivered: it can no longer change.",
      queued_message_not_found: "That message is no longer queued.",
      queue_full: "The queue is full.",
      message_too_large: "The message is too large.",
      agent_busy: "A run is active: the queue is delivered by it.",
      rate_limited: "Too many requests: try again in a moment.",
      too_many_runs: "Too many conversations are running.",
    };
    return known[error.code] || error.message;
  }
  return String(error && error.message ? error.message : error);
}

function loadTitles() {
  try {
    return JSON.parse(localStorage.getItem(TITLES_STORAGE) || "{}") || {};
  } catch {
    return {};
  }
}

function saveTitle(id, text) {
  const titles = loadTitles();
  if (titles[id]) return;
  // the first line that says something (the demo agent's directives start with "/")
  const lines = text.split("\n").map((line) => line.trim()).filter(Boolean);
  const line =
    (lines.find((l) => !l.startsWith("/")) || lines[0] || id)
      .replace(/!?\[([^\]]*)\]\([^)]*\)/g, "$1") // [text](url) -> text
      .replace(/[*_`~#>]+/g, "")
      .replace(/\s+/g, " ")
      .trim() || id;
  titles[id] = line.length > 60 ? `${line.slice(0, 57)}…` : line;
  try {
    localStorage.setItem(TITLES_STORAGE, JSON.stringify(titles));
  } catch {
    // storage full or disabled: the list shows ids
  }
  renderList();
  if (id === state.conversationId) ui.title.textContent = titles[id];
}

function titleOf(id) {
  return loadTitles()[id] || id;
}

function relativeTime(seconds) {
  const diff = Date.now() / 1000 - seconds;
  if (diff < 60) return "just now";
  if (diff < 3600) return `${Math.floor(diff / 60)} min ago`;
  if (diff < 86400) return `${Math.floor(diff / 3600)} h ago`;
  return new Date(seconds * 1000).toLocaleDateString();
}

// -- the URL keeps the selected conversation -----------------------------------------
function idFromHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  const id = params.get("c");
  return id && /^[A-Za-z0-9._:-]{1,128}$/.test(id) ? id : null;
}

function setHash(id) {
  const hash = id ? `#c=${encodeURIComponent(id)}` : "";
  if (location.hash !== hash) {
    history.pushState(null, "", hash || location.pathname + location.search);
  }
}

// -- scroll: follow the bottom unless the reader scrolled up -------------------------
let stickToBottom = true;
ui.scroller.addEventListener("scroll", () => {
  const { scrollTop, scrollHeight, clientHeight } = ui.scroller;
  stickToBottom = scrollHeight - scrollTop - clientHeight < 80;
});
function followBottom() {
  if (stickToBottom) ui.scroller.scrollTop = ui.scroller.scrollHeight;
}
new MutationObserver(followBottom).observe(ui.timeline, {
  childList: true,
  subtree: true,
  characterData: true,
});
new ResizeObserver(followBottom).observe(ui.scroller); // the queue panel grew or shrank

// -- the conversation view ----------------------------------------------------------------
const timeline = new Timeline(ui.timeline, {
  onRunState(running) {
    state.running = running;
    renderRunState();
    queue.setRunning(running);
    // the list says so at once (its next refresh confirms it)
    const listed = state.conversations.find((c) => c.conversation_id === state.conversationId);
    if (listed && listed.status !== (running ? "running" : "idle")) {
      listed.status = running ? "running" : "idle";
      renderList();
    }
  },
  onTitle(text) {
    if (state.conversationId) saveTitle(state.conversationId, text);
  },
});

const queue = new QueuePanel(ui.queue, {
  async edit(id) {
    try {
      const contents = await api.queue(state.conversationId);
      const message = [...contents.steering, ...contents.follow_up].find((m) => m.id === id);
      if (!message) throw new ApiError(404, "queued_message_not_found", "not queued");
      return message.content
        .filter((part) => part.type === "text")
        .map((part) => part.text)
        .join("\n");
    } catch (error) {
      toast(describe(error));
      throw error;
    }
  },
  async save(id, text) {
    return act(() => api.editQueued(state.conversationId, id, { content: text }));
  },
  remove(id) {
    return act(() => api.removeQueued(state.conversationId, id));
  },
  move(id, lane) {
    return act(() => api.editQueued(state.conversationId, id, { lane }));
  },
  sendNow() {
    return act(() => api.sendNow(state.conversationId));
  },
  clear() {
    return act(() => api.clearQueue(state.conversationId));
  },
});

async function act(request) {
  try {
    await request();
    return true;
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) toast(describe(error));
    return false;
  }
}

function renderRunState() {
  const running = state.running;
  ui.runStatus.dataset.state = running ? "running" : "idle";
  ui.runStatus.textContent = running ? "Running" : state.exists ? "Idle" : "";
  ui.send.textContent = running ? "Steer" : "Send";
  ui.send.title = running
    ? "Steer: interrupts the running turn (Enter)"
    : "Send (Enter)";
  ui.stop.disabled = !running;
  ui.composer.dataset.running = running ? "true" : "false";
  // screen readers: announce the answer when it is complete, not chunk by chunk
  ui.timeline.setAttribute("aria-busy", running ? "true" : "false");
}

function renderConnection(connection) {
  ui.connection.hidden = connection === "idle"; // a new chat has nothing to follow yet
  ui.connection.dataset.state = connection;
  ui.connectionText.textContent = CONNECTION_TEXT[connection] || connection;
  ui.retry.hidden = connection !== "offline";
}

function showEmpty() {
  const fresh = !state.conversationId || (timeline.empty && !state.exists);
  ui.empty.hidden = !fresh;
}

function openConversation(id) {
  if (state.stream) state.stream.stop();
  state.stream = null;
  state.conversationId = id;
  state.exists = Boolean(id);
  state.running = false;
  timeline.reset();
  queue.reset();
  renderRunState();
  ui.title.textContent = id ? titleOf(id) : "New chat";
  ui.meta.textContent = id || "";
  ui.agentField.hidden = Boolean(id) || ui.agent.options.length < 2;
  renderList();
  showEmpty();
  closeSidebar();
  if (!id) {
    renderConnection("idle");
    return;
  }
  follow(id);
}

function follow(id) {
  if (state.stream) state.stream.stop();
  stickToBottom = true;
  const stream = new LogStream({
    url: api.conversationUrl(id, "/stream?follow=true"),
    headers: () => api.headers(),
    errorOf,
    onEvents(events) {
      if (stream !== state.stream) return;
      for (const envelope of events) {
        if (envelope.event === "queue_updated") {
          queue.update(envelope.data.payload || {});
        }
        timeline.apply(envelope);
        if (envelope.event === "task_started" || envelope.event === "done") scheduleListRefresh();
      }
      showEmpty();
    },
    onState(connection) {
      if (stream === state.stream) renderConnection(connection);
    },
    onError(error) {
      if (error.status === 401) {
        askForKey();
        return "stop";
      }
      if (error.status === 404) {
        toast(`Conversation ${id} was not found.`);
        setHash(null);
        openConversation(null);
        return "stop";
      }
      if (error.code === "resume_too_old" || error.code === "invalid_event_id") {
        // the log no longer has (or never had) what follows our last event:
        // rebuild the view from what the log has
        timeline.reset();
        queue.reset();
        if (error.code === "resume_too_old") toast("Older events were trimmed by retention.", "info");
        return "restart";
      }
      return "retry";
    },
  });
  state.stream = stream;
  stream.start();
}

// -- the conversation list ----------------------------------------------------------------
function renderList() {
  const items = state.conversations.map((conversation) => {
    const li = document.createElement("li");
    const a = document.createElement("a");
    a.href = `#c=${encodeURIComponent(conversation.conversation_id)}`;
    a.className = "conv-link";
    if (conversation.conversation_id === state.conversationId) a.setAttribute("aria-current", "page");
    const title = document.createElement("span");
    title.className = "conv-title";
    title.textContent = titleOf(conversation.conversation_id);
    const meta = document.createElement("span");
    meta.className = "conv-meta";
    const dot = document.createElement("span");
    dot.className = `dot ${conversation.status}`;
    dot.setAttribute("aria-hidden", "true");
    meta.append(dot, `${conversation.status} · ${relativeTime(conversation.updated_at)}`);
    a.append(title, meta);
    li.append(a);
    return li;
  });
  ui.list.replaceChildren(...items);
  ui.listEmpty.hidden = items.length > 0;
}

async function refreshList() {
  if (state.needKey) return;
  try {
    const answer = await api.conversations();
    state.conversations = answer.conversations || [];
    renderList();
  } catch (error) {
    if (!(error instanceof ApiError && (error.status === 401 || error.status === 0))) {
      toast(describe(error));
    }
  }
}

let listTimer = 0;
function scheduleListRefresh() {
  clearTimeout(listTimer);
  listTimer = setTimeout(refreshList, 300);
}

async function loadAgents() {
  try {
    const answer = await api.agents();
    const options = (answer.agents || []).map((agent) => {
      const option = document.createElement("option");
      option.value = agent.name;
      option.textContent = agent.description ? `${agent.name} — ${agent.description}` : agent.name;
      option.selected = agent.name === answer.default;
      return option;
    });
    ui.agent.replaceChildren(...options);
    ui.agentField.hidden = Boolean(state.conversationId) || options.length < 2;
  } catch {
    // the list is optional: the server's default agent answers
  }
}

// -- sending ------------------------------------------------------------------------------
async function send(kind) {
  const text = ui.message.value;
  if (!text.trim()) {
    if (kind === "steer" && !state.running && state.exists && queue.size > 0) {
      await act(() => api.sendNow(state.conversationId)); // Enter on an empty input sends the kept queue
    }
    return;
  }
  const reuse = state.pendingSend && state.pendingSend.text === text;
  const messageId = reuse ? state.pendingSend.id : randomId("web-");
  state.pendingSend = { text, id: messageId };
  ui.message.value = "";
  autosize();
  const mode = kind === "follow_up" ? "follow_up" : "steer";
  let id = state.conversationId;
  const created = !id;
  try {
    if (created) {
      id = randomId("conv-");
      const agent = ui.agentField.hidden ? null : ui.agent.value;
      await api.start(id, text, mode, messageId, agent);
    } else if (!state.running) {
      // idle: this message starts the next run (steer/follow_up on an idle
      // conversation is delivered as its prompt)
      await api.start(id, text, mode, messageId, null);
    } else {
      await api.message(id, text, mode, messageId);
    }
    state.pendingSend = null;
  } catch (error) {
    if (!ui.message.value) {
      ui.message.value = text; // nothing lost: send again (same id, so never twice)
      autosize();
    }
    if (!(error instanceof ApiError && error.status === 401)) toast(describe(error));
    return;
  }
  if (created) {
    saveTitle(id, text);
    setHash(id); // hashchange is not fired by pushState
    openConversation(id);
    refreshList();
  }
}

async function stop() {
  if (!state.conversationId || !state.running) return;
  await act(() => api.abort(state.conversationId));
}

function autosize() {
  ui.message.style.height = "auto";
  ui.message.style.height = `${Math.min(ui.message.scrollHeight, 240)}px`;
}

ui.composer.addEventListener("submit", (event) => {
  event.preventDefault();
  send("steer");
});
ui.followUp.addEventListener("click", () => send("follow_up"));
ui.stop.addEventListener("click", stop);
ui.message.addEventListener("input", autosize);
ui.message.addEventListener("keydown", (event) => {
  if (event.key !== "Enter" || event.isComposing || event.shiftKey) return;
  event.preventDefault();
  send(event.altKey ? "follow_up" : "steer");
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape" || event.defaultPrevented) return;
  if (ui.keyDialog.open) return;
  if (ui.sidebar.classList.contains("open")) {
    closeSidebar();
    return;
  }
  if (state.running) {
    event.preventDefault();
    stop();
  }
});

// -- the API key --------------------------------------------------------------------------
function askForKey(message) {
  state.needKey = true;
  if (state.stream) state.stream.stop();
  renderConnection("stopped");
  ui.keyError.textContent = message || (api.key ? "That API key was refused." : "");
  if (!ui.keyDialog.open) ui.keyDialog.showModal();
  ui.keyInput.focus();
}

api.onUnauthorized = () => askForKey();

ui.keyDialog.addEventListener("cancel", (event) => event.preventDefault()); // a key is needed
ui.keyForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const key = ui.keyInput.value.trim();
  if (!key) return;
  api.setKey(key);
  state.needKey = false;
  ui.keyError.textContent = "";
  try {
    await api.conversations();
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return; // asked again
    ui.keyError.textContent = describe(error);
    return;
  }
  ui.keyInput.value = "";
  ui.keyDialog.close();
  start();
});

// -- the narrow layout's sidebar ------------------------------------------------------------
function closeSidebar() {
  ui.sidebar.classList.remove("open");
  ui.toggleSidebar.setAttribute("aria-expanded", "false");
}
ui.toggleSidebar.addEventListener("click", () => {
  const open = !ui.sidebar.classList.contains("open");
  ui.sidebar.classList.toggle("open", open);
  ui.toggleSidebar.setAttribute("aria-expanded", String(open));
});

// -- start ------------------------------------------------------------------------------------
ui.newChat.addEventListener("click", () => {
  setHash(null);
  openConversation(null);
  ui.message.focus();
});
ui.retry.addEventListener("click", () => state.stream && state.stream.wake());
function followUrl() {
  const id = idFromHash();
  if (id !== state.conversationId) openConversation(id);
}
window.addEventListener("popstate", followUrl); // back / forward
window.addEventListener("hashchange", followUrl); // a link of the list, an edited URL
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    refreshList();
    if (state.stream && state.stream.state !== "connected") state.stream.wake();
  }
});
setInterval(() => {
  if (document.visibilityState === "visible") refreshList();
}, LIST_REFRESH_MS);

function start() {
  refreshList();
  loadAgents();
  openConversation(idFromHash());
}

renderRunState();
start();
ui.message.focus();
