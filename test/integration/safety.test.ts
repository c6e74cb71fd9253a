/**
 * The promises that broke when main was attacked (issue 10), each attacked
 * again with real Consul and Redis processes:
 * - a planned handover waits for its own Redis to confirm the fence, or is
 *   aborted (a busy Redis: a slow script);
 * - a successor never promotes over a reachable old primary that refuses
 *   the fence (an ACL without CONFIG);
 * - a candidate frozen in the middle of a takeover never promotes once its
 *   lease lapsed and another node took over;
 * - a lock lost to an operator while the holder is in a failure backoff is
 *   acted on at once;
 * - member entries left behind are cleaned up, and malformed ones do not
 *   break anything.
 * Identity collisions and exec signals have files of their own.
 */

import { expect } from "bun:test";
import { Checker, consulDiscovery } from "../harness/checker.ts";
import { type ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { FaultProxy } from "../harness/fault-proxy.ts";
import { record } from "../harness/figures.ts";
import { RedisGroup } from "../harness/group.ts";
import { fileScope, freePort, Proc, scenario, waitFor } from "../harness/proc.ts";
import type { RedisServer } from "../harness/redis.ts";
import { BINARY } from "../harness/sidecar.ts";

let consul: ConsulAgent;
fileScope("safety.test.ts", async () => {
  consul = await startDevAgent();
});

/** Keeps Redis busy in a Lua loop for `ms` (as a slow script would), on a connection of its own; resolves when it ends. */
function busy(r: RedisServer, ms: number): Promise<unknown> {
  const script = `local t=redis.call('TIME') local s=t[1]*1000+math.floor(t[2]/1000) while true do local n=redis.call('TIME') if n[1]*1000+math.floor(n[2]/1000)-s>=${ms} then break end end return 1`;
  return r.cmd("EVAL", [script, "0"]).catch((e: unknown) => e);
}

function cli(args: string[], g: RedisGroup): Proc {
  return new Proc(`cli-${args[0]}`, [BINARY, ...args], { env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: consul.addr, CONSUL_LEADER_KEY: g.key } });
}

async function lockHolder(g: RedisGroup): Promise<string | null> {
  const kv = await consul.api<{ Session?: string }[]>("GET", `/v1/kv/${g.key}`).catch(() => []);
  return kv[0]?.Session ?? null;
}

scenario("a switchover while the primary's Redis runs a slow script is aborted: the leader keeps leading, no acknowledged write is lost", async () => {
  // The script (2.5 s) outlasts the handover's wait for the fence (1 s) but not REDIS_DOWN_AFTER (10 s):
  // the leader's Redis is busy, not down.
  const g = await RedisGroup.start(consul, { env: { CONSUL_LEADER_HANDOVER_TIMEOUT: "1s", CONSUL_LEADER_REDIS_DOWN_AFTER: "10s" } });
  const p = await g.converged();
  const ck = new Checker({ discover: consulDiscovery(consul.url, g.name), servers: g.members.map((m) => m.redis.addr) });
  await waitFor(() => ck.acks.length > 50, { what: "the checker writing" });
  // The switchover command asks only when a member could take over: the replicas' first sync must be over.
  await g.takeoverReady(p.id);
  const script = busy(p.redis, 2500);
  await Bun.sleep(100);
  const sw = cli(["switchover", "--timeout", "2s"], g);
  expect(await sw.exited).toBe(1);
  await p.sidecar.waitForLog((l) => l.msg === "handover aborted: Redis did not confirm the fence; still leading", 5000, "the aborted handover");
  await script;
  const after = await g.converged(15_000);
  expect(after.id).toBe(p.id);
  await Bun.sleep(300);
  await ck.stop();
  expect(await ck.lost(p.redis.addr)).toEqual([]);
  expect(ck.splitBrainMs()).toBe(0);
  // Nobody else was ever promoted meanwhile.
  for (const m of g.members.filter((m) => m !== p)) expect(m.sidecar.logs().some((l) => l.msg === "promoted")).toBe(false);
}, 60_000);

