// The operations page's script: asks for an admin token once (kept in this tab's
// sessionStorage), polls /admin/overview every 2 s while the tab is visible, and draws what it
// answers. Text from the server only ever goes in as text (textContent), never as markup.
"use strict";

const TOKEN_KEY = "playhouse.admin-token";
const POLL_MS = 2000;
// A poll that takes longer than this is given up (a node paused mid-answer). Members' reports
// are waited for 2 s at most, so a node that is working answers well within it.
const POLL_TIMEOUT_MS = 8000;
const HISTORY_MS = 5 * 60 * 1000;
const SVG = "http://www.w3.org/2000/svg";
const PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948",
  "#9c755f", "#e15759", "#bab0ac", "#ff9da7"];

// Chart points per node, oldest first; the nodes that sent a report in the last answer.
const history = new Map();
let reporting = new Set();
let timer = null;
let inFlight = null;
// Bumped by "Forget token": an answer to a poll sent before it is dropped, not drawn.
let generation = 0;
// When the last answer came, by this browser's clock: the view is flagged stale after that.
let lastAnswer = 0;
const STALE_AFTER_MS = 3 * POLL_MS;

const $ = (id) => document.getElementById(id);

// Shows a JavaScript error on the page itself: an operator should know the view is stale.
window.addEventListener("error", (event) => {
  const banner = $("page-error");
  banner.textContent = "This page hit an error and may be out of date: " + event.message;
  banner.hidden = false;
});

function el(tag, attributes, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function svg(tag, attributes) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  return node;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function fixed(value, digits) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toFixed(digits);
}

function rate(value) {
  if (value === null || value === undefined) return "–";
  return value >= 100 ? value.toFixed(0) : value.toFixed(1);
}

function duration(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 1000) return ms + " ms ago";
  return (ms / 1000).toFixed(1) + " s ago";
}

function uptime(seconds) {
  if (seconds < 120) return seconds + " s";
  if (seconds < 7200) return Math.floor(seconds / 60) + " min";
  return (seconds / 3600).toFixed(1) + " h";
}

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function showLogin(message) {
  $("dashboard").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  $("login-error").hidden = !message;
  $("login-error").textContent = message || "";
  $("freshness").textContent = "not connected";
  $("token").focus();
}

function forget(message) {
  generation += 1;
  if (inFlight) inFlight.abort();
  problem(null);
  sessionStorage.removeItem(TOKEN_KEY);
  history.clear();
  reporting = new Set();
  lastAnswer = 0;
  $("dashboard").classList.remove("stale");
  $("freshness").classList.remove("error-text");
  if (timer !== null) clearTimeout(timer);
  timer = null;
  showLogin(message);
}

function problem(message) {
  const banner = $("problem");
  banner.hidden = !message;
  banner.textContent = message || "";
}

function schedule(delay) {
  if (timer !== null) clearTimeout(timer);
  timer = document.hidden || !token() ? null : setTimeout(poll, delay);
}

// The oldest "newest point" among nodes that report: asking from there loses no node's points.
// A node without a report (down) does not hold it back, or every answer would grow.
function since() {
  let oldest = null;
  for (const [node, points] of history) {
    if (!reporting.has(node)) continue;
    const last = points.length ? points[points.length - 1].at_ms : 0;
    oldest = oldest === null ? last : Math.min(oldest, last);
  }
  return oldest || 0;
}

// Says how old the view is, and greys it out once no answer came for a while.
function freshness() {
  if (!lastAnswer) return;
  const age = Date.now() - lastAnswer;
  const stale = age > STALE_AFTER_MS;
  $("dashboard").classList.toggle("stale", stale);
  const text = $("freshness");
  text.classList.toggle("error-text", stale);
  text.textContent = text.dataset.source + (stale
    ? " · no answer for " + Math.round(age / 1000) + " s: this view is out of date"
    : "");
}

