// The orc dashboard: a small single-page app over orc serve's JSON API and event streams.
// Plain JavaScript with no dependencies and no build step. Every text from the server is
// put into the page with textContent, never as HTML.
"use strict";

const TOKEN_KEY = "orc-token";
const main = document.getElementById("main");
const SVG = "http://www.w3.org/2000/svg";

// ---------------------------------------------------------------------------------------
// Small helpers

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function svg(tag, attrs, ...children) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c) e.append(c);
  return e;
}

function fmtInt(n) { return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"); }
function fmtCost(c) {
  if (c === null || c === undefined) return "unknown";
  if (c === 0) return "$0";
  return c < 0.01 ? "$" + c.toFixed(5) : "$" + c.toFixed(4);
}
function fmtMs(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return ms + " ms";
  if (ms < 60000) return (ms / 1000).toFixed(2) + " s";
  return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
}
function fmtTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}
function pill(status) { return el("span", { class: "pill " + status, text: status.replace("_", " ") }); }

// ---------------------------------------------------------------------------------------
// The API, with the token asked for once and kept for the browser session.

let tokenPrompt = null;

function askToken(wrong) {
  if (tokenPrompt) return tokenPrompt;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const error = document.getElementById("token-error");
  error.hidden = !wrong;
  error.textContent = wrong ? "That token was not accepted." : "";
  input.value = "";
  tokenPrompt = new Promise((resolve) => {
    form.onsubmit = (ev) => {
      ev.preventDefault();
      sessionStorage.setItem(TOKEN_KEY, input.value.trim());
      dialog.close();
      tokenPrompt = null;
      resolve();
    };
  });
  dialog.showModal();
  return tokenPrompt;
}

function authHeaders(extra) {
  const h = Object.assign({}, extra || {});
  const t = sessionStorage.getItem(TOKEN_KEY);
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || "HTTP " + status);
    this.status = status;
    this.body = body;
  }
}

async function api(path, options) {
  options = options || {};
  for (;;) {
    const init = { method: options.method || "GET", headers: authHeaders(options.headers), signal: options.signal };
    if (options.json !== undefined) {
      init.body = JSON.stringify(options.json);
      init.headers["Content-Type"] = "application/json";
    }
    const r = await fetch(path, init);
    setConn(true);
    if (r.status === 401) {
      await askToken(!!sessionStorage.getItem(TOKEN_KEY));
      continue;
    }
    const text = await r.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: { message: text } }; }
    if (!r.ok) throw new ApiError(r.status, body);
    return body;
  }
}

function setConn(ok) {
  const c = document.getElementById("conn");
  c.className = "conn " + (ok ? "ok" : "bad");
}

// Follows a run's Server-Sent Events with fetch (so the token goes in a header, never in a
// URL), from the event after `after`, reconnecting with Last-Event-ID until the server ends
// the stream after the run's `run_finished`, or the view is left.
function followEvents(runId, after, onEvent, onEnd) {
  const ctl = new AbortController();
  let last = after || 0;
  let ended = false;
  (async () => {
    let delay = 500;
    while (!ctl.signal.aborted && !ended) {
      let lastType = null;
      try {
        const headers = authHeaders({ Accept: "text/event-stream" });
        if (last > 0) headers["Last-Event-ID"] = String(last);
        const r = await fetch("/api/runs/" + encodeURIComponent(runId) + "/events", { headers, signal: ctl.signal });
        if (r.status === 401) { await askToken(!!sessionStorage.getItem(TOKEN_KEY)); continue; }
        if (!r.ok) throw new Error("HTTP " + r.status);
        setConn(true);
        delay = 500;
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buf.indexOf("\n\n")) >= 0) {
            const block = buf.slice(0, cut);
            buf = buf.slice(cut + 2);
            let id = null, data = "";
            for (const line of block.split("\n")) {
              if (line.startsWith("id:")) id = line.slice(3).trim();
              else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
            }
            if (!data) continue;
            const ev = JSON.parse(data);
            if (id !== null) last = Number(id);
            lastType = ev.path && ev.path.length ? null : ev.type;
            onEvent(ev);
          }
        }
        // The server ends a stream after the run's last event; anything else was a break.
        if (lastType === "run_finished" || lastType === null) ended = true;
      } catch (e) {
        if (ctl.signal.aborted) return;
        setConn(false);
      }
      if (ended) break;
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 5000);
    }
    if (!ctl.signal.aborted && onEnd) onEnd();
  })();
  return () => ctl.abort();
}

// ---------------------------------------------------------------------------------------
// Routing

let cleanup = null;

function navigate(path) {
  history.pushState(null, "", path);
  route();
}

