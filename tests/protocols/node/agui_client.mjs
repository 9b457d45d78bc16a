// Drives steerline's AG-UI endpoints with the real @ag-ui/client 1.0.0 (run by
// tests/protocols/test_agui.py). One JSON argument says what to do; one JSON
// line on stdout says what happened: each agent's messages, the event types it
// applied, what the run resolved to, and every warning or error the client
// printed (schema stripping, compatibility shims, verifyEvents failures).
//
//   {"scenario": "run", "api": URL, "threadId", "runId", "content", "messageId",
//    "forwardedProps"?, "action"?: {"after": N, "kind": "steer"|"abort", "content"?}}
//   {"scenario": "join", ... as run, "joinAfter": N, "resumeFrom": SEQ}
//
// "action" fires once the agent applied N TEXT_MESSAGE_CONTENT or
// REASONING_MESSAGE_CONTENT events: a steer through the native
// POST /conversations/{id}/messages, or POST /conversations/{id}/abort.
// "join" runs the same posted run and, once N contents were applied, a
// ResumingAgent (connect() reads GET /ag-ui/{threadId}/stream) joins it live,
// and a second one resumes from Last-Event-ID = resumeFrom.
import { HttpAgent, runHttpRequest, transformHttpEventStream } from "@ag-ui/client";

const config = JSON.parse(process.argv[2]);
const printed = [];
for (const level of ["warn", "error"]) {
  console[level] = (...args) =>
    printed.push(`${level}: ${args.map((a) => (a instanceof Error ? a.stack : String(a))).join(" ")}`);
}

const raw = [];
const reads = [];
/** fetch that keeps a copy of every response body (checked in Python too). */
async function teeFetch(url, init) {
  const response = await fetch(url, init);
  if (!response.body) return response;
  const [mine, theirs] = response.body.tee();
  reads.push(
    (async () => {
      const reader = theirs.getReader();
      const decoder = new TextDecoder();
      let body = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        body += decoder.decode(value, { stream: true });
      }
      raw.push({ url: String(url), status: response.status, body });
    })(),
  );
  return new Response(mine, { status: response.status, headers: response.headers });
}

/** An HttpAgent whose connect() joins or resumes a thread's run. */
class ResumingAgent extends HttpAgent {
  constructor(options) {
    super(options);
    this.lastEventId = options.lastEventId;
  }

  connect(input) {
    const headers = { Accept: "text/event-stream" };
    if (this.lastEventId !== undefined) headers["Last-Event-ID"] = String(this.lastEventId);
    const url = `${this.url}/${encodeURIComponent(input.threadId)}/stream`;
    return transformHttpEventStream(
      runHttpRequest(() => this.fetch(url, { headers, signal: this.abortController.signal })),
    );
  }
}

function recorder(name, onContent) {
  const seen = { name, types: [], contents: 0, failure: null, runError: null };
  const subscriber = {
    onEvent({ event }) {
      seen.types.push(event.type);
      if (
        event.type === "TEXT_MESSAGE_CONTENT" ||
        event.type === "REASONING_MESSAGE_CONTENT"
      ) {
        seen.contents += 1;
        onContent?.(seen.contents);
      }
    },
    onRunErrorEvent({ event }) {
      seen.runError = { message: event.message, code: event.code };
    },
    onRunFailed({ error }) {
      seen.failure = String(error?.stack ?? error);
    },
  };
  return { seen, subscriber };
}

async function native(path, body) {
  const response = await fetch(`${config.api}/conversations/${config.threadId}${path}`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

function poster() {
  return new HttpAgent({
    url: `${config.api}/ag-ui`,
    threadId: config.threadId,
    initialMessages: [{ id: config.messageId, role: "user", content: config.content }],
    fetch: teeFetch,
  });
}

async function settle(name, promise, seen) {
  try {
    const result = await promise;
    seen.resolved = true;
    seen.newMessages = result.newMessages;
  } catch (error) {
    seen.resolved = false;
    seen.rejection = String(error?.stack ?? error);
  }
  return seen;
}

const actions = [];
const out = { agents: {}, actions: [], printed, raw };

if (config.scenario === "run") {
  const agent = poster();
  const { seen, subscriber } = recorder("poster", (count) => {
    const action = config.action;
    if (action && count === action.after) {
      actions.push(
        action.kind === "steer"
          ? native("/messages", { content: action.content, mode: "steer", id: action.id })
          : native("/abort", {}),
      );
    }
  });
  const run = agent.runAgent(
    { runId: config.runId, forwardedProps: config.forwardedProps ?? {} },
    subscriber,
  );
  await settle("poster", run, seen);
  out.agents.poster = { ...seen, messages: agent.messages };
} else if (config.scenario === "join") {
  const agent = poster();
  const joiners = [];
  const { seen, subscriber } = recorder("poster", (count) => {
    if (count === config.joinAfter) {
      for (const [name, lastEventId] of [
        ["joiner", undefined],
        ["resumer", config.resumeFrom],
      ]) {
        const other = new ResumingAgent({
          url: `${config.api}/ag-ui`,
          threadId: config.threadId,
          lastEventId,
          fetch: teeFetch,
        });
        const record = recorder(name);
        joiners.push(
          settle(name, other.connectAgent({}, record.subscriber), record.seen).then((s) => ({
            ...s,
            messages: other.messages,
          })),
        );
      }
    }
    const action = config.action;
    if (action && count === action.after) {
      actions.push(native("/messages", { content: action.content, mode: "steer", id: action.id }));
    }
  });
  const run = agent.runAgent({ runId: config.runId }, subscriber);
  await settle("poster", run, seen);
  out.agents.poster = { ...seen, messages: agent.messages };
  for (const joined of await Promise.all(joiners)) out.agents[joined.name] = joined;
} else {
  throw new Error(`unknown scenario ${config.scenario}`);
}

out.actions = await Promise.all(actions);
await Promise.all(reads);
process.stdout.write(JSON.stringify(out) + "\n");
