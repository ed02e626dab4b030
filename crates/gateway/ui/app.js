// triage dashboard: a page per hash route (#/overview, #/routing, #/requests[/id], #/models,
// #/keys), each drawn from one JSON endpoint under /v1/dashboard/. No framework, no build step:
// the server compiles this file in. Charts are SVG drawn here.
"use strict";

const KEY_STORE = "triage-dashboard-key";
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#2f6fde", "#1f9d55", "#c98a14", "#d64545", "#7c4dcc", "#138a94", "#b5487a",
  "#5b6b8c", "#8a9a1c", "#e0742a"];

const state = { session: null, colors: new Map() };

// ---------- small helpers ----------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function colorOf(name) {
  if (!state.colors.has(name)) {
    state.colors.set(name, name === "(failed)" ? "#9aa4b8" : PALETTE[state.colors.size % PALETTE.length]);
  }
  return state.colors.get(name);
}

const fmt = {
  int: (n) => (n === null || n === undefined ? "–" : Math.round(n).toLocaleString("en-US")),
  usd: (n) => {
    if (n === null || n === undefined) return "–";
    const abs = Math.abs(n);
    const digits = abs === 0 ? 2 : abs < 0.01 ? 6 : abs < 1 ? 4 : 2;
    return (n < 0 ? "-$" : "$") + abs.toFixed(digits);
  },
  pct: (n) => (n === null || n === undefined ? "–" : (100 * n).toFixed(1) + "%"),
  ms: (n) => (n === null || n === undefined ? "–" : n < 10 ? n.toFixed(2) + " ms" : Math.round(n) + " ms"),
  num: (n, d = 2) => (n === null || n === undefined ? "–" : Number(n).toFixed(d)),
  // Axis ticks: short, three significant digits at most.
  axisUsd: (n) => "$" + +n.toPrecision(3),
  time: (ms) => new Date(ms).toISOString().replace("T", " ").slice(0, 19),
  perMtok: (perToken) => (perToken === undefined || perToken === null ? "–" : "$" + +(parseFloat(perToken) * 1e6).toPrecision(6)),
};

function key() { return sessionStorage.getItem(KEY_STORE) || ""; }

