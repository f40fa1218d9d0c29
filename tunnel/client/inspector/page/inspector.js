// The tunnel inspector's page: the list of captured requests, kept live by
// the server-sent events of /api/events, and the detail of the one chosen.
// Every text from the tunnel is set with textContent, never as HTML.
"use strict";

const state = { rows: new Map(), selected: null, detail: null, tab: "request", filter: "" };

function $(id) { return document.getElementById(id); }

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

function api(path, options) {
  return fetch(path, options).then(async (response) => {
    const body = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
    return body;
  });
}

function toast(text) {
  const node = $("toast");
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, 2500);
}

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function duration(ms) {
  return ms < 1000 ? `${ms.toFixed(ms < 10 ? 1 : 0)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

function statusCell(exchange) {
  const code = exchange.status;
  const text = exchange.kind === "tcp" ? "TCP" : code === null ? (exchange.state === "open" ? "…" : "—") : String(code);
  return el("span", { class: `code s${code ? Math.floor(code / 100) : 0}` }, text);
}

function label(exchange) {
  if (exchange.kind === "tcp") return `TCP connection to ${exchange.local || "?"}`;
  return exchange.target || "(no request line)";
}

function matches(exchange) {
  if (!state.filter) return true;
  const haystack = [exchange.method, exchange.target, exchange.host, exchange.status, exchange.kind, exchange.source]
    .join(" ").toLowerCase();
  return state.filter.split(/\s+/).every((word) => haystack.includes(word));
}

function rowFor(exchange) {
  const badges = [];
  if (exchange.kind === "websocket") badges.push(el("span", { class: "badge" }, "WebSocket"));
  if (exchange.replayOf) badges.push(el("span", { class: "badge replay" }, `replay of #${exchange.replayOf}`));
  if (exchange.state === "open") badges.push(el("span", { class: "badge open" }, "open"));
  if (exchange.refusal) badges.push(el("span", { class: "badge" }, exchange.refusal.replaceAll("_", " ")));
  const row = el("tr", { class: "exchange", "data-id": String(exchange.id) },
    el("td", { class: "muted" }, clock(exchange.started)),
    el("td", { class: "method" }, exchange.kind === "tcp" ? "TCP" : exchange.method || "—"),
    el("td", { class: "path" }, label(exchange), ...badges),
    el("td", { class: "host" }, exchange.host || ""),
    el("td", {}, statusCell(exchange)),
    el("td", { class: "num" }, duration(exchange.durationMs)),
    el("td", { class: "num" }, size(exchange.bytesIn)),
    el("td", { class: "num" }, size(exchange.bytesOut)),
    el("td", { class: "muted" }, exchange.source || ""));
  row.addEventListener("click", () => select(exchange.id));
  if (exchange.id === state.selected) row.classList.add("selected");
  row.hidden = !matches(exchange);
  return row;
}

function upsert(exchange, fresh) {
  const tbody = $("exchanges").tBodies[0];
  const old = state.rows.get(exchange.id);
  const row = rowFor(exchange);
  if (old) {
    old.node.replaceWith(row);
  } else {
    if (fresh) row.classList.add("fresh");
    // Newest first: a higher id goes above.
    let before = null;
    for (const other of tbody.rows) {
      if (Number(other.dataset.id) < exchange.id) { before = other; break; }
    }
    tbody.insertBefore(row, before);
  }
  state.rows.set(exchange.id, { node: row, exchange });
  if (exchange.id === state.selected) loadDetail(exchange.id);
}

function drop(id) {
  const old = state.rows.get(id);
  if (old) old.node.remove();
  state.rows.delete(id);
  if (id === state.selected) { state.selected = null; $("detail-pane").hidden = true; }
}

function updateCount() {
  $("count").textContent = `${state.rows.size} captured`;
  $("empty").hidden = state.rows.size > 0;
}

function loadList() {
  return api("/api/requests").then((body) => {
    for (const id of [...state.rows.keys()]) drop(id);
    for (const exchange of body.requests.slice().reverse()) upsert(exchange, false);
    updateCount();
  });
}

