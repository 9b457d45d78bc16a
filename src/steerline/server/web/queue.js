// The live queue (SPEC §2.9): both lanes as the last `queue_updated` event
// says, with edit, remove, promote / demote, and "send now" for a queue kept
// by Stop. Every viewer of the conversation sees the same queue because every
// change is an event of the log; an action here is a request, and what it did
// shows when its `queue_updated` arrives.

const LANES = [
  ["steering", "Steering", "Interrupts the running turn (per the steering policy)"],
  ["follow_up", "Follow-ups", "Waits until the agent would stop"],
];

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function button(label, className, title, onClick) {
  const node = el("button", className, label);
  node.type = "button";
  if (title) node.title = title;
  node.addEventListener("click", onClick);
  return node;
}

function formatSize(bytes) {
  return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KiB`;
}

export class QueuePanel {
  /**
   * @param {HTMLElement} root  the panel
   * @param {object} actions  edit(id) -> Promise<string> (the whole text),
   *   save(id, text), remove(id), move(id, lane), sendNow(), clear()
   */
  constructor(root, actions) {
    this.root = root;
    this.actions = actions;
    this.lanes = { steering: [], follow_up: [] };
    this.editing = new Map(); // id -> the editor's <li>
    this.running = false;
    this.build();
    this.render();
  }

  build() {
    const head = el("div", "queue-head");
    const title = el("h2", "", "Queue");
    this.count = el("span", "badge count", "0");
    title.append(" ", this.count);
    this.sendNowButton = button("Send now", "primary small", "Start a run with the kept queue", () =>
      this.actions.sendNow(),
    );
    this.clearButton = button("Clear", "small", "Remove every queued message", () =>
      this.actions.clear(),
    );
    head.append(title, el("span", "spacer"), this.sendNowButton, this.clearButton);
    this.root.append(head);
    this.lists = {};
    this.sections = {};
    for (const [lane, label, hint] of LANES) {
      const section = el("section", `lane lane-${lane}`);
      section.setAttribute("aria-label", label);
      const heading = el("h3", "", label);
      heading.title = hint;
      const list = el("ol", "queue-items");
      section.append(heading, list);
      this.root.append(section);
      this.lists[lane] = list;
      this.sections[lane] = section;
    }
  }

  reset() {
    this.editing.clear();
    this.update({ steering: [], follow_up: [] });
  }

  setRunning(running) {
    this.running = running;
    this.render();
  }

  update(payload) {
    this.lanes = {
      steering: Array.isArray(payload.steering) ? payload.steering : [],
      follow_up: Array.isArray(payload.follow_up) ? payload.follow_up : [],
    };
    const ids = new Set([...this.lanes.steering, ...this.lanes.follow_up].map((m) => m.id));
    for (const id of this.editing.keys()) if (!ids.has(id)) this.editing.delete(id);
    this.render();
  }

  get size() {
    return this.lanes.steering.length + this.lanes.follow_up.length;
  }

  render() {
    const total = this.size;
    this.root.hidden = total === 0;
    this.count.textContent = String(total);
    this.sendNowButton.hidden = this.running || total === 0;
    for (const [lane] of LANES) {
      const messages = this.lanes[lane];
      this.sections[lane].hidden = messages.length === 0;
      this.lists[lane].replaceChildren(
        ...messages.map((message) => this.editing.get(message.id) || this.item(lane, message)),
      );
    }
  }

  item(lane, message) {
    const li = el("li", "queued");
    li.dataset.id = message.id;
    const text = el("div", "queued-text");
    text.textContent = message.preview ?? "";
    if (message.truncated) text.append(el("span", "muted", ` … (${formatSize(message.size)})`));
    const meta = el("div", "queued-meta");
    if (message.priority) meta.append(el("span", "badge", `priority ${message.priority}`));
    if (message.images) meta.append(el("span", "badge", `${message.images} image(s)`));
    const tools = el("div", "queued-actions");
    tools.append(
      button("Edit", "small", "Edit this queued message", () => this.startEdit(lane, message)),
      button("Remove", "small", "Remove it from the queue", () => this.actions.remove(message.id)),
    );
    if (lane === "follow_up") {
      tools.append(
        button("Promote", "small", "Promote to a steer: interrupts the running turn", () =>
          this.actions.move(message.id, "steering"),
        ),
      );
    } else {
      tools.append(
        button("Demote", "small", "Demote to a follow-up: waits until the agent would stop", () =>
          this.actions.move(message.id, "follow_up"),
        ),
      );
    }
    const body = el("div", "queued-body");
    body.append(text, meta);
    li.append(body, tools);
    return li;
  }

  async startEdit(lane, message) {
    let text = message.preview ?? "";
    if (message.truncated) {
      try {
        text = await this.actions.edit(message.id);
      } catch {
        return; // the error is shown by the caller
      }
    }
    const li = el("li", "queued editing");
    li.dataset.id = message.id;
    const area = el("textarea", "edit-box");
    area.value = text;
    area.rows = Math.min(8, Math.max(2, text.split("\n").length));
    area.setAttribute("aria-label", "Edit queued message");
    const save = async () => {
      const value = area.value;
      if (!value.trim()) return;
      const ok = await this.actions.save(message.id, value);
      if (ok) {
        this.editing.delete(message.id);
        this.render();
      }
    };
    const cancel = () => {
      this.editing.delete(message.id);
      this.render();
    };
    area.addEventListener("keydown", (event) => {
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        cancel();
      } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        save();
      }
    });
    const tools = el("div", "queued-actions");
    tools.append(
      button("Save", "primary small", "Save (Ctrl+Enter)", save),
      button("Cancel", "small", "Keep it as it was (Esc)", cancel),
    );
    li.append(area, tools);
    this.editing.set(message.id, li);
    this.render();
    area.focus();
  }
}
