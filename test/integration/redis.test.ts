/**
 * Redis role management with real redis-server processes, real Consul and the
 * compiled sidecar: replication, the primary's Redis killed, restarted empty,
 * loading, frozen, a follower made master by hand, a wrong password.
 */

import { expect } from "bun:test";
import { Checker, consulDiscovery } from "../harness/checker.ts";
import { type ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { record } from "../harness/figures.ts";
import { RedisGroup } from "../harness/group.ts";
import { fileScope, Proc, scenario, waitFor } from "../harness/proc.ts";
import { RedisServer } from "../harness/redis.ts";
import { BINARY, Sidecar } from "../harness/sidecar.ts";

let consul: ConsulAgent;
fileScope("redis.test.ts", async () => {
  consul = await startDevAgent();
});


async function writeKeys(r: RedisServer, n: number, prefix = "k"): Promise<void> {
  const c = r.client();
  await c.connect();
  for (let i = 0; i < n; i++) await c.send("SET", [`${prefix}:${i}`, String(i)]);
  c.close();
}

async function dbsize(r: RedisServer): Promise<number> {
  return Number(await r.cmd("DBSIZE"));
}

scenario("three Redis, three sidecars: one writable primary, two replicas with its data", async () => {
  const g = await RedisGroup.start(consul);
  const p = await g.converged();
  await writeKeys(p.redis, 100);
  for (const m of g.members) {
    await waitFor(async () => (await dbsize(m.redis)) >= 100, { what: `${m.id} to have the data` });
  }
  const replicas = g.members.filter((m) => m !== p);
  for (const r of replicas) {
    await expect(r.redis.cmd("SET", ["x", "1"])).rejects.toThrow(/READONLY/);
  }
  const pair = await consul.api<{ Value: string }[]>("GET", `/v1/kv/${g.key}`);
  const value = JSON.parse(Buffer.from(pair[0]!.Value, "base64").toString());
  expect(value.address).toBe(p.redis.addr);
  expect(value.epoch).toBeGreaterThan(0);
  expect(value.replid).toMatch(/^[0-9a-f]{40}$/);
});

scenario("kill -9 the primary's Redis: a replica with the data becomes the writable, tagged primary; the old one returns as a replica", async () => {
  const g = await RedisGroup.start(consul);
  const p = await g.converged();
  await writeKeys(p.redis, 200);
  for (const m of g.members) await waitFor(async () => (await dbsize(m.redis)) >= 200);
  const t0 = performance.now();
  await p.redis.kill9();
  const { at } = await g.newWritablePrimary(p.id, 10_000);
  const took = at - t0;
  record("Redis kill -9 -> new writable, tagged primary (loopback), ms", took);
  const next = await g.converged(10_000, [p.id]);
  expect(next.id).not.toBe(p.id);
  expect(await dbsize(next.redis)).toBeGreaterThanOrEqual(200);
  expect(took).toBeLessThan(3000);
  await p.redis.restart();
  const again = await g.converged(15_000);
  expect(again.id).toBe(next.id);
  await waitFor(async () => (await dbsize(p.redis)) >= 200, { what: "the old primary to resync as a replica" });
});

// Polls every 5 s and gives an unanswering Redis 10 s: only the closed connection can explain a release within a second.
const SLOW_POLLS = { CONSUL_LEADER_REDIS_POLL: "5s", CONSUL_LEADER_REDIS_DOWN_AFTER: "10s" };

scenario("the crash signal: the leader's Redis killed with kill -9 is seen through its closed connection, not the next poll", async () => {
  const g = await RedisGroup.start(consul, { env: SLOW_POLLS });
  const p = await g.converged();
  // Let the start-up polls pass, so the next scheduled one is seconds away.
  await Bun.sleep(1000);
  const t0 = performance.now();
  await p.redis.kill9();
  await p.sidecar.waitForLog((l) => l.msg === "released the lock", 3000, "the leader to release the lock");
  const released = performance.now() - t0;
  const { at } = await g.newWritablePrimary(p.id, 10_000);
  record("Redis kill -9 -> leader released (crash signal, 5 s polls), ms", released);
  expect(released).toBeLessThan(1000);
  expect(at - t0).toBeLessThan(2000);
});

scenario("a closed connection that is not a crash (CLIENT KILL of the sidecar's connection) moves nothing", async () => {
  const g = await RedisGroup.start(consul, { env: SLOW_POLLS });
  const p = await g.converged();
  await Bun.sleep(1000);
  const mark = p.sidecar.logs().length;
  // Every normal client, the sidecar's polling connection included, a few times over.
  for (let i = 0; i < 5; i++) {
    await p.redis.cmd("CLIENT", ["KILL", "TYPE", "normal"]);
    await Bun.sleep(100);
  }
  await Bun.sleep(2000);
  const after = p.sidecar.logs().slice(mark).map((l) => l.msg);
  expect(after).not.toContain("released the lock");
  expect(after).not.toContain("redis does not answer");
  expect(p.sidecar.role()).toBe("leader");
  expect((await g.converged(5000)).id).toBe(p.id);
});

scenario("the primary's Redis restarts empty (no persistence) under a living sidecar: it becomes a replica and nobody loses data", async () => {
  const g = await RedisGroup.start(consul);
  const p = await g.converged();
  await writeKeys(p.redis, 500);
  for (const m of g.members) await waitFor(async () => (await dbsize(m.redis)) >= 500);
  await p.redis.kill9();
  await Bun.sleep(300);
  await p.redis.restart({ empty: true }); // same port, nothing on disk
  const next = await g.converged(15_000);
  expect(next.id).not.toBe(p.id);
  for (const m of g.members) {
    await waitFor(async () => (await dbsize(m.redis)) >= 500, { timeoutMs: 10_000, what: `${m.id} to hold all 500 keys` });
  }
  expect((await p.redis.info())["role"]).toBe("slave");
});

for (const delayMs of [0, 150]) {
  scenario(`the new primary's Redis restarts empty ${delayMs ? `${delayMs} ms` : "at once"} after a switchover: it does not take the lock back and nobody loses data`, async () => {
    // Booting as a replica of nowhere is what the README asks of every Redis.
    const g = await RedisGroup.start(consul, { redis: { conf: ["replicaof 127.0.0.1 1"] } });
    const p = await g.converged();
    await writeKeys(p.redis, 500);
    for (const m of g.members) await waitFor(async () => (await dbsize(m.redis)) >= 500);
    await g.takeoverReady(p.id);
    const cli = new Proc("switchover", [BINARY, "switchover", "--timeout", "5s"], { env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: consul.addr, CONSUL_LEADER_KEY: g.key } });
    expect(await cli.exited).toBe(0);
    const x = await g.converged(10_000, [p.id]);
    const killedAt = new Date().toISOString();
    await x.redis.kill9();
    if (delayMs) await Bun.sleep(delayMs);
    await x.redis.restart({ empty: true });
    const next = await g.converged(15_000, [x.id]);
    expect(next.id).not.toBe(x.id);
    expect(x.sidecar.logs().filter((l) => l.msg === "acquired the lock" && String(l["time"]) > killedAt)).toEqual([]);
    for (const m of g.members) {
      await waitFor(async () => (await dbsize(m.redis)) >= 500, { timeoutMs: 10_000, what: `${m.id} to hold all 500 keys` });
    }
  }, 60_000);
}

