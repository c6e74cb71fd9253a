/**
 * The status HTTP server's routes as one handler, `(Request) => Promise<Response>`,
 * with no socket: main.ts passes it to Bun.serve, tests call it directly.
 *
 *   GET /health      200 while the process serves
 *   GET /liveness    200 while the election loop ticks (see `livenessMaxAgeMs`)
 *   GET /readiness   200 on a leader with a writable Redis or an in-sync replica
 *   GET /primary     200 only on the lock holder whose Redis is a writable primary
 *   GET /replica     200 only on a healthy replica; ?lag=16MB sets the lag limit
 *   GET /state       JSON: the elector's state, the knobs as set, the version
 *   GET /metrics     Prometheus text
 *   GET /            a self-contained HTML overview of the group
 *   POST /switchover ask this leader to hand over (?to=INSTANCE|HOST:PORT); 409 while paused
 *
 * The check routes answer 200 or 503 with a one-line reason, so they serve as
 * load balancer checks and Consul HTTP checks (Patroni's /primary and
 * /replica are the model); with `Accept: application/json` the same answer
 * comes as `{"ok", "status", "reason", "role", "instance"}`. Guarantees: no answer contains a secret (the knobs
 * come redacted from config.ts, and every body is scrubbed of the secret
 * values once more). Does not guarantee the answers agree with each other
 * exactly: each request reads the elector's state once, and it moves.
 */

import type { Timing } from "../config/config.ts";
import type { ElectorState } from "../election/types.ts";
import { describeError } from "../errors.ts";
import { sha256Base64 } from "../digest.ts";
import { pauseNote } from "../election/lock-value.ts";
import type { MemberEntry } from "../consul/members.ts";
import { PROMETHEUS_CONTENT_TYPE } from "./metrics.ts";

/** What the handler reads and asks; main.ts wires it to the elector, Consul and the metrics. */
export interface StatusSource {
  /** What the elector believes now (`Elector.state()`). */
  state(): ElectorState;
  /** `Elector.requestSwitchover`: false when this sidecar does not lead. */
  requestSwitchover(to?: string): boolean;
  /** The group's member entries (`readMembers`); a Consul read, so it may be slow or throw. */
  members(): Promise<MemberEntry[]>;
  /** Prometheus text for this state (`SidecarMetrics.render`). */
  metrics(state: ElectorState): string;
}

export interface StatusOptions {
  version: string;
  /** The knobs as set, secrets already redacted (`Config.effective`). */
  knobs: Readonly<Record<string, string>>;
  /** A loop older than this fails /liveness; `livenessMaxAgeMs(config.timing)`. */
  livenessMaxAgeMs: number;
  /** CONSUL_LEADER_MAX_LAG: the lag limit of /readiness and of /replica without ?lag. Unused in tags-only mode. */
  maxLagBytes: number;
  serviceName: string;
  key: string;
  /** Wall clock, for the overview's "as of" line. */
  now: () => number;
  /** Secret values (token, password) scrubbed from every body, behind the redaction in `knobs`. */
  secrets?: readonly string[];
}

/**
 * How long the loop may go without finishing a tick before /liveness fails:
 * 2 x CONSUL_LEADER_SLEEP + the request timeout.
 *
 * A healthy loop finishes a tick, sleeps at most SLEEP (less when something
 * changes), then applies one decision. The first SLEEP is that idle wait; the
 * second is room for an apply that takes long without being stuck (several
 * Consul and Redis calls, the 100 ms candidate gather, a catch-up before a
 * promotion). The request timeout covers a Consul call that hangs until it
 * times out, which ends the tick with an error and counts as a tick. With the
 * defaults (SLEEP 10s, CHECK_TTL 5s, so a 1.25s timeout) that is 21.25s.
 *
 * Not covered: after repeated failures the elector backs off up to 5 s
 * between attempts, so with SLEEP under 2.5 s a long Consul outage can fail
 * /liveness although the loop is alive.
 */
export function livenessMaxAgeMs(t: Pick<Timing, "sleepMs" | "requestTimeoutMs">): number {
  return 2 * t.sleepMs + t.requestTimeoutMs;
}