function showStatus(status) {
  const node = $("status");
  node.dataset.state = status.state;
  const tunnels = status.tunnels || [];
  let text = status.connected ? "connected" : status.state;
  if (tunnels.length > 1) {
    text = `${tunnels.filter((tunnel) => tunnel.connected).length} of ${tunnels.length} servers up`;
  } else if (status.server) {
    text += ` · ${status.server}`;
  }
  if (status.rttMs !== null && status.rttMs !== undefined) text += ` · RTT ${duration(status.rttMs)}`;
  $("status-text").textContent = text;
  node.title = tunnels.length > 1
    ? tunnels.map((tunnel) => `${tunnel.server}: ${tunnel.detail}`).join("\n")
    : status.detail || "";
  const list = $("forwards");
  // The addresses come from the server: only a web address becomes a link.
  const link = (address) => /^https?:\/\//i.test(address)
    ? el("a", { href: address, target: "_blank", rel: "noreferrer" }, address)
    : el("span", {}, address);
  const forwards = tunnels.length ? tunnels.flatMap((tunnel) => tunnel.forwards) : status.forwards || [];
  list.replaceChildren(...forwards.map((forward) => el("li", {},
    link(forward.public), ` → ${forward.local}`)));
}

function headersTable(headers) {
  if (!headers.length) return el("p", { class: "muted" }, "No headers.");
  return el("table", { class: "headers" },
    el("tbody", {}, ...headers.map(([name, value]) => el("tr", {}, el("td", {}, name), el("td", {}, value)))));
}

function bodyBlock(message) {
  const body = message.body;
  const parts = [];
  let title = "Body";
  if (body.kind !== "empty") {
    title += ` · ${body.contentType || "no content type"} · ${body.kind}`;
    if (body.decoded) title += ` (${body.encoding}, decompressed)`;
  }
  parts.push(el("h3", {}, title));
  if (message.truncated) {
    parts.push(el("p", { class: "note" }, `Truncated: the first ${size(message.bodyKept)} are kept of a longer body.`));
  }
  if (body.kind === "empty") parts.push(el("p", { class: "muted" }, "No body."));
  else parts.push(el("pre", { class: "body", "data-kind": body.kind }, body.text));
  return parts;
}

function renderDetail() {
  const detail = state.detail;
  if (!detail) return;
  const message = state.tab === "request" ? detail.request : detail.response;
  const container = $("detail-body");
  const parts = [];
  if (detail.kind === "tcp" || (detail.kind === "websocket" && state.tab === "response" && !message.headers.length)) {
    parts.push(el("p", { class: "muted" }, `${size(detail.bytesIn)} to the local service, ${size(detail.bytesOut)} back.`));
  }
  if (detail.kind !== "tcp") {
    if (state.tab === "response" && detail.status !== null) {
      parts.push(el("h3", {}, `Status`), el("p", { class: "code" }, `${detail.status} ${detail.reason || ""}`));
    }
    if (message.error) parts.push(el("p", { class: "note" }, `Not read as HTTP: ${message.error}`));
    parts.push(el("h3", {}, "Headers"), headersTable(message.headers));
    if (detail.kind === "http") parts.push(...bodyBlock(message));
    else parts.push(el("p", { class: "muted" }, `WebSocket frames: ${size(message.bytes)} in all.`));
  }
  container.replaceChildren(...parts);
}

function showDetail(detail) {
  state.detail = detail;
  $("detail-pane").hidden = false;
  const title = detail.kind === "tcp" ? `TCP #${detail.id}` : `${detail.method || "—"} ${detail.target || ""}`;
  $("detail-title").textContent = title;
  const meta = [
    ["Status", detail.status === null ? (detail.open ? "waiting" : "none") : `${detail.status} ${detail.reason || ""}`],
    ["Host", detail.host], ["From", detail.source], ["Local service", detail.local],
    ["Started", new Date(detail.started * 1000).toLocaleString()],
    ["Duration", duration(detail.durationMs) + (detail.open ? " (open)" : "")],
    ["Sizes", `${size(detail.bytesIn)} in, ${size(detail.bytesOut)} out`],
    ["Replay of", detail.replayOf ? `#${detail.replayOf}` : null],
    ["Answered by", detail.refusal ? `the tunnel client (${detail.refusal.replaceAll("_", " ")})` : null],
  ].filter(([, value]) => value);
  $("detail-meta").replaceChildren(...meta.flatMap(([name, value]) => [el("dt", {}, name), el("dd", {}, value)]));
  const replayable = detail.kind === "http" && detail.method !== null;
  for (const id of ["replay", "edit-replay", "copy-curl"]) $(id).disabled = !replayable;
  const note = $("detail-note");
  note.hidden = !(detail.request.truncated && replayable);
  note.textContent = "The request body was truncated: Replay needs the body, so use Edit & replay.";
  renderDetail();
}