/** A JSON endpoint with the signed-in key; throws the OpenAI-shaped error's message. */
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (key()) headers.Authorization = "Bearer " + key();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  let body = null;
  try { body = await response.json(); } catch (_) { /* an empty or non-JSON body */ }
  if (!response.ok) {
    const message = body && body.error ? body.error.message : response.status + " " + response.statusText;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function windowChoice() {
  const [since, bucket] = document.getElementById("window").value.split("|");
  return { since, bucket };
}

function kpi(id, label, value, sub) {
  return el("div", { class: "kpi", "data-kpi": id },
    el("div", { class: "label", text: label }),
    el("div", { class: "value", "data-value": "", text: value }),
    sub ? el("div", { class: "sub", text: sub }) : null);
}

function table(columns, rows, attrs = {}) {
  if (!rows.length) return el("p", { class: "empty", text: "Nothing logged in this window." });
  return el("table", attrs,
    el("thead", {}, el("tr", {}, columns.map((c) => el("th", { class: c.num ? "num" : null, text: c.title })))),
    el("tbody", {}, rows.map((row) => el("tr", row._attrs || {},
      columns.map((c) => {
        const value = c.value(row);
        return el("td", { class: c.num ? "num" : null, "data-col": c.id || null }, value instanceof Node ? value : String(value));
      })))));
}

function legend(names) {
  return el("div", { class: "legend" }, names.map((n) => el("span", {}, el("i", { style: null, "data-color": colorOf(n) }), n)));
}

// Legend swatches take their colour through the CSSOM (the page's CSP forbids inline styles).
function paintSwatches(root) {
  for (const swatch of root.querySelectorAll("[data-color]")) swatch.style.background = swatch.dataset.color;
  for (const bar of root.querySelectorAll("[data-width]")) bar.style.width = bar.dataset.width;
}

// ---------- charts ----------

const H = 240, PAD = { l: 60, r: 16, t: 12, b: 34 };
// Charts in a half-width card are 640 units wide, full-width ones 1280, so text stays one size.
let W = 640;
const TICKS = 4;

/** The top of the y axis: four ticks of a round step (1, 2 or 5 × 10^k; whole for counts). */
function niceMax(value, whole) {
  const raw = value > 0 ? value / TICKS : 0.25;
  const power = Math.pow(10, Math.floor(Math.log10(raw)));
  let step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  if (whole) step = Math.max(1, Math.ceil(step));
  return step * TICKS;
}

function axes(chart, yMax, yFormat, xLabels) {
  const plotH = H - PAD.t - PAD.b;
  for (let i = 0; i <= TICKS; i++) {
    const y = PAD.t + plotH - (plotH * i) / TICKS;
    chart.append(svg("line", { class: "grid-line", x1: PAD.l, x2: W - PAD.r, y1: y, y2: y }));
    chart.append(svg("text", { x: PAD.l - 6, y: y + 4, "text-anchor": "end" }, yFormat((yMax * i) / TICKS)));
  }
  chart.append(svg("line", { class: "axis", x1: PAD.l, x2: W - PAD.r, y1: H - PAD.b, y2: H - PAD.b }));
  const step = Math.max(1, Math.ceil(xLabels.length / (W / 80)));
  xLabels.forEach((label, i) => {
    if (i % step) return;
    const x = PAD.l + ((W - PAD.l - PAD.r) * (i + 0.5)) / xLabels.length;
    chart.append(svg("text", { x, y: H - PAD.b + 16, "text-anchor": "middle" }, label));
  });
}

/** Stacked bars of counts: `series` [{name, values}] over `labels`; `wide` for a full-width card. */
function barChart(id, labels, series, wide = false) {
  W = wide ? 1280 : 640;
  const yFormat = fmt.int;
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const yMax = niceMax(Math.max(0, ...totals), true);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "data-chart": id });
  axes(chart, yMax, yFormat, labels);
  const plotW = W - PAD.l - PAD.r, plotH = H - PAD.t - PAD.b;
  const slot = plotW / Math.max(1, labels.length);
  labels.forEach((label, i) => {
    let base = 0;
    for (const s of series) {
      const v = s.values[i] || 0;
      if (!v) continue;
      const h = (plotH * v) / yMax;
      const y = PAD.t + plotH - (plotH * base) / yMax - h;
      chart.append(svg("rect", {
        x: PAD.l + i * slot + slot * 0.15, y, width: Math.max(1, slot * 0.7), height: h,
        fill: s.color || colorOf(s.name), "data-series": s.name, "data-value": v,
      }, svg("title", {}, `${label} · ${s.name}: ${yFormat(v)}`)));
      base += v;
    }
  });
  return chart;
}

/** Lines: `series` [{name, values (null = gap), color}] over `labels`. */
function lineChart(id, labels, series, yFormat, axisFormat = yFormat, fixedMax = null) {
  W = 640;
  const all = series.flatMap((s) => s.values.filter((v) => v !== null && v !== undefined));
  const yMax = fixedMax ?? niceMax(Math.max(0, ...all), false);
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "data-chart": id });
  axes(chart, yMax, axisFormat, labels);
  const plotW = W - PAD.l - PAD.r, plotH = H - PAD.t - PAD.b;
  const x = (i) => PAD.l + (plotW * (i + 0.5)) / labels.length;
  const y = (v) => PAD.t + plotH - (plotH * v) / yMax;
  for (const s of series) {
    let path = "";
    s.values.forEach((v, i) => {
      if (v === null || v === undefined) return;
      path += (path && s.values[i - 1] !== null && s.values[i - 1] !== undefined ? "L" : "M") + x(i) + " " + y(v);
      chart.append(svg("circle", { cx: x(i), cy: y(v), r: 2.5, fill: s.color, "data-series": s.name, "data-value": v },
        svg("title", {}, `${labels[i]} · ${s.name}: ${yFormat(v)}`)));
    });
    chart.prepend(svg("path", { d: path, fill: "none", stroke: s.color, "stroke-width": 2 }));
  }
  return chart;
}

