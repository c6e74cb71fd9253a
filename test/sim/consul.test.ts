/**
 * The simulated Consul datacenter, driven through the production client
 * (src/consul/client.ts) exactly as the sidecar drives the real one.
 */

import { describe, expect, test } from "bun:test";
import { Consul, type SessionRequest } from "../../src/consul/client.ts";
import { isConsulError } from "../../src/errors.ts";
import { silentLogger } from "../../src/log.ts";
import { SimConsul } from "./consul.ts";
import { Scheduler } from "./scheduler.ts";

const KEY = "consul-leader/redis/lock";

function world(seed = 1, nodes = ["n1", "n2"]) {
  const sched = new Scheduler(seed);
  const sim = new SimConsul(sched, { nodes });
  const client = (owner: string, node: string, timeoutMs = 1000) =>
    new Consul({ address: { baseUrl: "http://127.0.0.1:8500", https: false } }, { fetch: sim.fetchFor(owner, node), clock: sched.clock(owner), log: silentLogger }, timeoutMs);
  return { sched, sim, client };
}

interface Outcome<T> {
  done: boolean;
  value?: T;
  error?: unknown;
  at?: number;
}

/** Starts watching `p`; its outcome shows once the scheduler ran far enough. */
function track<T>(sched: Scheduler, p: Promise<T>): Outcome<T> {
  const o: Outcome<T> = { done: false };
  p.then(
    (value) => Object.assign(o, { done: true, value, at: sched.now }),
    (error: unknown) => Object.assign(o, { done: true, error, at: sched.now }),
  );
  return o;
}

/** Runs the scheduler until `p` settles (at most `limitMs` more); returns its value or throws its error. */
async function settle<T>(sched: Scheduler, p: Promise<T>, limitMs = 60_000): Promise<T> {
  const o = track(sched, p);
  const until = sched.now + limitMs;
  while (!o.done && (await sched.step(until))) {
    // each step lets the continuations it released run
  }
  if (!o.done) throw new Error(`still pending at ${sched.now}ms`);
  if ("error" in o) throw o.error;
  return o.value as T;
}

async function failure(sched: Scheduler, p: Promise<unknown>, limitMs = 60_000): Promise<unknown> {
  try {
    await settle(sched, p, limitMs);
  } catch (err) {
    return err;
  }
  throw new Error("expected a failure");
}

function req(over: Partial<SessionRequest> = {}): SessionRequest {
  return { Name: "test", TTL: "10s", LockDelay: "5s", Behavior: "release", NodeChecks: [], ...over };
}

