// shoal's status page: polls /live while the page is visible, and draws it.
"use strict";

const POLL_MS = 1000;
let timer = null;
let busy = false;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "title") e.title = v;
    else e.setAttribute(k, v);
  }
  for (const k of kids) {
    if (k === null || k === undefined) continue;
    e.append(k instanceof Node ? k : String(k));
  }
  return e;
}

function bytes(n) {
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  n = Number(n) || 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)) + " " + u[i];
}

function secs(ms) { return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s"; }

function ago(t, now) {
  const s = Math.max(0, (now - new Date(t)) / 1000);
  if (s < 60) return Math.round(s) + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return Math.round(s / 3600) + " h ago";
}

function short(d) { return String(d).replace(/^sha256:/, "").slice(0, 12); }

// srcName names a source: a peer by its member name, else the registry or this node.
function srcName(s) {
  if (s.source === "peer") return s.name || ("peer " + short(s.peer || "?"));
  if (s.source === "upstream") return "registry";
  if (s.source === "containerd" || s.source === "store") return "this node (" + s.source + ")";
  return s.source;
}

function srcClass(source) {
  if (source === "peer") return "src-peer";
  if (source === "upstream") return "src-upstream";
  return "src-local";
}

function replace(id, ...kids) {
  const e = document.getElementById(id);
  e.replaceChildren(...kids);
  return e;
}

function drawCounters(c) {
  const peer = c.fetched_peer || 0, up = c.fetched_upstream || 0;
  const local = (c.served_containerd || 0) + (c.served_store || 0);
  const hits = Object.entries(c).filter(([k]) => k.startsWith("lookups_") && k !== "lookups_miss").reduce((a, [, v]) => a + v, 0);
  const all = hits + (c.lookups_miss || 0);
  const card = (label, value, id) => el("div", { class: "card", id: id }, el("b", {}, value), label);
  replace("counters",
    card("from peers", bytes(peer), "c-peer"),
    card("from the registry", bytes(up), "c-upstream"),
    card("served from this node", bytes(local), "c-local"),
    card("fetched bytes from peers", peer + up ? Math.round(100 * peer / (peer + up)) + " %" : "–", "c-ratio"),
    card("blob look-ups answered", all ? Math.round(100 * hits / all) + " %" : "–", "c-hits"));
}

function drawMembers(st, now) {
  const body = document.querySelector("#members tbody");
  const rows = [];
  const m = st.mesh;
  if (!m) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 5 }, "the mesh is off (--p2p=false)")));
    return;
  }
  rows.push(el("tr", { "data-member": m.NodeName, "data-state": "alive" },
    el("td", {}, m.NodeName, " ", el("span", { class: "muted" }, "(this node)")),
    el("td", { class: "state-alive" }, "alive"), el("td", {}, st.version),
    el("td", { class: "wide" }, el("code", {}, m.GossipAddr)), el("td", {}, "now")));
  for (const mem of m.Members || []) {
    const state = mem.State === "alive" ? "alive" : (mem.Failed ? "failed" : "left");
    rows.push(el("tr", { "data-member": mem.Name, "data-state": state },
      el("td", {}, mem.Name),
      el("td", { class: "state-" + state, title: mem.MetaError || "" }, state),
      el("td", {}, mem.Version || "–"),
      el("td", { class: "wide" }, el("code", {}, mem.Addr)),
      el("td", {}, state === "alive" ? "now" : ago(mem.Since, now))));
  }
  body.replaceChildren(...rows);
  document.getElementById("summary").textContent =
    m.LiveMembers + " live members · " + (m.Encrypted ? "encrypted (" + m.Protection + ")" : "OPEN mesh, no cluster key") +
    " · " + m.BlobsProvided + " blobs provided";
}

function drawTransfers(ts) {
  ts = ts || [];
  document.getElementById("transfers-none").hidden = ts.length > 0;
  document.getElementById("transfers").hidden = ts.length === 0;
  document.querySelector("#transfers tbody").replaceChildren(...ts.map(t => el("tr", { "data-digest": t.digest },
    el("td", {}, el("code", { title: t.digest }, short(t.digest))),
    el("td", {}, t.source ? srcName(t) : "–"),
    el("td", { class: "num" }, bytes(t.bytes) + (t.size ? " / " + bytes(t.size) : "")),
    el("td", { class: "num" }, bytes(t.rate) + "/s"),
    el("td", {}, t.waiting ? srcName(t) + (t.reason ? " (" + t.reason + ")" : "") : "–"))));
}