async function poll() {
  timer = null;
  if (inFlight || !token()) return;
  const abort = new AbortController();
  const mine = generation;
  inFlight = abort;
  const giveUp = setTimeout(() => abort.abort(), POLL_TIMEOUT_MS);
  try {
    const response = await fetch("/admin/overview?since=" + since(), {
      headers: { Authorization: "Bearer " + token() },
      signal: abort.signal,
      cache: "no-store",
    });
    const body = await response.json().catch(() => ({}));
    if (mine !== generation) return;
    if (response.status === 401 || response.status === 403) {
      forget("The node refused this token: " + (body.detail || response.status));
      return;
    }
    if (!response.ok) {
      const retry = Number(response.headers.get("Retry-After")) || 0;
      problem("The node answered " + response.status + ": " + (body.detail || response.statusText));
      schedule(Math.max(POLL_MS, retry * 1000));
      return;
    }
    if (!Array.isArray(body.members)) {
      problem("The node's answer is not an overview this page can read: reload the page.");
      schedule(POLL_MS);
      return;
    }
    render(body);
    problem(null);
    schedule(POLL_MS);
  } catch (error) {
    if (mine !== generation) return;
    problem("Cannot reach the node (" + (error.name === "AbortError" ? "no answer in "
      + POLL_TIMEOUT_MS / 1000 + " s" : error.message) + "); retrying.");
    schedule(POLL_MS);
  } finally {
    clearTimeout(giveUp);
    if (inFlight === abort) inFlight = null;
  }
}

function render(overview) {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("forget").hidden = false;
  const colors = new Map(overview.members.map((m, i) => [m.name, PALETTE[i % PALETTE.length]]));
  const at = new Date(overview.at_ms);
  lastAnswer = Date.now();
  $("freshness").dataset.source = "from " + overview.node + " at " + at.toLocaleTimeString();
  $("freshness").dataset.at = String(overview.at_ms);
  freshness();
  reporting = new Set(overview.nodes.filter((r) => r.stats).map((r) => r.node));
  for (const report of overview.nodes) {
    remember(report.node, report.stats ? report.stats.history : [], overview.at_ms);
  }
  renderMembers(overview, colors);
  renderPartitions(overview, colors);
  renderReplication(overview, colors);
  renderCharts(overview, colors);
  renderNodes(overview);
  renderSagas(overview);
  renderProjections(overview);
}

function remember(node, points, now) {
  const kept = history.get(node) || [];
  const last = kept.length ? kept[kept.length - 1].at_ms : 0;
  for (const point of points) if (point.at_ms > last) kept.push(point);
  while (kept.length && kept[0].at_ms < now - HISTORY_MS) kept.shift();
  history.set(node, kept);
}

function swatch(color) {
  const mark = el("span", { class: "swatch" });
  mark.style.background = color;
  return mark;
}

function renderMembers(overview, colors) {
  fill($("members").tBodies[0], overview.members.map((member) => {
    const owned = Object.entries(member.partitions).map(([s, n]) => s + " " + n).join(", ");
    const status = el("span", { class: "status " + member.status, title: member.reason || "" },
      member.status.replace("_", " "));
    return el("tr", { "data-member": member.name, "data-status": member.status },
      el("td", {}, swatch(colors.get(member.name)), member.name,
        member.this_node ? el("span", { class: "muted" }, " (this node)") : null),
      el("td", {}, status, member.reason ? el("div", { class: "muted" }, member.reason) : null),
      el("td", {}, member.this_node ? "–" : duration(member.last_heartbeat_ms_ago)),
      el("td", { class: "num" }, member.rtt_us === null ? "–" : (member.rtt_us / 1000).toFixed(2) + " ms"),
      el("td", {}, owned || (overview.partitions.length ? "none" : "all (single node)")),
      el("td", {}, member.services.join(", ")));
  }));
}