document.addEventListener("click", (ev) => {
  const a = ev.target.closest("a[data-link]");
  if (!a || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.button !== 0) return;
  ev.preventDefault();
  navigate(a.getAttribute("href"));
});
window.addEventListener("popstate", route);

function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  const path = location.pathname;
  let nav = "runs";
  main.replaceChildren();
  let m;
  if ((m = path.match(/^\/runs\/([^/]+)$/))) { cleanup = runView(decodeURIComponent(m[1])); }
  else if (path === "/explore") { nav = "explore"; cleanup = exploreView(); }
  else if (path === "/cost") { nav = "cost"; cleanup = costView(); }
  else { cleanup = runsView(); }
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === nav);
}

function flash(where, error) {
  const box = el("div", { class: "flash", role: "alert", text: error.message || String(error) });
  const details = error.body && error.body.error && error.body.error.details;
  if (details && details.rendered) box.append(el("pre", { class: "text", text: details.rendered }));
  where.prepend(box);
  return box;
}

// ---------------------------------------------------------------------------------------
// The run list, with the form that starts a run

function runsView() {
  let stopped = false;
  const formBox = el("section", { class: "panel", id: "start-panel" });
  const listBox = el("section", { class: "panel" }, el("h2", { text: "Runs" }));
  const table = el("table", { class: "runs", id: "runs-table" });
  listBox.append(table);
  main.append(formBox, listBox);

  const select = el("select", { name: "ensemble", id: "ensemble-select", required: true });
  const input = el("textarea", { name: "input", id: "run-input", placeholder: "Input for the ensemble (its default task when empty)" });
  const desc = el("p", { class: "muted", id: "ensemble-description" });
  const button = el("button", { type: "submit", class: "primary", id: "start-button", text: "Start run" });
  const form = el("form", { id: "start-form" },
    el("h2", { text: "Start a run" }),
    el("div", { class: "form-row" }, el("label", {}, "Ensemble", select), el("div", { class: "actions" }, button)),
    desc,
    el("label", {}, "Input", input));
  formBox.append(form);
  let ensembles = [];
  select.addEventListener("change", () => {
    const e = ensembles.find((x) => x.name === select.value);
    desc.textContent = e ? (e.description || "") + " · " + e.agents + " agent" + (e.agents === 1 ? "" : "s") + " · " + e.source : "";
  });
  api("/api/ensembles").then((doc) => {
    ensembles = doc.ensembles.filter((e) => e.valid && e.runnable);
    select.replaceChildren(...ensembles.map((e) => el("option", { value: e.name, text: e.name })));
    const bad = doc.ensembles.filter((e) => !e.valid);
    if (bad.length) formBox.append(el("p", { class: "muted", text: bad.length + " invalid ensemble file(s) not offered: " + bad.map((e) => e.name).join(", ") }));
    select.dispatchEvent(new Event("change"));
  }).catch((e) => flash(formBox, e));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    try {
      const body = { ensemble: select.value };
      if (input.value.trim() !== "") body.input = input.value;
      const r = await api("/api/runs", { method: "POST", json: body });
      navigate("/runs/" + r.id);
    } catch (e) {
      flash(formBox, e);
      button.disabled = false;
    }
  });

  async function refresh() {
    try {
      const doc = await api("/api/runs?limit=100");
      renderRuns(table, doc.runs);
    } catch (e) {
      setConn(false);
    }
    if (!stopped) timer = setTimeout(refresh, 1500);
  }
  let timer = null;
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}

// Rows are kept by run id and updated in place, so a click never lands on a row that a
// refresh is replacing.
function renderRuns(table, runs) {
  if (!table.tHead) {
    table.append(el("thead", {}, el("tr", {},
      el("th", { text: "Status" }), el("th", { text: "Ensemble" }), el("th", { text: "Run", class: "opt" }),
      el("th", { text: "Started", class: "opt" }), el("th", { text: "Duration", class: "num" }),
      el("th", { text: "Tokens", class: "num opt" }), el("th", { text: "Cost", class: "num" }))), el("tbody"));
    table.rows_ = new Map();
  }
  const body = table.tBodies[0];
  if (!runs.length) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: 7, class: "muted", text: "No runs yet: start one above." })));
    table.rows_.clear();
    return;
  }
  const seen = new Set();
  let before = body.firstChild;
  for (const r of runs) {
    seen.add(r.id);
    let row = table.rows_.get(r.id);
    if (!row) {
      const cells = {
        status: el("td"), ensemble: el("td", {}, el("a", { href: "/runs/" + r.id, "data-link": true, text: r.ensemble })),
        id: el("td", { class: "mono opt", text: r.id }), started: el("td", { class: "opt" }),
        duration: el("td", { class: "num" }), tokens: el("td", { class: "num opt" }), cost: el("td", { class: "num" }),
      };
      row = { tr: el("tr", { "data-run": r.id }, Object.values(cells)), cells, status: null };
      table.rows_.set(r.id, row);
    }
    if (row.status !== r.status) {
      row.status = r.status;
      row.cells.status.replaceChildren(pill(r.status));
    }
    const live = r.status === "running" && r.started_at ? Date.now() - new Date(r.started_at).getTime() : null;
    row.cells.started.textContent = fmtTime(r.started_at);
    row.cells.duration.textContent = fmtMs(r.duration_ms !== null ? r.duration_ms : live);
    row.cells.tokens.textContent = fmtInt(r.tokens);
    row.cells.cost.textContent = fmtCost(r.cost_usd);
    if (row.tr !== before) body.insertBefore(row.tr, before);
    else before = before.nextSibling;
  }
  for (const [id, row] of table.rows_) {
    if (!seen.has(id)) { row.tr.remove(); table.rows_.delete(id); }
  }
  for (const tr of [...body.children]) if (!tr.dataset.run) tr.remove();
}