function timeline(b, start, span) {
  const track = el("div", { class: "track" });
  if (!b.started) return track;
  const t0 = new Date(b.started) - start;
  const t1 = (b.ended ? new Date(b.ended) : Date.now()) - start;
  const bar = el("div", { class: "bar", title: secs(t1 - t0) });
  bar.style.left = (100 * t0 / span) + "%";
  bar.style.width = Math.max(0.5, 100 * (t1 - t0) / span) + "%";
  const total = b.sources.reduce((a, s) => a + s.bytes, 0) || 1;
  for (const s of b.sources) {
    const seg = el("span", { class: srcClass(s.source), title: srcName(s) + ": " + bytes(s.bytes) });
    seg.style.width = (100 * s.bytes / total) + "%";
    bar.append(seg);
  }
  track.append(bar);
  return track;
}

function drawPull(p) {
  const start = new Date(p.started);
  const end = p.ended ? new Date(p.ended) : Date.now();
  const span = Math.max(1, end - start);
  const head = el("h3", {}, p.image, " ",
    el("span", { class: "muted" }, (p.running ? "running, " : "") + secs(end - start) + ", " + start.toLocaleTimeString()));
  const totals = el("p", { class: "muted" }, "totals: " +
    ((p.totals || []).map(s => srcName(s) + " " + bytes(s.bytes)).join(", ") || "nothing fetched") +
    (p.fallbacks ? " · " + p.fallbacks + " fallbacks, " + secs(p.lost_ms) + " lost" : ""));
  const layers = (p.blobs || []).map((b, i) => {
    const kind = i === 0 ? "config" : "layer " + i;
    b.sources = b.sources || [];
    b.fallbacks = b.fallbacks || [];
    const srcs = b.sources.map(s => srcName(s) + " " + bytes(s.bytes)).join(", ");
    const what = b.state === "held" ? "held already, not fetched" : b.state + (srcs ? " · " + srcs : "") + (b.error ? " · " + b.error : "");
    const row = el("div", { class: "layer", "data-digest": b.digest, "data-state": b.state, "data-sources": b.sources.map(s => s.source).join(",") },
      el("code", { title: b.digest }, kind + " " + short(b.digest).slice(0, 6)),
      el("span", { class: "num" }, bytes(b.size)),
      timeline(b, start, span),
      el("div", { class: "what" }, what));
    if (b.fallbacks.length) {
      row.append(el("div", { class: "falls" }, b.fallbacks.map(f =>
        srcName(f) + " " + f.reason + " (" + secs(f.lost_ms) + " lost)").join(" · ") +
        (b.more_fallbacks ? " · " + b.more_fallbacks + " more" : "")));
    }
    return row;
  });
  return el("article", { class: "pull", "data-image": p.image, "data-running": String(p.running) }, head, totals, ...layers);
}

function drawStore(ls) {
  const st = ls.status;
  const kids = [el("p", {}, "store: " + st.store_blobs + " blobs, " + bytes(st.store_bytes) +
    (ls.store_max_bytes ? " of " + bytes(ls.store_max_bytes) : "") + " · containerd " + st.containerd)];
  if ((ls.backoffs || []).length) {
    kids.push(el("p", { class: "error" }, "backed off: " + ls.backoffs.map(b => b.registry + " until " + new Date(b.until).toLocaleTimeString()).join(", ")));
  } else {
    kids.push(el("p", { class: "muted" }, "no registry backed off"));
  }
  for (const r of st.upstream || []) {
    const err = r.error || r.warning;
    kids.push(el("p", {}, "upstream " + r.registry + ": " + (r.hosts || []).map(h => h.url).join(" → "),
      err ? el("span", { class: "error" }, " · " + err) : null));
  }
  replace("store", ...kids);
}

function draw(ls) {
  const now = new Date(ls.now);
  const st = ls.status;
  document.getElementById("node").textContent = (st.mesh ? st.mesh.NodeName + " · " : "") + st.version;
  drawCounters(ls.counters);
  drawMembers(st, now);
  drawTransfers(ls.transfers);
  document.getElementById("pulls-none").textContent = ls.recording ? "none recorded yet" : "pull records are off (--pull-history 0)";
  const ps = ls.pulls || [];
  document.getElementById("pulls-none").hidden = ps.length > 0;
  replace("pulls", ...ps.map(drawPull));
  drawStore(ls);
}

async function poll() {
  timer = null;
  if (busy) return;
  busy = true;
  const errEl = document.getElementById("error");
  try {
    const resp = await fetch("/live", { cache: "no-store" });
    if (!resp.ok) throw new Error(resp.status + " " + resp.statusText);
    draw(await resp.json());
    errEl.hidden = true;
    document.body.dataset.updated = String(Date.now());
  } catch (e) {
    errEl.textContent = "cannot update: " + e.message;
    errEl.hidden = false;
  }
  busy = false;
  if (!document.hidden) timer = setTimeout(poll, POLL_MS);
}

// Polls only while the page is visible: a hidden tab costs the daemon nothing.
document.addEventListener("visibilitychange", () => {
  if (!document.hidden && timer === null) poll();
});
poll();