function renderPartitions(overview, colors) {
  const rows = overview.partitions.map((service) => {
    const count = service.owners.length;
    const picture = svg("svg", { viewBox: "0 0 " + count * 10 + " 10", preserveAspectRatio: "none",
      role: "img", "aria-label": service.service + " partitions by owner" });
    service.owners.forEach((owner, partition) => {
      const member = owner === null ? null : overview.members[owner];
      const up = member && member.status === "up";
      const cell = svg("rect", { x: partition * 10 + 0.5, y: 0.5, width: 9, height: 9,
        fill: member ? colors.get(member.name) : "#ccc", "fill-opacity": up ? 1 : 0.25 });
      const title = svg("title");
      title.textContent = service.service + " partition " + partition + ": "
        + (member ? member.name + " (" + member.status.replace("_", " ") + ")" : "no owner");
      cell.append(title);
      picture.append(cell);
      if (!up) {
        picture.append(svg("line", { x1: partition * 10 + 1, y1: 1, x2: partition * 10 + 9, y2: 9,
          stroke: "#c62828", "stroke-width": 1.2 }));
      }
    });
    return el("div", { class: "partition-row", "data-service": service.service },
      el("span", { class: "service" }, service.service), picture);
  });
  $("partitions").replaceChildren(...(rows.length ? rows
    : [el("p", { class: "muted" }, "A node alone owns every partition of its services.")]));
}

// One row per replicated partition, from the report of the node leading it (only a leader
// knows its followers' lag); partitions no reporting node leads are listed as leaderless.
function renderReplication(overview, colors) {
  const led = new Map();
  for (const report of overview.nodes) {
    if (!report.stats) continue;
    for (const group of report.stats.replication || []) {
      // Two nodes may both claim a partition for a moment (one deposed without knowing yet):
      // the higher term is the current leader.
      const known = led.get(group.partition);
      if (!known || group.term > known.term) led.set(group.partition, group);
    }
  }
  const replicated = led.size > 0;
  $("replication-section").hidden = !replicated;
  if (!replicated) return;
  // Every partition, also the last ones when nobody leads them now.
  const count = overview.partitions.length ? overview.partitions[0].owners.length
    : Math.max(...led.keys()) + 1;
  const rows = [];
  for (let partition = 0; partition < count; partition++) {
    const group = led.get(partition);
    if (!group) {
      rows.push(el("tr", { "data-partition": partition, "data-leader": "" },
        el("td", { class: "num" }, partition),
        el("td", { colspan: 5, class: "muted" }, "no leader reporting (an election, or its leader is down)")));
      continue;
    }
    const replicas = group.replicas.map((replica) => el("span", { class: "replica", title: "incarnation " + replica.replica },
      swatch(colors.get(replica.member) || "#ccc"), replica.member,
      replica.voter ? "" : " (learner)",
      replica.member === group.leader ? "" : " lag " + (replica.lag === null ? "?" : replica.lag), " "));
    rows.push(el("tr", { "data-partition": partition, "data-leader": group.leader || "" },
      el("td", { class: "num" }, partition),
      el("td", {}, swatch(colors.get(group.leader) || "#ccc"), group.leader || "–"),
      el("td", { class: "num" }, group.term),
      el("td", {}, ...replicas),
      el("td", {}, group.last_leader_change_ms_ago === null ? "none since start"
        : duration(group.last_leader_change_ms_ago)),
      el("td", { class: "num" }, group.leader_changes)));
  }
  fill($("replication").tBodies[0], rows);
  renderMoves(overview);
}

// One row per partition whose replicas are moving, as the node leading it reports the move.
function renderMoves(overview) {
  const moves = [];
  for (const report of overview.nodes) {
    if (!report.stats) continue;
    for (const move of report.stats.moves || []) moves.push(move);
  }
  moves.sort((a, b) => a.partition - b.partition);
  const rows = moves.map((move) => el("tr", { "data-partition": move.partition },
    el("td", { class: "num" }, move.partition),
    el("td", {}, move.from.join(", ") || "–"),
    el("td", {}, move.to.join(", ") || "–"),
    el("td", {}, move.stage),
    el("td", { class: "num" }, Math.round(move.progress * 100) + "%"),
    el("td", {}, duration(move.elapsed_ms))));
  fill($("moves").tBodies[0], rows.length ? rows
    : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "none: every partition's replicas are where placement puts them"))]);
}