scenario("the leader's Redis restarts empty while its sidecar is frozen: it releases (new run id, or the closed connection) and a replica with the data leads", async () => {
  const g = await RedisGroup.start(consul, { redis: { conf: ["replicaof 127.0.0.1 1"] } });
  const p = await g.converged();
  await writeKeys(p.redis, 500);
  for (const m of g.members) await waitFor(async () => (await dbsize(m.redis)) >= 500);
  // Frozen, the sidecar cannot poll Redis while it is down. On resume it
  // either polls the new Redis first (its run id differs from the one it took
  // the lock with: "redis-restarted", most runs) or first handles the closed
  // connection ("redis-down"); which comes first is the event loop's order.
  // Both must release; decide.test.ts pins the run id rule itself.
  p.sidecar.proc.signal("SIGSTOP");
  await p.redis.kill9();
  await p.redis.restart({ empty: true });
  p.sidecar.proc.signal("SIGCONT");
  const released = await p.sidecar.waitForLog((l) => l.msg === "released the lock", 5000, "release");
  expect(["redis-restarted", "redis-down"]).toContain(String(released["released"]));
  const next = await g.converged(15_000, [p.id]);
  expect(next.id).not.toBe(p.id);
  for (const m of g.members) {
    await waitFor(async () => (await dbsize(m.redis)) >= 500, { timeoutMs: 10_000, what: `${m.id} to hold all 500 keys` });
  }
});