scenario("a successor never promotes over a reachable old primary that refuses the fence (NOPERM): it waits, and promotes once the fence goes through", async () => {
  const password = "acl-pw-1d2c";
  const g = await RedisGroup.start(consul, {
    redis: { password, conf: [`user sidecar on >${password} ~* &* +@all`] },
    env: { CONSUL_LEADER_REDIS_USERNAME: "sidecar" },
  });
  const p = await g.converged();
  const ck = new Checker({ discover: consulDiscovery(consul.url, g.name), servers: g.members.map((m) => m.redis.addr), password });
  await waitFor(() => ck.acks.length > 50, { what: "the checker writing" });
  // The old primary's ACL takes CONFIG away from the sidecars' user, then its sidecar dies.
  await p.redis.cmd("ACL", ["SETUSER", "sidecar", "-config"]);
  await p.sidecar.kill9();
  const waiting = await Promise.any(g.members.filter((m) => m !== p).map((m) =>
    m.sidecar.waitForLog((l) => l.msg === "takeover waits" && /answered our fence with an error .*NOPERM/.test(String(l["reason"])), 15_000, "a successor refusing to promote").then(() => m)
  ));
  // For a while: the old primary is the only Redis taking writes, and nobody else claims the role.
  await Bun.sleep(2000);
  const masters = (await g.masters()).filter((m) => m.writable).map((m) => m.id);
  expect(masters).toEqual([p.id]);
  expect(waiting.sidecar.logs().some((l) => l.msg === "promoted")).toBe(false);
  // The operator gives the permission back: the fence goes through and the successor promotes with all the data.
  await p.redis.cmd("ACL", ["SETUSER", "sidecar", "+@all"]);
  const { member: next } = await g.newWritablePrimary(p.id, 10_000);
  expect(next.id).toBe(waiting.id);
  await Bun.sleep(300);
  await ck.stop();
  expect(await ck.lost(next.redis.addr)).toEqual([]);
  expect(ck.splitBrainMs()).toBe(0);
}, 90_000);

scenario("a candidate frozen in the middle of a takeover never promotes after its lease lapsed and another node took over", async () => {
  const g = await RedisGroup.start(consul, { env: { CONSUL_LEADER_REDIS_DOWN_AFTER: "1s" } });
  const p = await g.converged();
  const ck = new Checker({ discover: consulDiscovery(consul.url, g.name), servers: g.members.map((m) => m.redis.addr) });
  await waitFor(() => ck.acks.length > 50, { what: "the checker writing" });
  // The primary's Redis freezes: its sidecar gives the lock up, a successor takes it and waits for the fence.
  p.redis.pause();
  const first = await Promise.any(g.members.filter((m) => m !== p).map((m) =>
    m.sidecar.waitForLog((l) => l.msg === "takeover waits", 10_000, "a successor waiting for the frozen primary").then(() => m)
  ));
  // It freezes too, in the middle of its takeover, longer than its check TTL (3s): its session lapses.
  first.sidecar.signal("SIGSTOP");
  const second = g.members.find((m) => m !== p && m !== first)!;
  await second.sidecar.waitForLog((l) => l.msg === "acquired the lock", 15_000, "the third member taking the lock over");
  // The primary's Redis comes back: the third member gets the fence confirmed and promotes.
  p.redis.resume();
  await g.newWritablePrimary(p.id, 10_000);
  expect((await g.discoveredPrimaries())).toEqual([second.id]);
  // The frozen candidate wakes up with its takeover still pending: it must not promote.
  first.sidecar.signal("SIGCONT");
  const until = performance.now() + 4000;
  while (performance.now() < until) {
    const writable = (await g.masters()).filter((m) => m.writable).map((m) => m.id);
    expect(writable).toEqual([second.id]);
    await Bun.sleep(25);
  }
  expect(first.sidecar.logs().filter((l) => l.msg === "promoted")).toEqual([]);
  await g.converged(15_000);
  await ck.stop();
  expect(ck.splitBrainMs()).toBe(0);
  expect(await ck.lost(second.redis.addr)).toEqual([]);
}, 90_000);