/** The cost-quality curve: x = cost against the strongest candidate, y = quality kept. */
function curveChart(points, selected) {
  W = 640;
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "data-chart": "curve" });
  const right = 40;
  const plotW = W - PAD.l - right, plotH = H - PAD.t - PAD.b;
  // The y axis starts a little below the lowest point, in tenths, so small losses show.
  const lowest = Math.min(...points.map((p) => p.quality_kept));
  const yMin = Math.max(0, Math.min(0.9, Math.floor((lowest - 0.02) * 10) / 10));
  const x = (v) => PAD.l + plotW * Math.min(1, v);
  const y = (v) => PAD.t + plotH - (plotH * (v - yMin)) / (1 - yMin || 1);
  for (let i = 0; i <= 4; i++) {
    const q = yMin + ((1 - yMin) * i) / 4;
    chart.append(svg("line", { class: "grid-line", x1: PAD.l, x2: W - right, y1: y(q), y2: y(q) }));
    chart.append(svg("text", { x: PAD.l - 6, y: y(q) + 4, "text-anchor": "end" }, fmt.pct(q)));
    chart.append(svg("text", { x: x(i / 4), y: H - PAD.b + 16, "text-anchor": "middle" }, fmt.pct(i / 4)));
  }
  chart.append(svg("text", { x: W - right, y: H - 2, "text-anchor": "end" }, "cost, as a share of the strongest model's"));
  chart.append(svg("path", {
    d: points.map((p, i) => (i ? "L" : "M") + x(p.cost_share) + " " + y(p.quality_kept)).join(""),
    fill: "none", stroke: "#2f6fde", "stroke-width": 2,
  }));
  for (const p of points) {
    const isSelected = selected && Math.abs(p.target - selected.target) < 1e-9;
    chart.append(svg("circle", {
      cx: x(p.cost_share), cy: y(p.quality_kept), r: isSelected ? 6 : p.profile ? 4.5 : 3,
      fill: isSelected ? "#d64545" : p.profile ? "#c98a14" : "#2f6fde", "data-target": p.target,
    }, svg("title", {}, `target ${p.target}: quality kept ${fmt.pct(p.quality_kept)}, cost ${fmt.pct(p.cost_share)}`)));
  }
  // Profile labels, one line per point (two profiles may land on the same point).
  const labelled = new Map();
  for (const p of points.filter((p) => p.profile)) {
    const at = `${x(p.cost_share).toFixed(1)},${y(p.quality_kept).toFixed(1)}`;
    labelled.set(at, [...(labelled.get(at) || []), `${p.profile} (${p.target})`]);
  }
  // Alternately above and below their points, so that neighbouring labels do not overlap.
  [...labelled].forEach(([at, names], i) => {
    const [cx, cy] = at.split(",").map(Number);
    const anchor = cx > W / 2 ? "end" : "start";
    const y = i % 2 ? cy + 18 : Math.max(PAD.t + 10, cy - 8);
    chart.append(svg("text", { x: cx + (anchor === "end" ? -8 : 8), y, "text-anchor": anchor }, names.join(", ")));
  });
  return chart;
}

function bucketLabel(ms, bucketMs) {
  const iso = new Date(ms).toISOString();
  return bucketMs >= 86400000 ? iso.slice(5, 10) : iso.slice(11, 16);
}

// ---------- pages ----------