// Draws one line per node (and a dashed one when `dashed` picks a second value).
function chart(target, overview, colors, solid, dashed) {
  const now = overview.at_ms;
  // The span shown: what is kept (up to 5 minutes), but at least a minute.
  let oldest = now;
  let top = 0;
  for (const points of history.values()) {
    if (points.length) oldest = Math.min(oldest, points[0].at_ms);
    for (const point of points) {
      top = Math.max(top, solid(point) || 0, dashed ? dashed(point) || 0 : 0);
    }
  }
  const span = Math.min(HISTORY_MS, Math.max(60 * 1000, now - oldest));
  const start = now - span;
  // Headroom above the highest point, where the scale label sits.
  const HEADROOM = 1.3;
  top = top > 0 ? top * HEADROOM : 1;
  const width = 300;
  const height = 100;
  const picture = svg("svg", { viewBox: "0 0 " + width + " " + height, preserveAspectRatio: "none" });
  const line = (points, pick, color, dash) => {
    const coordinates = [];
    for (const point of points) {
      const value = pick(point);
      if (value === null || value === undefined) continue;
      const x = ((point.at_ms - start) / span) * width;
      const y = height - (value / top) * height;
      coordinates.push(x.toFixed(1) + "," + y.toFixed(1));
    }
    if (coordinates.length < 2) return;
    picture.append(svg("polyline", { points: coordinates.join(" "), fill: "none", stroke: color,
      "stroke-width": 1.5, "vector-effect": "non-scaling-stroke",
      "stroke-dasharray": dash ? "4 3" : "none" }));
  };
  for (const [node, points] of history) {
    const color = colors.get(node) || "#888";
    line(points, solid, color, false);
    if (dashed) line(points, dashed, color, true);
  }
  const scale = el("span", { class: "scale" }, "max " + (top / HEADROOM).toFixed(top > 10 ? 0 : 2)
    + " · last " + Math.round(span / 60000) + " min");
  $(target).replaceChildren(picture, scale);
}

function renderCharts(overview, colors) {
  chart("chart-requests", overview, colors, (p) => p.requests_per_s);
  chart("chart-errors", overview, colors, (p) => p.server_errors_per_s, (p) => p.client_errors_per_s);
  chart("chart-latency", overview, colors, (p) => p.p99_ms, (p) => p.p50_ms);
  $("legend").replaceChildren(...overview.members.map((m) =>
    el("span", {}, swatch(colors.get(m.name)), m.name)));
}

// A service's name, with the aggregate kind only when it does not go without saying
// ("accounts", not "accounts · account").
function serviceOf(kind) {
  if (!kind.service) return kind.kind;
  return kind.service.startsWith(kind.kind) ? kind.service : kind.service + " · " + kind.kind;
}