// ---------------------------------------------------------------------------------------
// One run: the DAG, the agent panel, generate views, the event console

const STATES = ["waiting", "queued", "running", "succeeded", "failed", "skipped", "cancelled"];

function newRun() {
  return { status: "running", agents: new Map(), order: [], events: [], totals: { input: 0, output: 0, cost: 0, costUnknown: false, calls: 0 }, elapsed: 0, result: null, gen: new Map() };
}

function agentOf(run, name) {
  let a = run.agents.get(name);
  if (!a) {
    a = { name, state: "waiting", attempt: 0, profile: null, model: null, system: null, prompt: null, streamed: "", outcome: null, calls: 0 };
    run.agents.set(name, a);
    run.order.push(name);
  }
  return a;
}

function genOf(run, name) {
  let g = run.gen.get(name);
  if (!g) {
    g = { progress: null, points: [], items: [], fresh: 0 };
    run.gen.set(name, g);
  }
  return g;
}

// Folds one event into the run, as RunState::apply does on the server.
function apply(run, ev) {
  run.events.push(ev);
  if (run.events.length > 400) run.events.splice(0, run.events.length - 400);
  if (ev.elapsed_ms > run.elapsed) run.elapsed = ev.elapsed_ms;
  if (ev.path && ev.path.length) return;
  switch (ev.type) {
    case "run_started":
      run.status = "running";
      run.result = null;
      for (const n of ev.names) agentOf(run, n);
      for (const a of run.agents.values()) {
        if (!ev.resumed || !a.outcome || a.outcome.status !== "succeeded") { a.state = "waiting"; a.outcome = null; }
      }
      break;
    case "agent_queued": agentOf(run, ev.agent).state = "queued"; break;
    case "agent_started": {
      const a = agentOf(run, ev.agent);
      a.state = "running"; a.attempt = ev.attempt; a.profile = ev.profile; a.model = ev.model; a.streamed = "";
      break;
    }
    case "agent_prompt": { const a = agentOf(run, ev.agent); a.system = ev.system || null; a.prompt = ev.prompt; break; }
    case "agent_delta": { const a = agentOf(run, ev.agent); if (a.attempt !== ev.attempt) { a.attempt = ev.attempt; a.streamed = ""; } a.streamed += ev.text; break; }
    case "agent_retrying": case "agent_fallback": agentOf(run, ev.agent).streamed = ""; break;
    case "call_finished":
      agentOf(run, ev.agent).calls += 1;
      if (ev.source === "provider" || ev.source === "resume") {
        run.totals.calls += 1;
        if (ev.usage) { run.totals.input += ev.usage.input_tokens || 0; run.totals.output += ev.usage.output_tokens || 0; }
        if (ev.cost_usd === null || ev.cost_usd === undefined) run.totals.costUnknown = true; else run.totals.cost += ev.cost_usd;
      }
      break;
    case "node_progress": {
      const g = genOf(run, ev.agent);
      g.progress = ev;
      if (ev.call !== undefined && ev.call !== null) g.points.push({ call: ev.call, n: ev.new || 0 });
      break;
    }
    case "item_accepted": {
      const g = genOf(run, ev.agent);
      g.items.push(ev.text);
      g.fresh += 1;
      break;
    }
    case "agent_finished": {
      const a = agentOf(run, ev.agent);
      a.outcome = ev;
      a.state = ev.status;
      if (a.profile === null && ev.profile) { a.profile = ev.profile; a.model = ev.model; }
      break;
    }
    case "run_finished":
      run.result = ev.result;
      run.status = ev.result.status;
      for (const o of ev.result.agents) {
        const a = agentOf(run, o.name);
        a.state = o.status;
        if (!a.outcome) a.outcome = o;
      }
      break;
  }
}

