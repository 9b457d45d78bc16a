// useChat's transport against a live steerline server (ai@6): send a message,
// steer the run mid-way through the native API, reconnect mid-run (the whole
// run replayed, and the rest after a chunk index), and reconnect when idle.
//
// argv: <server url> <chat id>. stdout: one JSON report; exit 1 on a failure
// the client itself raised (an invalid chunk makes the transport's stream throw).
import { DefaultChatTransport, readUIMessageStream } from "ai";

const [base, chatId] = process.argv.slice(2);
const api = `${base}/api/v1/vercel/chat`;
const QUERY = [
  "/delay 15",
  "/think weighing the question",
  '/call sleep {"seconds": 1.5}',
  "/call clock {}",
  "What time is it?",
].join("\n");
const STEER = "/delay 5\nNever mind the time, just say hi.";

async function collect(stream) {
  const chunks = [];
  const reader = stream.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return chunks;
    chunks.push(value);
  }
}

async function assemble(chunks) {
  const stream = new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(structuredClone(chunk)); // ai mutates data chunks
      controller.close();
    },
  });
  const errors = [];
  let message = null;
  for await (const snapshot of readUIMessageStream({ stream, onError: (e) => errors.push(String(e)) })) {
    message = snapshot;
  }
  return { message, errors };
}

const transport = new DefaultChatTransport({ api });
const user = { id: `u-${chatId}`, role: "user", parts: [{ type: "text", text: QUERY }] };
const stream = await transport.sendMessages({
  chatId,
  messages: [user],
  trigger: "submit-message",
  messageId: undefined,
  abortSignal: undefined,
});

const report = { chatId };
const chunks = [];
let replay = null;
let rest = null;
let prefixLength = null;
const reader = stream.getReader();
for (;;) {
  const { done, value } = await reader.read();
  if (done) break;
  chunks.push(value);
  if (replay === null && value.type === "tool-input-available" && value.toolName === "sleep") {
    // the run sleeps in its tool now: steer it, and reconnect twice meanwhile
    const steer = await fetch(`${base}/api/v1/conversations/${encodeURIComponent(chatId)}/messages`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ content: STEER, mode: "steer" }),
    });
    report.steerStatus = steer.status;
    replay = transport.reconnectToStream({ chatId }).then((s) => (s === null ? null : collect(s)));
    prefixLength = chunks.length;
    const after = prefixLength - 1;
    const resuming = new DefaultChatTransport({
      api,
      prepareReconnectToStreamRequest: ({ id }) => ({
        api: `${api}/${encodeURIComponent(id)}/stream?startIndex=${after}`,
      }),
    });
    rest = resuming.reconnectToStream({ chatId }).then((s) => (s === null ? null : collect(s)));
  }
}
const replayed = await replay;
const restChunks = await rest;
const full = await assemble(chunks);
report.chunks = chunks;
report.message = full.message;
report.errors = full.errors;
report.replayNull = replayed === null;
report.replayChunks = replayed;
report.restChunks = restChunks;
report.replayEqualChunks = JSON.stringify(replayed) === JSON.stringify(chunks);
const again = replayed === null ? null : await assemble(replayed);
report.replayMessageEqual = again !== null && JSON.stringify(again.message) === JSON.stringify(full.message);
report.prefixLength = prefixLength;
report.restNull = restChunks === null;
report.restEqual =
  restChunks !== null && JSON.stringify([...chunks.slice(0, prefixLength), ...restChunks]) === JSON.stringify(chunks);
const merged = restChunks === null ? null : await assemble([...chunks.slice(0, prefixLength), ...restChunks]);
report.restMessageEqual = merged !== null && JSON.stringify(merged.message) === JSON.stringify(full.message);
// the run is over: nothing to reconnect to (204 → null)
report.idleReconnect = await transport.reconnectToStream({ chatId });
process.stdout.write(JSON.stringify(report));