scenario("a replica whose Redis is loading a large dataset is passed over", async () => {
  // Member 3 persists its data and loads it slowly on restart (key-load-delay).
  const g = await RedisGroup.start(consul, {
    redis: (i) => (i === 2 ? { conf: ["save 3600 1", "key-load-delay 200", "loading-process-events-interval-bytes 1024"] } : {}),
    env: (i) => (i === 2 ? { CONSUL_LEADER_PRIORITY: "1000" } : { CONSUL_LEADER_PRIORITY: i === 0 ? "1000" : "1" }),
  });
  const loader = g.members[2]!;
  let p = await g.converged();
  if (p === loader) {
    await p.sidecar.stop();
    p.sidecar.restart();
    p = await g.converged(15_000);
  }
  await writeKeys(p.redis, 20_000, "big");
  await waitFor(async () => (await dbsize(loader.redis)) >= 20_000, { timeoutMs: 20_000 });
  await loader.redis.cmd("SAVE");
  // Restart the loader's Redis: ~20k keys x 200us = ~4s of LOADING.
  await loader.redis.proc.kill9();
  const restarted = loader.redis.restart().catch(() => {});
  await waitFor(async () => (await loader.redis.info().catch(() => ({} as Record<string, string>)))["loading"] === "1", { timeoutMs: 5000, intervalMs: 10, what: "the loader to be LOADING" });
  // Its sidecar says so where peers look: alive, Redis up, not eligible.
  const memberKey = `/v1/kv/${g.key}/members/${loader.id}`;
  await waitFor(async () => {
    const [pair] = await consul.api<{ Value: string; Session?: string }[]>("GET", memberKey);
    const m = JSON.parse(Buffer.from(pair!.Value, "base64").toString());
    return pair!.Session && m.redisUp === true && m.eligible === false;
  }, { timeoutMs: 5000, intervalMs: 20, what: "the loader's member entry to say up but not eligible" });
  const killedAt = new Date().toISOString();
  await p.redis.kill9();
  const next = await g.converged(20_000, [p.id, loader.id]);
  expect(next.id).not.toBe(loader.id);
  expect(next.id).not.toBe(p.id);
  expect(loader.sidecar.logs().filter((l) => l.msg === "acquired the lock" && String(l["time"]) > killedAt)).toEqual([]);
  await restarted;
  // Once loaded, it follows the new primary.
  await g.converged(20_000, [p.id]);
}, 90_000);