describe("KV locks and lock-delay", () => {
  test("acquire, refuse a second session, release without lock-delay", async () => {
    const { sched, sim, client } = world();
    const c1 = client("n1/sidecar", "n1");
    const c2 = client("n2/sidecar", "n2");
    const s1 = await settle(sched, c1.sessionCreate(req()));
    const s2 = await settle(sched, c2.sessionCreate(req()));
    expect(await settle(sched, c1.kvAcquire(KEY, s1, "v1"))).toBe(true);
    expect(await settle(sched, c1.kvAcquire(KEY, s1, "v1b"))).toBe(true);
    expect(sim.kvGet(KEY)).toMatchObject({ Session: s1, LockIndex: 1, Value: "v1b" });
    expect(await settle(sched, c2.kvAcquire(KEY, s2, "v2"))).toBe(false);
    expect(await settle(sched, c1.kvRelease(KEY, s1, "released"))).toBe(true);
    const { pair } = await settle(sched, c2.kvGet(KEY));
    expect(pair).toMatchObject({ Value: "released", LockIndex: 1 });
    expect(pair?.Session).toBeUndefined();
    expect(await settle(sched, c2.kvAcquire(KEY, s2, "v2"))).toBe(true);
    expect(sim.kvGet(KEY)).toMatchObject({ Session: s2, LockIndex: 2 });
    expect(await settle(sched, c1.kvRelease(KEY, s1, "x"))).toBe(false);
  });

  test("an unknown session is a 500 'invalid session'", async () => {
    const { sched, client } = world();
    const err = await failure(sched, client("n1/sidecar", "n1").kvAcquire(KEY, "11111111-2222-3333-4444-555555555555", "v"));
    expect(isConsulError(err, "CONSUL_SERVER_ERROR")).toBe(true);
    expect((err as Error).message).toContain(`invalid session "11111111-2222-3333-4444-555555555555"`);
  });

  test("destroy arms lock-delay; acquires fail until it passes", async () => {
    const { sched, sim, client } = world();
    const c1 = client("n1/sidecar", "n1");
    const c2 = client("n2/sidecar", "n2");
    const s1 = await settle(sched, c1.sessionCreate(req()));
    const s2 = await settle(sched, c2.sessionCreate(req({ TTL: "60s" })));
    expect(await settle(sched, c1.kvAcquire(KEY, s1, "v1"))).toBe(true);
    await settle(sched, c1.sessionDestroy(s1));
    const until = sim.lockDelayUntil(KEY)!;
    expect(until).toBeGreaterThan(sched.now);
    expect(sim.kvGet(KEY)).toMatchObject({ Value: "v1", LockIndex: 1 });
    expect(sim.kvGet(KEY)?.Session).toBeUndefined();
    expect(await settle(sched, c2.kvAcquire(KEY, s2, "v2"))).toBe(false);
    await sched.runUntil(until - 20);
    expect(await settle(sched, c2.kvAcquire(KEY, s2, "v2"))).toBe(false);
    await sched.runUntil(until + 1);
    expect(await settle(sched, c2.kvAcquire(KEY, s2, "v2"))).toBe(true);
    expect(sim.kvGet(KEY)).toMatchObject({ Session: s2, LockIndex: 2 });
  });

  test("a TTL lapse releases the key and arms lock-delay", async () => {
    const { sched, sim, client } = world(7);
    const c1 = client("n1/sidecar", "n1");
    const c2 = client("n2/sidecar", "n2");
    const s1 = await settle(sched, c1.sessionCreate(req({ LockDelay: "3s" })));
    expect(await settle(sched, c1.kvAcquire(KEY, s1, "v1"))).toBe(true);
    const lapse = sim.sessions().find((s) => s.ID === s1)!.expiresAt!;
    await sched.runUntil(lapse + 1);
    expect(sim.sessions().some((s) => s.ID === s1)).toBe(false);
    expect(sim.kvGet(KEY)?.Session).toBeUndefined();
    expect(await settle(sched, c1.sessionRenew(s1))).toBeNull();
    const s2 = await settle(sched, c2.sessionCreate(req()));
    expect(await settle(sched, c2.kvAcquire(KEY, s2, "v2"))).toBe(false);
    await sched.runUntil(lapse + 3001);
    expect(await settle(sched, c2.kvAcquire(KEY, s2, "v2"))).toBe(true);
  });

  test("deleting a held key arms no lock-delay; Behavior delete removes the key", async () => {
    const { sched, sim, client } = world();
    const c1 = client("n1/sidecar", "n1");
    const c2 = client("n2/sidecar", "n2");
    const s1 = await settle(sched, c1.sessionCreate(req()));
    const s2 = await settle(sched, c2.sessionCreate(req()));
    expect(await settle(sched, c1.kvAcquire(KEY, s1, "v1"))).toBe(true);
    expect(await settle(sched, c1.kvDelete(KEY))).toBe(true);
    expect(await settle(sched, c2.kvAcquire(KEY, s2, "v2"))).toBe(true);
    expect(sim.kvGet(KEY)).toMatchObject({ Session: s2, LockIndex: 1 });

    const s3 = await settle(sched, c1.sessionCreate(req({ Behavior: "delete" })));
    expect(await settle(sched, c1.kvAcquire("other", s3, "x"))).toBe(true);
    await settle(sched, c1.sessionDestroy(s3));
    expect(sim.kvGet("other")).toBeNull();
    expect(sim.lockDelayUntil("other")).toBeGreaterThan(sched.now);
  });

  test("a plain PUT on a held key keeps the Session and resets LockIndex (as Consul 1.22.6 does)", async () => {
    const { sched, sim, client } = world();
    const c1 = client("n1/sidecar", "n1");
    const s1 = await settle(sched, c1.sessionCreate(req()));
    expect(await settle(sched, c1.kvAcquire(KEY, s1, "v1"))).toBe(true);
    sim.putKey(KEY, "garbage");
    expect(sim.kvGet(KEY)).toMatchObject({ Session: s1, LockIndex: 0, Value: "garbage" });
    expect(await settle(sched, c1.kvPut(KEY, "x", { cas: 0 }))).toBe(false);
    expect(await settle(sched, c1.kvPut("fresh", "x", { cas: 0 }))).toBe(true);
    const idx = sim.kvGet("fresh")!.ModifyIndex;
    expect(await settle(sched, c1.kvDelete("fresh", { cas: idx - 1 }))).toBe(false);
    expect(await settle(sched, c1.kvDelete("fresh", { cas: idx }))).toBe(true);
    expect(await settle(sched, c1.kvList("consul-leader/"))).toHaveLength(1);
    expect(await settle(sched, c1.kvList("nothing/"))).toEqual([]);
  });
});

