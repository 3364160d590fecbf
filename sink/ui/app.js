// canaryd status page: polls the JSON API (api/openapi.yaml) every 2 s and
// draws the selected rollout's evidence as SVG. No framework, no build step.
//
// Data: GET v1/rollouts (the list), v1/rollouts/{id} (state, last verdict,
// totals, audit) and v1/rollouts/{id}/history (the verdicts over time, kept
// by the server). When the history endpoint is missing (an older canaryd),
// the page keeps its own ring buffer of the verdicts it polled.
"use strict";
(function () {
  const POLL_MS = 2000;
  const RING = 600; // verdicts kept per rollout by the page's own fallback
  const MIN_REQ = 20; // an arm's step summary is plotted from this many requests on: fewer are noise
  const SVGNS = "http://www.w3.org/2000/svg";

  let selected = null; // rollout id shown in detail
  let polls = 0;
  let timer = null;
  const ring = new Map(); // rollout → [point] (fallback history)
  const last = { list: null, status: null, history: null };
  const drawn = { list: null, detail: null }; // what the DOM shows, as JSON

  // ---- DOM helpers -------------------------------------------------------

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    for (const k of kids.flat()) if (k != null) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  function sv(tag, attrs, ...kids) {
    const e = document.createElementNS(SVGNS, tag);
    setAttrs(e, attrs);
    for (const k of kids.flat()) if (k != null) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v == null || v === false) continue;
      if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
  }
  const $ = (id) => document.getElementById(id);
  function fill(node, ...kids) { node.replaceChildren(...kids.flat().filter((k) => k != null)); }

  // ---- formatting --------------------------------------------------------

  const finite = (x) => typeof x === "number" && isFinite(x);
  function num(x, digits = 3) {
    if (!finite(x)) return "–";
    if (x !== 0 && (Math.abs(x) >= 1e5 || Math.abs(x) < 1e-3)) return x.toExponential(2).replace("e+", "e");
    return Number(x.toPrecision(digits)).toLocaleString("en-US");
  }
  const pct = (x) => (finite(x) ? (100 * x).toFixed(x < 0.001 ? 3 : 2) + "%" : "–");
  const ms = (x) => (finite(x) ? (x >= 1000 ? (x / 1000).toFixed(2) + " s" : x.toFixed(0) + " ms") : "–");
  const usd = (x) => (finite(x) ? "$" + (x >= 1 ? x.toFixed(2) : x.toPrecision(3)) : "–");
  const int = (x) => (finite(x) ? Math.round(x).toLocaleString("en-US") : "–");
  function clock(t) {
    const d = new Date(t);
    return isNaN(d) ? "" : d.toISOString().slice(11, 19);
  }
  const isZeroTime = (t) => !t || t.startsWith("0001-");

  function badge(cls, text) { return el("span", { class: "badge " + cls, text }); }
  function stateBadges(st) {
    const b = [badge("mode", st.mode), badge("gate-" + st.gate, st.gate)];
    if (st.final) b.push(badge("final-" + st.final, st.final));
    if (st.paused) b.push(badge("paused", "paused"));
    if (st.awaiting_approval) b.push(badge("paused", "awaiting approval"));
    return b;
  }
  const stepOf = (st) => (st.step < 0 ? "–" : `${st.step + 1} of ${st.steps}`);

  // ---- polling -----------------------------------------------------------

  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    if (!r.ok) {
      const err = new Error(url + ": HTTP " + r.status);
      err.status = r.status;
      throw err;
    }
    return r.json();
  }

  async function poll() {
    clearTimeout(timer);
    const live = $("live");
    try {
      const list = await getJSON("v1/rollouts");
      last.list = list.rollouts || [];
      if (!selected && last.list.length === 1) select(last.list[0].rollout, false);
      // Drawn again only when something changed (or the width did): an
      // ended rollout's page stays still, text selections and all.
      const listKey = JSON.stringify([selected, last.list]);
      if (listKey !== drawn.list) {
        renderList(last.list);
        drawn.list = listKey;
      }
      if (selected) {
        const id = encodeURIComponent(selected);
        const [st, hist] = await Promise.all([
          getJSON("v1/rollouts/" + id).catch((e) => (e.status === 404 ? null : Promise.reject(e))),
          getJSON("v1/rollouts/" + id + "/history").catch(() => null),
        ]);
        last.status = st;
        last.history = hist;
        if (st) remember(st);
        const key = JSON.stringify([window.innerWidth, st, hist]);
        if (key !== drawn.detail) {
          renderDetail(st, hist);
          drawn.detail = key;
        }
      } else {
        $("detail").hidden = true;
        drawn.detail = null;
      }
      polls++;
      document.body.dataset.polls = String(polls);
      live.dataset.state = "live";
      live.textContent = "live · updated " + new Date().toISOString().slice(11, 19) + " UTC";
    } catch (e) {
      live.dataset.state = "error";
      live.textContent = "not updating: " + e.message + " (retrying)";
    }
    timer = setTimeout(poll, POLL_MS);
  }

  // remember keeps the page's own history of verdicts: used when the
  // server has no history endpoint.
  function remember(st) {
    const v = st.verdict;
    if (!v || isZeroTime(v.at)) return;
    let r = ring.get(st.rollout);
    if (!r || (r.release && r.release !== st.baseline + "→" + st.canary)) {
      r = [];
      ring.set(st.rollout, r);
    }
    r.release = st.baseline + "→" + st.canary;
    if (r.length && r[r.length - 1].at === v.at && r[r.length - 1].action === v.action) return;
    r.push({
      at: v.at, step: v.step, weight: v.weight, action: v.action,
      reason: v.action !== "continue" ? v.reason : undefined,
      tests: (v.tests || []).map((t) => ({ name: t.name, role: t.role, e_value: t.e_value, threshold: t.threshold, passed: t.passed })),
      baseline: arm(v.baseline_step), canary: arm(v.canary_step),
    });
    if (r.length > RING) r.splice(0, r.length - RING);
  }
  const arm = (a) => ({ requests: a ? a.requests : 0, error_rate: a ? a.error_rate : null, p95_ms: a ? a.p95_ms : null });

  function select(id, push = true) {
    selected = id;
    if (push) history.replaceState(null, "", id ? "#rollout=" + encodeURIComponent(id) : "#");
  }
  function fromHash() {
    const m = /rollout=([^&]+)/.exec(location.hash);
    selected = m ? decodeURIComponent(m[1]) : null;
  }

  // ---- the list ----------------------------------------------------------

  function renderList(list) {
    const rows = list.map((st) => {
      const tr = el("tr", { "data-rollout": st.rollout, class: st.rollout === selected ? "selected" : null },
        el("td", { class: "id" }, el("a", { href: "#rollout=" + encodeURIComponent(st.rollout), text: st.rollout })),
        el("td", {}, ...stateBadges(st).flatMap((b) => [b, " "])),
        el("td", { text: stepOf(st) }),
        el("td", {}, st.weight + "% ", el("span", { class: "muted", text: "by " + st.weight_source })),
        el("td", {}, el("span", { class: "ver", text: st.baseline }), " → ", el("span", { class: "ver", text: st.canary })),
        el("td", { class: "reason-cell", text: (st.verdict && st.verdict.reason) || "" }));
      tr.addEventListener("click", (ev) => {
        if (ev.target.tagName !== "A") location.hash = "rollout=" + encodeURIComponent(st.rollout);
      });
      return tr;
    });
    if (!rows.length) rows.push(el("tr", { class: "empty" }, el("td", { colspan: 6, text: "No rollouts: canaryd has no spec in force." })));
    fill($("rollout-rows"), rows);
  }

  // ---- the detail --------------------------------------------------------

  function renderDetail(st, hist) {
    const box = $("detail");
    if (!st) {
      box.hidden = false;
      $("d-title").textContent = selected;
      fill($("d-badges"));
      $("d-reason").textContent = "No rollout " + selected + " on this canaryd.";
      $("d-reason").dataset.action = "";
      return;
    }
    box.hidden = false;
    box.dataset.rollout = st.rollout;
    $("d-title").textContent = st.rollout;
    fill($("d-badges"), stateBadges(st));
    const v = st.verdict || {};
    const reason = $("d-reason");
    reason.dataset.action = v.action || "";
    reason.textContent = v.reason || "no decision yet";
    const meta = [`${st.baseline} → ${st.canary}`, `step ${stepOf(st)}`, `weight ${st.weight}% set by ${st.weight_source}`,
      `${st.windows} windows`, isZeroTime(st.watermark) ? "no data yet" : "data complete to " + clock(st.watermark) + " UTC"];
    if (st.deployment_id) meta.push("deployment " + st.deployment_id);
    if (st.commit) meta.push("commit " + st.commit.slice(0, 12));
    if (st.attempt) meta.push("attempt " + (st.attempt + 1));
    if (st.next_actions && st.next_actions.length) meta.push("actions now: " + st.next_actions.join(", "));
    if (st.spec_error) meta.push("spec not in force: " + st.spec_error);
    $("d-meta").textContent = meta.join(" · ");

    let points = hist && hist.points && hist.baseline === st.baseline && hist.canary === st.canary ? hist.points : ring.get(st.rollout) || [];
    box.dataset.historySource = hist ? "server" : "page";
    box.dataset.points = String(points.length);
    const events = hist && hist.events && hist.baseline === st.baseline && hist.canary === st.canary ? hist.events : [];
    renderTimeline(st, points, events);
    renderEValues(points, v.tests || []);
    renderArms(st);
    renderSegments(st);
    renderArmPlots(st, points);
    renderToolMix(v.tests || []);
    renderSRM(v.tests || []);
    renderTests(v.tests || []);
    renderAudit(st);
    renderRouters(st);
  }

  // Plot geometry: width follows the box, height is fixed.
  function frame(box, height, pad) {
    const w = Math.max(240, Math.floor(box.clientWidth || 600));
    return { w, h: height, l: pad.l, r: w - pad.r, t: pad.t, b: height - pad.b };
  }
  function timeScale(points, f) {
    let t0 = Infinity, t1 = -Infinity;
    for (const p of points) {
      const t = Date.parse(p.at);
      if (t < t0) t0 = t;
      if (t > t1) t1 = t;
    }
    if (!isFinite(t0)) t0 = t1 = Date.now();
    if (t1 - t0 < 1000) t1 = t0 + 1000;
    const x = (t) => f.l + ((Date.parse(t) - t0) / (t1 - t0)) * (f.r - f.l);
    x.t0 = t0;
    x.t1 = t1;
    return x;
  }
  function timeAxis(svg, x, f) {
    svg.append(sv("line", { class: "axis", x1: f.l, x2: f.r, y1: f.b, y2: f.b }));
    const n = f.r - f.l > 400 ? 4 : 2;
    for (let i = 0; i <= n; i++) {
      const t = x.t0 + ((x.t1 - x.t0) * i) / n;
      const px = f.l + ((f.r - f.l) * i) / n;
      svg.append(sv("text", { x: px, y: f.b + 12, "text-anchor": i === 0 ? "start" : i === n ? "end" : "middle", text: clock(t) }));
    }
  }
  function pathOf(pts) {
    // pts: [[x, y] | null]; null breaks the line.
    let d = "", pen = false;
    for (const p of pts) {
      if (!p) { pen = false; continue; }
      d += (pen ? "L" : "M") + p[0].toFixed(1) + "," + p[1].toFixed(1);
      pen = true;
    }
    return d;
  }

  // what an operator or controller event says, for the timeline and the list
  function eventText(e) {
    const what = e.kind === "controller" && e.action === "declare" ? `${e.by} set the weight to ${e.weight}%` : `${e.action} by ${e.by}`;
    return what + (e.reason ? ": " + e.reason : "");
  }

  function renderTimeline(st, points, events = []) {
    const box = $("timeline");
    const f = frame(box, 170, { l: 36, r: 10, t: 18, b: 18 });
    const svg = sv("svg", { class: "plot", id: "timeline-svg", viewBox: `0 0 ${f.w} ${f.h}`, width: f.w, height: f.h,
      role: "img", "aria-label": "weight and decisions over time", "data-points": points.length });
    const x = timeScale(points, f);
    const y = (w) => f.b - (w / 100) * (f.b - f.t);
    // step bands
    let start = 0;
    for (let i = 1; i <= points.length; i++) {
      if (i < points.length && points[i].step === points[start].step) continue;
      const p = points[start];
      const x0 = x(p.at), x1 = i < points.length ? x(points[i].at) : f.r;
      svg.append(sv("rect", { class: "step-band", x: x0, y: f.t, width: Math.max(0, x1 - x0), height: f.b - f.t,
        opacity: (start % 2) ? 1 : 0.5 }));
      if (x1 - x0 > 60 && p.step >= 0) svg.append(sv("text", { x: x0 + 4, y: f.t - 5, text: `step ${p.step + 1} · ${p.weight}%` }));
      start = i;
    }
    const ticks = new Set([0, 100]);
    for (const p of points) if (p.weight > 0 && p.weight < 100) ticks.add(p.weight);
    for (const w of [...ticks].sort((a, b) => a - b)) {
      svg.append(sv("line", { class: "grid-line", x1: f.l, x2: f.r, y1: y(w), y2: y(w) }));
      svg.append(sv("text", { x: f.l - 4, y: y(w) + 3, "text-anchor": "end", text: w + "%" }));
    }
    if (points.length) {
      let d = "";
      points.forEach((p, i) => {
        const px = x(p.at).toFixed(1), py = y(p.weight).toFixed(1);
        d += i === 0 ? `M${px},${f.b}L${px},${py}` : `H${px}V${py}`;
      });
      d += `H${f.r}V${f.b}Z`;
      svg.append(sv("path", { class: "weight", d, "fill-opacity": 0.6 }));
    }
    timeAxis(svg, x, f);
    const decisions = points.filter((p) => p.action && p.action !== "continue");
    for (const p of decisions) {
      svg.append(sv("circle", { class: "marker " + p.action, cx: x(p.at), cy: y(p.weight), r: 5, "data-action": p.action },
        sv("title", { text: `${clock(p.at)} ${p.action}: ${p.reason || ""}` })));
    }
    // operator actions and controller calls: triangles along the top
    for (const e of events) {
      const t = Math.min(Math.max(Date.parse(e.at), x.t0), x.t1);
      const cx = f.l + ((t - x.t0) / (x.t1 - x.t0)) * (f.r - f.l);
      svg.append(sv("path", { class: "event-marker " + e.kind, d: `M${cx.toFixed(1)},${f.t + 9}l-5,-9h10z`, "data-event": e.action },
        sv("title", { text: `${clock(e.at)} ${eventText(e)}` })));
    }
    fill(box, svg);
    // the list: canaryd's decisions with their reasons, and what people and
    // controllers did, newest first
    const dated = decisions.map((p) => [Date.parse(p.at), el("li", { class: p.action, "data-action": p.action, "data-reason": p.reason || "" },
      el("span", { class: "when", text: clock(p.at) }), el("b", { text: p.action.replace("_", " ") + (p.action === "set_weight" ? " " + p.weight + "%" : "") }),
      ": " + unprefix(p.reason || "", p.action))]);
    for (const e of events) {
      dated.push([Date.parse(e.at), el("li", { class: "event " + e.kind, "data-event": e.action },
        el("span", { class: "when", text: clock(e.at) }), el("b", { text: e.kind }), ": " + eventText(e))]);
    }
    const items = dated.sort((a, b) => b[0] - a[0]).map((d) => d[1]);
    const v = st.verdict;
    if (v && v.action && v.action !== "continue" && !decisions.some((p) => p.at === v.at && p.action === v.action)) {
      items.unshift(el("li", { class: v.action, "data-action": v.action, "data-reason": v.reason }, el("span", { class: "when", text: clock(v.at) }),
        el("b", { text: v.action.replace("_", " ") }), ": " + unprefix(v.reason, v.action)));
    }
    if (!items.length) items.push(el("li", { class: "muted", text: "no decision yet: " + ((v && v.reason) || "waiting for data") }));
    fill($("decisions"), items);
  }

  // unprefix drops a reason's leading "rollback: " where the action is shown beside it.
  const unprefix = (reason, action) => (reason.startsWith(action + ": ") ? reason.slice(action.length + 2) : reason);

  const roleOrder = { rollback: 0, validity: 1, promote: 2 };
  function renderEValues(points, latest) {
    const box = $("evalues");
    const series = new Map(); // name/role → {name, role, vals: [[at, e]], threshold, passed}
    for (const t of latest) series.set(t.name + "/" + t.role, { name: t.name, role: t.role, vals: [], threshold: t.threshold, passed: t.passed, e: t.e_value });
    for (const p of points) {
      for (const t of p.tests || []) {
        const k = t.name + "/" + t.role;
        let s = series.get(k);
        if (!s) {
          s = { name: t.name, role: t.role, vals: [], threshold: t.threshold, passed: t.passed, e: t.e_value, stale: true };
          series.set(k, s);
        }
        s.vals.push([p.at, t.e_value]);
      }
    }
    // Fired first, then by how close each is to its threshold (log e /
    // log threshold: a promote test that showed its margin is past 1).
    const closeness = (s) => (finite(s.e) && s.e > 0 && finite(s.threshold) && s.threshold > 1 ? Math.log(s.e) / Math.log(s.threshold) : -Infinity);
    const list = [...series.values()].sort((a, b) => (b.passed && b.role !== "promote") - (a.passed && a.role !== "promote") ||
      closeness(b) - closeness(a) || roleOrder[a.role] - roleOrder[b.role] || a.name.localeCompare(b.name));
    if (!list.length) {
      fill(box, el("p", { class: "muted", text: "No tests yet: they start with the first step." }));
      return;
    }
    // The grid's cells, as style.css lays them out: each plot is drawn at
    // its cell's width, so its text is not scaled.
    const boxW = box.clientWidth || 600, gap = 8;
    const cols = Math.max(1, Math.floor((boxW + gap) / (300 + gap)));
    const width = Math.floor((boxW - gap * (cols - 1)) / cols);
    const shown = Math.max(cols * 2, list.filter((s) => (s.passed && s.role !== "promote") || closeness(s) > 0.25).length);
    const plots = list.map((s) => ePlot(s, points, width));
    const open = box.querySelector("details") && box.querySelector("details").open;
    const rest = plots.slice(shown);
    fill(box, el("div", { class: "small-multiples" }, plots.slice(0, shown)),
      rest.length ? el("details", { open: open || null }, el("summary", { text: `${rest.length} more tests, far from their thresholds` }),
        el("div", { class: "small-multiples" }, rest)) : null);
  }

  function ePlot(s, points, width) {
    const f = frame({ clientWidth: width }, 130, { l: 40, r: 8, t: 18, b: 18 });
    const x = timeScale(points, f);
    const vals = s.vals.filter((v) => finite(v[1]) && v[1] > 0);
    let lo = Infinity, hi = -Infinity;
    for (const [, e] of vals) { lo = Math.min(lo, e); hi = Math.max(hi, e); }
    const thr = finite(s.threshold) ? s.threshold : null;
    if (thr) { lo = Math.min(lo, thr); hi = Math.max(hi, thr); }
    if (!isFinite(lo)) { lo = 0.1; hi = 10; }
    let l0 = Math.floor(Math.log10(Math.max(lo, 1e-300))), l1 = Math.ceil(Math.log10(hi));
    l0 = Math.min(l0, 0);
    if (l1 <= l0) l1 = l0 + 1;
    const y = (e) => f.b - ((Math.log10(e) - l0) / (l1 - l0)) * (f.b - f.t);
    const fired = s.passed && s.role !== "promote";
    const svg = sv("svg", { class: "plot eplot", viewBox: `0 0 ${f.w} ${f.h}`, width: f.w, height: f.h, role: "img",
      "aria-label": `${s.name} e-value over time`, "data-test": s.name, "data-role": s.role, "data-points": vals.length,
      "data-fired": fired ? "true" : "false" });
    const step = Math.max(1, Math.ceil((l1 - l0) / 4));
    for (let k = l0; k <= l1; k += step) {
      svg.append(sv("line", { class: "grid-line", x1: f.l, x2: f.r, y1: y(10 ** k), y2: y(10 ** k) }));
      svg.append(sv("text", { x: f.l - 4, y: y(10 ** k) + 3, "text-anchor": "end", text: k === 0 ? "1" : "1e" + k }));
    }
    if (thr) svg.append(sv("line", { class: "threshold", x1: f.l, x2: f.r, y1: y(thr), y2: y(thr) },
      sv("title", { text: `threshold 1/α = ${num(thr)}` })));
    timeAxis(svg, x, f);
    const pts = s.vals.map(([at, e]) => (finite(e) && e > 0 ? [x(at), y(e)] : null));
    svg.append(sv("path", { class: "series role-" + s.role, d: pathOf(pts), "data-n": vals.length }));
    // circles: every point when few, else the last one
    const circ = vals.length <= 40 ? vals : vals.slice(-1);
    for (const [at, e] of circ) {
      svg.append(sv("circle", { class: "pt" + (fired && e >= thr ? " fired" : ""), cx: x(at), cy: y(e), r: 2.2 }));
    }
    const lastE = s.e;
    // Rollback tests are most of them: only the other roles are named.
    let title = `${s.name}${s.role === "rollback" ? "" : " (" + s.role + ")"}  e=${num(lastE)}${thr ? (lastE >= thr ? " ≥ " : " < ") + num(thr) : ""}`;
    if (fired) title += " · fired";
    else if (s.role === "promote" && s.passed) title += " · margin shown";
    svg.append(sv("text", { class: "title" + (fired ? " fired-label" : ""), x: f.l, y: 12, text: title }));
    return svg;
  }

  function armsOf(st) {
    const v = st.verdict || {};
    const tot = (ver) => (st.totals || []).find((a) => a.version === ver);
    return { bs: v.baseline_step, cs: v.canary_step, bt: tot(st.baseline), ct: tot(st.canary) };
  }
  function renderArms(st) {
    const { bs, cs, bt, ct } = armsOf(st);
    const per = (a, k) => (a && a.requests ? a[k] / a.requests : NaN);
    const rows = [
      ["requests", (a) => int(a && a.requests)],
      ["errors", (a) => int(a && a.errors)],
      ["error rate", (a) => pct(a && a.error_rate)],
      ["p50 latency", (a) => ms(a && a.p50_ms)],
      ["p95 latency", (a) => ms(a && a.p95_ms)],
      ["p99 latency", (a) => ms(a && a.p99_ms)],
      ["input tokens / req", (a) => num(per(a, "input_tokens"))],
      ["output tokens / req", (a) => num(per(a, "output_tokens"))],
      ["cost / req", (a) => usd(per(a, "cost_usd"))],
      ["cost", (a) => usd(a && a.cost_usd)],
      ["sessions", (a) => int(a && a.sessions)],
      ["sessions succeeded", (a) => (a && a.sessions ? pct(a.sessions_succeeded / a.sessions) : "–")],
    ];
    const head = el("thead", {}, el("tr", {}, el("th", { text: "" }),
      el("th", { class: "num", text: "baseline " + st.baseline }), el("th", { class: "num", text: "canary " + st.canary }),
      el("th", { class: "num", text: "baseline, whole" }), el("th", { class: "num", text: "canary, whole" })));
    const sub = el("tr", {}, el("th", { text: "" }), el("th", { class: "num muted", colspan: 2, text: "this step" }), el("th", { class: "num muted", colspan: 2, text: "whole rollout" }));
    const body = el("tbody", {}, rows.map(([name, f]) => el("tr", {}, el("th", { text: name }),
      [bs, cs, bt, ct].map((a) => el("td", { class: "num", text: f(a) })))));
    fill($("arms"), head, el("tbody", {}, sub), body);
    // error types of the two versions, whole rollout
    const types = new Set([...Object.keys((bt && bt.error_types) || {}), ...Object.keys((ct && ct.error_types) || {})]);
    if (!types.size) { fill($("error-types")); return; }
    const mx = Math.max(1, ...[...types].flatMap((k) => [((bt && bt.error_types) || {})[k] || 0, ((ct && ct.error_types) || {})[k] || 0]));
    fill($("error-types"), el("h3", { text: "Error types (whole rollout)" }), el("div", { class: "bars" },
      [...types].sort().flatMap((k) => [bt, ct].map((a, i) => {
        const n = ((a && a.error_types) || {})[k] || 0;
        return el("div", { class: "row" }, el("span", { class: "ver", text: i ? "" : k }),
          el("div", { class: "bar" }, el("span", { class: i ? "canary" : "baseline", style: `width:${(100 * n) / mx}%` })), el("span", { class: "num", text: int(n) }));
      }))));
  }

  // renderSegments: the two versions per request segment, with the
  // segment a fired (or strongest) rollback test names marked.
  function renderSegments(st) {
    const segs = st.segments || [];
    const named = new Set(((st.verdict || {}).tests || []).filter((t) => t.role === "rollback" && t.passed && t.segment && t.segment !== "all").map((t) => t.segment));
    if (!segs.length) { fill($("segments"), el("tbody", {}, el("tr", {}, el("td", { class: "muted", text: "no request segments yet" })))); return; }
    const per = (a, k) => (a && a.requests ? a[k] / a.requests : NaN);
    const pair = (f) => [el("td", { class: "num", text: f(0) }), el("td", { class: "num canary-col", text: f(1) })];
    const head = el("thead", {},
      el("tr", {}, el("th", { text: "segment" }),
        ...["requests", "error rate", "p95 latency", "tokens / req", "cost / req"].map((h) => el("th", { class: "num", colspan: 2, text: h }))),
      el("tr", {}, el("th", { text: "" }), ...[1, 2, 3, 4, 5].flatMap(() => [el("th", { class: "num muted", text: "base" }), el("th", { class: "num muted", text: "canary" })])));
    const body = el("tbody", {}, segs.map((s) => {
      const arms = [s.baseline, s.canary];
      const flagged = named.has(s.segment);
      return el("tr", { "data-segment": s.segment, class: flagged ? "regressed" : null },
        el("th", { text: s.segment + (flagged ? " ⚠" : "") }),
        ...pair((i) => int(arms[i] && arms[i].requests)),
        ...pair((i) => pct(arms[i] && arms[i].error_rate)),
        ...pair((i) => ms(arms[i] && arms[i].p95_ms)),
        ...pair((i) => num(per(arms[i], "input_tokens") + per(arms[i], "output_tokens"))),
        ...pair((i) => usd(per(arms[i], "cost_usd"))));
    }));
    fill($("segments"), head, body);
  }

  function renderArmPlots(st, points) {
    const box = $("arm-plots");
    const width = Math.max(240, box.clientWidth || 400);
    const plot = (label, key, fmtY) => {
      const f = frame({ clientWidth: width }, 130, { l: 48, r: 8, t: 26, b: 18 });
      const x = timeScale(points, f);
      let hi = 0;
      for (const p of points) for (const a of [p.baseline, p.canary]) if (a && a.requests >= MIN_REQ && finite(a[key])) hi = Math.max(hi, a[key]);
      hi = hi > 0 ? hi * 1.1 : 1;
      const y = (v) => f.b - (v / hi) * (f.b - f.t);
      const svg = sv("svg", { class: "plot armplot", viewBox: `0 0 ${f.w} ${f.h}`, width: f.w, height: f.h, role: "img", "aria-label": label, "data-metric": key });
      for (const v of [0, hi / 2, hi]) {
        svg.append(sv("line", { class: "grid-line", x1: f.l, x2: f.r, y1: y(v), y2: y(v) }));
        svg.append(sv("text", { x: f.l - 4, y: y(v) + 3, "text-anchor": "end", text: fmtY(v) }));
      }
      timeAxis(svg, x, f);
      let n = 0;
      for (const side of ["baseline", "canary"]) {
        // a new step starts its summaries afresh: the line breaks there
        const pts = [];
        points.forEach((p, i) => {
          if (i > 0 && points[i - 1].step !== p.step) pts.push(null);
          const a = p[side];
          pts.push(a && a.requests >= MIN_REQ && finite(a[key]) ? [x(p.at), y(a[key])] : null);
        });
        n += pts.filter(Boolean).length;
        svg.append(sv("path", { class: "series " + side, d: pathOf(pts) }));
      }
      svg.setAttribute("data-points", n);
      svg.append(sv("text", { class: "title", x: f.l, y: 12, text: label }));
      return svg;
    };
    fill(box, el("div", { class: "legend" }, el("span", {}, el("span", { class: "sw baseline" }), "baseline " + st.baseline),
      el("span", {}, el("span", { class: "sw canary" }), "canary " + st.canary), el("span", { text: `from ${MIN_REQ} requests in the step on` })),
    plot("error rate", "error_rate", (v) => (100 * v).toFixed(1) + "%"), plot("p95 latency", "p95_ms", (v) => ms(v)));
  }

  function shareBars(t) {
    return el("div", { class: "bars" },
      el("div", { class: "row" }, el("span", { text: "baseline" }), el("div", { class: "bar" }, el("span", { class: "baseline", style: `width:${100 * (t.baseline || 0)}%` })), el("span", { class: "num", text: pct(t.baseline) })),
      el("div", { class: "row" }, el("span", { text: "canary" }), el("div", { class: "bar" }, el("span", { class: "canary", style: `width:${100 * (t.canary || 0)}%` })), el("span", { class: "num", text: pct(t.canary) })));
  }
  function renderToolMix(tests) {
    const mix = tests.filter((t) => ["tool_mix", "tool_sequence", "error_types"].includes(t.name));
    if (!mix.length) {
      fill($("toolmix"), el("p", { class: "muted", text: "No tool-mix test in the current verdict." }));
      return;
    }
    fill($("toolmix"), mix.map((t) => el("div", { class: "mix", "data-test": t.name },
      el("p", {}, el("b", { text: t.name.replace("_", " ") }), ` e=${num(t.e_value)} ${t.e_value >= t.threshold ? "≥" : "<"} ${num(t.threshold)}`,
        t.passed ? el("span", { class: "badge final-rollback", text: "fired" }) : null),
      t.detail ? el("p", { class: "muted" }, "moved most: ", el("span", { class: "ver", text: t.detail }), ` (n=${int(t.n_baseline)} vs ${int(t.n_canary)})`) : el("p", { class: "muted", text: "no category moved yet" }),
      t.detail ? shareBars(t) : null)));
  }
  function renderSRM(tests) {
    const t = tests.find((t) => t.role === "validity");
    if (!t) {
      fill($("srm"), el("p", { class: "muted", text: "No sample-ratio test in the current verdict (off, or no step started)." }));
      return;
    }
    fill($("srm"), el("div", { "data-test": "srm" },
      t.n_baseline + t.n_canary > 0
        ? el("p", {}, `canary share of units ${pct(t.canary)} against ${pct(1 - t.baseline)} expected (${t.detail || ""}); n=${int(t.n_baseline + t.n_canary)}`)
        : el("p", {}, `no units counted yet in this step (${t.detail || ""})`),
      el("p", {}, `e=${num(t.e_value)} ${t.e_value >= t.threshold ? "≥" : "<"} ${num(t.threshold)}: `,
        t.passed ? el("b", { class: "final-rollback", text: "mismatch: the experiment is invalid (hold)" }) : el("span", { text: "no mismatch" }))));
  }
  function renderTests(tests) {
    const head = el("thead", {}, el("tr", {}, ["test", "role", "n baseline", "n canary", "baseline", "canary", "ratio", "bounds", "margin", "e-value", "threshold", "state", "detail"]
      .map((h, i) => el("th", { class: i >= 2 && i <= 10 ? "num" : null, text: h }))));
    const val = (t, x) => (t.name.startsWith("latency") && t.role === "rollback" ? pct(x) : t.name.includes("error") || t.name === "srm" || t.name.startsWith("slo") ? pct(x) : num(x));
    const rows = tests.map((t) => {
      const fired = t.passed && t.role !== "promote";
      const state = t.role === "promote" ? (t.passed ? "margin shown" : "not yet") : t.passed ? "fired" : "quiet";
      return el("tr", { class: (fired ? "fired " : "") + (t.role === "validity" ? "srm" : ""), "data-test": t.name, "data-role": t.role },
        el("td", { text: t.name }), el("td", { text: t.role }), el("td", { class: "num", text: int(t.n_baseline) }), el("td", { class: "num", text: int(t.n_canary) }),
        el("td", { class: "num", text: val(t, t.baseline) }), el("td", { class: "num", text: val(t, t.canary) }),
        el("td", { class: "num", text: num(t.odds_ratio) }), el("td", { class: "num", text: finite(t.lower) || finite(t.upper) ? `${finite(t.lower) ? num(t.lower) : "0"}–${finite(t.upper) ? num(t.upper) : "∞"}` : "–" }),
        el("td", { class: "num", text: num(t.margin) }), el("td", { class: "num", text: num(t.e_value) }), el("td", { class: "num", text: num(t.threshold) }),
        el("td", { text: state }), el("td", { class: "detail", text: [finite(t.baseline_ms) && finite(t.canary_ms) ? `${t.name.replace("latency_", "")} ${ms(t.canary_ms)} vs ${ms(t.baseline_ms)} over the release` : "", t.detail || ""].filter(Boolean).join("; ") }));
    });
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 13, class: "muted", text: "no tests yet" })));
    fill($("tests"), head, el("tbody", {}, rows));
  }
  function renderAudit(st) {
    const audit = (st.audit || []).map((a) => el("li", { "data-op": a.op }, el("span", { class: "when", text: clock(a.at) }),
      el("b", { text: a.op }), ` by ${a.by}` + (a.reason ? ": " + a.reason : "")));
    fill($("audit"), audit.length ? audit : [el("li", { class: "muted", text: "no operator action on this release" })]);
    const prev = (st.previous_releases || []).slice().reverse().map((r) => el("li", { class: r.final, "data-final": r.final },
      el("span", { class: "when", text: clock(r.ended_at) }), el("b", { text: `${r.baseline} → ${r.canary}: ${r.final}` }),
      ` at step ${r.step + 1} (${r.weight}%): ${r.reason}`));
    fill($("previous"), prev.length ? prev : [el("li", { class: "muted", text: "no earlier release judged by this instance" })]);
  }

  function renderRouters(st) {
    const rs = (st.routers || []).map((r) => el("li", { class: r.lagging ? "rollback" : "ok", "data-router": r.router },
      el("span", { class: "when", text: clock(r.since) }), el("b", { text: `${r.router}: ${r.weight}%` }),
      ` (${r.action}, seq ${r.seq}${r.latest_seq ? " of " + r.latest_seq : ""})` +
      (r.lagging ? ": has not acknowledged the latest command in time" : "")));
    fill($("routers"), rs.length ? rs : [el("li", { class: "muted", text: "no acknowledgements (canaryd run --acks-topic, and router.Acks in the routers)" })]);
  }

  // ---- start -------------------------------------------------------------

  window.addEventListener("hashchange", () => { fromHash(); poll(); });
  let resizeT = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeT);
    resizeT = setTimeout(() => { if (last.status) renderDetail(last.status, last.history); }, 100);
  });
  fromHash();
  poll();
})();