async function overviewPage(root) {
  const { since, bucket } = windowChoice();
  const o = await api(`/v1/dashboard/overview?since=${since}&bucket=${bucket}`);
  const s = o.savings;
  root.append(el("h1", { text: "Overview" }),
    el("div", { class: "kpis" },
      kpi("requests", "Requests", fmt.int(o.requests)),
      kpi("errors", "Errors", fmt.int(o.errors), o.requests ? fmt.pct(o.errors / o.requests) + " of requests" : null),
      kpi("spend", "Spend", fmt.usd(o.cost_usd)),
      kpi("saved", "Saved by auto", fmt.usd(s.saved_usd), `${s.saved_pct.toFixed(1)}% of ${fmt.usd(s.baseline_cost_usd)} on ${s.baseline}`),
      kpi("quality", "Quality kept", fmt.pct(s.quality_kept), "predicted, against the baseline"),
      kpi("latency", "Latency p50 / p95", `${fmt.ms(o.latency.p50_ms)} / ${fmt.ms(o.latency.p95_ms)}`),
      kpi("ttft", "TTFT p50 / p95", `${fmt.ms(o.latency.ttft_p50_ms)} / ${fmt.ms(o.latency.ttft_p95_ms)}`)));
  const labels = o.buckets.map((b) => bucketLabel(b.start_ms, o.bucket_ms));
  const per = (f) => o.buckets.map(f);
  root.append(el("div", { class: "grid two" },
    el("div", { class: "card" }, el("h2", { text: "Requests and errors" }),
      barChart("requests", labels, [
        { name: "answered", values: per((b) => b.requests - b.errors), color: "#2f6fde" },
        { name: "errors", values: per((b) => b.errors), color: "#d64545" },
      ]), legendOf([["answered", "#2f6fde"], ["errors", "#d64545"]])),
    el("div", { class: "card" }, el("h2", { text: "Spend against the strongest candidate" }),
      lineChart("spend", labels, [
        { name: "spend", values: per((b) => b.cost_usd), color: "#2f6fde" },
        { name: "baseline (auto requests on the strongest candidate)", values: per((b) => b.baseline_cost_usd), color: "#9aa4b8" },
        { name: "saved", values: per((b) => b.saved_usd), color: "#1f9d55" },
      ], fmt.usd, fmt.axisUsd), legendOf([["spend", "#2f6fde"], ["baseline", "#9aa4b8"], ["saved", "#1f9d55"]])),
    el("div", { class: "card" }, el("h2", { text: "Latency" }),
      lineChart("latency", labels, [
        { name: "p50", values: per((b) => b.latency.p50_ms), color: "#2f6fde" },
        { name: "p95", values: per((b) => b.latency.p95_ms), color: "#c98a14" },
        { name: "TTFT p50", values: per((b) => b.latency.ttft_p50_ms), color: "#1f9d55" },
      ], fmt.ms), legendOf([["p50", "#2f6fde"], ["p95", "#c98a14"], ["TTFT p50", "#1f9d55"]])),
    el("div", { class: "card" }, el("h2", { text: "Quality kept by auto" }),
      lineChart("quality", labels, [
        { name: "quality kept", values: per((b) => b.quality_kept), color: "#7c4dcc" },
      ], fmt.pct, fmt.pct, Math.max(1, ...per((b) => b.quality_kept ?? 0))))));
  const sliceColumns = (nameTitle, name) => [
    { id: "name", title: nameTitle, value: name },
    { id: "requests", title: "Requests", num: true, value: (g) => fmt.int(g.requests) },
    { id: "errors", title: "Errors", num: true, value: (g) => fmt.int(g.errors) },
    { id: "cost", title: "Spend", num: true, value: (g) => fmt.usd(g.cost_usd) },
    { id: "p50", title: "p50", num: true, value: (g) => fmt.ms(g.latency.p50_ms) },
    { id: "p95", title: "p95", num: true, value: (g) => fmt.ms(g.latency.p95_ms) },
    { id: "ttft", title: "TTFT p50", num: true, value: (g) => fmt.ms(g.latency.ttft_p50_ms) },
  ];
  root.append(el("div", { class: "grid two" },
    el("div", { class: "card" }, el("h2", { text: "By model" }),
      table(sliceColumns("Model", (g) => g.name), o.by_model, { "data-table": "by-model" })),
    el("div", { class: "card" }, el("h2", { text: "By key" }),
      table(sliceColumns("Key", (g) => (g.key_name ? `${g.key_name} (${g.name})` : g.name)), o.by_key, { "data-table": "by-key" }))));
}

function legendOf(pairs) {
  return el("div", { class: "legend" }, pairs.map(([name, color]) => el("span", {}, el("i", { "data-color": color }), name)));
}

async function routingPage(root) {
  const { since } = windowChoice();
  const r = await api(`/v1/dashboard/routing?since=${since}`);
  const profiles = Object.entries(r.by_profile).map(([p, n]) => `${p} ${n}`).join(", ");
  root.append(el("h1", { text: "Routing" }),
    el("div", { class: "kpis" },
      kpi("auto-requests", "Adaptive requests", fmt.int(r.requests), profiles || "none yet"),
      kpi("target-balanced", "auto target", fmt.pct(r.targets.balanced), "of the best predicted quality"),
      kpi("target-cheap", "auto:cheap target", fmt.pct(r.targets.cheap), "of the best predicted quality")));
  if (!r.requests) {
    root.append(el("p", { class: "empty", text: "No adaptive (auto) requests in this window." }));
    return;
  }
  const models = [...new Set(r.difficulty.flatMap((b) => Object.keys(b.models)))].sort();
  const bandLabels = r.difficulty.map((b) => b.from.toFixed(2));
  root.append(el("div", { class: "card" },
    el("h2", { text: "Difficulty map: requests per difficulty band, by the model that served them" }),
    barChart("difficulty", bandLabels, models.map((m) => ({ name: m, values: r.difficulty.map((b) => b.models[m] || 0) })), true),
    legend(models),
    el("p", { class: "muted", text: "Difficulty is the classifier's b(x): left easy, right hard. Each band starts at the value shown." })));

  const skillModels = [...new Set(r.by_skill.flatMap((s) => Object.keys(s.models)))].sort();
  root.append(el("div", { class: "grid two" },
    el("div", { class: "card" }, el("h2", { text: "What auto chose, by top skill" }),
      barChart("skills", r.by_skill.map((s) => s.name), skillModels.map((m) => ({ name: m, values: r.by_skill.map((s) => s.models[m] || 0) }))),
      legend(skillModels),
      table([
        { id: "skill", title: "Top skill", value: (s) => s.name },
        { id: "requests", title: "Requests", num: true, value: (s) => fmt.int(s.requests) },
        { id: "models", title: "Served by", value: (s) => Object.entries(s.models).map(([m, n]) => `${m} ${n}`).join(", ") },
      ], r.by_skill, { "data-table": "by-skill" })),
    curveCard(r)));
}