function renderNodes(overview) {
  const cards = overview.nodes.map((report) => {
    if (!report.stats) {
      return el("div", { class: "card missing", "data-node": report.node },
        el("h3", {}, report.node), el("p", {}, "No report: " + (report.error || "unknown")));
    }
    const stats = report.stats;
    const live = stats.live;
    const store = live ? live.store : null;
    const aggregates = live ? live.aggregates : [];
    const rows = aggregates.map((kind) => el("tr", {},
      el("td", { title: "aggregate kind " + kind.kind }, serviceOf(kind)),
      el("td", { class: "num" }, kind.live),
      el("td", { class: "num" }, rate(kind.commands_per_s)),
      el("td", {}, Object.entries(kind.outcomes).filter(([, v]) => v > 0)
        .map(([outcome, v]) => outcome + " " + rate(v)).join(", ") || "–"),
      el("td", { class: "num" }, fixed(kind.p50_ms, 2)),
      el("td", { class: "num" }, fixed(kind.p99_ms, 2))));
    return el("div", { class: "card", "data-node": report.node },
      el("h3", {}, report.node, el("span", { class: "muted" },
        " · up " + uptime(stats.uptime_s) + " · log end " + stats.log_end
        + (live ? " · " + rate(live.http.requests_per_s) + " req/s" : ""))),
      el("div", { class: "store" }, !store ? "store: warming up"
        : store.commits_per_s === 0 ? "store: no commits in the last " + fixed(live.window_s, 0) + " s"
        : "store: " + rate(store.commits_per_s) + " commits/s, batches of "
          + fixed(store.operations_per_commit, 1) + " writes (" + fixed(store.events_per_commit, 1)
          + " events), fsync p50 " + fixed(store.fsync_p50_ms, 2) + " ms, p99 "
          + fixed(store.fsync_p99_ms, 2) + " ms"),
      el("table", {},
        el("thead", {}, el("tr", {}, el("th", {}, "Service"), el("th", { class: "num" }, "Live"),
          el("th", { class: "num" }, "Cmd/s"), el("th", {}, "Outcomes/s"),
          el("th", { class: "num" }, "p50 ms"), el("th", { class: "num" }, "p99 ms"))),
        el("tbody", {}, ...(rows.length ? rows
          : [el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no aggregates in memory"))]))));
  });
  $("node-cards").replaceChildren(...cards);
}

const SAGA_STATUSES = ["running", "compensating", "stuck", "completed", "compensated"];

function renderSagas(overview) {
  const totals = new Map();
  const stuck = [];
  for (const report of overview.nodes) {
    if (!report.stats) continue;
    for (const kind of report.stats.sagas.kinds) {
      const sum = totals.get(kind.kind) || Object.fromEntries(SAGA_STATUSES.map((s) => [s, 0]));
      for (const status of SAGA_STATUSES) sum[status] += kind[status];
      totals.set(kind.kind, sum);
    }
    for (const saga of report.stats.sagas.latest_stuck) stuck.push([report.node, saga]);
  }
  const missing = overview.nodes.filter((r) => !r.stats).map((r) => r.node);
  const truncated = overview.nodes.filter((r) => r.stats && r.stats.sagas.open_truncated)
    .map((r) => r.node);
  const rows = [...totals].map(([kind, sum]) => el("tr", { "data-kind": kind },
    el("td", {}, kind),
    ...SAGA_STATUSES.map((status) =>
      el("td", { class: "num", "data-status": status }, sum[status]))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted" }, "no sagas yet")));
  if (missing.length) {
    rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted" },
      "not counted: " + missing.join(", ") + " (no report)")));
  }
  if (truncated.length) {
    rows.push(el("tr", {}, el("td", { colspan: 6, class: "error-text" },
      "more open sagas than were read on " + truncated.join(", ")
      + ": running, compensating and stuck are at least these")));
  }
  fill($("saga-counts").tBodies[0], rows);
  stuck.sort((a, b) => (a[1].updated_at < b[1].updated_at ? 1 : -1));
  const stuckRows = stuck.slice(0, 10).map(([node, saga]) => el("tr", {},
    el("td", {}, node), el("td", {}, saga.kind), el("td", {}, el("code", {}, saga.id)),
    el("td", {}, saga.step || "–"), el("td", { class: "num" }, saga.attempts),
    el("td", {}, saga.last_error || "–"), el("td", {}, saga.updated_at)));
  fill($("stuck").tBodies[0], stuckRows.length ? stuckRows
    : [el("tr", {}, el("td", { colspan: 7, class: "muted" }, "none stuck"))]);
}

function renderProjections(overview) {
  const rows = [];
  for (const report of overview.nodes) {
    if (!report.stats) continue;
    for (const projection of report.stats.projections) {
      rows.push(el("tr", {}, el("td", {}, report.node), el("td", {}, projection.name),
        el("td", { class: "num" }, projection.applied === null ? "–" : projection.applied),
        el("td", { class: "num" }, projection.lag)));
    }
  }
  fill($("projection-lag").tBodies[0], rows.length ? rows
    : [el("tr", {}, el("td", { colspan: 4, class: "muted" }, "no read models on these nodes"))]);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim().replace(/^Bearer\s+/i, "");
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    $("login-error").hidden = true;
    poll();
  });
  $("forget").addEventListener("click", () => forget(null));
  // A hidden tab stops polling (nothing to look at, nothing to pay); it catches up on return.
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null && !inFlight) poll();
  });
  setInterval(freshness, 1000);
  if (token()) poll();
  else showLogin(null);
});
