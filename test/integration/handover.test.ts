/**
 * Planned and unplanned changes of leader, checked with continuous writers:
 * SIGTERM and `consul-leader switchover` hand over with no acknowledged write
 * lost; a restarted sidecar re-adopts its session (not a failover); a leader
 * cut off from Consul fences itself on its own timer and resumes when its
 * session survived, or rejoins as a follower when it did not.
 */

import { expect } from "bun:test";
import { Checker, consulDiscovery } from "../harness/checker.ts";
import { type ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { FaultProxy } from "../harness/fault-proxy.ts";
import { record } from "../harness/figures.ts";
import { RedisGroup } from "../harness/group.ts";
import { fileScope, freePort, scenario, Scope, waitFor } from "../harness/proc.ts";
import { parseExposition } from "../harness/prometheus.ts";
import { BINARY } from "../harness/sidecar.ts";
import { Proc } from "../harness/proc.ts";

let consul: ConsulAgent;
fileScope("handover.test.ts", async () => {
  consul = await startDevAgent();
});


function checkerFor(g: RedisGroup): Checker {
  return new Checker({ discover: consulDiscovery(consul.url, g.name), servers: g.members.map((m) => m.redis.addr) });
}

/** Stops the checker after a settle and returns what it saw, checked against the final primary. */
async function verdict(ck: Checker, finalPrimary: string, t0: number): Promise<{ lost: number; splitBrainMs: number; resumedMs: number | undefined; acks: number }> {
  await Bun.sleep(500);
  await ck.stop();
  const resumed = ck.resumedAt(t0, finalPrimary);
  return { lost: (await ck.lost(finalPrimary)).length, splitBrainMs: ck.splitBrainMs(), resumedMs: resumed === undefined ? undefined : resumed - t0, acks: ck.acks.length };
}

scenario("SIGTERM to the leader: another primary takes writes within a second, no acknowledged write lost, no split brain", async () => {
  const g = await RedisGroup.start(consul);
  const p = await g.converged();
  const ck = checkerFor(g);
  await Bun.sleep(500);
  const t0 = performance.now();
  expect(await p.sidecar.stop("SIGTERM")).toBe(0);
  const { member: next, at } = await g.newWritablePrimary(p.id, 5000);
  const v = await verdict(ck, next.redis.addr, t0);
  record("graceful handover (SIGTERM) -> new writable primary, ms", at - t0);
  expect(at - t0).toBeLessThan(1000);
  expect(v.lost).toBe(0);
  expect(v.splitBrainMs).toBe(0);
  expect(v.acks).toBeGreaterThan(100);
  // The old primary's Redis follows the new one.
  await waitFor(async () => (await p.redis.info())["master_port"] === String(next.redis.port), { what: "the old primary to replicate from the new one" });
});

scenario("consul-leader switchover (and --to) moves the primary with no acknowledged write lost", async () => {
  const g = await RedisGroup.start(consul);
  const p = await g.converged();
  const ck = checkerFor(g);
  await g.takeoverReady(p.id);
  await Bun.sleep(300);
  const t0 = performance.now();
  const cli = new Proc("switchover", [BINARY, "switchover", "--timeout", "5s"], { env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: consul.addr, CONSUL_LEADER_KEY: g.key } });
  expect(await cli.exited).toBe(0);
  const { member: next, at } = await g.newWritablePrimary(p.id, 5000);
  record("switchover -> new writable primary, ms", at - t0);
  expect(cli.lines.join("\n")).toMatch(new RegExp(`${p.id} -> ${next.id}`));
  // --to: hand it to a chosen member.
  const chosen = g.members.find((m) => m !== next)!;
  await g.converged();
  const to = new Proc("switchover-to", [BINARY, "switchover", "--to", chosen.id], { env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: consul.addr, CONSUL_LEADER_KEY: g.key } });
  expect(await to.exited).toBe(0);
  const final = await g.converged();
  expect(final.id).toBe(chosen.id);
  const v = await verdict(ck, final.redis.addr, t0);
  expect(v.lost).toBe(0);
  expect(v.splitBrainMs).toBe(0);
  // Nobody to hand over to: a clear answer, exit 1.
  const bad = new Proc("switchover-bad", [BINARY, "switchover", "--to", "nobody-here", "--timeout", "2s"], { env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: consul.addr, CONSUL_LEADER_KEY: g.key } });
  expect(await bad.exited).toBe(1);
});

scenario("a sidecar restart is not a failover: the leader's sidecar killed and restarted re-adopts its session", async () => {
  const g = await RedisGroup.start(consul, { env: { CONSUL_LEADER_CHECK_TTL: "5s", CONSUL_LEADER_FENCE_MARGIN: "1s" } });
  const p = await g.converged();
  const session = p.sidecar.logs().find((l) => l.msg === "created session")!["session"] as string;
  const others = g.members.filter((m) => m !== p);
  // Converged is what Redis and discovery say; the followers log their role a moment later.
  await waitFor(() => others.every((m) => m.sidecar.role() === "follower"), { what: "the others to log their follower role" });
  const before = others.map((m) => m.sidecar.logs().filter((l) => l.msg === "role changed").length);
  const ck = checkerFor(g);
  await Bun.sleep(300);
  const t0 = performance.now();
  await p.sidecar.kill9();
  p.sidecar.restart();
  await p.sidecar.waitForLog((l) => l.msg === "re-adopted the session of a previous run", 10_000);
  await waitFor(() => p.sidecar.role() === "leader", { what: "the restarted sidecar to lead again" });
  const again = await g.converged();
  const v = await verdict(ck, again.redis.addr, t0);
  expect(again.id).toBe(p.id);
  expect(p.sidecar.logs().find((l) => l.msg === "re-adopted the session of a previous run")!["session"]).toBe(session);
  expect(others.map((m) => m.sidecar.logs().filter((l) => l.msg === "role changed").length)).toEqual(before);
  expect(v.lost).toBe(0);
  expect(v.splitBrainMs).toBe(0);
});

