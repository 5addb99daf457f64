// The chat page: streams answers from /v1/responses, renders them with markdown.js, links [n] citations
// to their sources, and posts feedback to /v1/feedback. Text from the model or the documents only ever
// reaches the page as text nodes (textContent), never as HTML.
"use strict";

(function () {
  const md = window.ragworksMarkdown;
  const log = document.getElementById("log");
  const empty = document.getElementById("empty");
  const form = document.getElementById("ask");
  const question = document.getElementById("question");
  const sendButton = document.getElementById("send");
  const tokenInput = document.getElementById("token");
  const SNIPPET_CHARS = 240;
  const FEEDBACK_TRIES = 5;
  const RENDER_MS = 50;

  // history: the turns so far in Responses input format, resent whole when the server keeps no
  // conversations (or has lost this one); lastResponseId continues the server's copy otherwise.
  const chat = { history: [], ids: [], lastResponseId: null, conversations: false, info: null, answers: 0, epoch: 0 };
  window.ragworksChat = chat;

  const LOST_CONVERSATION = "previous_response_not_found";  // OpenAI's error code, ours too

  class ServerError extends Error {
    constructor(message, status, fields) {
      super(message);
      this.status = status;
      this.code = (fields && fields.code) || "";
      this.param = (fields && fields.param) || "";
    }

    /** Whether the server refused the previous_response_id (unknown, expired, deleted, not kept). */
    lostConversation() {
      return this.status === 400 && (this.code === LOST_CONVERSATION || this.param === "previous_response_id");
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    const token = tokenInput.value.trim();
    if (token) headers["Authorization"] = "Bearer " + token;
    return headers;
  }

  function errorFields(body) {
    const err = body && typeof body.error === "object" && body.error ? body.error : body || {};
    return { message: typeof err.message === "string" ? err.message : "", code: err.code, param: err.param };
  }

  async function serverError(response) {
    let body = null;
    try { body = await response.json(); } catch (e) { /* not JSON: say the status instead */ }
    const fields = errorFields(body);
    return new ServerError(fields.message || "The server answered HTTP " + response.status + ".", response.status, fields);
  }

  async function request(path, init) {
    try {
      return await fetch(path, init);
    } catch (e) {
      throw new Error("Could not reach the server (" + (e.message || e) + ").");
    }
  }

  // --- the empty state: which agent, index and model this server runs ---

  async function loadInfo() {
    try {
      const response = await request("agent/info", { headers: authHeaders() });
      if (response.status === 401) {
        const refused = tokenInput.value.trim() ? "The server refused the API token. " : "";
        throw new Error(refused + "Enter the server's API token above to see which agent it runs.");
      }
      if (!response.ok) throw await serverError(response);
      chat.info = await response.json();
      chat.conversations = Boolean(chat.info.ragworks && chat.info.ragworks.conversations);
      showEmpty(chat.info, null);
    } catch (e) {
      showEmpty(null, e.message || String(e));
    }
  }

  function showEmpty(info, problem) {
    empty.replaceChildren();
    empty.classList.toggle("problem", Boolean(problem));
    if (problem) {
      empty.textContent = problem;
      return;
    }
    const about = info.ragworks || {};
    const index = about.index || {};
    empty.appendChild(el("p", null, "Ask a question about the documents in this agent's index."));
    const rows = [
      ["Agent", about.agent || info.name],
      ["Model", about.model],
      ["Index", [index.path, index.backend && "(" + index.backend + ")"].filter(Boolean).join(" ")],
      ["Conversations", chat.conversations ? "kept by the server" : "sent whole with each question"],
    ];
    const list = el("dl");
    for (const [name, value] of rows) {
      list.appendChild(el("dt", null, name));
      list.appendChild(el("dd", "info-" + name.toLowerCase(), value || "unknown"));
    }
    empty.appendChild(list);
  }

  // --- turns ---

  function addUserTurn(text) {
    log.appendChild(el("div", "turn user", text));
  }

  function newAnswerView() {
    const turn = el("div", "turn assistant pending");
    const answer = el("div", "answer");
    answer.appendChild(el("span", "pending-indicator", "Waiting for the answer"));
    turn.appendChild(answer);
    log.appendChild(turn);
    log.scrollTop = log.scrollHeight;
    chat.answers += 1;
    return { turn, answer, key: "a" + chat.answers, text: "", deltas: 0 };
  }

  function sourceNumber(source, position) {
    return Number.isInteger(source.n) ? source.n : position + 1;
  }

  function renderAnswer(view, text, sources) {
    const numbers = new Set((sources || []).map(sourceNumber));
    const cited = new Set();
    const citation = (n, literal) => {
      if (!numbers.has(n)) return null;  // no such source (or not known yet): the text stays as it is
      cited.add(n);
      const link = el("a", "cite", literal);
      link.href = "#" + view.key + "-source-" + n;
      link.dataset.source = String(n);
      link.addEventListener("click", (e) => { e.preventDefault(); focusSource(view, n); });
      return link;
    };
    view.answer.replaceChildren(md.render(text, { citation }));
    return cited;
  }

  // While streaming, render at most every RENDER_MS: each render is a whole pass over the answer.
  function scheduleRender(view) {
    if (view.timer) return;
    const wait = Math.max(0, RENDER_MS - (performance.now() - (view.renderedAt || 0)));
    view.timer = setTimeout(() => {
      view.timer = null;
      view.renderedAt = performance.now();
      if (view.turn.classList.contains("done") || view.turn.classList.contains("error")) return;
      renderAnswer(view, view.text, null);
      log.scrollTop = log.scrollHeight;
    }, wait);
  }

  function focusSource(view, n) {
    const item = document.getElementById(view.key + "-source-" + n);
    if (!item) return;
    if (item.classList.contains("uncited")) item.closest(".sources").classList.add("show-all");
    item.scrollIntoView({ block: "nearest" });
    item.classList.add("highlight");
    setTimeout(() => item.classList.remove("highlight"), 2000);
  }

  // "docs/a.md", or "docs/a.md · part 2" when the answer has several chunks of that file.
  function sourceLabel(source, sources) {
    const name = String(source.source || source.id || "source");
    if (sources.filter((s) => s.source === source.source).length < 2) return name;
    if (Number.isInteger(source.chunk_index)) return name + " · part " + (source.chunk_index + 1);
    return name + " · " + String(source.id || "").slice(-8);
  }

  function sourceItem(view, source, position, sources, isCited) {
    const n = sourceNumber(source, position);
    const item = el("li", "source " + (isCited ? "cited" : "uncited"));
    item.id = view.key + "-source-" + n;
    item.value = n;
    const label = sourceLabel(source, sources);
    const href = md.safeHref(String(source.source || ""));
    const name = el("strong", null, href ? "" : label);
    if (href) {
      const link = el("a", null, label);
      link.href = href;
      link.target = "_blank";
      link.rel = "noopener noreferrer nofollow";
      name.appendChild(link);
    }
    if (source.id) name.title = String(source.id);
    item.appendChild(name);
    if (typeof source.score === "number") item.appendChild(document.createTextNode(" (score " + source.score.toFixed(2) + ")"));
    if (source.snippet) {
      const text = String(source.snippet);
      item.appendChild(el("span", "snippet", text.length > SNIPPET_CHARS ? text.slice(0, SNIPPET_CHARS) + "…" : text));
    }
    return item;
  }

  function renderSources(view, sources, cited) {
    if (!Array.isArray(sources) || sources.length === 0) return;
    const isCited = (s, i) => s.cited === true || cited.has(sourceNumber(s, i));
    const shown = sources.filter(isCited).length;
    const box = el("div", "sources");
    box.appendChild(el("div", "sources-title", shown ? "Sources" : "No source cited"));
    const list = el("ol");
    sources.forEach((s, i) => list.appendChild(sourceItem(view, s, i, sources, isCited(s, i))));
    box.appendChild(list);
    const hidden = sources.length - shown;
    if (hidden > 0) {
      const label = "Show all " + sources.length + " retrieved sources";
      const toggle = el("button", "secondary show-all", label);
      toggle.type = "button";
      toggle.addEventListener("click", () => {
        const all = box.classList.toggle("show-all");
        toggle.textContent = all ? "Show cited sources only" : label;
      });
      box.appendChild(toggle);
    }
    view.turn.appendChild(box);
  }

  // --- feedback ---

  function addFeedback(view, responseId) {
    if (!responseId) return;
    const row = el("div", "feedback");
    const status = el("span", "status");
    const comment = el("textarea", "comment");
    comment.placeholder = "What was right or wrong? (optional)";
    comment.hidden = true;
    const send = el("button", "secondary send-comment", "Send comment");
    send.type = "button";
    send.hidden = true;
    let value = null;
    const thumbs = [[true, "👍 Good", "Good answer"], [false, "👎 Bad", "Bad answer"]].map(([v, face, name]) => {
      const button = el("button", "secondary thumb " + (v ? "up" : "down"), face);
      button.type = "button";
      button.setAttribute("aria-label", name);
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", () => {
        value = v;
        thumbs.forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
        comment.hidden = send.hidden = false;
        postFeedback({ response_id: responseId, value }, status);
      });
      return button;
    });
    send.addEventListener("click", () => {
      const text = comment.value.trim();
      if (text && value !== null) postFeedback({ response_id: responseId, value, comment: text }, status);
    });
    thumbs.forEach((b) => row.appendChild(b));
    row.append(status, comment, send);
    view.turn.appendChild(row);
  }

  // 409: the answer's trace is still on its way to the tracking store; the server says when to retry.
  async function sendFeedback(body) {
    const init = { method: "POST", headers: authHeaders({ "Content-Type": "application/json" }), body: JSON.stringify(body) };
    for (let attempt = 1; ; attempt++) {
      const response = await request("v1/feedback", init);
      if (response.status !== 409 || attempt >= FEEDBACK_TRIES) return response;
      const wait = Number.parseFloat(response.headers.get("Retry-After") || "1");
      await new Promise((done) => setTimeout(done, 1000 * Math.min(10, Math.max(0.1, wait || 1))));
    }
  }

  async function postFeedback(body, status) {
    status.classList.remove("failed", "sent");
    status.textContent = "Sending feedback…";
    try {
      const response = await sendFeedback(body);
      if (!response.ok) throw await serverError(response);
      status.textContent = "Thanks, your feedback was recorded.";
      status.classList.add("sent");
    } catch (e) {
      status.textContent = "Feedback was not recorded: " + (e.message || e);
      status.classList.add("failed");
    }
  }

  // --- the stream ---

  // Call onEvent with each `data:` JSON payload of a text/event-stream body.
  async function readEvents(response, onEvent) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    const handle = (block) => {
      const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
      if (data && data !== "[DONE]") onEvent(JSON.parse(data));
    };
    const read = () => reader.read().catch((e) => {
      throw new Error("The connection broke while the answer streamed (" + (e.message || e) + "); ask again.");
    });
    try {
      for (;;) {
        const { value, done } = await read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          handle(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
        }
      }
      if (buffer.trim()) handle(buffer);
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  function itemText(item) {
    if (!item || item.type !== "message" || !Array.isArray(item.content)) return "";
    return item.content.map((part) => (typeof part.text === "string" ? part.text : "")).join("");
  }

  async function streamAnswer(body, view) {
    const headers = authHeaders({ "Content-Type": "application/json" });
    const init = { method: "POST", headers, body: JSON.stringify(Object.assign({}, body, { stream: true })) };
    const response = await request("v1/responses", init);
    if (!response.ok) throw await serverError(response);
    const result = { id: null, sources: null, completed: false, items: "" };
    await readEvents(response, (event) => {
      if (event.type === "response.output_text.delta") {
        view.text += event.delta;
        view.turn.dataset.deltas = String(++view.deltas);
        view.turn.classList.remove("pending");
        scheduleRender(view);
      } else if (event.type === "response.output_item.done") {
        result.items += itemText(event.item);
        if (event.custom_outputs && event.custom_outputs.sources) result.sources = event.custom_outputs.sources;
      } else if (event.type === "response.completed") {
        const custom = event.custom_outputs || (event.response && event.response.custom_outputs);
        if (custom && custom.sources) result.sources = custom.sources;
        result.id = event.response && event.response.id;
        result.completed = true;
      } else if (event.type === "error" || event.error) {
        const fields = errorFields(event);
        throw new ServerError(fields.message || "The answer failed.", null, fields);
      }
    });
    if (!result.completed) throw new Error("The answer stream ended before the answer was complete; ask again.");
    if (!view.deltas) view.text = result.items;  // an agent that sent its answer whole, without deltas
    return result;
  }

  // Continue the server's copy of the conversation when it keeps one; resend the history when it
  // does not, or when it no longer has that response (expired, deleted, or the server restarted).
  async function converse(userItem, view) {
    if (chat.conversations && chat.lastResponseId) {
      try {
        return await streamAnswer({ input: [userItem], previous_response_id: chat.lastResponseId }, view);
      } catch (e) {
        if (!(e instanceof ServerError && e.lostConversation())) throw e;
      }
    }
    return await streamAnswer({ input: chat.history.concat([userItem]) }, view);
  }

  function showFailure(view, error) {
    view.turn.classList.remove("pending", "done");
    view.turn.classList.add("error");
    view.turn.replaceChildren(el("div", "error-message", "Error: " + (error.message || String(error))));
    if (view.text) {
      const partial = el("details");
      partial.appendChild(el("summary", null, "Text received before the error (not an answer)"));
      partial.appendChild(el("div", "partial", view.text));
      view.turn.appendChild(partial);
    }
  }

  async function ask(text) {
    empty.hidden = true;
    addUserTurn(text);
    const view = newAnswerView();
    const userItem = { role: "user", content: text };
    const epoch = chat.epoch;
    try {
      const result = await converse(userItem, view);
      if (epoch !== chat.epoch) return;  // "New chat" was pressed meanwhile: this answer is not part of it
      view.turn.classList.remove("pending");
      const cited = renderAnswer(view, view.text, result.sources || []);
      renderSources(view, result.sources, cited);
      addFeedback(view, result.id);
      view.turn.classList.add("done");
      chat.history.push(userItem, { role: "assistant", content: view.text });
      chat.lastResponseId = result.id || null;
      chat.ids.push(chat.lastResponseId);
    } catch (e) {
      showFailure(view, e);  // the question stays unanswered: nothing joins the history
    }
    log.scrollTop = log.scrollHeight;
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = question.value.trim();
    if (!text || sendButton.disabled) return;
    question.value = "";
    sendButton.disabled = true;
    try { await ask(text); } finally { sendButton.disabled = false; question.focus(); }
  });
  question.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); form.requestSubmit(); }
  });
  document.getElementById("clear").addEventListener("click", () => {
    chat.epoch += 1;
    chat.history.length = 0;
    chat.ids.length = 0;
    chat.lastResponseId = null;
    log.replaceChildren(empty);
    empty.hidden = false;
  });
  tokenInput.value = sessionStorage.getItem("ragworks-token") || "";
  tokenInput.addEventListener("change", () => {
    sessionStorage.setItem("ragworks-token", tokenInput.value.trim());
    loadInfo();
  });
  loadInfo();
})();