describe("session TTL", () => {
  test("a session lapses between TTL and 2xTTL after its last renew, at a moment drawn per seed", async () => {
    const lapses: number[] = [];
    for (let seed = 1; seed <= 12; seed++) {
      const { sched, sim, client } = world(seed);
      const c = client("n1/sidecar", "n1");
      const sid = await settle(sched, c.sessionCreate(req()));
      await sched.runUntil(4000);
      const sent = sched.now;
      expect(await settle(sched, c.sessionRenew(sid))).toMatchObject({ ID: sid, TTL: "10s", LockDelay: 5e9 });
      const answered = sched.now;
      let gone: number | undefined;
      sched.afterEach = () => {
        if (gone === undefined && !sim.sessions().some((s) => s.ID === sid)) gone = sched.now;
      };
      await sched.runUntil(sent + 25_000);
      expect(gone).toBeDefined();
      expect(gone!).toBeGreaterThanOrEqual(answered - 10 + 10_000);
      expect(gone!).toBeLessThanOrEqual(sent + 20_000);
      lapses.push(gone! - sent);
    }
    expect(new Set(lapses.map(Math.round)).size).toBeGreaterThan(6);
  });

  test("session info answers an array, [] when unknown; destroy is idempotent", async () => {
    const { sched, client } = world();
    const c = client("n1/sidecar", "n1");
    const sid = await settle(sched, c.sessionCreate(req({ Name: "consul-leader:redis:a" })));
    expect(await settle(sched, c.sessionInfo(sid))).toMatchObject({ ID: sid, Name: "consul-leader:redis:a", Node: "n1", Behavior: "release", NodeChecks: [], ServiceChecks: null });
    await settle(sched, c.sessionDestroy(sid));
    await settle(sched, c.sessionDestroy(sid));
    expect(await settle(sched, c.sessionInfo(sid))).toBeNull();
  });

  test("a TTL out of range is refused as Consul words it", async () => {
    const { sched, client } = world();
    const err = await failure(sched, client("n1/sidecar", "n1").sessionCreate(req({ TTL: "5s" })));
    expect((err as Error).message).toContain("Invalid Session TTL '5000000000', must be between [10s=24h0m0s]");
  });
});