function curveCard(r) {
  const card = el("div", { class: "card", "data-card": "curve" }, el("h2", { text: "Cost-quality curve of the target" }));
  if (!r.curve.length) {
    card.append(el("p", { class: "empty", text: "No logged candidates to draw the curve from." }));
    return card;
  }
  const chartHolder = el("div");
  const readout = el("div", { class: "detail", "data-readout": "" });
  const current = r.curve.findIndex((p) => p.profile === "auto");
  const slider = el("input", { type: "range", min: 0, max: r.curve.length - 1, step: 1, value: current < 0 ? r.curve.length - 1 : current, "aria-label": "quality target" });
  const show = () => {
    const p = r.curve[+slider.value];
    chartHolder.replaceChildren(curveChart(r.curve, p));
    readout.replaceChildren(
      el("dt", { text: "Target" }), el("dd", { "data-field": "target", text: `${fmt.pct(p.target)} of the best predicted quality${p.profile ? " (" + p.profile + " today)" : ""}` }),
      el("dt", { text: "Mean cost per request" }), el("dd", { "data-field": "mean-cost", text: fmt.usd(p.mean_cost_usd) }),
      el("dt", { text: "Cost against the strongest" }), el("dd", { "data-field": "cost-share", text: fmt.pct(p.cost_share) }),
      el("dt", { text: "Predicted quality kept" }), el("dd", { "data-field": "quality-kept", text: fmt.pct(p.quality_kept) }),
      el("dt", { text: "Models it would choose" }), el("dd", { "data-field": "models", text: Object.entries(p.models).map(([m, n]) => `${m} ${n}`).join(", ") }));
  };
  slider.addEventListener("input", show);
  show();
  card.append(chartHolder,
    el("div", { class: "slider" }, el("span", { text: "Move the target" }), slider),
    readout,
    el("p", { class: "muted", text: "Each point replays the logged requests' candidates through the policy at that target, as triage calibrate does for held-out data: no prompt is classified again." }));
  return card;
}

async function requestsPage(root, query) {
  const search = el("input", { type: "search", placeholder: "Search id, model, key or prompt text", value: query || "", "aria-label": "search requests" });
  const results = el("div");
  const run = async () => {
    const q = search.value.trim();
    const list = await api(`/v1/dashboard/requests?limit=100&q=${encodeURIComponent(q)}`);
    results.replaceChildren(table([
      { id: "time", title: "Time (UTC)", value: (r) => fmt.time(r.ts_ms) },
      { id: "id", title: "Request", value: (r) => el("a", { href: `#/requests/${encodeURIComponent(r.id)}`, class: "mono", text: r.id.slice(0, 16) + "…" }) },
      { id: "key", title: "Key", value: (r) => r.key_id },
      { id: "requested", title: "Asked for", value: (r) => r.requested },
      { id: "model", title: "Model", value: (r) => r.model || "–" },
      { id: "status", title: "Status", value: (r) => el("span", { class: r.status < 400 ? "status-ok" : "status-bad", text: r.status }) },
      { id: "cost", title: "Cost", num: true, value: (r) => fmt.usd(r.cost_usd) },
      { id: "latency", title: "Latency", num: true, value: (r) => fmt.ms(r.latency_ms) },
      { id: "difficulty", title: "Difficulty", num: true, value: (r) => fmt.num(r.difficulty) },
      { id: "skill", title: "Top skill", value: (r) => r.top_skill || "–" },
      { id: "feedback", title: "Feedback", num: true, value: (r) => fmt.num(r.feedback) },
    ], list.data, { "data-table": "requests" }));
  };
  search.addEventListener("keydown", (e) => { if (e.key === "Enter") run().catch(showError); });
  root.append(el("h1", { text: "Requests" }),
    el("div", { class: "toolbar" }, search, el("button", { type: "button", onclick: () => run().catch(showError), text: "Search" })),
    el("div", { class: "card" }, results));
  await run();
}