scenario("the leader's Redis frozen with SIGSTOP: the lock moves on but nobody promotes over it; resumed, it runs the queued fence and the successor promotes with every acknowledged write", async () => {
  // With a password, so the queued fences have to authenticate blind too.
  const password = "frozen-redis-pw-7f3a";
  const g = await RedisGroup.start(consul, { redis: { password }, env: { CONSUL_LEADER_REDIS_DOWN_AFTER: "1s" } });
  const p = await g.converged();
  await writeKeys(p.redis, 50);
  for (const m of g.members) await waitFor(async () => (await dbsize(m.redis)) >= 50);
  const ck = new Checker({ discover: consulDiscovery(consul.url, g.name), servers: g.members.map((m) => m.redis.addr), password });
  await waitFor(() => ck.acks.length > 20, { what: "the checker writing" });
  p.redis.pause();
  // The old leader gives the lock up; a successor takes it and waits for the frozen Redis.
  const waiting = await Promise.any(g.members.filter((m) => m !== p).map((m) =>
    m.sidecar.waitForLog((l) => l.msg === "takeover waits" && /stopped answering while its sidecar still ran/.test(String(l["reason"])), 10_000, `a successor waiting for the frozen primary`).then(() => m)
  ));
  await Bun.sleep(2000);
  // Frozen for seconds: nobody was promoted, discovery names no primary, no running Redis takes a write.
  expect(await g.discoveredPrimaries()).toEqual([]);
  expect((await g.masters()).filter((m) => m.writable)).toEqual([]);
  const resumedAt = performance.now();
  p.redis.resume();
  const { member: next, at } = await g.newWritablePrimary(p.id, 10_000);
  record("Redis SIGSTOP (default FROZEN_PRIMARY_WAIT never): resume -> new writable primary, ms", at - resumedAt);
  expect(next.id).toBe(waiting.id);
  // Promoted over a fence the frozen Redis confirmed once it ran again (ours, or the one its own sidecar queued).
  await waiting.sidecar.waitForLog((l) => l.msg === "promoted" && /confirmed our fence|it is fenced/.test(String(l["reason"])), 1000, "a promotion over the confirmed fence");
  await g.converged(15_000);
  await Bun.sleep(300);
  await ck.stop();
  expect((await p.redis.info())["role"]).toBe("slave");
  // Whatever the frozen Redis acknowledged when it resumed came before its fence, and the successor caught up to it.
  expect(await ck.lost(next.redis.addr)).toEqual([]);
  expect(ck.splitBrainMs()).toBe(0);
}, 60_000);

scenario("CONSUL_LEADER_FROZEN_PRIMARY_WAIT=1s: a frozen primary is promoted over after a second; resumed, it refuses writes at once (queued fence) and becomes a replica", async () => {
  const password = "frozen-redis-pw-7f3a";
  const g = await RedisGroup.start(consul, { redis: { password }, env: { CONSUL_LEADER_REDIS_DOWN_AFTER: "1s", CONSUL_LEADER_FROZEN_PRIMARY_WAIT: "1s" } });
  const p = await g.converged();
  await writeKeys(p.redis, 50);
  for (const m of g.members) await waitFor(async () => (await dbsize(m.redis)) >= 50);
  // Pinned writers keep writing to every Redis, the frozen one included, the
  // way clients with open connections do.
  const ck = new Checker({ discover: consulDiscovery(consul.url, g.name), servers: g.members.map((m) => m.redis.addr), password });
  await waitFor(() => ck.acks.length > 20, { what: "the checker writing" });
  const t0 = performance.now();
  p.redis.pause();
  const { at } = await g.newWritablePrimary(p.id, 15_000);
  record("Redis SIGSTOP -> new writable, tagged primary (DOWN_AFTER 1s, FROZEN_PRIMARY_WAIT 1s), ms", at - t0);
  const next = await g.converged(15_000, [p.id]);
  expect(next.id).not.toBe(p.id);
  await next.sidecar.waitForLog((l) => l.msg === "promoted" && /has not answered for \d+ms \(CONSUL_LEADER_FROZEN_PRIMARY_WAIT\)/.test(String(l["reason"])), 1000, "the promotion naming the knob");
  await p.sidecar.waitForLog((l) => l.msg === "fence queued for a Redis that does not answer", 5000, `"fence queued" log line`);
  // The new primary takes writes for a while before the old one wakes up.
  await waitFor(() => ck.acks.filter((a) => a.server === next.redis.addr && a.ackAt > at).length > 50, { what: "writes on the new primary" });
  const resumedAt = performance.now();
  p.redis.resume();
  await p.sidecar.waitForLog((l) => l.msg === "queued fence ran", 5000, `"queued fence ran" log line`);
  await g.converged(15_000);
  await Bun.sleep(300);
  await ck.stop();
  expect((await p.redis.info())["role"]).toBe("slave");
  expect((await p.redis.info())["master_port"]).toBe(String(next.redis.port));
  // Its pinned writer was connected and writing when it resumed; the fence ran first.
  expect(ck.acks.filter((a) => a.server === p.redis.addr && a.ackAt > resumedAt)).toEqual([]);
  expect(ck.splitBrainMs()).toBe(0);
  record("Redis SIGSTOP with FROZEN_PRIMARY_WAIT 1s: acknowledged writes lost (frozen mid-stream)", (await ck.lost(next.redis.addr)).length);
}, 60_000);