function runView(id) {
  const run = newRun();
  let graph = null, doc = null;
  let selected = location.hash.startsWith("#agent=") ? decodeURIComponent(location.hash.slice(7)) : null;
  const kinds = new Map();
  let scheduled = false;
  let stopFollow = null;
  let left = false;

  // The page is built once; renders update it in place, so buttons and nodes stay the
  // same elements (a click is never lost to a re-render) and a big run stays cheap.
  const title = el("span", { id: "run-title" });
  const status = el("span", { id: "run-status" });
  const facts = {
    agents: el("b"), elapsed: el("b"), tokens: el("b", { id: "run-tokens" }), cost: el("b"), calls: el("b"),
  };
  const stopButton = el("button", { id: "stop-button", hidden: true, onclick: () => action("stop"), title: "generate nodes finish with what they found", text: "Stop generating" });
  const cancelButton = el("button", { class: "danger", id: "cancel-button", hidden: true, onclick: () => action("cancel"), text: "Cancel" });
  const resumeButton = el("button", { class: "primary", id: "resume-button", hidden: true, onclick: () => action("resume"), text: "Resume" });
  const inputBox = el("details", { hidden: true }, el("summary", { class: "muted", text: "input" }), el("pre", { class: "text", id: "run-input-text" }));
  const head = el("section", { class: "panel" },
    el("div", { class: "run-head" },
      el("div", {},
        el("h1", {}, title, " ", status),
        el("div", { class: "mono muted", text: id }),
        el("div", { class: "facts" },
          el("span", {}, "agents ", facts.agents), el("span", {}, "elapsed ", facts.elapsed),
          el("span", {}, "tokens ", facts.tokens), el("span", {}, "cost ", facts.cost), el("span", {}, "calls ", facts.calls))),
      el("div", { class: "actions" }, stopButton, cancelButton, resumeButton)),
    inputBox);
  const dagBox = el("section", { class: "panel" }, el("h2", { text: "Agents" }));
  const dagWrap = el("div", { class: "dag-wrap", id: "dag" });
  const legend = el("div", { class: "legend" }, STATES.map((s) => el("span", { class: s, text: s })));
  dagBox.append(dagWrap, legend);
  const panel = el("section", { class: "panel agent-panel", id: "agent-panel" }, el("p", { class: "muted", text: "Select an agent to see its prompt, output and numbers." }));
  const genBox = el("div", { id: "generate" });
  const consoleBox = el("section", { class: "panel" }, el("h2", { text: "Events" }));
  const consoleList = el("div", { class: "console", id: "console" });
  consoleBox.append(consoleList);
  main.append(head, el("div", { class: "grid2" }, el("div", {}, dagBox, genBox), el("div", {}, panel, consoleBox)));

  function schedule() {
    if (scheduled || left) return;
    scheduled = true;
    requestAnimationFrame(() => { scheduled = false; render(); });
  }

  let lastSeq = 0;
  function follow(after) {
    if (stopFollow) stopFollow();
    stopFollow = followEvents(doc.run_id, after, (ev) => {
      if (ev.seq > lastSeq && ev.type !== "lagged") lastSeq = ev.seq;
      apply(run, ev);
      schedule();
    }, async () => {
      try { doc = await api("/api/runs/" + encodeURIComponent(id)); } catch (_) { /* keep what we have */ }
      schedule();
    });
  }

  async function load() {
    try {
      doc = await api("/api/runs/" + encodeURIComponent(id));
      graph = doc.graph;
      for (const a of graph.agents) { kinds.set(a.name, a.kind); agentOf(run, a.name); }
      render();
      follow(0);
    } catch (e) {
      flash(head, e);
    }
  }

  async function action(path) {
    try {
      await api("/api/runs/" + encodeURIComponent(id) + "/" + path, { method: "POST", json: {} });
      if (path === "resume") {
        // The run continues under the same id: follow it again from its next event.
        run.status = "running";
        follow(lastSeq);
      }
      schedule();
    } catch (e) {
      flash(head, e);
    }
  }

  function renderHead() {
    title.textContent = doc ? doc.ensemble : "";
    status.dataset.status = run.status;
    status.replaceChildren(pill(run.status));
    const live = run.status === "running";
    const t = run.result ? run.result.totals : null;
    const tokens = t && t.usage ? (t.usage.input_tokens || 0) + (t.usage.output_tokens || 0) : run.totals.input + run.totals.output;
    const cost = t ? t.cost_usd : (run.totals.costUnknown ? null : run.totals.cost);
    facts.agents.textContent = String(run.agents.size);
    facts.elapsed.textContent = fmtMs(t ? t.wall_ms : run.elapsed);
    facts.tokens.textContent = fmtInt(tokens);
    facts.cost.textContent = fmtCost(cost);
    facts.calls.textContent = fmtInt(run.totals.calls);
    const hasGen = [...kinds.values()].includes("generate");
    stopButton.hidden = !(hasGen && live);
    cancelButton.hidden = !live;
    resumeButton.hidden = live || run.status === "succeeded" || doc === null;
    if (doc && doc.input) {
      inputBox.hidden = false;
      inputBox.querySelector("pre").textContent = doc.input;
    }
  }

  let dagNodes = null;
  function buildDag() {
    const agents = graph ? graph.agents : run.order.map((n) => ({ name: n, phase: 1, depends_on: [], kind: "llm" }));
    const phases = new Map();
    for (const a of agents) {
      if (!phases.has(a.phase)) phases.set(a.phase, []);
      phases.get(a.phase).push(a);
    }
    const colW = 190, nodeW = 160, nodeH = 42, gapY = 12, pad = 14;
    const pos = new Map();
    let maxRows = 0;
    const cols = [...phases.keys()].sort((x, y) => x - y);
    for (const p of cols) maxRows = Math.max(maxRows, phases.get(p).length);
    cols.forEach((p, ci) => {
      const list = phases.get(p);
      // Shorter columns are centred against the tallest (up to one screen down).
      const shift = Math.min(((maxRows - list.length) * (nodeH + gapY)) / 2, 300);
      list.forEach((a, ri) => pos.set(a.name, { x: pad + ci * colW, y: pad + shift + ri * (nodeH + gapY) }));
    });
    const width = pad * 2 + Math.max(1, cols.length) * colW - (colW - nodeW);
    const height = pad * 2 + Math.max(1, maxRows) * (nodeH + gapY) - gapY;
    const root = svg("svg", { class: "dag", width, height, viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": "agents by phase" });
    for (const a of agents) {
      const to = pos.get(a.name);
      for (const d of a.depends_on) {
        const from = pos.get(d);
        if (!from) continue;
        const x1 = from.x + nodeW, y1 = from.y + nodeH / 2, x2 = to.x, y2 = to.y + nodeH / 2;
        const mx = (x1 + x2) / 2;
        root.append(svg("path", { class: "edge", d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}` }));
      }
    }
    dagNodes = new Map();
    for (const a of agents) {
      const p = pos.get(a.name);
      const label = a.name.length > 20 ? a.name.slice(0, 19) + "…" : a.name;
      const sub = svg("text", { class: "sub", x: 15, y: 33 });
      const tip = svg("title");
      const choose = () => {
        selected = a.name;
        shownPanel = null;
        // The selection is part of the address, so a link can open an agent's panel.
        history.replaceState(null, "", "#agent=" + encodeURIComponent(a.name));
        schedule();
      };
      const g = svg("g", { class: "node", "data-agent": a.name, "data-kind": a.kind, transform: `translate(${p.x},${p.y})`, tabindex: "0", onclick: choose },
        tip,
        svg("rect", { class: "box", width: nodeW, height: nodeH, rx: 7 }),
        svg("rect", { class: "bar", width: 5, height: nodeH - 8, x: 4, y: 4, rx: 2 }),
        svg("text", { x: 15, y: 18, text: label }),
        sub);
      g.addEventListener("keydown", (ev) => { if (ev.key === "Enter") choose(); });
      root.append(g);
      dagNodes.set(a.name, { g, sub, tip, kind: a.kind, key: null });
    }
    dagWrap.replaceChildren(root);
  }

  function renderDag() {
    if (!dagNodes || dagNodes.size !== run.agents.size) buildDag();
    for (const [name, n] of dagNodes) {
      const st = run.agents.get(name);
      const state = st ? st.state : "waiting";
      const sub = (n.kind !== "llm" ? n.kind + " · " : "") + state + (st && st.attempt > 1 && state === "running" ? " (try " + st.attempt + ")" : "");
      const key = sub + (selected === name ? "*" : "");
      if (key === n.key) continue;
      n.key = key;
      n.g.dataset.state = state;
      n.g.classList.toggle("selected", selected === name);
      n.sub.textContent = sub;
      n.tip.textContent = name + ": " + state;
    }
  }

  let shownPanel = null;
  function renderPanel() {
    if (!selected) return;
    const a = run.agents.get(selected);
    if (!a) return;
    const o = a.outcome;
    const key = [selected, a.state, a.attempt, a.prompt !== null, a.streamed.length, !!o].join("|");
    if (key === shownPanel) return;
    shownPanel = key;
    const docAgent = doc && doc.agents ? doc.agents.find((x) => x.name === selected) : null;
    const prompt = a.prompt !== null ? a.prompt : docAgent ? docAgent.prompt : null;
    const system = a.system !== null ? a.system : docAgent ? docAgent.system_prompt : null;
    const usage = o && o.usage ? fmtInt(o.usage.input_tokens) + " in, " + fmtInt(o.usage.output_tokens) + " out" : o ? "unknown" : "–";
    const kids = [
      el("h2", {}, selected + " ", pill(a.state)),
      el("dl", {},
        el("dt", { text: "kind" }), el("dd", { text: kinds.get(selected) || "llm" }),
        el("dt", { text: "profile" }), el("dd", { text: a.profile ? a.profile + (a.model ? " (" + a.model + ")" : "") : "–" }),
        el("dt", { text: "attempts" }), el("dd", { text: o ? String(o.attempts) : String(a.attempt || 0) }),
        el("dt", { text: "tokens" }), el("dd", { text: usage }),
        el("dt", { text: "cost" }), el("dd", { text: o ? fmtCost(o.cost_usd) : "–" }),
        el("dt", { text: "latency" }), el("dd", { text: o ? fmtMs(o.latency_ms) : "–" }),
        o && o.error ? el("dt", { text: "error" }) : null,
        o && o.error ? el("dd", { class: "error", text: o.error + (o.error_kind ? " (" + o.error_kind + ")" : "") }) : null),
    ];
    if (system) kids.push(el("h3", { text: "System prompt" }), el("pre", { class: "text", id: "agent-system", text: system }));
    if (prompt !== null && prompt !== undefined) kids.push(el("h3", { text: "Prompt as sent" }), el("pre", { class: "text", id: "agent-prompt", text: prompt }));
    const output = o ? o.output : a.streamed;
    if (output) kids.push(el("h3", { text: o ? "Output" : "Output so far" }), el("pre", { class: "text", id: "agent-output", text: output }));
    panel.replaceChildren(...kids);
  }

  const genViews = new Map();
  function genView(name) {
    let v = genViews.get(name);
    if (v) return v;
    const card = (k, cid) => {
      const value = el("div", { class: "v", text: "0" });
      return { box: el("div", { class: "card", id: cid }, value, el("div", { class: "k", text: k })), value };
    };
    const uam = card("unique per minute (UAM)", "card-uam");
    const cpm = card("cost per minute", "card-cpm");
    const unique = card("unique items", "card-unique");
    const ratio = card("uniqueness", "card-ratio");
    const stop = el("button", { class: "primary", "data-stop": name, hidden: true, onclick: () => action("stop"), text: "Stop" });
    const chartBox = el("div");
    const tilesBox = el("div", { class: "tiles", id: "tiles" });
    const box = el("section", { class: "panel generate", "data-agent": name },
      el("div", { class: "gen-head" }, el("h2", { text: name + ": unique items" }), stop),
      el("div", { class: "cards" }, uam.box, cpm.box, unique.box, ratio.box),
      el("h3", { text: "New unique items per call" }), chartBox,
      el("h3", { text: "Items, newest first" }), tilesBox);
    genBox.append(box);
    v = { uam, cpm, unique, ratio, stop, chartBox, tilesBox, tiles: 0, points: -1 };
    genViews.set(name, v);
    return v;
  }

  function renderGenerate() {
    const live = run.status === "running";
    for (const [name, kind] of kinds) {
      if (kind !== "generate") continue;
      const v = genView(name);
      const g = genOf(run, name);
      const p = g.progress;
      const a = run.agents.get(name);
      const metrics = a && a.outcome && a.outcome.metrics;
      const unique = metrics ? metrics.unique : p ? p.unique : 0;
      const cand = metrics ? metrics.candidates : p ? p.candidates : 0;
      const uam = metrics ? metrics.uam : p ? p.uam : 0;
      const cpm = metrics ? metrics.cost_per_minute : p ? p.cost_per_minute : null;
      v.uam.value.textContent = uam ? uam.toFixed(1) : "0";
      v.cpm.value.textContent = cpm === null || cpm === undefined ? "unknown" : fmtCost(cpm);
      v.unique.value.textContent = fmtInt(unique);
      v.ratio.value.textContent = cand ? ((unique / cand) * 100).toFixed(1) + "%" : "–";
      v.stop.hidden = !(live && a && a.state === "running");
      if (g.points.length !== v.points) {
        v.points = g.points.length;
        v.chartBox.replaceChildren(chart(g.points));
      }
      // New tiles go in front; at most 400 are kept on the page.
      const fresh = g.items.slice(v.tiles);
      v.tiles = g.items.length;
      for (const t of fresh) v.tilesBox.prepend(el("span", { class: "tile fresh", text: t }));
      while (v.tilesBox.childElementCount > 400) v.tilesBox.lastElementChild.remove();
    }
  }

  function renderConsole() {
    const fresh = run.events.filter((ev) => ev._shown !== true);
    for (const ev of fresh) {
      ev._shown = true;
      let what = ev.agent ? ev.agent : "";
      if (ev.type === "call_finished") what += " " + ev.profile + " " + ev.status + " " + fmtMs(ev.latency_ms) + (ev.error ? " " + ev.error : "");
      else if (ev.type === "agent_finished") what += " " + ev.status + (ev.error ? ": " + ev.error : "");
      else if (ev.type === "item_accepted") what += " " + ev.text;
      else if (ev.type === "node_progress") what += " unique " + ev.unique + ", UAM " + (ev.uam || 0).toFixed(1);
      else if (ev.type === "agent_retrying") what += " attempt " + ev.attempt + ": " + ev.error;
      else if (ev.type === "run_finished") what = ev.result.status;
      else if (ev.type === "lagged") what = "missed " + ev.missed;
      consoleList.prepend(el("div", { title: JSON.stringify(ev).slice(0, 2000) }, el("span", { class: "seq", text: "#" + ev.seq }), el("span", { class: "t", text: ev.type }), " ", (ev.path && ev.path.length ? "[" + ev.path.join("/") + "] " : "") + what));
    }
    while (consoleList.childElementCount > 300) consoleList.lastElementChild.remove();
  }

  function render() {
    renderHead();
    renderDag();
    renderPanel();
    renderGenerate();
    renderConsole();
  }

  load();
  return () => { left = true; if (stopFollow) stopFollow(); };
}

function chart(points) {
  const w = 600, h = 170, padL = 30, padB = 18, padT = 8;
  const root = svg("svg", { class: "chart", id: "chart", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", role: "img", "aria-label": "new unique items per call" });
  const max = Math.max(1, ...points.map((p) => p.n));
  const shown = points.slice(-300);
  const bw = (w - padL) / Math.max(1, shown.length);
  root.append(svg("line", { class: "axis", x1: padL, y1: h - padB, x2: w, y2: h - padB }));
  root.append(svg("text", { x: 2, y: padT + 8, text: String(max) }), svg("text", { x: 2, y: h - padB, text: "0" }));
  shown.forEach((p, i) => {
    const bh = ((h - padB - padT) * p.n) / max;
    root.append(svg("rect", { class: "bar", x: padL + i * bw + bw * 0.1, y: h - padB - bh, width: Math.max(0.5, bw * 0.8), height: bh, "data-call": p.call, "data-new": p.n }, svg("title", { text: "call " + p.call + ": " + p.n + " new" })));
  });
  if (shown.length) root.append(svg("text", { x: padL, y: h - 4, text: "call " + shown[0].call }), svg("text", { x: w - 60, y: h - 4, text: "call " + shown[shown.length - 1].call }));
  return root;
}

// ---------------------------------------------------------------------------------------
// Explore: a generate run from a form

function exploreView() {
  const box = el("section", { class: "panel" });
  main.append(box);
  const topic = el("input", { name: "topic", id: "explore-topic", required: true, placeholder: "kitchen tools" });
  const producers = el("input", { name: "producers", type: "number", min: 1, max: 64, value: 4 });
  const batch = el("input", { name: "batch_size", type: "number", min: 1, max: 200, value: 10 });
  const iterations = el("input", { name: "iterations", type: "number", min: 1, value: 20 });
  const unique = el("input", { name: "unique", type: "number", min: 1, placeholder: "none" });
  const seconds = el("input", { name: "seconds", type: "number", min: 1, placeholder: "none" });
  const optimizer = el("select", { name: "optimizer" }, ["", "maximize_uam", "minimize_cost", "maximize_efficiency", "weighted"].map((o) => el("option", { value: o, text: o || "none (round robin)" })));
  const profiles = el("fieldset", { id: "explore-profiles" }, el("legend", { text: "Profiles" }));
  const button = el("button", { type: "submit", class: "primary", id: "explore-button", text: "Start exploring" });
  const form = el("form", { id: "explore-form" },
    el("h2", { text: "Explore a topic" }),
    el("p", { class: "muted", text: "Producers ask for new items of the topic until a stop condition is reached; duplicates are dropped as they arrive." }),
    el("div", { class: "form-row" }, el("label", { class: "wide" }, "Topic", topic)),
    profiles,
    el("div", { class: "form-row" },
      el("label", {}, "Producers", producers), el("label", {}, "Items per call", batch), el("label", {}, "Calls per producer", iterations),
      el("label", {}, "Stop at unique", unique), el("label", {}, "Stop after seconds", seconds), el("label", {}, "Optimizer", optimizer)),
    el("div", { class: "actions" }, button));
  box.append(form);
  api("/api/profiles").then((doc) => {
    for (const p of doc.profiles) {
      const cb = el("input", { type: "checkbox", name: "profile", value: p.name, checked: p.name === "mock" });
      profiles.append(el("label", { title: p.description || p.provider + " " + p.model }, cb, p.name));
    }
  }).catch((e) => flash(box, e));
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    button.disabled = true;
    const stop = { iterations: Number(iterations.value) };
    if (unique.value) stop.unique = Number(unique.value);
    if (seconds.value) stop.seconds = Number(seconds.value);
    const body = {
      topic: topic.value,
      producers: Number(producers.value),
      batch_size: Number(batch.value),
      profiles: [...profiles.querySelectorAll("input:checked")].map((c) => c.value),
      stop,
    };
    if (optimizer.value) body.optimizer = optimizer.value;
    try {
      const r = await api("/api/explore", { method: "POST", json: body });
      navigate("/runs/" + r.id);
    } catch (e) {
      flash(box, e);
      button.disabled = false;
    }
  });
  return null;
}

// ---------------------------------------------------------------------------------------
// Cost: spend and tokens per profile per day, from the store

function costView() {
  const box = el("section", { class: "panel" });
  main.append(box);
  const days = el("select", { id: "cost-days" }, [7, 30, 90, 365].map((d) => el("option", { value: d, text: "last " + d + " days", selected: d === 30 })));
  const body = el("div", { id: "cost-body" });
  box.append(el("div", { class: "gen-head" }, el("h2", { text: "Spend per profile per day" }), days), body);
  async function load() {
    try {
      const doc = await api("/api/cost?days=" + days.value);
      renderCost(body, doc.rows);
    } catch (e) {
      flash(box, e);
    }
  }
  days.addEventListener("change", load);
  load();
  return null;
}

function renderCost(body, rows) {
  if (!rows.length) { body.replaceChildren(el("p", { class: "muted", text: "No provider calls recorded in this period." })); return; }
  const byDay = new Map();
  for (const r of rows) {
    const d = byDay.get(r.day) || { cost: 0, unknown: false, tokens: 0 };
    if (r.cost_usd === null) d.unknown = true; else d.cost += r.cost_usd;
    d.tokens += r.input_tokens + r.output_tokens;
    byDay.set(r.day, d);
  }
  const daysList = [...byDay.keys()].sort();
  const w = 700, h = 200, padB = 20, padT = 10, padL = 6;
  const max = Math.max(1e-9, ...daysList.map((d) => byDay.get(d).cost));
  const bw = (w - padL) / Math.max(1, daysList.length);
  const chartSvg = svg("svg", { class: "costbars", id: "cost-chart", viewBox: `0 0 ${w} ${h}`, preserveAspectRatio: "none", role: "img", "aria-label": "spend per day" });
  daysList.forEach((d, i) => {
    const v = byDay.get(d);
    const bh = ((h - padB - padT) * v.cost) / max;
    chartSvg.append(svg("rect", { class: "bar", x: padL + i * bw + bw * 0.15, y: h - padB - bh, width: Math.max(1, bw * 0.7), height: bh }, svg("title", { text: d + ": " + fmtCost(v.unknown ? null : v.cost) + ", " + fmtInt(v.tokens) + " tokens" })));
    if (daysList.length <= 14 || i % Math.ceil(daysList.length / 14) === 0) chartSvg.append(svg("text", { x: padL + i * bw + 2, y: h - 5, text: d.slice(5) }));
  });
  const table = el("table", { id: "cost-table" },
    el("thead", {}, el("tr", {}, el("th", { text: "Day" }), el("th", { text: "Profile" }), el("th", { class: "num", text: "Calls" }), el("th", { class: "num", text: "Input tokens" }), el("th", { class: "num", text: "Output tokens" }), el("th", { class: "num", text: "Cost" }))),
    el("tbody", {}, rows.map((r) => el("tr", {}, el("td", { text: r.day }), el("td", { text: r.profile }), el("td", { class: "num", text: fmtInt(r.calls) }), el("td", { class: "num", text: fmtInt(r.input_tokens) }), el("td", { class: "num", text: fmtInt(r.output_tokens) }), el("td", { class: "num", text: fmtCost(r.cost_usd) })))));
  body.replaceChildren(chartSvg, el("div", { class: "scroll-x" }, table));
}

route();