function loadDetail(id) {
  return api(`/api/requests/${id}`).then((detail) => {
    if (state.selected === id) showDetail(detail);
  }).catch((error) => toast(error.message));
}

function select(id) {
  state.selected = id;
  for (const { node } of state.rows.values()) node.classList.toggle("selected", Number(node.dataset.id) === id);
  loadDetail(id);
}

function replay(edit) {
  const detail = state.detail;
  if (!detail) return Promise.resolve();
  $("replay").disabled = true;
  return api(`/api/requests/${detail.id}/replay`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(edit || {}),
  }).then((replayed) => {
    toast(`Replayed #${detail.id}: ${replayed.status === null ? "no answer" : replayed.status}`);
    select(replayed.id);
  }).finally(() => { $("replay").disabled = false; });
}

function decodedBody(message) {
  const bytes = Uint8Array.from(atob(message.body.base64), (c) => c.charCodeAt(0));
  return new TextDecoder().decode(bytes);
}

function openEditor() {
  const detail = state.detail;
  $("edit-method").value = detail.method;
  $("edit-target").value = detail.target;
  $("edit-headers").value = detail.request.headers
    .filter(([name]) => !["content-length", "transfer-encoding", "connection"].includes(name.toLowerCase()))
    .map(([name, value]) => `${name}: ${value}`).join("\n");
  $("edit-body").value = decodedBody(detail.request);
  $("edit-error").hidden = true;
  $("editor").showModal();
}

function sendEdited(event) {
  event.preventDefault();
  const headers = $("edit-headers").value.split("\n").filter((line) => line.trim()).map((line) => {
    const colon = line.indexOf(":");
    return colon < 0 ? [line.trim(), ""] : [line.slice(0, colon).trim(), line.slice(colon + 1).trim()];
  });
  const edit = { method: $("edit-method").value.trim(), target: $("edit-target").value.trim(), headers, body: $("edit-body").value };
  replay(edit).then(() => $("editor").close()).catch((error) => {
    $("edit-error").textContent = error.message;
    $("edit-error").hidden = false;
  });
}

function shellQuote(text) { return `'${text.replaceAll("'", `'\\''`)}'`; }

function copyCurl() {
  const detail = state.detail;
  const url = `http://${detail.host || "localhost"}${detail.target}`;
  const parts = ["curl", "-X", detail.method, shellQuote(url)];
  for (const [name, value] of detail.request.headers) {
    if (!["host", "content-length", "connection"].includes(name.toLowerCase())) parts.push("-H", shellQuote(`${name}: ${value}`));
  }
  if (detail.request.body.base64) parts.push("--data-binary", shellQuote(decodedBody(detail.request)));
  const command = parts.join(" ");
  (navigator.clipboard ? navigator.clipboard.writeText(command) : Promise.reject(new Error("no clipboard")))
    .then(() => toast("curl command copied"), () => toast(command));
}

function listen() {
  const events = new EventSource("/api/events");
  events.addEventListener("status", (event) => showStatus(JSON.parse(event.data)));
  events.addEventListener("exchanges", (event) => {
    const news = JSON.parse(event.data);
    for (const id of news.dropped) drop(id);
    for (const exchange of news.changed) upsert(exchange, true);
    updateCount();
  });
  events.addEventListener("resync", () => loadList());
  events.addEventListener("open", () => loadList());
  events.addEventListener("error", () => showStatus({ state: "offline", connected: false, detail: "the inspector does not answer" }));
}

document.addEventListener("DOMContentLoaded", () => {
  $("filter").addEventListener("input", (event) => {
    state.filter = event.target.value.trim().toLowerCase();
    for (const { node, exchange } of state.rows.values()) node.hidden = !matches(exchange);
  });
  $("clear").addEventListener("click", () => api("/api/requests", { method: "DELETE" }).then(loadList));
  $("replay").addEventListener("click", () => replay(null).catch((error) => toast(error.message)));
  $("edit-replay").addEventListener("click", openEditor);
  $("edit-cancel").addEventListener("click", () => $("editor").close());
  $("editor-form").addEventListener("submit", sendEdited);
  $("copy-curl").addEventListener("click", copyCurl);
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => {
      state.tab = tab.dataset.tab;
      for (const other of document.querySelectorAll(".tab")) other.classList.toggle("active", other === tab);
      renderDetail();
    });
  }
  updateCount();
  listen();
});