/** The document /state serves and SIGUSR1 logs: the elector's state, plus the knobs as set and the version. */
export function stateDocument(s: ElectorState, info: { version: string; knobs: Readonly<Record<string, string>> }): Record<string, unknown> {
  return { version: info.version, ...s, knobs: info.knobs };
}

/** A check's verdict and the sentence that explains it. */
export interface Verdict {
  ok: boolean;
  reason: string;
}

/** /primary: holds the lock, leads, and its Redis (if managed) is a writable master. */
export function primaryVerdict(s: ElectorState): Verdict {
  if (s.role !== "leader") return { ok: false, reason: `not the primary: this node is ${s.role}${leaderNote(s)}` };
  if (!s.session || s.lock?.holder !== s.session) return { ok: false, reason: "not the primary: the lock is not held by this node's session" };
  const r = s.redis;
  if (r && !r.up) return { ok: false, reason: `not the primary: Redis down${r.error ? ` (${r.error})` : ""}` };
  if (r && !r.writable) return { ok: false, reason: `not the primary: Redis is not a writable master (role ${r.role}${r.loading ? ", loading" : ""})` };
  return { ok: true, reason: `primary: holds the lock (epoch ${s.epoch ?? s.lock?.epoch ?? "?"})${r ? ", Redis writable" : ""}` };
}

/**
 * /replica: follows the current holder and, with Redis, replicates from its
 * Redis with the link up, not loading or syncing, within `maxLagBytes`. An
 * unknown lag (the leader's Redis did not answer the lag probe) passes, as it
 * does for the elector's replica tag.
 */
export function replicaVerdict(s: ElectorState, maxLagBytes: number): Verdict {
  if (s.role !== "follower") return { ok: false, reason: `not a replica: this node is ${s.role}${leaderNote(s)}` };
  const r = s.redis;
  if (!r) return { ok: true, reason: `replica: follows ${s.lock?.instance ?? "the leader"}` };
  const bad = !r.up ? `Redis down${r.error ? ` (${r.error})` : ""}`
    : r.role !== "replica" ? "Redis is a master"
    : r.loading ? "Redis is loading its dataset"
    : r.syncing ? "Redis is syncing with the primary"
    : !r.linkUp ? "the replication link is down"
    : s.lock?.address && r.masterAddr !== s.lock.address ? `Redis replicates from ${r.masterAddr ?? "nothing"}, not the leader's ${s.lock.address}`
    : s.lagBytes !== null && s.lagBytes > maxLagBytes ? `lags ${s.lagBytes} bytes behind the primary (limit ${maxLagBytes})`
    : undefined;
  if (bad) return { ok: false, reason: `not a healthy replica: ${bad}` };
  return { ok: true, reason: `replica of ${r.masterAddr}, ${s.lagBytes === null ? "lag unknown" : `${s.lagBytes} bytes behind`}` };
}

/**
 * /readiness: a healthy primary or a healthy replica (tags-only: leading or
 * following). Not ready says the first thing an operator must fix: Redis
 * down, then why writes are blocked (a fence), then the role.
 */
export function readinessVerdict(s: ElectorState, maxLagBytes: number): Verdict {
  if (s.redis && !s.redis.up) return { ok: false, reason: `not ready: Redis down${s.redis.error ? ` (${s.redis.error})` : ""}` };
  if (s.role === "fenced" && s.fenced) return { ok: false, reason: `not ready: fenced: ${s.fenced.reason}` };
  const v = s.role === "leader" ? primaryVerdict(s) : replicaVerdict(s, maxLagBytes);
  return { ok: v.ok, reason: v.ok ? `ready: ${v.reason}` : `not ready: ${v.reason.replace(/^not (the primary|a replica|a healthy replica): /, "")}` };
}

