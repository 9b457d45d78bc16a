// What useChat({resume: true}) does when its page mounts (ai@6's AbstractChat,
// the core of @ai-sdk/react's useChat): resumeStream() through
// DefaultChatTransport's reconnect URL. A chat with no run to reconnect to
// (idle, or not started yet: its id is new) must leave the chat ready, not
// in error.
//
// argv: <server url> <chat id> [bearer token]. stdout: one JSON report.
import { AbstractChat, DefaultChatTransport } from "ai";

const [base, chatId, token] = process.argv.slice(2);

class State {
  status = "ready";
  error = undefined;
  messages = [];
  pushMessage = (message) => {
    this.messages = this.messages.concat(message);
  };
  popMessage = () => {
    this.messages = this.messages.slice(0, -1);
  };
  replaceMessage = (index, message) => {
    this.messages = this.messages.map((m, i) => (i === index ? message : m));
  };
  snapshot = (thing) => structuredClone(thing);
}

class Chat extends AbstractChat {
  constructor(options) {
    super({ ...options, state: new State() });
  }
}

const errors = [];
const chat = new Chat({
  id: chatId,
  transport: new DefaultChatTransport({
    api: `${base}/api/v1/vercel/chat`,
    headers: token ? { Authorization: `Bearer ${token}` } : {},
  }),
  onError: (error) => errors.push(String(error)),
});
await chat.resumeStream();
process.stdout.write(
  JSON.stringify({
    status: chat.status,
    error: chat.error === undefined ? null : String(chat.error),
    errors,
    messages: chat.messages,
  }),
);