scenario("a follower's Redis made master by hand is demoted within one loop, logged as an incident", async () => {
  const g = await RedisGroup.start(consul);
  const p = await g.converged();
  const f = g.members.find((m) => m !== p)!;
  await f.redis.cmd("REPLICAOF", ["NO", "ONE"]);
  const t0 = performance.now();
  await waitFor(async () => (await f.redis.info())["role"] === "slave", { timeoutMs: 3000, intervalMs: 10, what: "the rogue master to be demoted" });
  record("rogue master demoted, ms", performance.now() - t0);
  await g.converged();
  expect(f.sidecar.logs().some((l) => l.level === "error" && /^incident/.test(l.msg))).toBe(true);
});

scenario("a follower's Redis that restarts as a master (no replicaof in its configuration) is demoted and logged as a restart, not an incident", async () => {
  const g = await RedisGroup.start(consul);
  const p = await g.converged();
  const f = g.members.find((m) => m !== p)!;
  await f.redis.kill9();
  await f.redis.restart();
  await f.sidecar.waitForLog((l) => l.level === "warn" && /^this Redis restarted as a master/.test(l.msg), 10_000, "the restart warning");
  await g.converged();
  expect(f.sidecar.logs().filter((l) => /incident/.test(l.msg) || /incident/.test(String(l["reason"] ?? "")))).toEqual([]);
});

scenario("a wrong Redis password: a clear error naming the knob, no crash loop, no candidacy", async () => {
  const r = await RedisServer.start({ password: "right-password-123" });
  const s = new Sidecar("sidecar-wrongpw", {
    CONSUL_HTTP_ADDR: consul.addr,
    CONSUL_LEADER_SERVICE_NAME: "wrongpw",
    CONSUL_LEADER_SERVICE_ID: "wrongpw-1",
    CONSUL_LEADER_KEY: "test/wrongpw/lock",
    CONSUL_LEADER_REDIS_ADDR: r.addr,
    CONSUL_LEADER_REDIS_PASSWORD: "wrong-password-456",
  });
  const line = await s.waitForLog((l) => l.msg === "redis refused the credentials", 5000);
  expect(JSON.stringify(line)).toContain("CONSUL_LEADER_REDIS_PASSWORD");
  await Bun.sleep(2000);
  expect(s.proc.running).toBe(true);
  expect(s.logs().filter((l) => l.msg === "redis refused the credentials").length).toBe(1);
  expect(s.role()).not.toBe("leader");
  expect(s.proc.lines.join("\n")).not.toContain("wrong-password-456");
});

scenario("discovery tells the truth: a replica whose link to the primary is down loses its replica tag and its role check, and gets both back", async () => {
  const g = await RedisGroup.start(consul, { redis: { password: "group-password-1" } });
  const p = await g.converged();
  const r = g.members.find((m) => m !== p)!;
  const health = async () => (await consul.api<{ Service: { ID: string; Tags: string[] }; Checks: { CheckID: string; Status: string }[] }[]>("GET", `/v1/health/service/${g.name}`)).find((e) => e.Service.ID === r.id)!;
  const c = r.redis.client();
  await c.connect();
  // Break the replica's link: a wrong masterauth, and the current link dropped.
  await c.send("CONFIG", ["SET", "masterauth", "not-the-password"]);
  await c.send("CLIENT", ["KILL", "TYPE", "master"]);
  await waitFor(async () => {
    const h = await health();
    return !h.Service.Tags.includes("replica") && h.Checks.find((x) => x.CheckID === `${r.id}:role`)?.Status === "critical";
  }, { timeoutMs: 10_000, what: "the broken replica to leave discovery" });
  const passingReplicas = await consul.api<{ Service: { ID: string } }[]>("GET", `/v1/health/service/${g.name}?passing&tag=replica`);
  expect(passingReplicas.map((e) => e.Service.ID)).not.toContain(r.id);
  await c.send("CONFIG", ["SET", "masterauth", "group-password-1"]);
  c.close();
  await waitFor(async () => {
    const h = await health();
    return h.Service.Tags.includes("replica") && h.Checks.every((x) => x.Status === "passing");
  }, { timeoutMs: 15_000, what: "the mended replica to come back" });
});