describe("blocking KV reads", () => {
  test("a blocking get returns when the key changes, and at the wait when it does not", async () => {
    const { sched, client } = world(3);
    const reader = client("n1/watch", "n1");
    const writer = client("n2/sidecar", "n2");
    expect(await settle(sched, writer.kvPut(KEY, "a"))).toBe(true);
    const first = await settle(sched, reader.kvGet(KEY));
    expect(first.pair?.Value).toBe("a");

    const started = sched.now;
    const changed = track(sched, reader.kvGet(KEY, { index: first.index, waitMs: 5000 }));
    await sched.runUntil(started + 100);
    expect(changed.done).toBe(false);
    await settle(sched, writer.kvPut(KEY, "b"));
    await sched.runUntil(sched.now + 20);
    expect(changed.done).toBe(true);
    expect(changed.value!.pair?.Value).toBe("b");
    expect(changed.value!.index).toBeGreaterThan(first.index);

    const quiet = sched.now;
    const timedOut = track(sched, reader.kvGet(KEY, { index: changed.value!.index, waitMs: 2000 }));
    await settle(sched, writer.kvPut("elsewhere", "x"));
    await sched.runUntil(quiet + 1990);
    expect(timedOut.done).toBe(false);
    await sched.runUntil(quiet + 2000 + 2000 / 16 + 20);
    expect(timedOut.done).toBe(true);
    expect(timedOut.value!.index).toBe(changed.value!.index);
  });

  test("a blocking get of a missing key wakes when it is created", async () => {
    const { sched, client } = world(4);
    const reader = client("n1/watch", "n1");
    const missing = await settle(sched, reader.kvGet("nope"));
    expect(missing.pair).toBeNull();
    expect(missing.index).toBeGreaterThan(0);
    const w = track(sched, reader.kvGet("nope", { index: missing.index, waitMs: 10_000 }));
    await sched.runUntil(sched.now + 500);
    expect(w.done).toBe(false);
    await settle(sched, client("n2/x", "n2").kvPut("nope", "here"));
    await sched.runUntil(sched.now + 20);
    expect(w.value?.pair?.Value).toBe("here");
  });

  test("an aborted blocking get rejects with the signal's reason at once", async () => {
    const { sched, client } = world();
    const reader = client("n1/watch", "n1");
    const { index } = await settle(sched, reader.kvGet(KEY));
    const ac = new AbortController();
    const w = track(sched, reader.kvGet(KEY, { index, waitMs: 10_000, signal: ac.signal }));
    await sched.runUntil(sched.now + 100);
    const reason = new Error("stopping");
    sched.at(0, "n1/watch", () => ac.abort(reason));
    await sched.runUntil(sched.now + 1);
    expect(w.done).toBe(true);
    expect(w.error).toBe(reason);
  });
});

describe("checks bound to sessions", () => {
  async function registered(seed = 5) {
    const w = world(seed);
    const c = w.client("n1/sidecar", "n1");
    await settle(w.sched, c.agentServiceRegister({ ID: "redis-a", Name: "redis", Tags: ["replica"], Port: 6379, Address: "10.0.0.1", EnableTagOverride: true }));
    await settle(w.sched, c.agentCheckRegister({ CheckID: "redis-a:alive", Name: "alive", TTL: "5s", Status: "passing", ServiceID: "redis-a", DeregisterCriticalServiceAfter: "10m" }));
    await w.sched.runUntil(w.sched.now + 50);
    return { ...w, c };
  }

  test("a bound check going critical invalidates the session and releases the lock", async () => {
    const { sched, sim, c } = await registered();
    const sid = await settle(sched, c.sessionCreate(req({ ServiceChecks: [{ ID: "redis-a:alive" }] })));
    expect(await settle(sched, c.kvAcquire(KEY, sid, "v"))).toBe(true);
    const beat = sched.now;
    await sched.runUntil(beat + 4900);
    expect(sim.kvGet(KEY)?.Session).toBe(sid);
    await sched.runUntil(beat + 5100);
    expect(sim.servicesNamed("redis")[0]!.checks.find((x) => x.id === "redis-a:alive")?.status).toBe("critical");
    expect(sim.kvGet(KEY)?.Session).toBeUndefined();
    expect(sim.lockDelayUntil(KEY)).toBeGreaterThan(sched.now);
    expect(await settle(sched, c.sessionRenew(sid))).toBeNull();
    const err = await failure(sched, c.sessionCreate(req({ ServiceChecks: [{ ID: "redis-a:alive" }] })));
    expect((err as Error).message).toContain("Check 'redis-a:alive' is in critical state");
    const missing = await failure(sched, c.sessionCreate(req({ ServiceChecks: [{ ID: "nope" }] })));
    expect((missing as Error).message).toContain("Missing check 'nope' registration");
  });

  test("heartbeats keep it; deregistering the service invalidates the session", async () => {
    const { sched, sim, c } = await registered(6);
    const sid = await settle(sched, c.sessionCreate(req({ ServiceChecks: [{ ID: "redis-a:alive" }] })));
    for (let i = 0; i < 10; i++) {
      await settle(sched, c.agentCheckUpdate("redis-a:alive", "passing", "ok"));
      await settle(sched, c.sessionRenew(sid));
      await sched.runUntil(sched.now + 2000);
    }
    expect(sim.sessions().map((s) => s.ID)).toContain(sid);
    await settle(sched, c.agentServiceDeregister("redis-a"));
    await sched.runUntil(sched.now + 50);
    expect(sim.sessions().map((s) => s.ID)).not.toContain(sid);
    expect(sim.servicesNamed("redis")).toEqual([]);
  });

  test("updating an unknown check is a 404 with Consul's wording", async () => {
    const { sched, c } = await registered();
    const err = await failure(sched, c.agentCheckUpdate("gone", "passing", ""));
    expect(isConsulError(err, "CONSUL_NOT_FOUND")).toBe(true);
    expect((err as Error).message).toContain(`Unknown check ID "gone"`);
  });

  test("maintenance shows in the agent's checks through the filter the sidecar sends", async () => {
    const { sched, sim, c } = await registered();
    sim.maintenance("n1", true, { serviceId: "redis-a", reason: "upgrade" });
    const checks = await settle(sched, c.agentChecks(`CheckID == "_node_maintenance" or CheckID == "_service_maintenance:redis-a"`));
    expect(Object.values(checks)).toEqual([expect.objectContaining({ CheckID: "_service_maintenance:redis-a", Status: "critical", Notes: "upgrade" })]);
    expect(Object.keys(await settle(sched, c.agentChecks(`ServiceID == "redis-a"`))).sort()).toEqual(["_service_maintenance:redis-a", "redis-a:alive"]);
    await sched.runUntil(sched.now + 50);
    expect(sim.servicesNamed("redis")[0]!.passing).toBe(false);
  });
});

