/**
 * One identity, one process. Two sidecars on one host used to share the
 * instance ID `<name>-<host>` and so one Consul session, and the lock changed
 * hands ~50 times in 14 s. Now the default ID differs per Redis (and per exec
 * run), a second process started with a running one's ID stops with 78, a
 * restart still re-adopts its session, and a process frozen while a twin took
 * its identity over stops without touching the lock when it wakes.
 */

import { expect } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { type ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { record } from "../harness/figures.ts";
import { fileScope, scenario, Scope, waitFor } from "../harness/proc.ts";
import { RedisServer } from "../harness/redis.ts";
import { type LogLine, oneLeader, Sidecar } from "../harness/sidecar.ts";

let consul: ConsulAgent;
fileScope("identity.test.ts", async () => {
  consul = await startDevAgent();
});
let n = 0;
const host = hostname().split(".")[0] || "localhost";

/** Sidecar `i` of service `name` with its own Redis and no CONSUL_LEADER_SERVICE_ID or _PORT: the default identity. */
function sidecar(name: string, i: number, redis: RedisServer, extra: Record<string, string> = {}): Sidecar {
  return new Sidecar(`sidecar-${name}-${i}`, {
    CONSUL_HTTP_ADDR: consul.addr,
    CONSUL_LEADER_SERVICE_NAME: name,
    CONSUL_LEADER_KEY: `test/${name}/lock`,
    CONSUL_LEADER_REDIS_ADDR: redis.addr,
    CONSUL_LEADER_CHECK_TTL: "3s",
    CONSUL_LEADER_FENCE_MARGIN: "700ms",
    CONSUL_LEADER_REPLICA_LABEL: "replica",
    ...extra,
  });
}

/** Sidecars with a Redis each, for a fresh service name. */
async function members(count: number, extra: Record<string, string> = {}) {
  const name = `ident${++n}-${process.pid}`;
  const redis = await Promise.all(Array.from({ length: count }, (_, i) => RedisServer.start({ name: `redis-${name}-${i + 1}` })));
  const sidecars = redis.map((r, i) => sidecar(name, i + 1, r, extra));
  return { name, key: `test/${name}/lock`, redis, sidecars };
}

/** The session holding `key`, or undefined when free. */
async function lockSession(key: string): Promise<string | undefined> {
  const pairs = await consul.api<{ Session?: string }[]>("GET", `/v1/kv/${key}`).catch(() => []);
  return pairs[0]?.Session;
}

/** The services registered for `name`: ID and Meta.session. */
async function services(name: string): Promise<{ id: string; session: string | undefined }[]> {
  const list = await consul.api<{ ServiceID: string; ServiceMeta?: Record<string, string> }[]>("GET", `/v1/catalog/service/${name}`);
  return list.map((s) => ({ id: s.ServiceID, session: s.ServiceMeta?.["session"] }));
}

async function sessionAlive(id: string): Promise<boolean> {
  const info = await consul.api<unknown[]>("GET", `/v1/session/info/${id}`);
  return Array.isArray(info) && info.length > 0;
}

/** The session a sidecar runs with: the one it created or re-adopted, last. */
function sessionOf(s: Sidecar): string | undefined {
  const l = s.logs().filter((x) => x.msg === "created session" || x.msg === "re-adopted the session of a previous run").at(-1);
  return l?.["session"] as string | undefined;
}

/** Redis that report role:master and accept a write right now. */
async function writableMasters(redis: RedisServer[]): Promise<number[]> {
  const out: number[] = [];
  for (const r of redis) {
    if ((await r.role().catch(() => "")) !== "master") continue;
    if (await r.cmd("SET", ["__probe", "1"]).then(() => true, () => false)) out.push(r.port);
  }
  return out;
}

const ledLines = (s: Sidecar) => s.logs().filter((l) => l.msg === "role changed" && l["to"] === "leader");
const acquired = (s: Sidecar) => s.logs().filter((l) => l.msg === "acquired the lock");

/** Polls the lock's session every 50 ms for `ms`; returns every distinct session seen (in order). */
async function watchLock(key: string, ms: number, also?: () => Promise<void>): Promise<(string | undefined)[]> {
  const seen: (string | undefined)[] = [];
  const until = performance.now() + ms;
  while (performance.now() < until) {
    const s = await lockSession(key);
    if (seen.at(-1) !== s || seen.length === 0) seen.push(s);
    await also?.();
    await Bun.sleep(50);
  }
  return seen;
}

scenario("two sidecars on one host, no SERVICE_ID: different default IDs and sessions, one leader, the lock never changes hands", async () => {
  const m = await members(2);
  const leader = await oneLeader(m.sidecars, 15_000);
  await waitFor(async () => (await writableMasters(m.redis)).length === 1 && (await Promise.all(m.redis.map((r) => r.role()))).includes("slave"), { timeoutMs: 15_000, what: "one writable master and one replica" });
  const ids = m.sidecars.map((s) => s.logs().find((l) => l.msg === "starting")!["instance"] as string);
  expect(ids[0]).not.toBe(ids[1]);
  for (const [i, id] of ids.entries()) expect(id).toBe(`${m.name}-${host}-${m.redis[i]!.port}`);
  const svcs = await services(m.name);
  expect(svcs.map((s) => s.id).sort()).toEqual([...ids].sort());
  const sessions = m.sidecars.map(sessionOf);
  expect(sessions[0]).toBeDefined();
  expect(sessions[0]).not.toBe(sessions[1]);
  // The registered services carry their own sessions.
  for (const [i, id] of ids.entries()) expect(svcs.find((s) => s.id === id)!.session).toBe(sessions[i]);
  expect(await lockSession(m.key)).toBe(sessionOf(leader));
  // 5 s: the lock stays with one session, one Redis takes writes.
  const masters = new Set<string>();
  const seen = await watchLock(m.key, 5000, async () => {
    masters.add(JSON.stringify(await writableMasters(m.redis)));
  });
  expect(seen).toEqual([sessionOf(leader)]);
  expect([...masters]).toEqual([JSON.stringify([m.redis[m.sidecars.indexOf(leader)]!.port])]);
  for (const s of m.sidecars) expect(ledLines(s).length, `${s.name} became leader once at most`).toBeLessThanOrEqual(1);
  expect(m.sidecars.map((s) => s.role()).sort()).toEqual(["follower", "leader"]);
});

scenario("a twin started with a running leader's SERVICE_ID exits 78 naming CONSUL_LEADER_SERVICE_ID; the first keeps leading with its session", async () => {
  const name = `twin${++n}-${process.pid}`;
  const [r1, r2] = await Promise.all([RedisServer.start({ name: `redis-${name}-1` }), RedisServer.start({ name: `redis-${name}-2` })]);
  const id = { CONSUL_LEADER_SERVICE_ID: `${name}-one` };
  const first = sidecar(name, 1, r1!, id);
  await waitFor(() => first.role() === "leader", { timeoutMs: 15_000, what: "the first sidecar to lead" });
  const session = sessionOf(first)!;
  expect(await lockSession(`test/${name}/lock`)).toBe(session);
  const t0 = performance.now();
  const twin = sidecar(name, 2, r2!, id);
  const code = await Promise.race([twin.proc.exited, Bun.sleep(10_000).then(() => "still running")]);
  if (typeof code === "number") record("identity: twin of a running sidecar -> exit, ms", performance.now() - t0);
  expect(code).toBe(78);
  expect(performance.now() - t0).toBeLessThan(10_000);
  expect(twin.proc.lines.join("\n")).toContain("CONSUL_LEADER_SERVICE_ID");
  expect(ledLines(twin)).toEqual([]);
  expect(acquired(twin)).toEqual([]);
  await first.waitForLog((l) => /another process started with this sidecar's identity/.test(l.msg), 5000, "the first to log the claim on its identity");
  // The first leads on, with the same session, its service still registered: the twin touched nothing of it.
  const seen = await watchLock(`test/${name}/lock`, 2000);
  expect(seen).toEqual([session]);
  expect(first.proc.running).toBe(true);
  expect(first.role()).toBe("leader");
  expect(ledLines(first).length).toBe(1);
  expect(await sessionAlive(session)).toBe(true);
  expect(await services(name)).toEqual([{ id: `${name}-one`, session }]);
  expect(await writableMasters([r1!])).toEqual([r1!.port]);
});

scenario("a restart is still not a failover: the leader's sidecar killed and restarted re-adopts its session and leads again", async () => {
  const m = await members(3);
  const leader = await oneLeader(m.sidecars, 15_000);
  const others = m.sidecars.filter((s) => s !== leader);
  const session = sessionOf(leader)!;
  expect(await lockSession(m.key)).toBe(session);
  const acquiredBefore = others.map((s) => acquired(s).length);
  await Bun.sleep(300);
  // Watch the lock from before the kill until the restarted sidecar leads again.
  let watching = true;
  const seen: (string | undefined)[] = [];
  const watcher = (async () => {
    while (watching) {
      const s = await lockSession(m.key);
      if (seen.at(-1) !== s || seen.length === 0) seen.push(s);
      await Bun.sleep(20);
    }
  })();
  const t0 = performance.now();
  await leader.kill9();
  leader.restart();
  const adopted = await leader.waitForLog((l) => l.msg === "re-adopted the session of a previous run", 10_000, "the re-adoption");
  expect(adopted["session"]).toBe(session);
  await waitFor(() => leader.role() === "leader", { timeoutMs: 10_000, what: "the restarted sidecar to lead again" });
  record("identity: leader sidecar kill -9 + restart -> leads again, ms", performance.now() - t0);
  await Bun.sleep(1000);
  watching = false;
  await watcher;
  expect(seen).toEqual([session]);
  expect(others.map((s) => acquired(s).length)).toEqual(acquiredBefore);
  expect(others.every((s) => s.role() === "follower")).toBe(true);
  expect(await writableMasters(m.redis)).toEqual([m.redis[m.sidecars.indexOf(leader)]!.port]);
});

// ---- exec: two overlapping runs of one job

/** Scripts (by marker in their command line) running now, one per instance however many subshells it forks. */
function scriptsRunning(marker: string): number[] {
  const info = (pid: number) => {
    try {
      return { cmd: readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " "), stat: readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ") };
    } catch {
      return undefined;
    }
  };
  const has = (pid: number) => {
    const i = info(pid);
    return !!i && i.cmd.includes(marker) && !i.cmd.includes("consul-leader") && i.stat[0] !== "Z";
  };
  return readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number).filter((p) => has(p) && !has(Number(info(p)?.stat[1] ?? 0)));
}

scenario("two overlapping exec runs of one job, no SERVICE_ID: different instance IDs, one child at a time, the second starts when the first's child exits", async () => {
  const job = `cron${++n}-${process.pid}`;
  const dir = Scope.current!.tmpdir("ident-exec-");
  const out = join(dir, "out.txt");
  const marker = `cl-ident-job-${job}`;
  const script = join(dir, `${marker}.sh`);
  // Writes a line every 20 ms for ~2 s, then exits 0.
  writeFileSync(script, `#!/bin/sh\ni=0\nwhile [ $i -lt 100 ]; do echo "$CONSUL_LEADER_FENCING_TOKEN $(date +%s%N | cut -c1-13) $$" >> ${out}; i=$((i+1)); sleep 0.02; done\n`, { mode: 0o755 });
  const run = (i: number) =>
    new Sidecar(`exec-${job}-${i}`, {
      CONSUL_HTTP_ADDR: consul.addr,
      CONSUL_LEADER_SERVICE_NAME: job,
      CONSUL_LEADER_CHECK_TTL: "3s",
      CONSUL_LEADER_FENCE_MARGIN: "300ms",
      CONSUL_LEADER_EXEC_KILL_GRACE: "300ms",
      CONSUL_LEADER_LOG_LEVEL: "info",
    }, ["exec", "--", script]);
  let max = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      max = Math.max(max, scriptsRunning(marker).length);
      await Bun.sleep(5);
    }
  })();
  Scope.current!.defer(() => void (sampling = false));
  const a = run(1);
  await a.waitForLog((l) => l.msg === "command started", 15_000, "the first run's command");
  await Bun.sleep(500);
  const b = run(2);
  await b.waitForLog((l) => l.msg === "role changed" && l["to"] === "follower", 10_000, "the second run to wait for the lock");
  const ids = [a, b].map((s) => s.logs().find((l) => l.msg === "starting")!["instance"] as string);
  expect(ids[0]).not.toBe(ids[1]);
  for (const id of ids) expect(id).toMatch(new RegExp(`^${job}-${host}-exec-[0-9a-f]+$`));
  // While the first's child runs, the second waits: its own run has not been mistaken for a restart of the first.
  expect(b.logs().filter((l: LogLine) => l.msg === "command started")).toEqual([]);
  expect(b.logs().filter((l: LogLine) => /identity|re-adopted/.test(l.msg))).toEqual([]);
  expect(await a.proc.exited).toBe(0);
  expect(await b.proc.exited).toBe(0);
  sampling = false;
  await sampler;
  expect(max, "children running at once (sampled every 5 ms)").toBeLessThanOrEqual(1);
  const ls = readFileSync(out, "utf8").split("\n").filter(Boolean).map((l) => l.split(" ").map(Number) as [number, number, number]);
  const pids = [...new Set(ls.map((l) => l[2]))];
  expect(pids.length).toBe(2);
  const [first, second] = pids.map((p) => ls.filter((l) => l[2] === p));
  expect(first!.length).toBe(100);
  expect(second!.length).toBe(100);
  const firstLast = Math.max(...first!.map((l) => l[1]));
  const secondFirst = Math.min(...second!.map((l) => l[1]));
  expect(secondFirst).toBeGreaterThan(firstLast);
  expect(second![0]![0]).toBeGreaterThan(first![0]![0]);
  record("identity: overlapping exec runs -> second child starts after the first's last line, ms", secondFirst - firstLast);
}, 60_000);