/** /liveness: the loop ticked within `maxAgeMs`, and a leader is not past its fencing deadline (the fencing timer did not fire). */
export function livenessVerdict(s: ElectorState, maxAgeMs: number): Verdict {
  if (s.loopAgeMs > maxAgeMs) return { ok: false, reason: `the election loop last finished a tick ${s.loopAgeMs} ms ago (limit ${maxAgeMs} ms): stuck` };
  if (s.role === "leader" && s.fenceInMs !== null && s.fenceInMs < 0) {
    return { ok: false, reason: `leading ${-s.fenceInMs} ms past the fencing deadline: the fencing timer did not fire` };
  }
  return { ok: true, reason: `alive: the election loop finished a tick ${s.loopAgeMs} ms ago (limit ${maxAgeMs} ms)` };
}

/**
 * Bytes from "1048576", "16kB", "1MB", "2 GB": units are powers of 1024, as
 * Patroni's ?lag= (PostgreSQL memory units) reads them; case is ignored.
 * Undefined when the text is not a size.
 */
export function parseBytes(text: string): number | undefined {
  const m = /^\s*(\d+)\s*(b|k|kb|kib|m|mb|mib|g|gb|gib|t|tb|tib)?\s*$/i.exec(text);
  if (!m) return undefined;
  const power = { b: 0, k: 1, m: 2, g: 3, t: 4 }[(m[2] ?? "b")[0]!.toLowerCase() as "b" | "k" | "m" | "g" | "t"];
  const n = Number(m[1]) * 1024 ** power;
  return Number.isSafeInteger(n) ? n : undefined;
}

interface Answer {
  status: number;
  body: string;
  type: string;
  headers?: Record<string, string>;
  /** Extra fields for the JSON form of a text answer (Accept: application/json). */
  data?: Record<string, unknown>;
}

/** True when the request asks for JSON (Accept: application/json, also among others). */
function wantsJson(req: Request): boolean {
  return /(^|[\s,])application\/json\b/i.test(req.headers.get("Accept") ?? "");
}

/**
 * A text answer as JSON for a client that asked for it: `{ok, status,
 * reason}` plus the answer's extra fields. Other answers are kept as they are.
 */
export function asJson(a: { status: number; body: string; type: string; data?: Record<string, unknown> }): { body: string; type: string } {
  if (a.type !== TEXT) return { body: a.body, type: a.type };
  return { body: JSON.stringify({ ok: a.status < 400, status: a.status, reason: a.body.trim(), ...a.data }) + "\n", type: "application/json; charset=utf-8" };
}

const TEXT = "text/plain; charset=utf-8";
const GET = ["GET", "HEAD"];

/** Builds the handler; see the module comment for the routes. */
export function createStatusHandler(source: StatusSource, opts: StatusOptions): (req: Request) => Promise<Response> {
  const scrub = scrubber(opts.secrets ?? []);
  const text = (status: number, body: string, headers?: Record<string, string>): Answer => ({ status, body: body + "\n", type: TEXT, ...(headers ? { headers } : {}) });
  const withState = (fn: (s: ElectorState) => Answer): Answer => fn(source.state());
  const verdict = (v: Verdict, s?: ElectorState): Answer => ({ ...text(v.ok ? 200 : 503, v.reason), ...(s ? { data: { role: s.role, instance: s.instance } } : {}) });

  const routes: Record<string, { methods: string[]; handle: (url: URL, req: Request) => Answer | Promise<Answer> }> = {
    "/health": { methods: GET, handle: () => text(200, "ok") },
    "/liveness": { methods: GET, handle: () => withState((s) => verdict(livenessVerdict(s, opts.livenessMaxAgeMs), s)) },
    "/readiness": { methods: GET, handle: () => withState((s) => verdict(readinessVerdict(s, opts.maxLagBytes), s)) },
    "/primary": { methods: GET, handle: () => withState((s) => verdict(primaryVerdict(s), s)) },
    "/replica": {
      methods: GET,
      handle: (url) => {
        const lagText = url.searchParams.get("lag");
        const lag = lagText === null ? opts.maxLagBytes : parseBytes(lagText);
        if (lag === undefined) return text(400, `lag=${lagText}: not a size; write bytes, or e.g. 16kB, 1MB (powers of 1024)`);
        return withState((s) => verdict(replicaVerdict(s, lag), s));
      },
    },
    "/state": {
      methods: GET,
      handle: () => ({ status: 200, body: JSON.stringify(stateDocument(source.state(), opts), null, 2) + "\n", type: "application/json; charset=utf-8" }),
    },
    "/metrics": { methods: GET, handle: () => ({ status: 200, body: source.metrics(source.state()), type: PROMETHEUS_CONTENT_TYPE }) },
    "/": { methods: GET, handle: async () => ({ status: 200, body: await overviewHtml(source, opts), type: "text/html; charset=utf-8" }) },
    "/switchover": { methods: ["POST"], handle: (url) => switchover(source, url, text) },
  };

  return async (req: Request): Promise<Response> => {
    const url = new URL(req.url);
    const route = routes[url.pathname];
    let a: Answer;
    if (!route) a = text(404, `not found: ${url.pathname} (routes: ${Object.keys(routes).join(" ")})`);
    else if (!route.methods.includes(req.method)) a = text(405, `${req.method} is not allowed on ${url.pathname}; use ${route.methods[0]}`, { Allow: route.methods.join(", ") });
    else {
      try {
        a = await route.handle(url, req);
      } catch (err) {
        a = text(500, `${url.pathname} failed: ${describeError(err)}`);
      }
    }
    const out = wantsJson(req) ? asJson(a) : a;
    return new Response(scrub(out.body), { status: a.status, headers: { "Content-Type": out.type, "Cache-Control": "no-store", Vary: "Accept", ...a.headers } });
  };
}

