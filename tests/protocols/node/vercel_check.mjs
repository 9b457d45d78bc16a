// Checks a list of UI message stream chunks the way the AI SDK reads them.
//
// stdin: {"chunks": [...]}. stdout: one JSON report:
// - invalid: chunks that ai@6's own uiMessageChunkSchema refuses;
// - invalidV5: chunks that ai@5's uiMessageChunkSchema refuses;
// - extraKeys: fields outside what ai@5's strict schema allows (early 5.x
//   releases refuse them);
// - streamErrors: what readUIMessageStream reported (a delta of a part never
//   started, an `error` chunk, ...);
// - unclosed: text/reasoning/tool parts still open at `finish`; order: problems
//   with start/finish/[DONE] placement;
// - message: the UIMessage readUIMessageStream assembled.
import { readUIMessageStream, uiMessageChunkSchema } from "ai";
import * as ai5 from "ai5"; // npm:ai@5: the previous major, still what many apps run

// The fields each chunk type may carry in both ai 5 (z.strictObject) and ai 6.
const V5_FIELDS = {
  start: ["messageId", "messageMetadata"],
  finish: ["messageMetadata"],
  abort: [],
  error: ["errorText"],
  "start-step": [],
  "finish-step": [],
  "text-start": ["id", "providerMetadata"],
  "text-delta": ["id", "delta", "providerMetadata"],
  "text-end": ["id", "providerMetadata"],
  "reasoning-start": ["id", "providerMetadata"],
  "reasoning-delta": ["id", "delta", "providerMetadata"],
  "reasoning-end": ["id", "providerMetadata"],
  "tool-input-start": ["toolCallId", "toolName", "providerExecuted", "dynamic"],
  "tool-input-available": ["toolCallId", "toolName", "input", "providerExecuted", "providerMetadata", "dynamic"],
  "tool-output-available": ["toolCallId", "output", "providerExecuted", "dynamic", "preliminary"],
  "tool-output-error": ["toolCallId", "errorText", "providerExecuted", "dynamic"],
};
const DATA_FIELDS = ["id", "data", "transient"];

async function readStdin() {
  let text = "";
  for await (const piece of process.stdin) text += piece;
  return JSON.parse(text);
}

const { chunks } = await readStdin();
const schema = uiMessageChunkSchema();
const schemaV5 = ai5.uiMessageChunkSchema();
const report = {
  count: chunks.length, invalid: [], invalidV5: [], extraKeys: [], streamErrors: [],
  streamErrorsV5: [], unclosed: [], order: [],
};

for (const [index, chunk] of chunks.entries()) {
  const result = await schema.validate(chunk);
  if (!result.success) {
    report.invalid.push({ index, chunk, error: String(result.error).slice(0, 300) });
  }
  const resultV5 = await schemaV5.validate(chunk);
  if (!resultV5.success) {
    report.invalidV5.push({ index, chunk, error: String(resultV5.error).slice(0, 300) });
  }
  const allowed = chunk.type?.startsWith("data-") ? DATA_FIELDS : V5_FIELDS[chunk.type];
  if (allowed === undefined) {
    report.extraKeys.push({ index, type: chunk.type, keys: ["<type not in v5>"] });
  } else {
    const extra = Object.keys(chunk).filter((key) => key !== "type" && !allowed.includes(key));
    if (extra.length) report.extraKeys.push({ index, type: chunk.type, keys: extra });
  }
}

// Part lifecycles: every part opened before its deltas, closed before finish.
const open = { text: new Set(), reasoning: new Set(), tool: new Set() };
let started = false;
let finished = false;
for (const [index, chunk] of chunks.entries()) {
  const t = chunk.type;
  if (finished) report.order.push({ index, problem: `${t} after finish` });
  if (!started && t !== "start") report.order.push({ index, problem: `${t} before start` });
  if (t === "start") {
    if (started) report.order.push({ index, problem: "second start" });
    started = true;
  } else if (t === "text-start") open.text.add(chunk.id);
  else if (t === "text-delta" && !open.text.has(chunk.id)) report.order.push({ index, problem: "text-delta of a closed part" });
  else if (t === "text-end") open.text.delete(chunk.id);
  else if (t === "reasoning-start") open.reasoning.add(chunk.id);
  else if (t === "reasoning-delta" && !open.reasoning.has(chunk.id)) report.order.push({ index, problem: "reasoning-delta of a closed part" });
  else if (t === "reasoning-end") open.reasoning.delete(chunk.id);
  else if (t === "tool-input-start") open.tool.add(chunk.toolCallId);
  else if (t === "tool-output-available" || t === "tool-output-error") open.tool.delete(chunk.toolCallId);
  else if (t === "finish") {
    finished = true;
    for (const [kind, ids] of Object.entries(open)) for (const id of ids) report.unclosed.push({ kind, id });
  }
}
if (!finished) report.order.push({ index: chunks.length, problem: "no finish" });

function streamOf(list) {
  return new ReadableStream({
    start(controller) {
      for (const chunk of list) controller.enqueue(structuredClone(chunk)); // ai mutates data chunks
      controller.close();
    },
  });
}
async function assemble(read, errors) {
  let message = null;
  for await (const snapshot of read({
    stream: streamOf(chunks),
    onError: (error) => errors.push(String(error?.message ?? error)),
  })) {
    message = snapshot;
  }
  return message;
}
report.message = await assemble(readUIMessageStream, report.streamErrors);
report.messageV5 = await assemble(ai5.readUIMessageStream, report.streamErrorsV5);
process.stdout.write(JSON.stringify(report));