describe("agent services", () => {
  test("register, then a blocking get by hash returns on change and at the wait", async () => {
    const { sched, sim, client } = world(8);
    const c = client("n1/sidecar", "n1");
    expect(await settle(sched, c.agentService("redis-a"))).toBeNull();
    await settle(sched, c.agentServiceRegister({ ID: "redis-a", Name: "redis", Tags: ["replica"], Port: 6379, Meta: { x: "1" }, EnableTagOverride: true }));
    const svc = (await settle(sched, c.agentService("redis-a")))!;
    expect(svc).toMatchObject({ ID: "redis-a", Service: "redis", Tags: ["replica"], Meta: { x: "1" }, Port: 6379, EnableTagOverride: true, Datacenter: "dc1" });
    expect(svc.ContentHash).toMatch(/^[0-9a-f]{16}$/);
    expect(Object.keys(await settle(sched, c.agentServices(`ID matches "^redis-"`)))).toEqual(["redis-a"]);

    const quiet = sched.now;
    const same = track(sched, c.agentService("redis-a", { hash: svc.ContentHash!, waitMs: 3000 }));
    await settle(sched, c.agentServiceRegister({ ID: "redis-a", Name: "redis", Tags: ["replica"], Port: 6379, Meta: { x: "1" }, EnableTagOverride: true }));
    await sched.runUntil(quiet + 2990);
    expect(same.done).toBe(false);
    await sched.runUntil(quiet + 3000 + 3000 / 16 + 10);
    expect(same.value?.ContentHash).toBe(svc.ContentHash!);

    const w = track(sched, c.agentService("redis-a", { hash: svc.ContentHash!, waitMs: 30_000 }));
    await sched.runUntil(sched.now + 100);
    expect(w.done).toBe(false);
    await settle(sched, client("n1/nomad", "n1").agentServiceRegister({ ID: "redis-a", Name: "redis", Tags: ["replica", "primary"], Port: 6379, Meta: { x: "1" }, EnableTagOverride: true }));
    await sched.runUntil(sched.now + 10);
    expect(w.value?.Tags).toEqual(["replica", "primary"]);
    expect(w.value?.ContentHash).not.toBe(svc.ContentHash);
    // Synced to the catalog: with no checks of its own, only serfHealth decides it passes.
    await sched.runUntil(sched.now + 20);
    expect(sim.discoveredPrimaries("redis", "primary").map((p) => p.id)).toEqual(["redis-a"]);
  });

  test("health and catalog reads see synced services; a check change pushes stale tags back (consul#2174)", async () => {
    const { sched, sim, client } = world(9);
    sim.aeIntervalMs = 1e9;
    const c1 = client("n1/sidecar", "n1");
    const c2 = client("n2/sidecar", "n2");
    await settle(sched, c1.agentServiceRegister({ ID: "redis-a", Name: "redis", Tags: ["primary"], Port: 6379, EnableTagOverride: true, Checks: [{ CheckID: "redis-a:alive", Name: "alive", TTL: "30s", Status: "passing" }] }));
    await sched.runUntil(sched.now + 50);
    const { entries, index } = await settle(sched, c2.healthService("redis", { tag: "primary", passing: true }));
    expect(entries.map((e) => [e.Node.Node, e.Service.ID, e.Checks.map((x) => `${x.CheckID}:${x.Status}`)])).toEqual([["n1", "redis-a", ["serfHealth:passing", "redis-a:alive:passing"]]]);
    expect(sim.discoveredPrimaries("redis", "primary")).toEqual([{ node: "n1", id: "redis-a", address: "10.0.0.1", port: 6379 }]);

    const [row] = await settle(sched, c2.catalogService("redis", { tag: "primary" }));
    const watch = track(sched, c2.healthService("redis", { tag: "primary", passing: true, index, waitMs: 60_000 }));
    await settle(sched, c2.catalogRegister({ Node: row!.Node, Address: row!.Address, Service: { ID: row!.ServiceID, Service: row!.ServiceName, Tags: [], Port: row!.ServicePort, EnableTagOverride: true } }));
    await sched.runUntil(sched.now + 20);
    expect(watch.value?.entries).toEqual([]);
    expect(sim.discoveredPrimaries("redis", "primary")).toEqual([]);
    // The agent still has its own copy: a check status change sends it along.
    await settle(sched, c1.agentCheckUpdate("redis-a:alive", "warning", "slow"));
    await sched.runUntil(sched.now + 20);
    expect(sim.servicesNamed("redis")[0]!.tags).toEqual(["primary"]);
  });

  test("the full sync copies catalog tags into an EnableTagOverride service without waking a watch", async () => {
    const { sched, sim, client } = world(10);
    const c = client("n1/sidecar", "n1");
    await settle(sched, c.agentServiceRegister({ ID: "redis-a", Name: "redis", Tags: ["primary"], Port: 6379, EnableTagOverride: true }));
    const svc = (await settle(sched, c.agentService("redis-a")))!;
    await settle(sched, client("n2/sidecar", "n2").catalogRegister({ Node: "n1", Address: "10.0.0.1", Service: { ID: "redis-a", Service: "redis", Tags: [], Port: 6379, EnableTagOverride: true } }));
    const w = track(sched, c.agentService("redis-a", { hash: svc.ContentHash!, waitMs: 200_000 }));
    await sched.runUntil(sched.now + 2 * sim.aeIntervalMs + 10);
    expect(sim.agentService("n1", "redis-a")?.Tags).toEqual([]);
    expect(w.done).toBe(false);
    await sched.runUntil(sched.now + 200_000);
    // At the wait the agent answers what it computed before waiting; the next call sees the change.
    expect(w.value?.Tags).toEqual(["primary"]);
    expect((await settle(sched, c.agentService("redis-a", { hash: w.value!.ContentHash!, waitMs: 1000 })))?.Tags).toEqual([]);
  });
});

