/**
 * Generated hostile input, thrown at every parser of foreign data and at the
 * status server, with a fixed seed (FUZZ_SEED overrides it; the failing
 * input is printed): the lock value, member entries and switchover requests
 * anyone with KV write can put next to the lock; every Consul answer the
 * client reads (a proxy or a broken agent can send anything); and the HTTP
 * handler with what survives parsing in its state and member list, plus
 * markup planted in every string field as if a check had a hole.
 *
 * Checks: nothing throws but the declared error types; a parsed value has
 * exactly the declared types; the server never answers 500; the HTML holds
 * only the tags and attributes the template writes.
 */

import { describe, expect, test } from "bun:test";
import { realClock } from "./clock.ts";
import { Consul, type FetchLike, type KVPair } from "./consul/client.ts";
import { type MemberEntry, parseEntry } from "./consul/members.ts";
import { HISTORY_MAX, parseHistory, parsePause, parseSwitchover, parseValue } from "./election/lock-value.ts";
import type { ElectorState } from "./election/types.ts";
import { isConsulError } from "./errors.ts";
import { silentLogger } from "./log.ts";
import { createStatusHandler, type StatusSource } from "./status/server.ts";

const SEED = Number(process.env["FUZZ_SEED"] ?? 20261127);
/** Inputs per parser; the handler gets a tenth as many full requests. */
const N = 3000;

// ---------------------------------------------------------------- the generator

/** mulberry32: small, fast, seedable. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[int(0, xs.length - 1)]!;
  return { next, int, pick, chance: (p: number) => next() < p };
}
type Rng = ReturnType<typeof rng>;

/** Strings that have broken HTML pages, log lines and parsers before. */
const NASTY = [
  "<script>alert(1)</script>",
  "\"><img src=x onerror=alert(1)>",
  "'><svg onload=alert(1)>",
  "javascript:alert(1)",
  "</td></tr></table><iframe src=//evil.example>",
  "<style>body{display:none}</style>",
  "<meta http-equiv=refresh content=0;url=//evil.example>",
  "&lt;script&gt;",
  "${process.env}",
  "__proto__",
  "constructor",
  "\u0000\u0001\u001f",
  "\u202eevil",
  "\ud800",
  "💥".repeat(50),
  "a".repeat(600),
  "x".repeat(20_000),
  "",
  " ",
  "10.0.0.1:6379",
  "redis-n1-10.0.0.1-6379",
  "2026-01-01T00:00:00.000Z",
  "leader",
  "-1",
  "1e400",
];

function anyString(r: Rng): string {
  if (r.chance(0.6)) return r.pick(NASTY);
  const n = r.int(0, 40);
  let s = "";
  for (let i = 0; i < n; i++) s += String.fromCharCode(r.chance(0.8) ? r.int(32, 126) : r.int(0, 0xffff));
  return s;
}

function anyValue(r: Rng, depth = 0): unknown {
  const k = r.int(0, depth > 3 ? 4 : 7);
  switch (k) {
    case 0: return null;
    case 1: return r.chance(0.5);
    case 2: return r.pick([0, -0, 1, -1, 1.5, 2 ** 53, 2 ** 53 + 2, -(2 ** 60), 1e308, Number.MAX_SAFE_INTEGER, r.int(-1e9, 1e9)]);
    case 3:
    case 4: return anyString(r);
    case 5: return Array.from({ length: r.int(0, 5) }, () => anyValue(r, depth + 1));
    default: {
      const o: Record<string, unknown> = {};
      for (let i = r.int(0, 6); i > 0; i--) o[r.chance(0.3) ? r.pick(["__proto__", "constructor", "toString", "ID", "Key", "Value"]) : anyString(r).slice(0, 20)] = anyValue(r, depth + 1);
      return o;
    }
  }
}

