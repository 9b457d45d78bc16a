// Markdown -> DOM nodes, safely: agent output is text, never HTML.
//
// Every node is made with createElement / createTextNode and text goes in as
// text, so `<img onerror=…>` or `<script>` in a message is shown as those
// characters. Links keep only absolute http:, https: and mailto: URLs (the
// URL parser normalises case, whitespace and control characters first, so
// `JaVa\tScript:` is caught too); anything else is shown as plain text.
// Images are never loaded: `![alt](url)` becomes a link to the URL.
//
// The subset: paragraphs (single newlines kept as line breaks, as chat
// messages mean them), ATX headings, fenced code blocks (an unclosed fence
// runs to the end, so a streaming block renders as code at once), block
// quotes, ordered and unordered lists (nested by indentation), GitHub tables,
// thematic breaks; inline code, **strong**, *emphasis*, ~~strike~~, links,
// <autolinks>, bare http(s) URLs and backslash escapes.

const SAFE_PROTOCOLS = new Set(["http:", "https:", "mailto:"]);

/** The URL to put in href, or null when it is not an absolute http(s)/mailto URL. */
export function safeHref(raw) {
  let url;
  try {
    url = new URL(String(raw).trim());
  } catch {
    return null; // relative or malformed
  }
  return SAFE_PROTOCOLS.has(url.protocol) ? url.href : null;
}

function el(tag, className) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  return node;
}

function link(href, children) {
  const a = el("a");
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  for (const child of children) a.append(child);
  return a;
}

// -- blocks ---------------------------------------------------------------------
const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^\s`]*)[^`]*$/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const ITEM = /^( {0,12})([-*+]|\d{1,9}[.)])(?:[ \t]+(.*))?$/;
const TABLE_DELIMITER = /^ {0,3}\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

function isBlank(line) {
  return line.trim() === "";
}

function startsBlock(line) {
  return (
    FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line)
  );
}

function splitRow(line) {
  let row = line.trim();
  if (row.startsWith("|")) row = row.slice(1);
  if (row.endsWith("|") && !row.endsWith("\\|")) row = row.slice(0, -1);
  const cells = [];
  let cell = "";
  for (let i = 0; i < row.length; i++) {
    if (row[i] === "\\" && row[i + 1] === "|") {
      cell += "|";
      i++;
    } else if (row[i] === "|") {
      cells.push(cell.trim());
      cell = "";
    } else {
      cell += row[i];
    }
  }
  cells.push(cell.trim());
  return cells;
}