describe("faults", () => {
  test("a partitioned node's agent answers locally; server calls hang, then fail fast; its session lapses", async () => {
    const { sched, sim, client } = world(11);
    const c = client("n1/sidecar", "n1");
    const sid = await settle(sched, c.sessionCreate(req()));
    expect(await settle(sched, c.kvAcquire(KEY, sid, "v"))).toBe(true);
    sim.partition("n1");
    expect((await settle(sched, c.agentSelf())).nodeName).toBe("n1");
    const codes = new Set<string>();
    for (let i = 0; i < 30; i++) {
      const err = await failure(sched, c.kvGet(KEY));
      codes.add(`${(err as { code: string }).code}${/No known Consul servers/.test((err as Error).message) ? " no-servers" : ""}`);
      const renew = await failure(sched, c.sessionRenew(sid));
      expect(isConsulError(renew, "CONSUL_TIMEOUT", "CONSUL_SERVER_ERROR")).toBe(true);
    }
    expect(codes).toContain("CONSUL_TIMEOUT");
    expect(codes).toContain("CONSUL_SERVER_ERROR no-servers");
    await sched.runUntil(sched.now + 20_000);
    expect(sim.sessions()).toEqual([]);
    expect(sim.kvGet(KEY)?.Session).toBeUndefined();
    sim.heal("n1");
    expect(await settle(sched, c.sessionRenew(sid))).toBeNull();
  });

  test("a stopped agent refuses connections", async () => {
    const { sched, sim, client } = world();
    sim.agentDown("n1");
    const err = await failure(sched, client("n1/sidecar", "n1").agentSelf());
    expect(isConsulError(err, "CONSUL_UNREACHABLE")).toBe(true);
    expect((err as Error).message).toContain("ECONNREFUSED");
    sim.agentUp("n1", { keepState: false });
    expect((await settle(sched, client("n1/sidecar", "n1").agentSelf())).nodeName).toBe("n1");
  });

  test("a dead agent's node fails serfHealth; a restart without state drops its services and bound sessions", async () => {
    const { sched, sim, client } = world(16);
    const c = client("n1/sidecar", "n1");
    await settle(sched, c.agentServiceRegister({ ID: "redis-a", Name: "redis", Tags: ["primary"], Port: 6379, Checks: [{ CheckID: "redis-a:alive", Name: "alive", TTL: "30s", Status: "passing" }] }));
    await sched.runUntil(sched.now + 50);
    const sid = await settle(sched, c.sessionCreate(req({ TTL: "60s", ServiceChecks: [{ ID: "redis-a:alive" }] })));
    sim.agentDown("n1");
    await sched.runUntil(sched.now + 11_000);
    expect(sim.servicesNamed("redis")[0]!.checks).toEqual([{ id: "serfHealth", status: "critical" }, { id: "redis-a:alive", status: "passing" }]);
    expect(sim.discoveredPrimaries("redis", "primary")).toEqual([]);
    expect(sim.sessions().map((s) => s.ID)).toEqual([sid]);
    sim.agentUp("n1", { keepState: false });
    await sched.runUntil(sched.now + 50);
    expect(sim.servicesNamed("redis")).toEqual([]);
    expect(sim.sessions()).toEqual([]);
  });

  test("a restart with state brings back checks, critical if their TTL ran out meanwhile", async () => {
    const { sched, sim, client } = world(17);
    const c = client("n1/sidecar", "n1");
    await settle(sched, c.agentServiceRegister({ ID: "redis-a", Name: "redis", Port: 6379, Checks: [{ CheckID: "redis-a:alive", Name: "alive", TTL: "10s", Status: "passing", DeregisterCriticalServiceAfter: "1m" }] }));
    await sched.runUntil(sched.now + 50);
    const sid = await settle(sched, c.sessionCreate(req({ TTL: "60s", ServiceChecks: [{ ID: "redis-a:alive" }] })));
    sim.agentDown("n1");
    await sched.runUntil(sched.now + 15_000);
    sim.agentUp("n1", { keepState: true });
    await sched.runUntil(sched.now + 50);
    expect(sim.servicesNamed("redis")[0]!.checks.map((x) => x.status)).toEqual(["passing", "critical"]);
    expect(sim.sessions().map((s) => s.ID)).not.toContain(sid);
    // Critical past DeregisterCriticalServiceAfter: the reaper removes the service.
    await sched.runUntil(sched.now + 95_000);
    expect(sim.agentService("n1", "redis-a")).toBeNull();
    expect(sim.servicesNamed("redis")).toEqual([]);
  });

  test("an election holds requests, then 'No cluster leader'; session timers restart after it", async () => {
    const { sched, sim, client } = world(12);
    const c = client("n1/sidecar", "n1");
    const slow = client("n1/slow", "n1", 20_000);
    const sid = await settle(sched, c.sessionCreate(req()));
    await sched.runUntil(1000);
    sim.serverElection(30_000);
    expect(isConsulError(await failure(sched, c.kvGet(KEY)), "CONSUL_TIMEOUT")).toBe(true);
    const err = await failure(sched, slow.kvGet(KEY));
    expect(isConsulError(err, "CONSUL_SERVER_ERROR")).toBe(true);
    expect((err as Error).message).toContain("No cluster leader");
    expect(sched.now).toBeGreaterThan(8000);
    expect((await settle(sched, c.agentSelf())).nodeName).toBe("n1");
    // A request held across the end of the election is answered.
    await sched.runUntil(27_000);
    expect((await settle(sched, slow.kvGet(KEY))).pair).toBeNull();
    expect(sched.now).toBeGreaterThanOrEqual(31_000);
    expect(sim.sessions().map((s) => s.ID)).toEqual([sid]);
    const exp = sim.sessions()[0]!.expiresAt!;
    expect(exp).toBeGreaterThanOrEqual(31_000 + 10_000);
    expect(exp).toBeLessThanOrEqual(31_000 + 20_000);
  });

  test("injected errors may come after the write was applied", async () => {
    const { sched, sim, client } = world(13);
    const c = client("n1/sidecar", "n1");
    sim.failRandomly({ rate: 1, statuses: [500], applyWritesFirst: 1 });
    const err = await failure(sched, c.kvPut("k", "applied"));
    expect(isConsulError(err, "CONSUL_SERVER_ERROR")).toBe(true);
    expect(sim.kvGet("k")?.Value).toBe("applied");
    sim.failRandomly({ rate: 1, statuses: [503], applyWritesFirst: 0 });
    await failure(sched, c.kvPut("k", "not applied"));
    expect(sim.kvGet("k")?.Value).toBe("applied");
    sim.failRandomly(undefined);
    expect(await settle(sched, c.kvPut("k", "ok"))).toBe(true);
  });

  test("a killed requester never gets its answer, but its write went through", async () => {
    const { sched, sim, client } = world(14);
    const c = client("n1/sidecar", "n1");
    const sid = await settle(sched, c.sessionCreate(req()));
    const p = track(sched, c.kvAcquire(KEY, sid, "v"));
    sched.kill("n1/sidecar");
    await sched.runUntil(sched.now + 5000);
    expect(p.done).toBe(false);
    expect(sim.kvGet(KEY)?.Session).toBe(sid);
  });

  test("a write whose caller timed out before it reached the agent is still applied", async () => {
    const { sched, sim, client } = world(18);
    const c = client("n1/sidecar", "n1");
    sim.slow("n1", 1500);
    const err = await failure(sched, c.kvPut("k", "late"));
    expect(isConsulError(err, "CONSUL_TIMEOUT")).toBe(true);
    expect(sim.kvGet("k")).toBeNull();
    await sched.runUntil(sched.now + 600);
    expect(sim.kvGet("k")?.Value).toBe("late");
  });

  test("a frozen requester gets its answer when thawed", async () => {
    const { sched, sim, client } = world(15);
    const c = client("n1/sidecar", "n1", 10_000);
    const sid = await settle(sched, c.sessionCreate(req()));
    const p = track(sched, c.kvAcquire(KEY, sid, "v"));
    sched.freeze("n1/sidecar");
    await sched.runUntil(sched.now + 500);
    expect(p.done).toBe(false);
    expect(sim.kvGet(KEY)?.Session).toBe(sid);
    sched.thaw("n1/sidecar");
    await sched.runUntil(sched.now + 1);
    expect(p.done).toBe(true);
    expect(p.value).toBe(true);
  });

  test("a seed replays exactly", async () => {
    async function trace(seed: number): Promise<string[]> {
      const { sched, sim, client } = world(seed, ["n1", "n2", "n3"]);
      const out: string[] = [];
      const sids = await Promise.all(["n1", "n2", "n3"].map((n) => settle(sched, client(`${n}/s`, n).sessionCreate(req()))));
      const results = ["n1", "n2", "n3"].map((n, i) => track(sched, client(`${n}/s`, n).kvAcquire(KEY, sids[i]!, n)));
      await sched.runUntil(sched.now + 100);
      out.push(...results.map((r) => String(r.value)), JSON.stringify(sim.kvGet(KEY)), JSON.stringify(sim.sessions()));
      await sched.runUntil(60_000);
      out.push(JSON.stringify(sim.sessions()), String(sched.fired));
      return out;
    }
    expect(await trace(21)).toEqual(await trace(21));
    expect(await trace(21)).not.toEqual(await trace(22));
  });
});
