// slm-router dashboard: the classifier panel (drift state, PSI per metric, rollout and shadow
// agreement), drawn from GET /v1/router/status. Self-contained: it needs an element
// <section id="drift-panel" class="panel wide" data-testid="drift-panel"></section> and reuses
// the admin key the dashboard keeps in sessionStorage. Vanilla JS, no dependencies.
"use strict";

(() => {
  const KEY_STORE = "slm-router-admin-key";
  const REFRESH_MS = 15000;
  const METRICS = ["domain_mix", "confidence", "out_of_scope", "escalation"];

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = String(v);
      else if (k === "testid") node.setAttribute("data-testid", v);
      else node.setAttribute(k, String(v));
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c);
    return node;
  }

  function fixed(x, digits = 3) {
    return x === null || x === undefined ? "–" : Number(x).toFixed(digits);
  }

  function bar(psi, alertAt) {
    // Full width at twice the alert threshold: the threshold sits at the middle.
    const pct = Math.max(0, Math.min(100, (100 * (psi || 0)) / (2 * alertAt)));
    return el("span", { class: "bar", style: `width:${pct}%` });
  }

  function render(root, status) {
    const drift = status.drift || {};
    const alertAt = (drift.thresholds || {}).psi_alert || 0.2;
    const clf = status.classifier || {};
    root.replaceChildren(
      el("h2", { text: "Classifier" }),
      el("p", { testid: "drift-state", "data-state": drift.state || "off",
                text: `drift: ${drift.state || "off"} (${drift.samples || 0}/${drift.window || 0} ` +
                      `requests; alert at PSI ≥ ${alertAt})` }),
      el("p", { testid: "classifier-version",
                text: `live: ${clf.kind || "?"} ${clf.version || ""}` }),
      el("table", { class: "grid", testid: "drift-metrics" },
        el("thead", {}, el("tr", {}, el("th", { text: "Metric" }), el("th", { class: "num", text: "PSI" }),
                          el("th", { text: "" }), el("th", { text: "State" }))),
        el("tbody", {}, METRICS.filter((m) => (drift.metrics || {})[m]).map((m) => {
          const x = drift.metrics[m];
          return el("tr", { "data-metric": m }, el("td", { text: m }),
                    el("td", { class: "num", text: fixed(x.psi) }),
                    el("td", {}, bar(x.psi, alertAt)), el("td", { text: x.state }));
        }))),
      rollout(status.rollout),
      ...(status.alerts || []).map((a) => el("p", { class: "error", testid: "drift-alert", text: a.message })),
    );
  }

  function rollout(r) {
    if (!r) return el("p", { testid: "rollout", text: "rollout: none" });
    const sh = r.shadow || {};
    const cand = r.candidate || {};
    const agreement = sh.agreement_rate === null || sh.agreement_rate === undefined
      ? "–" : `${(100 * sh.agreement_rate).toFixed(1)}% of ${sh.compared}`;
    return el("p", { testid: "rollout",
                     text: `rollout: ${r.mode} ${r.percent}% · candidate ${cand.version || cand.path || "?"}` +
                           ` · shadow agreement ${agreement}` });
  }

  async function refresh(root) {
    const headers = { accept: "application/json" };
    const key = sessionStorage.getItem(KEY_STORE);
    if (key) headers.authorization = `Bearer ${key}`;
    try {
      const resp = await fetch("v1/router/status", { headers, cache: "no-store" });
      if (!resp.ok) { root.hidden = true; return; }
      render(root, await resp.json());
      root.hidden = false;
    } catch (_) {
      root.hidden = true;  // the spend panels say what is wrong; this one just stays away
    }
  }

  function init() {
    const root = document.getElementById("drift-panel");
    if (!root) return;
    refresh(root);
    setInterval(() => refresh(root), REFRESH_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