scenario("a leader cut off from Consul fences its Redis before its lease can lapse, and resumes when the session survived", async () => {
  // Every sidecar has its own proxy to Consul, so one can be cut off alone.
  // CHECK_TTL 0: the session TTL (12s, kept by Consul for up to 24s) is the lease.
  const proxies = [0, 1, 2].map(() => new FaultProxy(consul.url));
  Scope.current!.defer(() => proxies.forEach((x) => x.stop()));
  const http = [0, 1, 2].map(() => freePort());
  const g = await RedisGroup.start(consul, {
    env: (i) => ({ CONSUL_HTTP_ADDR: proxies[i]!.addr, CONSUL_LEADER_CHECK_TTL: "0s", CONSUL_LEADER_TTL: "12s", CONSUL_LEADER_FENCE_MARGIN: "1s", CONSUL_LEADER_HTTP_ADDR: `127.0.0.1:${http[i]}` }),
  });
  const p = await g.converged();
  const cut = proxies[p.index]!;
  const t0 = performance.now();
  cut.fault = { kind: "stall" };
  const fenced = await p.sidecar.waitForLog((l) => /fencing deadline reached/.test(l.msg), 15_000);
  const fencedMs = performance.now() - t0;
  // The deadline is the last renew (<= TTL/3 before the cut) + TTL - margin.
  expect(fencedMs).toBeLessThan(11_000 + 300);
  expect(fencedMs).toBeGreaterThan(11_000 - 4000 - 300);
  await waitFor(() => p.redis.cmd("SET", ["after-fence", "1"]).then(() => false, (e: Error) => /NOREPLICAS/.test(e.message)), { timeoutMs: 2000, what: "the fenced Redis to refuse writes with NOREPLICAS" });
  // NOREPLICAS points at the replicas; the log, /readiness and /metrics point at Consul.
  expect(fenced["level"]).toBe("error");
  expect(fenced["reason"]).toMatch(/^cannot renew the lease: Consul agent unreachable since \S+; writes blocked until it answers$/);
  const ready = await fetch(`http://127.0.0.1:${http[p.index]}/readiness`);
  expect(ready.status).toBe(503);
  expect(await ready.text()).toBe(`not ready: fenced: ${fenced["reason"]}\n`);
  const metrics = parseExposition(await (await fetch(`http://127.0.0.1:${http[p.index]}/metrics`)).text()).samples;
  expect(metrics.find((x) => x.name === "consul_leader_fenced")?.value).toBe(1);
  expect(metrics.find((x) => x.name === "consul_leader_lease_failing_seconds")?.value).toBeGreaterThan(0);
  // No one else took over: the session lives on in Consul (up to 2 x TTL).
  expect(g.members.filter((m) => m !== p).every((m) => m.sidecar.role() === "follower")).toBe(true);
  await Bun.sleep(Math.max(0, 14_000 - (performance.now() - t0)));
  cut.fault = undefined;
  await p.sidecar.waitForLog((l) => l.msg === "role changed" && l["to"] === "leader" && l["from"] === "fenced", 10_000);
  const again = await g.converged();
  expect(again.id).toBe(p.id);
}, 60_000);

scenario("a leader cut off longer than Consul keeps its session rejoins as a follower of the new leader", async () => {
  const proxies = [0, 1, 2].map(() => new FaultProxy(consul.url));
  Scope.current!.defer(() => proxies.forEach((x) => x.stop()));
  const g = await RedisGroup.start(consul, {
    env: (i) => ({ CONSUL_HTTP_ADDR: proxies[i]!.addr, CONSUL_LEADER_CHECK_TTL: "3s", CONSUL_LEADER_FENCE_MARGIN: "700ms" }),
  });
  const p = await g.converged();
  const ck = checkerFor(g);
  await Bun.sleep(300);
  const cut = proxies[p.index]!;
  const t0 = performance.now();
  cut.fault = { kind: "stall" };
  // Its heartbeats stop, so its check lapses (3s) and Consul gives the lock to another.
  const { member: next, at } = await g.newWritablePrimary(p.id, 15_000);
  record("leader cut off from its agent (CHECK_TTL 3s) -> new writable primary, ms", at - t0);
  const fencedLine = p.sidecar.logs().find((l) => /fencing deadline reached/.test(l.msg));
  expect(fencedLine).toBeDefined();
  cut.fault = undefined;
  await waitFor(() => p.sidecar.role() === "follower", { timeoutMs: 15_000, what: "the cut-off leader to rejoin as a follower" });
  const final = await g.converged();
  expect(final.id).toBe(next.id);
  const v = await verdict(ck, final.redis.addr, t0);
  expect(v.splitBrainMs).toBe(0);
  record("leader cut off: acknowledged writes lost", v.lost);
}, 60_000);
