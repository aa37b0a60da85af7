// slm-router finance dashboard. Vanilla JS, no dependencies: it must work offline.
// Money arrives as exact decimal strings (nine places) and is shown digit for digit: it never
// passes through a float except to size a bar.
"use strict";

(() => {
  const SVGNS = "http://www.w3.org/2000/svg";
  const KEY_STORE = "slm-router-admin-key";
  const TOP_N = 20;
  const CSV_GROUP_BY = "day,team,expert,domain";
  let loads = 0;

  const $ = (sel, root = document) => root.querySelector(sel);

  function h(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    return fill(node, attrs, children);
  }

  function s(tag, attrs = {}, ...children) {
    const node = document.createElementNS(SVGNS, tag);
    return fill(node, attrs, children);
  }

  function fill(node, attrs, children) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = String(v);
      else if (k === "class") node.setAttribute("class", v);
      else if (k === "testid") node.setAttribute("data-testid", v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  // ---- number formatting ----------------------------------------------------------------

  function groupDigits(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  function intText(n) {
    const str = String(n);
    return str.startsWith("-") ? "-" + groupDigits(str.slice(1)) : groupDigits(str);
  }

  // "5E-9" -> "0.000000005": a decimal string in exponent form, shifted digit by digit.
  function plainDecimal(str) {
    const m = /^(-?)(\d+)(?:\.(\d*))?[eE]([+-]?\d+)$/.exec(str);
    if (!m) return str;
    const [, sign, whole, frac = "", exp] = m;
    let digits = whole + frac;
    let point = whole.length + Number(exp);
    if (point <= 0) {
      digits = "0".repeat(1 - point) + digits;
      point = 1;
    }
    if (point >= digits.length) digits += "0".repeat(point - digits.length);
    const head = digits.slice(0, point).replace(/^0+(?=\d)/, "");
    const tail = digits.slice(point);
    return sign + head + (tail ? "." + tail : "");
  }

  // "1234.567890123" -> "$1,234.56" + fine "7890123": the same digits, the tail de-emphasised.
  function money(usd, testid) {
    const str = plainDecimal(String(usd));
    const neg = str.startsWith("-");
    const [whole, frac = ""] = (neg ? str.slice(1) : str).split(".");
    const head = `${neg ? "-" : ""}$${groupDigits(whole)}${frac ? "." + frac.slice(0, 2) : ""}`;
    const node = h("span", { class: "money", testid: testid, "data-usd": str }, head);
    if (frac.length > 2) node.append(h("span", { class: "fine", text: frac.slice(2) }));
    return node;
  }

  function moneyText(usd) {
    return money(usd).textContent;
  }

  function pctText(pct) {
    return pct === "" || pct === null || pct === undefined ? "—" : `${pct}%`;
  }

  // Axis ticks only (approximate by design); labels of figures use money().
  function axisText(v) {
    if (v === 0) return "$0";
    if (v >= 1) return "$" + v.toLocaleString("en-US", { maximumFractionDigits: 2 });
    return "$" + Number(v.toPrecision(2)).toString();
  }

  // ---- data -------------------------------------------------------------------------------

  function filters() {
    return {
      from: $("#f-from").value,
      to: $("#f-to").value,
      team: $("#f-team").value,
    };
  }

  function query(f, extra = {}) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries({ ...f, ...extra })) if (v) q.set(k, v);
    return q.toString();
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function api(path) {
    const headers = { accept: "application/json, text/csv" };
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers.authorization = `Bearer ${key}`;
    const resp = await fetch(path, { headers, cache: "no-store" });
    if (!resp.ok) {
      let message = `${resp.status} ${resp.statusText}`;
      try {
        message = (await resp.json()).error.message || message;
      } catch (_) { /* not an envelope */ }
      throw new ApiError(resp.status, message);
    }
    return resp;
  }

  async function load() {
    const main = $("#main");
    main.dataset.state = "loading";
    const f = filters();
    history.replaceState(null, "", `${location.pathname}${query(f) ? "?" + query(f) : ""}`);
    try {
      const resp = await api(`v1/spend/summary?${query(f, { limit: TOP_N })}`);
      const data = await resp.json();
      showError("");
      $("#auth").hidden = true;
      render(data);
      main.dataset.state = "ready";
    } catch (err) {
      main.dataset.state = "error";
      if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
        askForKey(sessionStorage.getItem(KEY_STORE) ? err.message : "");
      } else {
        showError(err.message || String(err));
      }
    } finally {
      main.dataset.loads = String(++loads);
    }
  }

  function showError(message) {
    const node = $("#error");
    node.textContent = message;
    node.hidden = !message;
  }

  function askForKey(message) {
    sessionStorage.removeItem(KEY_STORE);
    $("#auth").hidden = false;
    $("#auth-error").textContent = message;
    $("#auth-key").focus();
  }

  async function downloadCsv() {
    try {
      const f = filters();
      const resp = await api(`v1/spend.csv?${query(f, { group_by: CSV_GROUP_BY })}`);
      const blob = await resp.blob();
      const disposition = resp.headers.get("content-disposition") || "";
      const name = (/filename="([^"]+)"/.exec(disposition) || [])[1] || "spend.csv";
      const url = URL.createObjectURL(blob);
      const a = h("a", { href: url, download: name });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 1000);
    } catch (err) {
      showError(err.message || String(err));
    }
  }

  // ---- rendering ----------------------------------------------------------------------------

  function render(d) {
    renderTeams(d.teams || [], d.team);
    renderScope(d);
    renderTotals(d.total);
    renderDays(d.by_day, d.from, d.to);
    renderBreakdown("team", d.by_team, d.total);
    renderBreakdown("expert", d.by_expert, d.total);
    renderBreakdown("domain", d.by_domain, d.total);
    renderBudgets(d.budgets);
    renderLatency(d.latency_ms, d.latency_scope);
    renderTop(d.top_requests);
  }

  function renderTeams(teams, selected) {
    const select = $("#f-team");
    const names = new Set(teams);
    if (selected) names.add(selected);
    select.replaceChildren(h("option", { value: "", text: "All teams" }),
      ...[...names].sort().map((t) => h("option", { value: t, text: t })));
    select.value = selected || "";
  }

  function renderScope(d) {
    const range = d.from || d.to ? `${d.from || "…"} → ${d.to || "…"} (UTC days)` : "All time";
    const who = d.team ? `team ${d.team}` : "all teams";
    $("[data-testid=scope]").textContent = `${range} · ${who}`;
  }

  function setMoney(testid, usd) {
    $(`[data-testid=${testid}]`).replaceChildren(...money(usd).childNodes);
    $(`[data-testid=${testid}]`).dataset.usd = usd;
  }

  function setText(testid, text) {
    $(`[data-testid=${testid}]`).textContent = text;
  }

  function renderTotals(t) {
    setMoney("total-cost", t.cost_usd);
    setMoney("total-baseline", t.baseline_usd);
    setMoney("total-savings", t.savings_usd);
    setText("total-savings-pct", pctText(t.savings_pct));
    setText("total-requests", intText(t.requests));
    setText("total-errors", intText(t.errors));
    setText("total-input-tokens", intText(t.input_tokens));
    setText("total-output-tokens", intText(t.output_tokens));
    setText("total-mean-latency", String(t.mean_latency_ms));
  }

  function dayRange(rows, from, to) {
    // Fill the gaps so the time axis is honest: a day without traffic is a zero, not skipped.
    const have = new Map(rows.map((r) => [r.day, r]));
    const first = from || (rows[0] && rows[0].day);
    const last = to || (rows.length && rows[rows.length - 1].day);
    if (!first || !last) return rows;
    const out = [];
    const end = Date.parse(last + "T00:00:00Z");
    for (let t = Date.parse(first + "T00:00:00Z"); t <= end && out.length <= 400; t += 86400000) {
      const day = new Date(t).toISOString().slice(0, 10);
      out.push(have.get(day) || { day, requests: 0, cost_usd: "0", baseline_usd: "0", savings_usd: "0" });
    }
    return out.length > 400 ? rows : out;
  }

  function renderDays(rows, from, to) {
    const days = dayRange(rows, from, to);
    const box = $("#chart-day");
    if (!rows.length) {
      box.replaceChildren(h("p", { class: "empty", text: "No spend in this range." }));
    } else {
      box.replaceChildren(dayChart(days));
    }
    $("[data-testid=table-day] tbody").replaceChildren(...rows.map((r) =>
      h("tr", { testid: "day-row", "data-key": r.day },
        h("td", { text: r.day }),
        h("td", { class: "num", testid: "day-requests", text: intText(r.requests) }),
        h("td", { class: "num" }, money(r.cost_usd, "day-cost")),
        h("td", { class: "num" }, money(r.baseline_usd, "day-baseline")),
        h("td", { class: "num" }, money(r.savings_usd, "day-savings")))));
  }

  function niceMax(v) {
    if (v <= 0) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function dayChart(days) {
    const W = 900, H = 240, L = 64, R = 12, T = 12, B = 36;
    const cost = days.map((r) => Number(r.cost_usd));
    const base = days.map((r) => Number(r.baseline_usd));
    const top = niceMax(Math.max(...cost, ...base));
    const y = (v) => T + (H - T - B) * (1 - v / top);
    const step = (W - L - R) / days.length;
    const bw = Math.max(1, Math.min(42, step * 0.7));
    const root = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "spend per day" });
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      root.append(s("line", { class: "axis", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
        s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", text: axisText(v) }));
    }
    const every = Math.max(1, Math.ceil(days.length / 10));
    days.forEach((r, i) => {
      const x = L + step * i + (step - bw) / 2;
      root.append(s("rect", { class: "bar", x, y: y(cost[i]), width: bw, height: Math.max(0, y(0) - y(cost[i])),
        "data-day": r.day }, s("title", { text: `${r.day}: spend ${moneyText(r.cost_usd)}, baseline ${moneyText(r.baseline_usd)}` })));
      if (i % every === 0) {
        root.append(s("text", { x: L + step * i + step / 2, y: H - B + 16, "text-anchor": "middle", text: r.day.slice(5) }));
      }
    });
    const pts = days.map((r, i) => `${L + step * i + step / 2},${y(base[i])}`).join(" ");
    root.append(s("polyline", { class: "base", points: pts }));
    days.forEach((r, i) => root.append(s("circle", { class: "dot", cx: L + step * i + step / 2, cy: y(base[i]), r: 3 })));
    return root;
  }

  function renderBreakdown(dim, rows, total) {
    const box = $(`[data-testid=breakdown-${dim}]`);
    if (!rows.length) {
      box.replaceChildren(h("p", { class: "empty", text: "No spend in this range." }));
      return;
    }
    const sorted = [...rows].sort((a, b) => Number(b.cost_usd) - Number(a.cost_usd) || (a[dim] < b[dim] ? -1 : 1));
    const max = Math.max(...sorted.map((r) => Number(r.cost_usd)), 0);
    const all = Number(total.cost_usd);
    box.replaceChildren(...sorted.map((r) => {
      const bar = h("div", { class: "fill" });
      bar.style.width = `${max > 0 ? (100 * Number(r.cost_usd)) / max : 0}%`;
      const share = all > 0 ? ((100 * Number(r.cost_usd)) / all).toFixed(1) + "% of spend" : "";
      return h("div", { class: "row", testid: `${dim}-row`, "data-key": r[dim] },
        h("div", { class: "name", title: r[dim], text: r[dim] }),
        h("div", { class: "track" }, bar),
        h("div", { class: "val" }, money(r.cost_usd, `${dim}-cost`)),
        h("div", { class: "meta" },
          h("span", { testid: `${dim}-requests`, text: intText(r.requests) }), " requests · ",
          share ? `${share} · ` : "", "saved ", money(r.savings_usd, `${dim}-savings`),
          ` (${pctText(r.savings_pct)})`));
    }));
  }

  function renderBudgets(budgets) {
    const box = $("#budgets");
    if (!budgets.length) {
      box.replaceChildren(h("p", { class: "empty", text: "No teams with keys (or auth is off)." }));
      return;
    }
    box.replaceChildren(...budgets.map((b) => {
      const burn = b.burn;
      const bar = h("div", { class: `fill${burn >= 1 ? " over" : burn >= 0.8 ? " warn" : ""}` });
      bar.style.width = `${burn === null ? 0 : Math.min(100, burn * 100)}%`;
      const limit = b.budget_usd === null ? h("span", { testid: "budget-limit", text: "no budget" }) : money(b.budget_usd, "budget-limit");
      return h("div", { class: "budget", testid: "budget-row", "data-key": b.team },
        h("div", { class: "head" },
          h("b", { text: b.team }),
          h("span", { testid: "budget-burn", text: burn === null ? "—" : `${(burn * 100).toFixed(2)}%` })),
        h("div", { class: "track" }, bar),
        h("div", { class: "meta" }, money(b.spent_usd, "budget-spent"), " of ", limit,
          ` · ${b.period} ${b.period_id} · in flight `, money(b.in_flight_usd, "budget-inflight")));
    }));
  }

  function renderLatency(latency, scope) {
    const experts = Object.keys(latency).sort();
    $("#lat-scope").textContent = `nearest-rank over sampled requests · ${scope || "all teams"}`;
    $("[data-testid=table-latency] tbody").replaceChildren(...experts.map((e) =>
      h("tr", { testid: "latency-row", "data-key": e },
        h("td", { text: e }),
        h("td", { class: "num", testid: "latency-p50", text: String(latency[e].p50) }),
        h("td", { class: "num", testid: "latency-p95", text: String(latency[e].p95) }),
        h("td", { class: "num", testid: "latency-samples", text: intText(latency[e].samples) }))));
    const box = $("#chart-latency");
    if (!experts.length) {
      box.replaceChildren(h("p", { class: "empty", text: "No latency samples in this range." }));
      return;
    }
    const W = 560, row = 30, L = 120, R = 70, H = experts.length * row + 24;
    const top = niceMax(Math.max(...experts.map((e) => latency[e].p95)));
    const x = (v) => L + ((W - L - R) * v) / top;
    const root = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "latency per expert" });
    experts.forEach((e, i) => {
      const y0 = 6 + i * row;
      const p = latency[e];
      root.append(
        s("text", { x: L - 8, y: y0 + 15, "text-anchor": "end", text: e.length > 18 ? e.slice(0, 17) + "…" : e }),
        s("rect", { class: "p95", x: L, y: y0 + 2, width: x(p.p95) - L, height: 10 }, s("title", { text: `${e} p95 ${p.p95} ms` })),
        s("rect", { class: "p50", x: L, y: y0 + 13, width: x(p.p50) - L, height: 10 }, s("title", { text: `${e} p50 ${p.p50} ms` })),
        s("text", { x: x(p.p95) + 4, y: y0 + 11, text: `p95 ${p.p95}` }),
        s("text", { x: x(p.p50) + 4, y: y0 + 22, text: `p50 ${p.p50}` }));
    });
    root.append(s("text", { x: L, y: H - 4, text: `0 – ${top} ms` }));
    box.replaceChildren(root);
  }

  function renderTop(rows) {
    const tbody = $("[data-testid=table-top] tbody");
    if (!rows.length) {
      tbody.replaceChildren(h("tr", {}, h("td", { colspan: 10, class: "empty", text: "No requests in this range." })));
      return;
    }
    tbody.replaceChildren(...rows.map((r) =>
      h("tr", { testid: "top-row", "data-key": r.request_id },
        h("td", { text: new Date(r.ts * 1000).toISOString().slice(0, 19).replace("T", " ") }),
        h("td", { class: "mono", title: r.request_id, text: r.request_id.length > 14 ? r.request_id.slice(0, 13) + "…" : r.request_id }),
        h("td", { text: r.team }),
        h("td", { text: r.expert }),
        h("td", { text: r.domain }),
        h("td", { class: "num", text: `${intText(r.input_tokens)} / ${intText(r.output_tokens)}` }),
        h("td", { class: "num", text: String(r.latency_ms) }),
        h("td", { class: r.status >= 400 ? "status-err" : "", text: String(r.status) }),
        h("td", { class: "num" }, money(r.cost_usd, "top-cost")),
        h("td", { class: "num" }, money(r.baseline_usd, "top-baseline")))));
  }

  // ---- wiring --------------------------------------------------------------------------------

  function init() {
    const q = new URLSearchParams(location.search);
    $("#f-from").value = q.get("from") || "";
    $("#f-to").value = q.get("to") || "";
    renderTeams([], q.get("team") || "");
    $("#filters").addEventListener("submit", (ev) => {
      ev.preventDefault();
      load();
    });
    $("#f-team").addEventListener("change", () => load());
    $("#f-reset").addEventListener("click", () => {
      $("#f-from").value = "";
      $("#f-to").value = "";
      $("#f-team").value = "";
      load();
    });
    $("#csv").addEventListener("click", downloadCsv);
    $("#auth-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("#auth-key").value.trim();
      if (!key) return;
      sessionStorage.setItem(KEY_STORE, key);
      $("#auth-key").value = "";
      load();
    });
    load();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