/** A valid record with one to three fields replaced, deleted or joined by junk. */
function mutate(r: Rng, valid: Record<string, unknown>): Record<string, unknown> {
  const o: Record<string, unknown> = { ...valid };
  const keys = Object.keys(valid);
  for (let i = r.int(1, 3); i > 0; i--) {
    const key = r.pick(keys);
    const how = r.int(0, 3);
    if (how === 0) delete o[key];
    else if (how === 1) o[key] = anyValue(r);
    else if (how === 2) o[key] = r.pick(NASTY);
    else o[anyString(r).slice(0, 12)] = anyValue(r);
  }
  return o;
}

/** Text as it could sit in KV or arrive in an HTTP body: mostly JSON, sometimes broken. */
function text(r: Rng, valid: Record<string, unknown>): string {
  const k = r.int(0, 9);
  if (k < 5) return JSON.stringify(mutate(r, valid));
  if (k < 7) return JSON.stringify(anyValue(r));
  const t = JSON.stringify(mutate(r, valid));
  if (k === 7) return t.slice(0, r.int(0, t.length));
  if (k === 8) return r.pick(NASTY);
  return JSON.stringify(valid).replace(/"/, "'");
}

const VALID_MEMBER = {
  instance: "redis-n1-6379", service: "redis-n1-6379", role: "follower", eligible: true, redisUp: true, priority: 1, offset: 500,
  replid: "r", replid2: "", updated: "2026-01-01T00:00:00.000Z", address: "10.0.0.1:6379",
};
const VALID_LOCK = { session: "s1", instance: "redis-n1-6379", service: "redis-n1-6379", address: "10.0.0.1:6379", epoch: 7, released: "handover", prevAddress: "10.0.0.2:6379" };
const VALID_SWITCHOVER = { leader: "redis-n1-6379", to: "redis-n2-6379", requested: "2026-01-01T00:00:00.000Z" };
const VALID_PAUSE = { since: "2026-01-01T00:00:00.000Z", by: "ops@host", reason: "maintenance" };
const VALID_FAILOVER = { at: "2026-01-01T00:00:00.000Z", from: "redis-n1-6379", to: "redis-n2-6379", why: "handover", epoch: 3 };

const pair = (key: string, value: string, session?: string): KVPair => ({ Key: key, CreateIndex: 1, ModifyIndex: 2, LockIndex: 1, Flags: 0, Value: value, ...(session ? { Session: session } : {}) });

/** Runs `body` on inputs 0..n-1; a failure names the seed and the input. */
function each<T>(n: number, gen: (r: Rng) => T, body: (input: T) => void | Promise<void>): Promise<void> {
  const r = rng(SEED);
  return (async () => {
    for (let i = 0; i < n; i++) {
      const input = gen(r);
      try {
        await body(input);
      } catch (err) {
        const shown = JSON.stringify(input, null, 0) ?? String(input);
        throw new Error(`fuzz input #${i} (FUZZ_SEED=${SEED}) broke it: ${shown.slice(0, 400)}\n${err instanceof Error ? err.stack : String(err)}`);
      }
    }
  })();
}

/** Every declared field of a parsed record has the declared JS type. */
function typed(v: Record<string, unknown>, types: Record<string, "string" | "number" | "boolean">): void {
  for (const [k, t] of Object.entries(types)) if (v[k] !== undefined) expect([k, typeof v[k]]).toEqual([k, t]);
  for (const k of Object.keys(v)) expect(Object.keys(types)).toContain(k);
}

// ---------------------------------------------------------------- the KV parsers

describe(`KV parsers, ${N} inputs each (seed ${SEED})`, () => {
  test("member entries: a well-typed entry or a problem line, never a throw", async () => {
    let accepted = 0;
    await each(N, (r) => text(r, VALID_MEMBER), (t) => {
      const e = parseEntry(pair("k/members/x", t, "s"));
      if (typeof e === "string") expect(e.length).toBeLessThan(400);
      else if (e) {
        accepted++;
        typed(e.member as unknown as Record<string, unknown>, {
          instance: "string", service: "string", node: "string", address: "string", role: "string", eligible: "boolean", redisUp: "boolean",
          priority: "number", offset: "number", replid: "string", replid2: "string", updated: "string", incarnation: "string", host: "string",
          pid: "number", claim: "string", ineligible: "string",
        });
        expect(Number.isSafeInteger(e.member.offset) && e.member.offset >= 0).toBe(true);
      }
    });
    expect(accepted).toBeGreaterThan(N / 20); // the generator does produce valid ones
  });

  test("lock values: a well-typed value or null, reported, never a throw", async () => {
    await each(N, (r) => text(r, VALID_LOCK), (t) => {
      const problems: string[] = [];
      const v = parseValue(pair("k", t, "s1"), (p) => problems.push(p));
      if (v === null) expect(problems.length).toBe(t === "" ? 0 : 1);
      else {
        typed(v as unknown as Record<string, unknown>, {
          session: "string", instance: "string", service: "string", address: "string", epoch: "number", replid: "string", runId: "string",
          handoverTo: "string", fencedOffset: "number", incarnation: "string", prevAddress: "string", prevInstance: "string", prevReleased: "string",
          prevFencedOffset: "number", released: "string", since: "string",
        });
        for (const s of [v.session, v.instance, v.service]) expect(s.length).toBeLessThanOrEqual(512);
      }
    });
  });

  test("switchover requests: a well-typed request or absent, never a throw", async () => {
    await each(N, (r) => text(r, VALID_SWITCHOVER), (t) => {
      const s = parseSwitchover(pair("k/switchover", t));
      if (s) typed(s as unknown as Record<string, unknown>, { leader: "string", to: "string", requested: "string" });
    });
  });

  test("pause flags: a present key always pauses, with a well-typed record, never a throw", async () => {
    await each(N, (r) => text(r, VALID_PAUSE), (t) => {
      const p = parsePause(pair("k/pause", t));
      expect(p).toBeDefined();
      typed(p as unknown as Record<string, unknown>, { since: "string", by: "string", reason: "string" });
    });
  });

  test("failover histories: well-typed entries only, bounded, never a throw", async () => {
    await each(N, (r) => (r.chance(0.5) ? `[${Array.from({ length: r.int(0, 30) }, () => JSON.stringify(r.chance(0.7) ? VALID_FAILOVER : mutate(r, VALID_FAILOVER))).join(",")}]` : text(r, VALID_FAILOVER)), (t) => {
      const list = parseHistory(pair("k/history", t), () => {});
      expect(list.length).toBeLessThanOrEqual(HISTORY_MAX);
      for (const f of list) {
        const { from, ...rest } = f;
        typed(rest as unknown as Record<string, unknown>, { at: "string", to: "string", why: "string", epoch: "number" });
        expect(from === null || typeof from === "string").toBe(true);
      }
    });
  });
});

// ---------------------------------------------------------------- Consul's answers

describe(`Consul answers, ${N / 10} per route (seed ${SEED})`, () => {
  const calls: [string, Record<string, unknown> | unknown[], (c: Consul) => Promise<unknown>][] = [
    ["kvGet", [{ Key: "k", CreateIndex: 1, ModifyIndex: 2, LockIndex: 0, Flags: 0, Value: btoa("{}"), Session: "s" }], (c) => c.kvGet("k")],
    ["kvList", [{ Key: "k/a", CreateIndex: 1, ModifyIndex: 2, LockIndex: 0, Flags: 0, Value: null }], (c) => c.kvList("k/")],
    ["sessionInfo", [{ ID: "s", Node: "n", LockDelay: 0, Behavior: "release", TTL: "15s", CreateIndex: 1, ModifyIndex: 1 }], (c) => c.sessionInfo("s")],
    ["sessionRenew", [{ ID: "s", Node: "n", LockDelay: 0, Behavior: "release", TTL: "15s", CreateIndex: 1, ModifyIndex: 1 }], (c) => c.sessionRenew("s")],
    ["sessionCreate", { ID: "s" }, (c) => c.sessionCreate({ Name: "x", TTL: "15s", LockDelay: "0s", Behavior: "release", NodeChecks: [] })],
    ["agentService", { ID: "x", Service: "redis", Tags: ["primary"], Meta: { session: "s" }, Port: 6379, Address: "", EnableTagOverride: true, ContentHash: "h" }, (c) => c.agentService("x")],
    ["agentServices", { x: { ID: "x", Service: "redis", Tags: [], Meta: {}, Port: 1, Address: "" } }, (c) => c.agentServices()],
    ["agentChecks", { c: { CheckID: "c", Status: "passing", ServiceID: "x", Name: "n" } }, (c) => c.agentChecks()],
    ["healthService", [{ Node: { Node: "n", Address: "a" }, Service: { ID: "x", Service: "redis", Tags: [], Meta: {}, Port: 1, Address: "" }, Checks: [] }], (c) => c.healthService("redis")],
    ["catalogService", [{ Node: "n", Address: "a", ServiceID: "x", ServiceName: "redis", ServiceTags: [], ServiceAddress: "", ServicePort: 1, ServiceMeta: {}, ServiceEnableTagOverride: true }], (c) => c.catalogService("redis")],
    ["queryList", [{ ID: "q", Name: "redis", Service: { Service: "redis", Tags: ["primary"], OnlyPassing: true } }], (c) => c.queryList()],
    ["agentSelf", { Config: { NodeName: "n", Datacenter: "dc1" }, DebugConfig: { Experiments: [] } }, (c) => c.agentSelf()],
  ];

  for (const [name, valid, call] of calls) {
    test(`${name}: resolves with the declared shape or rejects with a ConsulError, never anything else`, async () => {
      await each(N / 10, (r) => {
        const v = Array.isArray(valid) ? (r.chance(0.7) ? valid.map((x) => mutate(r, x as Record<string, unknown>)) : anyValue(r)) : mutate(r, valid);
        return r.chance(0.1) ? r.pick(NASTY) : JSON.stringify(v);
      }, async (body) => {
        const fetch: FetchLike = async () => new Response(body, { status: 200, headers: { "X-Consul-Index": "5" } });
        const consul = new Consul({ address: { baseUrl: "http://127.0.0.1:8500", https: false } }, { fetch, clock: realClock, log: silentLogger }, 1000);
        try {
          await call(consul);
        } catch (err) {
          if (!isConsulError(err)) throw err;
          expect(err.code).toBe("CONSUL_BAD_RESPONSE");
        }
      });
    });
  }
});

// ---------------------------------------------------------------- the status server

/** Tags the overview template writes; anything else in the HTML came from data. */
const TEMPLATE_TAGS = new Set(["html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "p", "code", "main", "div", "section", "table", "thead", "tbody", "tr", "th", "td", "span", "b", "ul", "li", "footer", "a"]);

function checkHtml(html: string): void {
  for (const m of html.matchAll(/<\/?([a-zA-Z][a-zA-Z0-9-]*)([^>]*)>/g)) {
    expect(TEMPLATE_TAGS.has(m[1]!.toLowerCase()), `tag <${m[1]}> in the page`).toBe(true);
    expect(/\son[a-z]+\s*=/i.test(m[2]!), `event handler attribute in <${m[1]}${m[2]}>`).toBe(false);
    expect(/javascript:/i.test(m[2]!), `javascript: URL in <${m[1]}${m[2]}>`).toBe(false);
  }
  expect(html.match(/<style>/g)?.length).toBe(1);
  expect(html.match(/<meta /g)?.length).toBe(3);
}

function state(r: Rng, lock: ReturnType<typeof parseValue>): ElectorState {
  // Strings an elector could carry from foreign data (a lock value's instance in a reason), and markup planted anyway.
  const s = () => (r.chance(0.5) ? r.pick(NASTY) : lock?.instance ?? "node-1");
  return {
    role: r.pick(["leader", "follower", "candidate", "fenced", "starting"] as const),
    instance: "node-2",
    service: "redis-node-2",
    session: "sess",
    lock: lock ? { holder: r.chance(0.5) ? "sess" : lock.session, instance: lock.instance, address: lock.address ?? null, epoch: lock.epoch ?? null, modifyIndex: 5 } : null,
    epoch: r.chance(0.5) ? 7 : null,
    fenceInMs: r.pick([null, 100, -50]),
    decision: { kind: r.pick(["follow", "lead", "wait"] as const), reason: `${s()} holds the lock`, ageMs: 5 },
    redis: { up: r.chance(0.8), role: r.pick(["master", "replica"] as const), loading: false, syncing: false, linkUp: r.chance(0.5), masterAddr: r.chance(0.5) ? s() : null, offset: 5, replid: s(), replid2: "", runId: "x", writable: r.chance(0.5), stale: false, ...(r.chance(0.3) ? { error: s() } : {}) },
    consul: r.chance(0.8) ? { ok: true, error: null } : { ok: false, error: { code: "CONSUL_SERVER_ERROR", message: s() } },
    transitions: 1,
    lastRenewMs: 2,
    announce: "10.0.0.2:6379",
    loopAgeMs: r.pick([5, 1e9]),
    fenceAt: null,
    recent: Array.from({ length: r.int(0, 4) }, () => ({ time: s(), kind: "follow" as const, reason: s() })),
    lagBytes: r.pick([null, 0, 2 ** 40]),
    maintenance: r.chance(0.2),
    waiting: r.chance(0.2) ? s() : null,
    switchoverPending: false,
    incarnation: "i",
  } as ElectorState;
}

describe(`the status server, ${N / 10} requests per route (seed ${SEED})`, () => {
  test("never 500; HTML only with the template's own markup; /state is JSON", async () => {
    await each(N / 10, (r) => {
      const lock = parseValue(pair("k", text(r, VALID_LOCK), "s1"));
      const members = Array.from({ length: r.int(0, 6) }, (_, i) => parseEntry(pair(`k/members/${i}`, text(r, VALID_MEMBER), r.chance(0.7) ? "s" : undefined)))
        .filter((e): e is MemberEntry => typeof e === "object");
      return { st: state(r, lock), members, failMembers: r.chance(0.1), query: anyString(r).slice(0, 200) };
    }, async ({ st, members, failMembers, query }) => {
      const source: StatusSource = {
        state: () => st,
        requestSwitchover: () => st.role === "leader",
        members: async () => {
          if (failMembers) throw new Error(NASTY[0]);
          return members;
        },
        metrics: () => "# TYPE x gauge\nx 1\n",
      };
      const h = createStatusHandler(source, { version: "1", knobs: {}, livenessMaxAgeMs: 1000, maxLagBytes: 1024, serviceName: "redis", key: "k", now: () => 0 });
      // A URL carries bytes; a lone surrogate cannot be one, so it goes as U+FFFD, as a browser sends it.
      const q = encodeURIComponent(query.replace(/[\ud800-\udfff]/g, (c, i: number, all: string) => (/[\ud800-\udbff][\udc00-\udfff]/.test(all.slice(i, i + 2)) || /[\ud800-\udbff][\udc00-\udfff]/.test(all.slice(i - 1, i + 1)) ? c : "\ufffd")));
      for (const path of ["/", "/state", "/metrics", "/primary", "/replica", `/replica?lag=${q}`, "/readiness", "/liveness", `/${q}`]) {
        const res = await h(new Request(`http://127.0.0.1:8008${path}`));
        expect([path, res.status]).not.toEqual([path, 500]);
        const body = await res.text();
        if (path === "/") checkHtml(body);
        if (path === "/state") JSON.parse(body);
        if ((res.headers.get("Content-Type") ?? "").startsWith("text/html")) checkHtml(body);
      }
      const post = await h(new Request(`http://127.0.0.1:8008/switchover?to=${q}`, { method: "POST" }));
      expect(post.status).not.toBe(500);
    });
  });
});