function parseBlocks(lines, parent, depth) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (isBlank(line)) {
      i++;
      continue;
    }
    let match = FENCE.exec(line);
    if (match) {
      const marker = match[1];
      const body = [];
      i++;
      while (i < lines.length) {
        const close = lines[i].trim();
        if (close.startsWith(marker[0].repeat(marker.length)) && /^([`~])\1*$/.test(close)) {
          i++;
          break;
        }
        body.push(lines[i]);
        i++;
      }
      const pre = el("pre");
      const code = el("code");
      if (match[2]) code.dataset.language = match[2];
      code.textContent = body.join("\n");
      pre.append(code);
      parent.append(pre);
      continue;
    }
    match = HEADING.exec(line);
    if (match) {
      const heading = el(`h${Math.min(6, match[1].length + 2)}`); // h3..h6: inside a message
      heading.append(...parseInline(match[2] || ""));
      parent.append(heading);
      i++;
      continue;
    }
    if (RULE.test(line)) {
      parent.append(el("hr"));
      i++;
      continue;
    }
    if (QUOTE.test(line)) {
      const inner = [];
      while (i < lines.length && !isBlank(lines[i])) {
        const quoted = QUOTE.exec(lines[i]);
        inner.push(quoted ? quoted[1] : lines[i]);
        i++;
      }
      const quote = el("blockquote");
      if (depth < 8) parseBlocks(inner, quote, depth + 1);
      else quote.append(...parseInline(inner.join("\n")));
      parent.append(quote);
      continue;
    }
    match = ITEM.exec(line);
    if (match) {
      i = parseList(lines, i, parent, depth);
      continue;
    }
    if (line.includes("|") && i + 1 < lines.length && TABLE_DELIMITER.test(lines[i + 1])) {
      i = parseTable(lines, i, parent);
      continue;
    }
    const paragraph = [];
    while (i < lines.length && !isBlank(lines[i])) {
      if (paragraph.length && startsBlock(lines[i])) break;
      paragraph.push(lines[i]);
      i++;
    }
    const p = el("p");
    p.append(...parseInline(paragraph.join("\n")));
    parent.append(p);
  }
}

function parseList(lines, start, parent, depth) {
  const first = ITEM.exec(lines[start]);
  const indent = first[1].length;
  const ordered = /\d/.test(first[2]);
  const list = el(ordered ? "ol" : "ul");
  if (ordered) {
    const number = Number.parseInt(first[2], 10);
    if (number !== 1) list.start = number;
  }
  let i = start;
  while (i < lines.length) {
    const match = ITEM.exec(lines[i]);
    if (!match || match[1].length !== indent || /\d/.test(match[2]) !== ordered) break;
    const content = [match[3] || ""];
    const contentIndent = indent + match[2].length + 1;
    i++;
    let blankBefore = false;
    while (i < lines.length) {
      const line = lines[i];
      if (isBlank(line)) {
        blankBefore = true;
        i++;
        continue;
      }
      const leading = line.length - line.trimStart().length;
      const sibling = ITEM.exec(line);
      if (sibling && sibling[1].length <= indent) break;
      if (leading < Math.min(contentIndent, indent + 2) && (blankBefore || startsBlock(line))) {
        break;
      }
      if (blankBefore) content.push("");
      content.push(leading >= contentIndent ? line.slice(contentIndent) : line.trimStart());
      blankBefore = false;
      i++;
    }
    if (blankBefore && i < lines.length) {
      // a blank line then something not in this list: step back so it ends here
      while (i > start && isBlank(lines[i - 1])) i--;
    }
    const item = el("li");
    if (depth < 8) {
      parseBlocks(content, item, depth + 1);
      // a tight item is just its text: unwrap a lone paragraph
      if (item.childElementCount >= 1 && item.firstElementChild.tagName === "P") {
        const p = item.firstElementChild;
        p.replaceWith(...p.childNodes);
      }
    } else {
      item.append(...parseInline(content.join("\n")));
    }
    list.append(item);
    while (i < lines.length && isBlank(lines[i])) {
      const next = lines.slice(i).find((line) => !isBlank(line));
      const sibling = next === undefined ? null : ITEM.exec(next);
      if (!sibling || sibling[1].length !== indent) break;
      i++;
    }
  }
  parent.append(list);
  return i;
}

function parseTable(lines, start, parent) {
  const header = splitRow(lines[start]);
  const aligns = splitRow(lines[start + 1]).map((cell) => {
    const left = cell.startsWith(":");
    const right = cell.endsWith(":");
    return left && right ? "center" : right ? "right" : left ? "left" : "";
  });
  const wrap = el("div", "table-wrap");
  const table = el("table");
  const head = el("thead");
  const headRow = el("tr");
  header.forEach((cell, index) => {
    const th = el("th");
    if (aligns[index]) th.className = `align-${aligns[index]}`;
    th.append(...parseInline(cell));
    headRow.append(th);
  });
  head.append(headRow);
  table.append(head);
  const body = el("tbody");
  let i = start + 2;
  while (i < lines.length && !isBlank(lines[i]) && lines[i].includes("|")) {
    const row = el("tr");
    const cells = splitRow(lines[i]);
    for (let index = 0; index < header.length; index++) {
      const td = el("td");
      if (aligns[index]) td.className = `align-${aligns[index]}`;
      td.append(...parseInline(cells[index] || ""));
      row.append(td);
    }
    body.append(row);
    i++;
  }
  table.append(body);
  wrap.append(table);
  parent.append(wrap);
  return i;
}

// -- inline ---------------------------------------------------------------------
const ESCAPABLE = "\\`*_{}[]()#+-.!|~<>\"'";
const BARE_URL = /^(?:https?:\/\/|mailto:)[^\s<>"]*[^\s<>"'.,:;!?)\]*_~]/;
const EMPHASIS = [
  ["**", "strong"],
  ["__", "strong"],
  ["~~", "del"],
  ["*", "em"],
  ["_", "em"],
];

/** The index of the `]` closing the `[` at `open`, or -1. */
function closingBracket(text, open) {
  let level = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (c === "\\") {
      i++;
    } else if (c === "`") {
      const run = /^`+/.exec(text.slice(i))[0];
      const end = text.indexOf(run, i + run.length);
      if (end !== -1) i = end + run.length - 1;
    } else if (c === "[") {
      level++;
    } else if (c === "]") {
      level--;
      if (level === 0) return i;
    }
  }
  return -1;
}

/** `(url "title")` at `open`: [url, index after `)`] or null. */
function linkDestination(text, open) {
  if (text[open] !== "(") return null;
  let level = 0;
  for (let i = open; i < text.length; i++) {
    const c = text[i];
    if (c === "\\") {
      i++;
    } else if (c === "(") {
      level++;
    } else if (c === ")") {
      level--;
      if (level === 0) {
        let inside = text.slice(open + 1, i).trim();
        const titled = /^(\S+)\s+(?:"[^"]*"|'[^']*')$/.exec(inside);
        if (titled) inside = titled[1];
        if (inside.startsWith("<") && inside.endsWith(">")) inside = inside.slice(1, -1);
        return [inside, i + 1];
      }
    } else if (c === "\n" && level === 1 && text[i + 1] === "\n") {
      return null;
    }
  }
  return null;
}

function wordChar(c) {
  return c !== undefined && /[\p{L}\p{N}]/u.test(c);
}

/** Inline markdown of `text` as an array of nodes. */
export function parseInline(text, depth = 0) {
  const nodes = [];
  let plain = "";
  const flush = () => {
    if (plain) nodes.push(document.createTextNode(plain));
    plain = "";
  };
  const push = (node) => {
    flush();
    nodes.push(node);
  };
  const inner = (source) =>
    depth < 12 ? parseInline(source, depth + 1) : [document.createTextNode(source)];

  let i = 0;
  outer: while (i < text.length) {
    const c = text[i];
    const rest = text.slice(i);
    if (c === "\\" && i + 1 < text.length) {
      if (text[i + 1] === "\n") {
        push(el("br"));
        i += 2;
        continue;
      }
      if (ESCAPABLE.includes(text[i + 1])) {
        plain += text[i + 1];
        i += 2;
        continue;
      }
    }
    if (c === "\n") {
      plain = plain.replace(/ +$/, "");
      push(el("br"));
      i++;
      continue;
    }
    if (c === "`") {
      const run = /^`+/.exec(rest)[0];
      const end = text.indexOf(run, i + run.length);
      if (end !== -1 && text[end + run.length] !== "`") {
        const code = el("code");
        let content = text.slice(i + run.length, end).replace(/\n/g, " ");
        if (/^ .*[^ ].* $/.test(content)) content = content.slice(1, -1);
        code.textContent = content;
        push(code);
        i = end + run.length;
        continue;
      }
      plain += run;
      i += run.length;
      continue;
    }
    if (c === "<") {
      const auto = /^<((?:https?:\/\/|mailto:)[^\s<>]+)>/i.exec(rest);
      if (auto) {
        const href = safeHref(auto[1]);
        push(href ? link(href, [document.createTextNode(auto[1])]) : document.createTextNode(auto[1]));
        i += auto[0].length;
        continue;
      }
    }
    if (c === "[" || (c === "!" && text[i + 1] === "[")) {
      const image = c === "!";
      const open = image ? i + 1 : i;
      const close = closingBracket(text, open);
      if (close !== -1) {
        const destination = linkDestination(text, close + 1);
        if (destination) {
          const [url, next] = destination;
          const label = text.slice(open + 1, close);
          const href = safeHref(url);
          if (image) {
            const alt = document.createTextNode(`image: ${label || url}`);
            push(href ? link(href, [alt]) : alt);
          } else if (href) {
            push(link(href, inner(label)));
          } else {
            const span = el("span", "unsafe-link");
            span.title = "link removed: only http, https and mailto links are allowed";
            span.append(...inner(label));
            push(span);
          }
          i = next;
          continue;
        }
      }
    }
    if ((c === "h" || c === "m") && (i === 0 || !wordChar(text[i - 1]))) {
      const bare = BARE_URL.exec(rest);
      if (bare) {
        const href = safeHref(bare[0]);
        if (href) {
          push(link(href, [document.createTextNode(bare[0])]));
          i += bare[0].length;
          continue;
        }
      }
    }
    for (const [marker, tag] of EMPHASIS) {
      if (!rest.startsWith(marker)) continue;
      const after = text[i + marker.length];
      if (after === undefined || /\s/.test(after)) continue;
      if (marker[0] === "_" && wordChar(text[i - 1])) continue;
      let end = text.indexOf(marker, i + marker.length + 1);
      while (end !== -1) {
        const before = text[end - 1];
        const next = text[end + marker.length];
        const okBefore = !/\s/.test(before) && before !== "\\";
        const okAfter = marker[0] !== "_" || !wordChar(next);
        // a single * must not close on the first half of a **
        const single = marker.length === 1 && next === marker;
        if (okBefore && okAfter && !single) break;
        end = text.indexOf(marker, end + (single ? 2 : 1));
      }
      if (end === -1) continue;
      const node = el(tag);
      node.append(...inner(text.slice(i + marker.length, end)));
      push(node);
      i = end + marker.length;
      continue outer;
    }
    plain += c;
    i++;
  }
  flush();
  return nodes;
}

/** Render `text` as markdown into a fresh DocumentFragment. */
export function renderMarkdown(text) {
  const fragment = document.createDocumentFragment();
  const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
  parseBlocks(lines, fragment, 0);
  return fragment;
}