async function requestPage(root, id) {
  const r = await api(`/v1/dashboard/requests/${encodeURIComponent(id)}`);
  root.append(el("p", {}, el("a", { href: "#/requests", text: "← Requests" })),
    el("h1", { class: "mono", text: r.id }));
  const facts = [
    ["Time (UTC)", fmt.time(r.ts_ms)], ["Endpoint", `${r.endpoint}${r.stream ? " (streamed)" : ""}`],
    ["Key", r.key_id], ["Asked for", r.requested], ["Route", r.profile ? `${r.route} (${r.profile})` : r.route],
    ["Answered by", r.model || "–"], ["Status", String(r.status)],
    ["Fallbacks", r.fallbacks.length ? r.fallbacks.join(", ") : "none"],
    ["Tokens", `${fmt.int(r.prompt_tokens)} in (${fmt.int(r.cached_tokens)} cached), ${fmt.int(r.completion_tokens)} out`],
    ["Cost", fmt.usd(r.cost_usd)], ["Latency", fmt.ms(r.latency_ms)], ["Time to first token", fmt.ms(r.ttft_ms)],
    ["Signals", r.signals.length ? r.signals.join(", ") : "none"],
  ];
  root.append(el("div", { class: "card" }, el("dl", { class: "detail", "data-facts": "" },
    facts.map(([k, v]) => [el("dt", { text: k }), el("dd", { "data-field": k, text: v })]))));

  const grid = el("div", { class: "grid two" });
  if (r.classifier) {
    const skills = Object.entries(r.classifier.skills || {}).sort((a, b) => b[1] - a[1]);
    grid.append(el("div", { class: "card", "data-card": "classifier" }, el("h2", { text: "The classifier's view" }),
      el("dl", { class: "detail" },
        el("dt", { text: "Difficulty" }), el("dd", { "data-field": "difficulty", text: fmt.num(r.classifier.difficulty, 3) }),
        el("dt", { text: "Tool need" }), el("dd", { "data-field": "tool-need", text: fmt.num(r.classifier.tool_need, 3) })),
      el("table", {}, el("tbody", {}, skills.map(([name, w]) => el("tr", {},
        el("td", { text: name }),
        el("td", {}, el("span", { class: "bar", "data-width": Math.round(200 * w) + "px" }), fmt.num(w, 3))))))));
  }
  if (Array.isArray(r.candidates)) {
    // Eligible models first, best predicted first; the excluded after, with why.
    const rank = (c) => (c.excluded ? 1 : 0);
    const rows = r.candidates
      .map((c) => Object.assign({ _attrs: c.model === r.model ? { class: "chosen" } : {} }, c))
      .sort((a, b) => rank(a) - rank(b) || (b.quality ?? 0) - (a.quality ?? 0));
    grid.append(el("div", { class: "card", "data-card": "candidates" }, el("h2", { text: "Candidates the policy weighed" }),
      table([
        { id: "model", title: "Model", value: (c) => c.model + (c.model === r.model ? " ✓" : "") },
        { id: "quality", title: "Predicted quality", num: true, value: (c) => fmt.num(c.quality, 3) },
        { id: "cost", title: "Expected cost", num: true, value: (c) => fmt.usd(c.cost_usd) },
        { id: "excluded", title: "Excluded", value: (c) => c.excluded || "" },
      ], rows, { "data-table": "candidates" })));
  }
  if (grid.children.length) root.append(grid);

  const text = el("div", { class: "card", "data-card": "text" }, el("h2", { text: "Prompt and answer" }));
  if (r.prompt) {
    if (r.prompt.system) text.append(message("system", r.prompt.system));
    for (const m of r.prompt.messages || []) text.append(message(m.role, m.content));
    text.append(el("h2", { text: "Answer" }), el("div", { class: "answer", "data-field": "answer", text: r.answer ?? "(none)" }));
  } else {
    text.append(el("p", { class: "muted", text: "Texts are not stored ([log] store_text = false)." }));
  }
  root.append(text);

  const verdicts = el("div", { class: "card", "data-card": "feedback" }, el("h2", { text: "Feedback and grades" }),
    table([
      { id: "when", title: "When (UTC)", value: (f) => fmt.time(f.ts_ms) },
      { id: "who", title: "From", value: (f) => (f.judge ? "judge " + f.judge : f.result ? "preference" : "feedback") },
      { id: "score", title: "Score", num: true, value: (f) => (f.result ? f.result.replace("_", " ") : fmt.num(f.score)) },
      { id: "note", title: "Note", value: (f) => f.result ? `against ${f.opponent} (${f.opponent_model ?? "no model"})${f.comment ? ": " + f.comment : ""}`
        : f.thumbs ? `thumbs ${f.thumbs}${f.comment ? ": " + f.comment : ""}` : (f.comment || (f.rating !== undefined ? "rating " + f.rating : "")) },
    ], [...r.feedback, ...(r.preferences || []), ...r.labels], { "data-table": "verdicts" }));
  if (state.session.can_give_feedback) {
    const comment = el("input", { type: "text", placeholder: "Comment (optional)", "aria-label": "feedback comment" });
    const status = el("span", { class: "muted", role: "status" });
    const send = (thumbs) => api("/v1/feedback", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ id: r.id, thumbs }, comment.value ? { comment: comment.value } : {})),
    }).then(() => { status.textContent = "Stored."; return render(); }).catch((e) => { status.textContent = e.message; });
    verdicts.append(el("div", { class: "feedback-form" },
      el("button", { type: "button", "data-feedback": "up", onclick: () => send("up"), text: "✓ Good answer" }),
      el("button", { type: "button", class: "secondary", "data-feedback": "down", onclick: () => send("down"), text: "✗ Bad answer" }),
      comment, status));
    // A preference between this answer and another to the same prompt (an A/B test's pair).
    const prefer = (other, result) => api("/v1/feedback", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify(Object.assign({ id: r.id, opponent: other.id, result }, comment.value ? { comment: comment.value } : {})),
    }).then(() => { status.textContent = "Stored."; return render(); }).catch((e) => { status.textContent = e.message; });
    const choices = [["win", "This one is better"], ["loss", "That one is better"], ["tie", "Tie"], ["both_bad", "Both bad"]];
    if (r.same_prompt.length) {
      verdicts.append(el("h2", { text: "Compare with another answer to this prompt" }),
        table([
          { id: "other", title: "Request", value: (o) => el("a", { href: `#/requests/${encodeURIComponent(o.id)}`, class: "mono", text: o.id }) },
          { id: "model", title: "Model", value: (o) => o.model },
          { id: "when", title: "When (UTC)", value: (o) => fmt.time(o.ts_ms) },
          { id: "prefer", title: "", value: (o) => el("span", { class: "feedback-form" }, choices.map(([result, label]) =>
            el("button", { type: "button", class: result === "win" ? null : "secondary", "data-prefer": result, onclick: () => prefer(o, result), text: label }))) },
        ], r.same_prompt, { "data-table": "same-prompt" }));
    }
  }
  root.append(verdicts);
}

