// The classroom dashboard. Everything arrives pushed on one event stream (/events): the
// first message holds every card and the recent happenings, the next ones only what
// changed. If the stream drops, the browser reconnects by itself and sends the id of the
// last message it got (Last-Event-ID), and the proxy sends what was missed.
//
// Names and tags come from the agents themselves, so they are only ever put into the page
// as text (textContent), never as HTML.
"use strict";

const MAX_EVENTS = 300;   // as many as the proxy keeps
const FEED_SHOWN = 10;    // lines of the feed that fit on a projector
const SEQ_SHOWN = 6;      // calls drawn in the sequence diagram

const cards = new Map();  // agent id -> card (as the proxy sent it)
let events = [];          // happenings, oldest first
let clockOffset = 0;      // the proxy's clock minus ours, in ms

function now() { return Date.now() + clockOffset; }

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function ago(ms) {
  const s = Math.max(0, Math.round((now() - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  return Math.floor(s / 3600) + " h ago";
}

function clock(ms) {
  const d = new Date(ms);
  return d.toTimeString().slice(0, 8);
}

// When a grant ends: the time, and the day too if it is not today ("Dec 04 16:15").
function until(ms) {
  const d = new Date(ms);
  const today = new Date(now()).toDateString() === d.toDateString();
  return (today ? "" : d.toDateString().slice(4, 10) + " ") + d.toTimeString().slice(0, 5);
}

// ---- cards ---------------------------------------------------------------------------

function cardElement(c) {
  const card = el("article", "card " + (c.online ? "online" : "offline"));
  card.dataset.id = c.id;
  card.dataset.name = c.name;
  card.dataset.online = c.online ? "true" : "false";
  const h = el("h3");
  h.append(el("span", "name", c.name));
  const state = el("span", "state", c.online ? "● online" : "✕ offline");
  h.append(state);
  card.append(h);
  if (!c.online) {
    const last = el("div", "line last-seen");
    last.dataset.lastSeen = c.last_seen_ms;
    last.dataset.reason = c.left_reason || "";
    last.textContent = lastSeenText(last);
    card.append(last);
  }
  const owner = el("div", "line");
  owner.append(document.createTextNode("owner " + c.owners.join(", ") + " · "));
  owner.append(c.adopted ? el("span", "adopted", "✓ adopted") : el("span", "not-adopted", "? not adopted"));
  card.append(owner);
  // Load: the 1-minute load average against the CPU percentage, whichever says busier.
  const pct = Math.max(0, Math.min(100, c.cpu_percent || 0));
  const bar = el("div", "bar" + (pct >= 80 ? " high" : ""));
  bar.setAttribute("role", "meter");
  bar.setAttribute("aria-valuemin", "0");
  bar.setAttribute("aria-valuemax", "100");
  bar.setAttribute("aria-valuenow", String(Math.round(pct)));
  const fill = el("span");
  fill.style.width = pct + "%";
  bar.append(fill);
  card.append(bar);
  const mem = c.mem_total_kb ? " · memory " + Math.round(100 * c.mem_used_kb / c.mem_total_kb) + "%" : "";
  card.append(el("div", "line", "CPU " + Math.round(pct) + "% · load " + (c.load1 || 0).toFixed(2) + mem));
  const sensors = el("div", "line");
  if (c.temperature_c !== null && c.temperature_c !== undefined) {
    const t = el("span", c.temperature_c >= 70 ? "hot" : "", "temp " + c.temperature_c.toFixed(1) + " °C" + (c.temperature_c >= 70 ? " ▲ hot" : ""));
    sensors.append(t, document.createTextNode(" "));
  }
  if (c.throttled) {
    sensors.append(el("span", "throttled", "⚠ THROTTLED"), document.createTextNode(" " + c.throttled_words.join(", ")));
  } else if (c.throttled === false) {
    sensors.append(document.createTextNode(c.throttled_words.length ? "not throttled now (" + c.throttled_words.join(", ") + ")" : "not throttled"));
  }
  if (sensors.childNodes.length) card.append(sensors);
  const chips = el("div", "chips");
  for (const m of c.missions) chips.append(el("span", "chip", m.name + " (" + m.functions.join(", ") + ")"));
  for (const t of c.tags) chips.append(el("span", "chip tag", "#" + t));
  card.append(chips);
  if (c.model) card.append(el("div", "line", c.model));
  return card;
}

function lastSeenText(node) {
  const why = node.dataset.reason ? " (" + node.dataset.reason + ")" : "";
  return "last seen " + ago(Number(node.dataset.lastSeen)) + why;
}

function renderCards() {
  const box = document.getElementById("agents");
  box.replaceChildren();
  const all = [...cards.values()].sort((a, b) =>
    (b.online - a.online) || a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
  if (!all.length) box.append(el("p", "empty", "No agent has joined yet."));
  for (const c of all) box.append(cardElement(c));
  const online = all.filter(c => c.online).length;
  const off = all.length - online;
  document.getElementById("counts").textContent =
    online + " online" + (off ? " · " + off + " offline" : "");
}

// ---- the feed -------------------------------------------------------------------------

function feedItem(e) {
  const li = el("li");
  li.dataset.type = e.type;
  li.dataset.seq = e.seq;
  li.append(el("span", "when", clock(e.at_ms)));
  const add = (cls, text) => li.append(el("span", cls, text));
  const txt = text => li.append(document.createTextNode(text));
  switch (e.type) {
    case "call":
      if (e.allowed && e.outcome === "ok") add("mark allowed", "✓");
      else if (e.allowed) add("mark failed", "!");
      else add("mark denied", "✕");
      txt(e.caller + " → " + e.agent_name + "  " + e.mission + "/" + e.function + "  ");
      if (e.allowed) add(e.outcome === "ok" ? "allowed" : "failed", (e.outcome === "ok" ? "allowed, ok" : "allowed, " + e.outcome.replace(/_/g, " ")) + " · " + e.latency_ms + " ms");
      else { add("denied", "DENIED " + e.outcome.replace(/_/g, " ")); if (e.reason) add("why", " — " + e.reason); }
      break;
    case "session":
      add("mark", "⇄"); txt(e.caller + " → " + e.agent_name + ": session relayed by the proxy"); break;
    case "grant":
      add("mark grant", "✚"); add("grant", "GRANT "); txt(e.owner + " lets " + e.grantee + " call " + e.mission + " until " + until(e.expires_ms)); break;
    case "revocation":
      add("mark revocation", "⊘"); add("revocation", "REVOKED "); txt(e.owner + ": " + e.revokes); break;
    case "adoption":
      add("mark joined", "✓"); txt(e.owner + " adopted " + (nameOf(e.agent) || e.agent.slice(0, 12))); break;
    case "disown":
      add("mark left", "✕"); txt(e.owner + " disowned " + (nameOf(e.agent) || e.agent.slice(0, 12))); break;
    case "joined":
      add("mark joined", "●"); add("joined", e.agent_name + " joined"); break;
    case "left":
      add("mark left", "✕"); add("left", e.agent_name + " went offline"); txt(" (" + e.reason + ")"); break;
    default:
      txt(e.type);
  }
  return li;
}

function nameOf(id) {
  const c = cards.get(id);
  return c ? c.name : null;
}

function renderFeed() {
  const feed = document.getElementById("feed");
  feed.replaceChildren();
  const shown = events.filter(e => e.type !== "grant" && e.type !== "revocation").slice(-FEED_SHOWN).reverse();
  if (!shown.length) feed.append(el("li", "empty", "Nothing yet. Try: wtd call demo/echo '{\"msg\":\"hi\"}'"));
  for (const e of shown) feed.append(feedItem(e));
  const grants = document.getElementById("grants");
  grants.replaceChildren();
  const g = events.filter(e => e.type === "grant" || e.type === "revocation").slice(-5).reverse();
  if (!g.length) grants.append(el("li", "empty", "None yet."));
  for (const e of g) grants.append(feedItem(e));
}

// ---- the sequence diagram -------------------------------------------------------------

const SVG = "http://www.w3.org/2000/svg";
const LANES = { caller: 90, proxy: 320, agent: 550 };

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

function arrow(g, x1, x2, y, cls, marker) {
  g.append(svg("line", { x1, y1: y, x2, y2: y, class: cls, "marker-end": "url(#" + marker + ")" }));
}

function renderSequence() {
  const box = document.getElementById("sequence");
  // Calls the agents reported; a session the proxy relayed stands in for the calls of an
  // agent that does not report them (one that does reports them right after it).
  const rows = events.filter((e, i) => e.type === "call" || (e.type === "session" &&
    !events.slice(i + 1).some(c => c.type === "call" && c.caller === e.caller && c.agent === e.agent))).slice(-SEQ_SHOWN);
  const rowH = 78, top = 56;
  const height = top + Math.max(1, rows.length) * rowH + 10;
  box.setAttribute("viewBox", "0 0 640 " + height);
  box.replaceChildren();
  const defs = svg("defs");
  for (const [id, cls] of [["a-req", "req"], ["a-ok", "ok"], ["a-denied", "denied"], ["a-failed", "failed"], ["a-relay", "relay"]]) {
    const m = svg("marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" });
    m.append(svg("path", { d: "M0,0 L10,5 L0,10 z", class: cls, fill: cls === "req" || cls === "relay" ? "#ddd" : null }));
    defs.append(m);
  }
  box.append(defs);
  for (const [name, x] of Object.entries(LANES)) {
    box.append(svg("text", { x, y: 26, "text-anchor": "middle", class: "head" }, name));
    box.append(svg("line", { x1: x, y1: 36, x2: x, y2: height - 4, class: "lane" }));
  }
  if (!rows.length) {
    box.append(svg("text", { x: 320, y: top + 30, "text-anchor": "middle" }, "no calls yet"));
    return;
  }
  rows.forEach((e, i) => {
    const y = top + i * rowH + 18;
    const g = svg("g", { class: "call", "data-type": e.type, "data-seq": e.seq });
    g.append(svg("text", { x: LANES.caller - 6, y: y - 6, "text-anchor": "middle" }, e.caller));
    g.append(svg("text", { x: LANES.agent + 6, y: y - 6, "text-anchor": "middle" }, e.agent_name));
    if (e.type === "session") {
      arrow(g, LANES.caller, LANES.proxy - 4, y + 10, "req relay", "a-relay");
      arrow(g, LANES.proxy, LANES.agent - 4, y + 10, "req relay", "a-relay");
      g.append(svg("text", { x: LANES.proxy, y: y + 36, "text-anchor": "middle" }, "⇄ encrypted session relayed"));
      box.append(g);
      return;
    }
    const cls = !e.allowed ? "denied" : e.outcome === "ok" ? "ok" : "failed";
    arrow(g, LANES.caller, LANES.proxy - 4, y + 10, "req", "a-req");
    arrow(g, LANES.proxy, LANES.agent - 4, y + 10, "req", "a-req");
    g.append(svg("text", { x: (LANES.caller + LANES.proxy) / 2 + 20, y: y + 4, "text-anchor": "middle" }, e.mission + "/" + e.function));
    arrow(g, LANES.agent, LANES.proxy + 4, y + 38, "ans " + cls, "a-" + cls);
    arrow(g, LANES.proxy, LANES.caller + 4, y + 38, "ans " + cls, "a-" + cls);
    const label = !e.allowed ? "✕ denied: " + e.outcome.replace(/_/g, " ")
      : (e.outcome === "ok" ? "✓ ok " : "! " + e.outcome.replace(/_/g, " ") + " ") + e.latency_ms + " ms";
    g.append(svg("text", { x: (LANES.proxy + LANES.agent) / 2, y: y + 60, "text-anchor": "middle", class: cls }, label));
    box.append(g);
  });
}

// ---- the stream -----------------------------------------------------------------------

function apply(u) {
  clockOffset = u.now_ms - Date.now();
  if (u.full) cards.clear();
  for (const c of u.cards) cards.set(c.id, c);
  for (const id of u.removed) cards.delete(id);
  if (u.reset) events = [];
  const last = events.length ? events[events.length - 1].seq : 0;
  for (const e of u.events) if (e.seq > last) events.push(e);
  if (events.length > MAX_EVENTS) events = events.slice(-MAX_EVENTS);
  renderCards();
  if (u.events.length || u.reset || u.full) { renderFeed(); renderSequence(); }
}

function setLink(up, text) {
  const link = document.getElementById("link");
  link.className = "link " + (up ? "up" : "down");
  link.querySelector(".mark").textContent = up ? "●" : "✕";
  link.querySelector(".text").textContent = text;
}

function start() {
  renderFeed();
  renderSequence();
  const source = new EventSource("/events");
  source.addEventListener("open", () => setLink(true, "live"));
  source.addEventListener("error", () => setLink(false, "reconnecting… (is the proxy running?)"));
  source.addEventListener("update", m => apply(JSON.parse(m.data)));
  // "last seen" keeps counting between updates.
  setInterval(() => {
    for (const n of document.querySelectorAll(".last-seen")) n.textContent = lastSeenText(n);
  }, 1000);
}

document.addEventListener("DOMContentLoaded", start);
