/**
 * The Sentinel-compatible endpoint against the real clients applications
 * run: ioredis, node-redis, go-redis's FailoverClient, redis-py's Sentinel and
 * redis-cli, each configured with nothing but the sidecars' endpoints and the
 * master name. Each writes continuously through a primary Redis kill -9, a
 * SIGTERM of the leader's sidecar and a switchover, and must follow the
 * primary with no help: every write is answered (acknowledged or failed back
 * to the client), every acknowledged write is on the surviving primary.
 * Also: what each library sends (and that none of it gets an error), the
 * answers during a failover, AUTH, garbage, and `consul-leader primary`.
 */

import { expect } from "bun:test";
import { CLIENT_KINDS, type ClientKind, StockWriter } from "../harness/clients.ts";
import { type ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { record } from "../harness/figures.ts";
import { type Member, RedisGroup } from "../harness/group.ts";
import { fileScope, freePort, Proc, scenario, waitFor } from "../harness/proc.ts";
import { BINARY, type LogLine } from "../harness/sidecar.ts";

let consul: ConsulAgent;
fileScope("sentinel.test.ts", async () => {
  consul = await startDevAgent();
});

const MASTER = "mymaster";

/** A group whose sidecars each serve the endpoint; returns it and the endpoints' addresses. */
async function sentinelGroup(extra: Record<string, string> = {}): Promise<{ g: RedisGroup; endpoints: string[] }> {
  const ports = [freePort(), freePort(), freePort()];
  const g = await RedisGroup.start(consul, {
    redis: { conf: ["replicaof 127.0.0.1 1"] },
    env: (i) => ({ CONSUL_LEADER_SENTINEL_ADDR: `127.0.0.1:${ports[i]}`, CONSUL_LEADER_SENTINEL_MASTER_NAME: MASTER, ...extra }),
  });
  return { g, endpoints: ports.map((p) => `127.0.0.1:${p}`) };
}

/** Sends raw bytes to an endpoint and returns what came back within `ms`. */
async function raw(addr: string, bytes: string, ms = 300): Promise<string> {
  let got = "";
  const [host, port] = [addr.slice(0, addr.lastIndexOf(":")), Number(addr.slice(addr.lastIndexOf(":") + 1))];
  const s = await Bun.connect({ hostname: host, port, socket: { data(_s, d) { got += Buffer.from(d).toString(); } } });
  s.write(bytes);
  await Bun.sleep(ms);
  s.end();
  return got;
}

const cmd = (...args: string[]) => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`;

/** Waits until every writer has an acknowledged write reported after wall time `t`; returns each one's first. */
async function allFollowed(writers: StockWriter[], t: number, what: string): Promise<Map<ClientKind, number>> {
  return await waitFor(() => {
    const m = new Map<ClientKind, number>();
    for (const w of writers) {
      const at = w.firstAckAfter(t);
      if (at === undefined) return undefined;
      m.set(w.kind, at);
    }
    return m;
  }, { timeoutMs: 20_000, intervalMs: 20, what: `every client writing again after ${what} (${writers.filter((w) => w.firstAckAfter(t) === undefined).map((w) => `${w.kind}: ${w.outcomes().at(-1)?.reason ?? "no outcome"}`).join("; ")})` });
}

/** Wall-clock time of a performance.now() reading. */
const wall = (monotonic: number) => performance.timeOrigin + monotonic;

/**
 * Waits until every writer has a write acknowledged after `writable`, the wall time the harness first
 * saw the new primary take a write (so by the new primary: the old one is dead or fenced by then),
 * and records how long after the fault at `t` each got there.
 */
async function followed(writers: StockWriter[], t: number, writable: number, fault: string): Promise<void> {
  for (const [kind, at] of await allFollowed(writers, writable, fault)) record(`sentinel endpoint: ${kind} writing to the new primary after ${fault}, ms after the fault`, at - t);
}

/** Every acknowledged key of `w` that `primary`'s Redis does not hold. */
async function missing(primary: Member, w: StockWriter): Promise<number[]> {
  const acked = w.acks().map((a) => a.n);
  const out: number[] = [];
  for (let i = 0; i < acked.length; i += 500) {
    const batch = acked.slice(i, i + 500);
    const values = (await primary.redis.cmd("MGET", batch.map((n) => `${w.o.prefix}:${n}`))) as (string | null)[];
    values.forEach((v, j) => v === null && out.push(batch[j]!));
  }
  return out;
}

scenario("every stock client follows the primary through the endpoints: Redis kill -9, leader SIGTERM, switchover; no acknowledged write lost", async () => {
  const { g, endpoints } = await sentinelGroup();
  const p1 = await g.converged();
  const writers = CLIENT_KINDS.map((kind) => new StockWriter(kind, { sentinels: endpoints, master: MASTER, prefix: `w-${kind}` }));
  await waitFor(() => writers.every((w) => w.acks().length >= 20), { timeoutMs: 20_000, what: `every client writing (${writers.map((w) => `${w.kind} ${w.acks().length} acks, last ${w.outcomes().at(-1)?.reason ?? "-"}`).join("; ")})` });

  // 1. The primary's Redis dies.
  let t = Date.now();
  await p1.redis.kill9();
  const { member: p2, at: w2 } = await g.newWritablePrimary(p1.id, 10_000);
  await followed(writers, t, wall(w2), "Redis kill -9");
  await p1.redis.restart({ empty: true });
  await g.converged();

  // 2. The leader's sidecar is stopped (a planned handover).
  t = Date.now();
  expect(await p2.sidecar.stop("SIGTERM")).toBe(0);
  const { member: p3, at: w3 } = await g.newWritablePrimary(p2.id, 10_000);
  await followed(writers, t, wall(w3), "leader SIGTERM");
  p2.sidecar.restart();
  await g.converged();

  // 3. A switchover, once a member could take over (the switchover command checks first).
  await g.takeoverReady(p3.id);
  t = Date.now();
  const cli = new Proc("switchover", [BINARY, "switchover", "--timeout", "10s"], { env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: consul.addr, CONSUL_LEADER_KEY: g.key } });
  expect(await cli.exited).toBe(0);
  const { member: p4, at: w4 } = await g.newWritablePrimary(p3.id, 10_000);
  await followed(writers, t, wall(w4), "switchover");
  await Bun.sleep(300);

  const final = await g.converged();
  expect(final.id).toBe(p4.id);
  for (const w of writers) {
    const issued = await w.stop();
    const outcomes = w.outcomes();
    // Every write was answered, once: acknowledged or failed back to the client.
    expect({ kind: w.kind, answered: outcomes.length, distinct: new Set(outcomes.map((o) => o.n)).size }).toEqual({ kind: w.kind, answered: issued, distinct: issued });
    expect({ kind: w.kind, lost: await missing(final, w) }).toEqual({ kind: w.kind, lost: [] });
  }
}, 240_000);

/** The "sentinel request" lines the sidecars logged between wall times `from` and `to`. */
function requests(g: RedisGroup, from: number, to: number): LogLine[] {
  return g.members.flatMap((m) => m.sidecar.logs()).filter((l) => l.msg === "sentinel request" && Date.parse(l["time"] as string) >= from && Date.parse(l["time"] as string) <= to);
}

/**
 * Requests a library sends in case the server has a feature, and carries on without when refused:
 * node-redis's CLIENT MAINT_NOTIFICATIONS (Redis Enterprise's maintenance pushes; its default
 * "auto" mode ignores the refusal, which Redis's own Sentinel gives too).
 */
const OPTIONAL = new Set(["client maint_notifications"]);

scenario("what each library sends: every request is one the endpoint answers without an error", async () => {
  const { g, endpoints } = await sentinelGroup();
  let p = await g.converged();
  const seen: Record<string, string[]> = {};
  for (const kind of CLIENT_KINDS) {
    const from = Date.now();
    const w = new StockWriter(kind, { sentinels: endpoints, master: MASTER, prefix: `c-${kind}` });
    await waitFor(() => w.acks().length >= 10, { timeoutMs: 15_000, what: `${kind} writing` });
    const t = Date.now();
    const cli = new Proc("switchover", [BINARY, "switchover", "--timeout", "10s"], { env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: consul.addr, CONSUL_LEADER_KEY: g.key } });
    expect(await cli.exited).toBe(0);
    await g.newWritablePrimary(p.id, 10_000);
    await waitFor(() => w.firstAckAfter(t), { timeoutMs: 15_000, what: `${kind} writing after the switchover` });
    await w.stop();
    await Bun.sleep(200);
    const lines = requests(g, from, Date.now());
    seen[kind] = [...new Set(lines.map((l) => l["command"] as string))].sort();
    expect({ kind, errors: lines.filter((l) => l["reply"] !== "ok" && !OPTIONAL.has(l["command"] as string)).map((l) => `${l["command"]}: ${l["reply"]}`) }).toEqual({ kind, errors: [] });
    p = await g.converged();
  }
  console.log(`Sentinel requests each library sent:\n${Object.entries(seen).map(([k, v]) => `  ${k}: ${v.join(", ")}`).join("\n")}`);
  // Each follows through the protocol, not by luck: it asked for the primary.
  for (const kind of CLIENT_KINDS) expect(seen[kind]!.some((c) => /^sentinel (get-master-addr-by-name|master|masters)$/.test(c))).toBe(true);
}, 180_000);

scenario("the endpoint speaks Sentinel: answers, RESP3, the failover in progress, garbage, AUTH; consul-leader primary", async () => {
  const password = "sentinel-pw-5f2b9c1d";
  const { g, endpoints } = await sentinelGroup({ CONSUL_LEADER_SENTINEL_PASSWORD: password, CONSUL_LEADER_SENTINEL_WAIT: "300ms" });
  const p = await g.converged();
  const ep = endpoints[1]!;
  const auth = cmd("AUTH", password);

  // Nothing before AUTH; then the primary's address.
  expect(await raw(ep, cmd("SENTINEL", "get-master-addr-by-name", MASTER))).toBe("-NOAUTH Authentication required.\r\n");
  expect(await raw(ep, cmd("AUTH", "wrong-password"))).toStartWith("-WRONGPASS");
  expect(await raw(ep, auth + cmd("SENTINEL", "get-master-addr-by-name", MASTER))).toBe(`+OK\r\n*2\r\n$9\r\n127.0.0.1\r\n$${String(p.redis.port).length}\r\n${p.redis.port}\r\n`);
  // The other sidecars' endpoints, from Consul.
  const sentinels = await waitFor(async () => {
    const r = await raw(ep, auth + cmd("SENTINEL", "sentinels", MASTER));
    return endpoints.filter((e) => e !== ep).every((e) => r.includes(`$${e.split(":")[1]!.length}\r\n${e.split(":")[1]}\r\n`)) ? r : undefined;
  }, { what: "SENTINEL sentinels to list the two other endpoints" });
  expect(sentinels).not.toContain(`\r\n${ep.split(":")[1]}\r\n`);
  // RESP3 with HELLO ... AUTH, a map for SENTINEL master.
  const r3 = await raw(ep, cmd("HELLO", "3", "AUTH", "default", password) + cmd("SENTINEL", "master", MASTER) + cmd("ROLE"));
  expect(r3).toContain("$4\r\nmode\r\n$8\r\nsentinel\r\n");
  expect(r3).toContain("%20\r\n$4\r\nname\r\n$8\r\nmymaster\r\n");
  expect(r3).toContain("$5\r\nflags\r\n$6\r\nmaster\r\n");
  // Unknown commands get an error at once; garbage a protocol error and a closed connection.
  expect(await raw(ep, auth + cmd("SET", "k", "v"))).toBe("+OK\r\n-ERR unknown command 'SET', with args beginning with: 'k' 'v' \r\n");
  expect(await raw(ep, "*1\r\n$99999999\r\n")).toStartWith("-ERR Protocol error");
  expect(await raw(ep, "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03")).toBe("");
  // The endpoint still serves after all that.
  expect(await raw(ep, auth + cmd("PING"))).toBe("+OK\r\n+PONG\r\n");

  // consul-leader primary prints what the endpoint names.
  const primary = new Proc("primary", [BINARY, "primary"], { env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: consul.addr, CONSUL_LEADER_KEY: g.key } });
  expect(await primary.exited).toBe(0);
  expect(primary.stdoutLines).toEqual([p.redis.addr]);

  // During a failover: a subscriber sees +sdown then +switch-master; a query made in between gets the new primary.
  let events = "";
  const [host, port] = [ep.split(":")[0]!, Number(ep.split(":")[1])];
  const sub = await Bun.connect({ hostname: host, port, socket: { data(_s, d) { events += Buffer.from(d).toString(); } } });
  sub.write(auth + cmd("PSUBSCRIBE", "*"));
  await waitFor(() => events.includes("psubscribe"), { what: "the subscription" });
  const stopped = p.sidecar.stop("SIGKILL");
  await p.redis.kill9();
  await stopped;
  // The lock is gone only after the check TTL (3 s) for a killed sidecar: a query asked now may wait and then get the old address.
  const during = await raw(ep, auth + cmd("SENTINEL", "get-master-addr-by-name", MASTER), 1000);
  expect(during).toStartWith("+OK\r\n*2\r\n");
  const { member: next } = await g.newWritablePrimary(p.id, 15_000);
  await waitFor(() => events.includes("+switch-master"), { what: `+switch-master (got: ${JSON.stringify(events)}; ${g.members.map((m) => JSON.stringify(m.sidecar.logs().filter((l) => l.msg === "sentinel events"))).join(" ")})` });
  expect(events).toContain(`$${`${MASTER} 127.0.0.1 ${p.redis.port} 127.0.0.1 ${next.redis.port}`.length}\r\n${MASTER} 127.0.0.1 ${p.redis.port} 127.0.0.1 ${next.redis.port}\r\n`);
  expect(events.indexOf("+failover-end")).toBeLessThan(events.indexOf("+switch-master"));
  sub.end();
  expect(await raw(ep, auth + cmd("SENTINEL", "get-master-addr-by-name", MASTER))).toBe(`+OK\r\n*2\r\n$9\r\n127.0.0.1\r\n$${String(next.redis.port).length}\r\n${next.redis.port}\r\n`);

  // The password never reaches a log line.
  for (const m of g.members) expect(m.sidecar.proc.lines.filter((l) => l.includes(password))).toEqual([]);
}, 120_000);