function message(role, content) {
  const text = typeof content === "string" ? content
    : Array.isArray(content) ? content.map((p) => p.text ?? `[${p.type}]`).join("\n") : JSON.stringify(content);
  return el("div", { class: "message" }, el("div", { class: "role", text: role }), text);
}

async function modelsPage(root) {
  const list = await api("/v1/dashboard/models");
  const models = list.data.filter((m) => m.triage);
  const profiles = list.data.filter((m) => !m.triage);
  root.append(el("h1", { text: "Models" }),
    el("div", { class: "kpis" },
      kpi("models", "Models", fmt.int(models.length)),
      kpi("with-key", "With a key", fmt.int(models.filter((m) => m.triage.key_present).length)),
      kpi("routable", "auto may choose", fmt.int(models.filter((m) => m.triage.in_routing_models && m.triage.abilities && m.triage.key_present).length)),
      kpi("open-circuits", "Open circuits", fmt.int(models.filter((m) => m.triage.circuit === "open").length))),
    el("div", { class: "card" }, table([
      { id: "id", title: "Model", value: (m) => m.id },
      { id: "input", title: "Input /Mtok", num: true, value: (m) => fmt.perMtok(m.pricing.prompt) },
      { id: "output", title: "Output /Mtok", num: true, value: (m) => fmt.perMtok(m.pricing.completion) },
      { id: "context", title: "Context", num: true, value: (m) => fmt.int(m.context_length) },
      { id: "abilities", title: "Abilities from", value: (m) => m.triage.ability_source || "none (auto skips it)" },
      { id: "key", title: "Key", value: (m) => el("span", { class: m.triage.key_present ? "status-ok" : "status-bad", text: m.triage.key_present ? "present" : `missing ${m.triage.api_key_env || ""}` }) },
      { id: "circuit", title: "Circuit", value: (m) => el("span", { class: m.triage.circuit === "closed" ? "status-ok" : "status-bad", text: m.triage.circuit }) },
      { id: "auto", title: "In auto", value: (m) => (m.triage.in_routing_models ? "yes" : "no") },
      { id: "prices", title: "Prices as of", value: (m) => m.price_date || "–" },
    ], models, { "data-table": "models" })),
    profiles.length ? el("div", { class: "card" }, el("h2", { text: "Profiles" }),
      table([{ title: "Profile", value: (p) => p.id }, { title: "Picks", value: (p) => p.description }], profiles)) : null);
}

