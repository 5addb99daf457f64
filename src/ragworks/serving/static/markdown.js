// A small markdown renderer for model answers: paragraphs, headings, quotes, lists, fenced code,
// emphasis, inline code, http(s) links and [n] citations. It builds DOM nodes with createElement and
// text nodes only: no text from the model or the documents is ever parsed as HTML, so a <script> or
// an <img onerror> in an answer shows as the characters it is made of.
"use strict";

(function () {
  const PUNCTUATION = "\\`*_{}[]()#+-.!>~|";
  const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w#+.-]*)\s*$/;
  const BULLET = /^\s{0,3}[-*+]\s+(.*)$/;
  const NUMBERED = /^\s{0,3}(\d{1,9})[.)]\s+(.*)$/;
  const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const QUOTE = /^\s{0,3}>\s?(.*)$/;
  // Sticky (y) patterns match at lastIndex in the whole text: no copy of the rest per character.
  const CITATION = /\[(\d{1,4})\]/y;
  const LINK = /\[([^[\]\n]{1,500})\]\(\s*<?([^\s<>()]{1,2000})>?\s*\)/y;
  const AUTOLINK = /https?:\/\/[^\s<>()[\]"']+/y;
  const TICKS = /`+/y;

  function matchAt(pattern, text, at) {
    pattern.lastIndex = at;
    return pattern.exec(text);
  }

  /** The href for `url` when it is an absolute http(s) URL, else null (javascript:, data:, relative...). */
  function safeHref(url) {
    try {
      const parsed = new URL(url);
      return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
    } catch (e) {
      return null;
    }
  }

  function link(href, parent) {
    const a = document.createElement("a");
    a.href = href;
    a.target = "_blank";
    a.rel = "noopener noreferrer nofollow";
    parent.appendChild(a);
    return a;
  }

  // Inline spans. `closed` remembers delimiters with no closing partner further on, so a hostile run
  // of unmatched `*` or backticks costs one scan, not one per character.
  function inline(text, options, parent, inLink) {
    const closed = new Set();
    let buffer = "";
    const flush = () => {
      if (buffer) parent.appendChild(document.createTextNode(buffer));
      buffer = "";
    };
    let i = 0;
    while (i < text.length) {
      const c = text[i];
      if (c === "\\" && i + 1 < text.length && PUNCTUATION.includes(text[i + 1])) {
        buffer += text[i + 1];
        i += 2;
        continue;
      }
      if (c === "`") {
        const ticks = matchAt(TICKS, text, i)[0];
        const end = closed.has(ticks) ? -1 : text.indexOf(ticks, i + ticks.length);
        if (end < 0) {
          closed.add(ticks);
          buffer += ticks;
          i += ticks.length;
          continue;
        }
        flush();
        const code = document.createElement("code");
        code.textContent = text.slice(i + ticks.length, end);
        parent.appendChild(code);
        i = end + ticks.length;
        continue;
      }
      if (c === "[") {
        const cite = matchAt(CITATION, text, i);
        if (cite && options.citation) {
          const node = options.citation(Number(cite[1]), cite[0]);
          if (node) {
            flush();
            parent.appendChild(node);
            i += cite[0].length;
            continue;
          }
        }
        const match = inLink ? null : matchAt(LINK, text, i);
        if (match) {
          const href = safeHref(match[2]);
          if (href) {
            flush();
            inline(match[1], options, link(href, parent), true);
          } else {
            buffer += match[0];  // not http(s): shown as the text it is, never a link
          }
          i += match[0].length;
          continue;
        }
      }
      if (c === "h" && !inLink && (i === 0 || !/\w/.test(text[i - 1]))) {
        const bare = matchAt(AUTOLINK, text, i);
        if (bare) {
          const url = bare[0].replace(/[.,;:!?]+$/, "");
          const href = safeHref(url);
          if (href) {
            flush();
            link(href, parent).textContent = url;
            i += url.length;
            continue;
          }
        }
      }
      if (c === "*" || c === "_") {
        const delim = text[i + 1] === c ? c + c : c;
        const end = emphasisEnd(text, i, delim, closed);
        if (end > 0) {
          flush();
          const node = document.createElement(delim.length === 2 ? "strong" : "em");
          inline(text.slice(i + delim.length, end), options, node, inLink);
          parent.appendChild(node);
          i = end + delim.length;
          continue;
        }
        buffer += delim;
        i += delim.length;
        continue;
      }
      buffer += c;
      i += 1;
    }
    flush();
  }

  // Where the emphasis opened at `start` closes, or -1; `_` only at word edges (snake_case stays text).
  function emphasisEnd(text, start, delim, closed) {
    const open = start + delim.length;
    if (closed.has(delim) || open >= text.length || /\s/.test(text[open])) return -1;
    if (delim[0] === "_" && start > 0 && /\w/.test(text[start - 1])) return -1;
    const end = text.indexOf(delim, open + 1);
    if (end < 0) {
      closed.add(delim);
      return -1;
    }
    if (/\s/.test(text[end - 1])) return -1;
    if (delim[0] === "_" && end + delim.length < text.length && /\w/.test(text[end + delim.length])) return -1;
    return end;
  }

  function codeBlock(lines, language) {
    const pre = document.createElement("pre");
    const code = document.createElement("code");
    if (language) code.dataset.language = language;
    code.textContent = lines.join("\n");
    pre.appendChild(code);
    return pre;
  }

  function list(items, ordered, start, options) {
    const node = document.createElement(ordered ? "ol" : "ul");
    if (ordered && start !== 1) node.start = start;
    for (const item of items) {
      const li = document.createElement("li");
      inline(item, options, li, false);
      node.appendChild(li);
    }
    return node;
  }

  function paragraph(lines, tag, options) {
    const node = document.createElement(tag);
    inline(lines.join("\n"), options, node, false);
    return node;
  }

  // One block starting at lines[i]: the node and the index of the next line.
  function block(lines, i, options) {
    const line = lines[i];
    const fence = FENCE.exec(line);
    if (fence) {
      const body = [];
      let j = i + 1;
      while (j < lines.length && !lines[j].trim().startsWith(fence[1])) body.push(lines[j++]);
      return [codeBlock(body, fence[2]), j + 1];  // an unclosed fence (still streaming) runs to the end
    }
    const heading = HEADING.exec(line);
    if (heading) {
      const level = Math.min(6, heading[1].length + 2);  // answers' headings stay below the page's own
      return [paragraph([heading[2]], "h" + level, options), i + 1];
    }
    for (const [pattern, ordered] of [[BULLET, false], [NUMBERED, true]]) {
      if (!pattern.test(line)) continue;
      const items = [];
      const start = ordered ? Number(NUMBERED.exec(line)[1]) : 1;
      let j = i;
      while (j < lines.length && lines[j].trim()) {
        const item = pattern.exec(lines[j]);
        if (item) items.push(item[ordered ? 2 : 1]);
        else if (/^\s+/.test(lines[j]) && items.length) items[items.length - 1] += "\n" + lines[j].trim();
        else break;
        j += 1;
      }
      return [list(items, ordered, start, options), j];
    }
    if (QUOTE.test(line)) {
      const quoted = [];
      let j = i;
      while (j < lines.length && QUOTE.test(lines[j])) quoted.push(QUOTE.exec(lines[j++])[1]);
      const quote = document.createElement("blockquote");
      quote.appendChild(render(quoted.join("\n"), options));
      return [quote, j];
    }
    const text = [];
    let j = i;
    while (j < lines.length && lines[j].trim() && !(j > i && startsBlock(lines[j]))) text.push(lines[j++]);
    return [paragraph(text, "p", options), j];
  }

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || BULLET.test(line) || NUMBERED.test(line) || QUOTE.test(line);
  }

  /**
   * Render markdown `text` as a DocumentFragment of plain DOM nodes.
   * options.citation(n, literal): a node for the citation [n], or null to keep the text as it is.
   */
  function render(text, options) {
    const fragment = document.createDocumentFragment();
    const lines = String(text).replace(/\r\n?/g, "\n").split("\n");
    let i = 0;
    while (i < lines.length) {
      if (!lines[i].trim()) {
        i += 1;
        continue;
      }
      const [node, next] = block(lines, i, options || {});
      fragment.appendChild(node);
      i = next;
    }
    return fragment;
  }

  window.ragworksMarkdown = Object.freeze({ render, safeHref });
})();