/**
 * POST /switchover. Checks what it can before asking the elector, so a typo in
 * ?to= is a 409 instead of a hand-over to whoever wins: this node must lead,
 * and the target (or, without one, some member) must be eligible with a live
 * session. Who may ask at all is guard.ts's to check.
 */
async function switchover(source: StatusSource, url: URL, text: (status: number, body: string) => Answer): Promise<Answer> {
  const s = source.state();
  if (s.paused) return text(409, `the group is paused${pauseNote(s.paused)}: no switchover until consul-leader resume`);
  if (s.role !== "leader") return text(409, `not the leader: this node is ${s.role}${leaderNote(s)}; send the request to the leader`);
  const to = url.searchParams.get("to") || undefined;
  if (to && (to === s.instance || to === s.announce)) return text(409, `${to} already leads; nothing to hand over`);
  let members: MemberEntry[];
  try {
    members = await source.members();
  } catch (err) {
    return text(503, `cannot read the group's members from Consul: ${describeError(err)}`);
  }
  const eligible = members.filter((e) => e.session && e.member.eligible && e.member.instance !== s.instance);
  if (to && !eligible.some((e) => e.member.instance === to || e.member.address === to)) {
    return text(409, `${to} is not an eligible member with a live session; eligible: ${eligible.map((e) => e.member.instance).join(", ") || "none"}`);
  }
  if (!to && eligible.length === 0) return text(409, "no eligible member with a live session to hand over to");
  if (!source.requestSwitchover(to)) return text(503, "this node stopped leading before the request was taken; ask the current leader");
  return text(202, `switchover requested: ${s.instance} (epoch ${s.epoch ?? "?"}) hands over to ${to ?? "the most caught-up replica"}`);
}

function leaderNote(s: ElectorState): string {
  const l = s.lock;
  return l?.holder && l.instance && l.instance !== s.instance ? `; ${l.instance} leads` : "";
}

/** Replaces every secret (raw, JSON-escaped, HTML-escaped, URL-encoded) with [redacted]. */
function scrubber(secrets: readonly string[]): (body: string) => string {
  const forms = [...new Set(secrets.filter((s) => s.length > 0).flatMap((s) => [s, JSON.stringify(s).slice(1, -1), escapeHtml(s), encodeURIComponent(s)]))]
    .sort((a, b) => b.length - a.length);
  return (body) => forms.reduce((acc, f) => acc.split(f).join("[redacted]"), body);
}

// ---------------------------------------------------------------- the HTML overview