scenario("an operator destroys the leader's session while its Consul writes fail and it backs off: its Redis refuses writes at once", async () => {
  const proxy = new FaultProxy(consul.url);
  try {
    const g = await RedisGroup.start(consul, { env: (i): Record<string, string> => (i === 0 ? { CONSUL_HTTP_ADDR: proxy.addr, CONSUL_LEADER_PRIORITY: "100" } : {}) });
    const p = await g.converged();
    expect(p.index).toBe(0);
    // Its agent writes (service, check heartbeats) fail from now on: every tick errors and the loop backs off (up to 5 s).
    proxy.fault = { kind: "status", status: 500, body: "rpc error: injected", match: /^\/v1\/agent\/(service|check)\// };
    await p.sidecar.waitForLog((l) => l.msg === "action failed; will retry" || l.msg === "action failed again", 15_000, "a failed action");
    await Bun.sleep(1500);
    const session = await lockHolder(g);
    expect(session).not.toBeNull();
    const t0 = performance.now();
    await consul.api("PUT", `/v1/session/destroy/${session}`);
    // The watch sees the lock go; the fence follows within milliseconds, not after the backoff.
    await waitFor(async () => (await p.redis.cmd("SET", ["probe", "1"]).then(() => false, (e: Error) => /NOREPLICAS|READONLY/.test(e.message))), { timeoutMs: 1000, intervalMs: 5, what: "the old primary to refuse writes" });
    record("session destroyed during a backoff -> old primary refuses writes, ms", performance.now() - t0);
    proxy.fault = undefined;
    await g.converged(15_000);
  } finally {
    proxy.stop();
  }
}, 60_000);

scenario("member entries left behind are deleted by the leader; malformed ones are ignored and the status page still answers, escaped", async () => {
  const name = `gc${process.pid}`;
  const prefix = `test/${name}/lock/members/`;
  const stale = { instance: "gone-alloc", service: "x", role: "follower", eligible: true, redisUp: true, priority: 1, offset: 5, replid: "r", replid2: "", updated: new Date(Date.now() - 3 * 3600_000).toISOString() };
  await consul.api("PUT", `/v1/kv/${prefix}gone-alloc`, stale);
  await consul.api("PUT", `/v1/kv/${prefix}garbage`, "<script>alert(1)</script>");
  await consul.api("PUT", `/v1/kv/${prefix}wrong-types`, { instance: "<img src=x onerror=alert(1)>", offset: "9", eligible: "yes" });
  const http = `127.0.0.1:${freePort()}`;
  const g = await RedisGroup.start(consul, { name, env: (i): Record<string, string> => (i === 0 ? { CONSUL_LEADER_HTTP_ADDR: http } : {}) });
  const p = await g.converged();
  // The page reads the members while the malformed entries may still be there.
  const page = await fetch(`http://${http}/`);
  expect(page.status).toBe(200);
  expect(await page.text()).not.toContain("<img src=x");
  await waitFor(async () => {
    const keys = await consul.api<string[]>("GET", `/v1/kv/${prefix}?keys`).catch((): string[] => []);
    return !keys.includes(`${prefix}gone-alloc`) && !keys.includes(`${prefix}garbage`) && !keys.includes(`${prefix}wrong-types`) && keys.length === 3 ? keys : undefined;
  }, { timeoutMs: 10_000, what: "the leader to delete the entries left behind and keep the three live ones" });
  expect(p.sidecar.logs().filter((l) => l.msg === "deleted a member entry left behind").length).toBe(3);
}, 60_000);