async function keysPage(root) {
  const list = await api("/v1/dashboard/keys");
  root.append(el("h1", { text: "Keys" }));
  if (!list.data.length) {
    root.append(el("p", { class: "empty", text: "No virtual keys: create them with POST /admin/keys or `triage keys create`." }));
    return;
  }
  root.append(el("div", { class: "card" }, table([
    { id: "name", title: "Key", value: (k) => `${k.name} (${k.id})` },
    { id: "spent", title: "Spent", num: true, value: (k) => fmt.usd(k.spent_usd) },
    { id: "budget", title: "Budget", num: true, value: (k) => (k.budget_usd === null ? "none" : `${fmt.usd(k.budget_usd)} / ${k.budget_period}`) },
    { id: "use", title: "Used", value: (k) => (k.budget_usd ? el("span", {}, el("span", { class: "bar", "data-width": Math.round(Math.min(1, k.spent_usd / k.budget_usd) * 160) + "px" }), fmt.pct(k.spent_usd / k.budget_usd)) : "–") },
    { id: "limits", title: "Limits", value: (k) => [k.rpm ? `${k.rpm} rpm` : null, k.tpm ? `${k.tpm} tpm` : null].filter(Boolean).join(", ") || "none" },
    { id: "models", title: "Models", value: (k) => (k.models ? k.models.join(", ") : "all") },
    { id: "state", title: "State", value: (k) => (k.revoked_ms ? "revoked" : k.expires_ms && k.expires_ms < Date.now() ? "expired" : "active") },
  ], list.data, { "data-table": "keys" })));
}

// ---------- shell ----------

const PAGES = { overview: overviewPage, routing: routingPage, requests: requestsPage, models: modelsPage, keys: keysPage };

function showError(error) {
  const page = document.getElementById("page");
  if (error.status === 401) return signOut("That key may not read the dashboard: " + error.message);
  page.replaceChildren(el("div", { class: "card error", role: "alert", text: error.message }));
  document.body.dataset.error = error.message;
}

async function render() {
  const page = document.getElementById("page");
  const [name, ...rest] = (location.hash.replace(/^#\/?/, "") || "overview").split("/");
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === name);
  const root = el("div", { "data-page": name });
  delete document.body.dataset.ready;
  delete document.body.dataset.error;
  try {
    if (name === "requests" && rest.length) await requestPage(root, decodeURIComponent(rest.join("/")));
    else await (PAGES[name] || overviewPage)(root);
    paintSwatches(root);
    page.replaceChildren(root);
    document.body.dataset.ready = rest.length ? name + "/detail" : name;
  } catch (error) {
    showError(error);
  }
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  state.session = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("session").hidden = true;
  document.getElementById("page").replaceChildren();
  document.getElementById("sign-in").hidden = false;
  document.getElementById("sign-in-error").textContent = message || "";
  delete document.body.dataset.ready;
}

/** Asks the server who the key is; on success shows the dashboard. */
async function start() {
  try {
    state.session = await api("/v1/dashboard/session");
  } catch (error) {
    if (error.status === 401) return signOut(key() ? error.message : "");
    throw error;
  }
  document.getElementById("sign-in").hidden = true;
  document.getElementById("nav").hidden = false;
  document.getElementById("session").hidden = false;
  document.getElementById("role").textContent = state.session.role;
  await render();
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(KEY_STORE, document.getElementById("key").value.trim());
    start().catch(showError);
  });
  document.getElementById("sign-out").addEventListener("click", () => signOut());
  document.getElementById("window").addEventListener("change", () => render());
  window.addEventListener("hashchange", () => { if (state.session) render(); });
  start().catch(showError);
});