/** The overview's one style sheet, inline so the page stands alone; the CSP allows exactly this text. */
const STYLE = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}header p{margin:4px 0 0;color:#b8c0d0;font-size:13px}
main{padding:16px 24px;max-width:1200px}.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(300px,1fr));gap:16px}
section{background:#fff;border:1px solid #dde1e8;border-radius:6px;padding:12px 16px;margin-bottom:16px}h2{font-size:15px;margin:0 0 8px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #eef0f4;vertical-align:top}
section>table th{color:#5b6475;font-weight:600;white-space:nowrap}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.holder{background:#eefaf1}.role{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;background:#e4e7ee;color:#333}
.role-leader{background:#1f9d55;color:#fff}.role-follower{background:#3b6fd8;color:#fff}.role-candidate{background:#d89b1f;color:#fff}.role-fenced{background:#c0392b;color:#fff}
.lockmark{font-size:12px;color:#1f7a44;font-weight:600}.ok{color:#1f7a44;font-weight:600}.bad{color:#c0392b;font-weight:600}.dim{color:#7a8292;font-size:12px}
ul{margin:0;padding-left:18px}code{font-size:12px}footer{color:#7a8292;font-size:12px;padding:0 24px 16px}
`;

/**
 * The Content-Security-Policy of every status answer: nothing may load or
 * run (no script at all), the overview's own style sheet is allowed by its
 * hash, no page may frame it and no form may post from it.
 */
export function overviewCsp(): string {
  const hash = sha256Base64(STYLE);
  return `default-src 'none'; style-src 'sha256-${hash}'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'`;
}

/** Seconds between reloads of the overview; the state changes in milliseconds, a person reads in seconds. */
const REFRESH_S = 5;

async function overviewHtml(source: StatusSource, opts: StatusOptions): Promise<string> {
  const s = source.state();
  let members: MemberEntry[] = [];
  let membersError: string | undefined;
  try {
    members = (await source.members()).sort((a, b) => a.member.instance.localeCompare(b.member.instance));
  } catch (err) {
    membersError = describeError(err);
  }
  const holder = s.lock?.holder ? s.lock.instance : null;
  const h = escapeHtml;
  const row = (k: string, v: string, id?: string) => `<tr><th>${h(k)}</th><td${id ? ` id="${id}"` : ""}>${v}</td></tr>`;
  const badge = (role: string) => `<span class="role role-${h(role)}">${h(role)}</span>`;
  const yes = (b: boolean) => (b ? `<span class="ok">yes</span>` : `<span class="bad">no</span>`);
  const ms = (n: number | null) => (n === null ? "-" : n < 1000 ? `${n} ms` : `${(n / 1000).toFixed(1)} s`);
  const r = s.redis;
  const checks = [
    ["primary", primaryVerdict(s)],
    ["replica", replicaVerdict(s, opts.maxLagBytes)],
    ["readiness", readinessVerdict(s, opts.maxLagBytes)],
    ["liveness", livenessVerdict(s, opts.livenessMaxAgeMs)],
  ] as const;

  const node = [
    row("Instance", h(s.instance), "self-instance"),
    row("Role", badge(s.role), "self-role"),
    row("Announce", h(s.announce ?? "-")),
    row("Redis", r ? `${h(r.role)}, ${r.up ? "up" : `<span class="bad">down</span>`}${r.writable ? ", writable" : ""}${r.loading ? ", loading" : ""}${r.syncing ? ", syncing" : ""}${r.role === "replica" ? `, link ${r.linkUp ? "up" : `<span class="bad">down</span>`}` : ""}` : "not managed (tags only)"),
    ...(r ? [row("Offset", String(r.offset)), row("Lag", s.lagBytes === null ? "-" : `${s.lagBytes} bytes`)] : []),
    row("Consul", s.consul.ok ? `<span class="ok">ok</span>` : `<span class="bad">${h(s.consul.error?.message ?? "failing")}</span>`),
    row("Loop", `ticked ${ms(s.loopAgeMs)} ago`),
    row("Fencing deadline", s.fenceInMs === null ? "-" : `in ${ms(s.fenceInMs)}`),
    row("Maintenance", s.maintenance ? `<span class="bad">yes: not competing; a leader hands over</span>` : "no"),
    row("Group paused", s.paused ? `<span class="bad">yes${h(pauseNote(s.paused))}: no failover, no switchover</span>` : "no"),
  ].join("");
  const lock = [
    row("Holder", holder ? h(holder) : `<span class="bad">nobody</span>`, "lock-holder"),
    row("Address", h(s.lock?.address ?? "-")),
    row("Epoch", h(String(s.lock?.epoch ?? "-")), "lock-epoch"),
    row("Key", h(opts.key)),
  ].join("");
  const decision = s.decision
    ? `<p><b>${h(s.decision.kind)}</b>: ${h(s.decision.reason)} <span class="dim">(${ms(s.decision.ageMs)} ago)</span></p>`
    : `<p class="dim">no decision yet</p>`;
  const checkList = checks.map(([name, v]) => `<li><code>/${name}</code> ${v.ok ? `<span class="ok">200</span>` : `<span class="bad">503</span>`} ${h(v.reason)}</li>`).join("");

  const memberRows = members.map((e) => {
    const m = e.member;
    const lead = m.instance === holder;
    return `<tr data-instance="${h(m.instance)}"${lead ? ` class="holder"` : ""}><td>${h(m.instance)}${m.instance === s.instance ? ` <span class="dim">(this node)</span>` : ""}</td>` +
      `<td>${lead ? `${badge("leader")} <span class="lockmark">holds the lock</span>` : badge(m.role)}</td><td>${h(m.address ?? "-")}</td>` +
      `<td>${m.redisUp ? "up" : `<span class="bad">down</span>`}</td><td>${yes(m.eligible)}</td><td class="num">${m.offset}</td><td class="num">${m.priority}</td>` +
      `<td>${e.session ? "live" : `<span class="bad">gone</span>`}</td><td class="dim">${h(m.updated)}</td></tr>`;
  }).join("");
  const membersTable = membersError
    ? `<p class="bad">Cannot read the members from Consul: ${h(membersError)}</p>`
    : members.length === 0
    ? `<p class="dim">No member has published its entry yet.</p>`
    : `<table id="members"><thead><tr><th>Instance</th><th>Role</th><th>Redis address</th><th>Redis</th><th>Eligible</th><th>Offset at publish</th><th>Priority</th><th>Session</th><th>Published</th></tr></thead><tbody>${memberRows}</tbody></table>` +
      `<p class="dim">Roles and offsets are as each member last published them (on a change of role or eligibility, and when standing for the lock), not live.</p>`;
  const recent = [...s.recent].reverse().map((d) => `<tr><td class="dim">${h(d.time)}</td><td><b>${h(d.kind)}</b></td><td>${h(d.reason)}</td></tr>`).join("");

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="refresh" content="${REFRESH_S}">
<title>${h(opts.serviceName)}: ${h(s.instance)} (${h(s.role)})</title>
<style>${STYLE}</style></head>
<body>
<header><h1>consul-leader &middot; ${h(opts.serviceName)}</h1><p>key <code>${h(opts.key)}</code> &middot; version ${h(opts.version)} &middot; as of ${h(new Date(opts.now()).toISOString())} &middot; reloads every ${REFRESH_S} s</p></header>
<main>
<div class="grid">
<section id="node"><h2>This node</h2><table>${node}</table></section>
<section id="lock"><h2>Lock</h2><table>${lock}</table></section>
<section id="checks"><h2>Decision and checks</h2>${decision}<ul>${checkList}</ul></section>
</div>
<section id="group"><h2>Members</h2>${membersTable}</section>
<section id="recent"><h2>Recent decisions</h2>${recent ? `<table><tbody>${recent}</tbody></table>` : `<p class="dim">none yet</p>`}</section>
</main>
<footer><a href="/state">/state</a> (JSON) &middot; <a href="/metrics">/metrics</a> &middot; checks: /primary /replica /readiness /liveness &middot; POST /switchover[?to=INSTANCE]</footer>
</body></html>
`;
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}