scenario("a twin of a frozen sidecar re-adopts its session after the claim wait; the frozen one wakes, exits 78 and leaves the lock alone", async () => {
  const m = await members(2);
  const leader = await oneLeader(m.sidecars, 15_000);
  const follower = m.sidecars.find((s) => s !== leader)!;
  const lockHolder = sessionOf(leader)!;
  const followerSession = sessionOf(follower)!;
  expect(await lockSession(m.key)).toBe(lockHolder);
  follower.signal("SIGSTOP");
  const t0 = performance.now();
  const twin = new Sidecar(`${follower.name}-twin`, follower.env);
  const asked = await twin.waitForLog((l) => /another session holds this sidecar's identity/.test(l.msg), 10_000, "the twin's claim");
  const askedAt = performance.now();
  const adopted = await twin.waitForLog((l) => l.msg === "re-adopted the session of a previous run", 10_000, "the twin's re-adoption");
  const claimWaitMs = performance.now() - askedAt;
  record("identity: frozen sidecar's twin: claim -> re-adopted, ms", claimWaitMs);
  record("identity: frozen sidecar's twin: start -> re-adopted, ms", performance.now() - t0);
  expect(adopted["session"]).toBe(followerSession);
  // It adopts only after a full claim wait without an answer.
  expect(claimWaitMs).toBeGreaterThanOrEqual(Number(asked["waitMs"]) - 50);
  await waitFor(() => twin.role() === "follower", { timeoutMs: 10_000, what: "the twin to follow" });
  // Not a race with the adoption: the first stays frozen a while longer.
  await Bun.sleep(2000);
  // The frozen one wakes up to find its identity taken: it stops, touching nothing in Consul.
  const t1 = performance.now();
  follower.signal("SIGCONT");
  const code = await Promise.race([follower.proc.exited, Bun.sleep(10_000).then(() => "still running")]);
  if (typeof code === "number") record("identity: frozen sidecar resumed -> exit, ms", performance.now() - t1);
  expect(code).toBe(78);
  expect(follower.logs().some((l) => l.msg === "this sidecar's identity belongs to another process now; stopping without touching the lock")).toBe(true);
  expect(ledLines(follower).length).toBe(0);
  // Unchanged by its exit: the lock holder and its session, the adopted session and the service, the twin's role.
  const seen = await watchLock(m.key, 2000);
  expect(seen).toEqual([lockHolder]);
  expect(await sessionAlive(lockHolder)).toBe(true);
  expect(await sessionAlive(followerSession)).toBe(true);
  expect((await services(m.name)).find((s) => s.session === followerSession)).toBeDefined();
  expect(leader.role()).toBe("leader");
  expect(twin.proc.running).toBe(true);
  expect(twin.role()).toBe("follower");
  expect(await writableMasters(m.redis)).toEqual([m.redis[m.sidecars.indexOf(leader)]!.port]);
}, 60_000);
