/**
 * Failure paths against real Consul processes: bad knobs, Consul not there
 * yet, the local agent restarted, HTTP 500s and stalls from a proxy, 403s
 * from ACLs; standalone mode's own service and checks.
 */

import { expect } from "bun:test";
import { type ConsulAgent, startCluster, startDevAgent } from "../harness/consul.ts";
import { FaultProxy } from "../harness/fault-proxy.ts";
import { fileScope, freePort, scenario, Scope, waitFor } from "../harness/proc.ts";
import { oneLeader, Sidecar, standaloneSidecar } from "../harness/sidecar.ts";

let consul: ConsulAgent;
let n = 0;
fileScope("failures.test.ts", async () => {
  consul = await startDevAgent();
});

scenario("bad configuration: exit 78, one message naming every bad knob, nothing sent to Consul", async () => {
  const proxy = new FaultProxy(consul.url);
  Scope.current!.defer(() => proxy.stop());
  const s = new Sidecar("sidecar-badcfg", {
    CONSUL_HTTP_ADDR: proxy.addr,
    CONSUL_HTTP_TOKEN: "s3cr3t-token-value",
    CONSUL_LEADER_TTL: "5s",
    CONSUL_LEADER_SLEEP: "soon",
    CONSUL_LEADER_LOCKDELAY: "2m",
    CONSUL_LEADER_LOG_LEVEL: "loud",
    CONSUL_LEADER_REDIS_ADDR: "no-port",
  });
  const code = await s.proc.exited;
  const out = s.proc.lines.join("\n");
  expect(code).toBe(78);
  expect(out).toContain("5 problems");
  for (const knob of ["CONSUL_LEADER_TTL=\"5s\"", "CONSUL_LEADER_SLEEP=\"soon\"", "CONSUL_LEADER_LOCKDELAY=\"2m\"", "CONSUL_LEADER_LOG_LEVEL=\"loud\"", "CONSUL_LEADER_REDIS_ADDR=\"no-port\""]) {
    expect(out).toContain(knob);
  }
  expect(out).not.toContain("s3cr3t-token-value");
  expect(proxy.seen).toEqual([]);
});

scenario("Consul unreachable at start: retries with backoff, says so, and works once Consul is up", async () => {
  const port = freePort();
  const name = `late${++n}`;
  const s = standaloneSidecar(`127.0.0.1:${port}`, name, 1, { CONSUL_LEADER_LOG_LEVEL: "warn" });
  const warned = await s.waitForLog((l) => l.msg === "action failed; will retry", 5000);
  expect(String((warned["err"] as { code: string }).code)).toBe("CONSUL_UNREACHABLE");
  expect(String((warned["err"] as { message: string }).message)).toContain(`cannot reach the Consul agent at http://127.0.0.1:${port}`);
  await Bun.sleep(1500);
  // Backoff: a handful of attempts in 1.5s, not hundreds.
  const attempts = s.logs().filter((l) => l.msg.startsWith("action failed")).length;
  expect(attempts).toBeLessThan(8);
  const late = await startDevAgent({}, { httpPort: port });
  await waitFor(async () => {
    const svc = await late.api<{ Tags: string[] }>("GET", `/v1/agent/service/${name}-1`).catch(() => undefined);
    return svc?.Tags.includes("primary");
  }, { timeoutMs: 15_000, what: "the late sidecar to tag itself primary" });
});

scenario("standalone mode: registers its own service with a TTL liveness check and a role check, deregisters on exit", async () => {
  const name = `solo${++n}`;
  const s = [standaloneSidecar(consul.addr, name, 1), standaloneSidecar(consul.addr, name, 2)];
  const leader = await oneLeader(s);
  const id = leader === s[0] ? `${name}-1` : `${name}-2`;
  const checks = await consul.api<Record<string, { ServiceID: string; Type: string; Status: string }>>("GET", "/v1/agent/checks");
  expect(checks[`${id}:alive`]).toMatchObject({ ServiceID: id, Type: "ttl", Status: "passing" });
  expect(checks[`${id}:role`]).toMatchObject({ ServiceID: id, Type: "ttl", Status: "passing" });
  const svc = await consul.api<{ Tags: string[]; Port: number; ID: string }>("GET", `/v1/agent/service/${id}`);
  expect(svc.Tags).toContain("primary");
  expect(await leader.stop()).toBe(0);
  const gone = await fetch(`${consul.url}/v1/agent/service/${id}`);
  expect(gone.status).toBe(404);
  const after = await consul.api<Record<string, unknown>>("GET", "/v1/agent/checks");
  expect(after[`${id}:alive`]).toBeUndefined();
  await oneLeader(s);
});

scenario("debug logs show every decision and every Consul call, and never the token", async () => {
  const name = `dbg${++n}`;
  const s = standaloneSidecar(consul.addr, name, 1, { CONSUL_HTTP_TOKEN: "0f1e2d3c-token-never-printed", CONSUL_LEADER_LOG_LEVEL: "debug" });
  await oneLeader([s]);
  const logs = s.logs();
  const calls = logs.filter((l) => l.msg === "consul request");
  expect(calls.length).toBeGreaterThan(5);
  for (const c of calls.slice(0, 5)) expect(c).toMatchObject({ method: expect.any(String), path: expect.stringMatching(/^\/v1\//), status: expect.any(Number), ms: expect.any(Number) });
  expect(logs.some((l) => l.msg === "decision" && l["kind"] === "lead" && typeof l["reason"] === "string")).toBe(true);
  expect(s.proc.lines.join("\n")).not.toContain("0f1e2d3c-token-never-printed");
});

scenario("HTTP 500s shorter than the grace: no failover; the leader keeps its session and says what happened", async () => {
  const proxy = new FaultProxy(consul.url);
  Scope.current!.defer(() => proxy.stop());
  const name = `five${++n}`;
  const s = [standaloneSidecar(proxy.addr, name, 1), standaloneSidecar(proxy.addr, name, 2)];
  const leader = await oneLeader(s);
  const transitions = s.map((x) => x.logs().filter((l) => l.msg === "role changed").length);
  // Right after one of the leader's renewals, for longer than a renew period (6.775s with these
  // knobs, see deriveTiming) yet short enough that the retries get through before TTL - margin.
  const session = String(leader.logs().findLast((l) => l.msg === "created session")?.["session"]);
  const renewals = () => proxy.seen.filter((w) => w === `PUT /v1/session/renew/${session}`).length;
  const seen = renewals();
  await waitFor(() => renewals() > seen, { timeoutMs: 10_000, intervalMs: 5, what: "a renewal of the leader's session" });
  proxy.fault = { kind: "status", status: 500, body: "rpc error making call: No cluster leader", match: /^\/v1\/(kv|session)\// };
  await Bun.sleep(8000);
  proxy.fault = undefined;
  expect(proxy.injected.length).toBeGreaterThan(0);
  await Bun.sleep(500);
  const roleLines = s.map((x) => x.logs().filter((l) => l.msg === "role changed"));
  expect(roleLines.map((l) => l.length), JSON.stringify(roleLines)).toEqual(transitions);
  expect(leader.role()).toBe("leader");
  const warn = leader.logs().find((l) => l.msg.startsWith("session renew failed"));
  expect(warn).toBeDefined();
  expect(JSON.stringify(warn)).toContain("No cluster leader");
});

scenario("Consul stalls past the deadline: the leader fences on its own timer before Consul lets anyone else in", async () => {
  const proxy = new FaultProxy(consul.url);
  Scope.current!.defer(() => proxy.stop());
  const name = `stall${++n}`;
  const key = `test/${name}/lock`;
  const leader = standaloneSidecar(proxy.addr, name, 1, { CONSUL_LEADER_KEY: key });
  await oneLeader([leader]);
  const t0 = performance.now();
  proxy.fault = { kind: "stall" };
  const fenced = await leader.waitForLog((l) => /fencing deadline reached/.test(l.msg), 10_000);
  const fencedAt = performance.now();
  // Consul's view, straight from the agent: when did the session lose the key?
  await waitFor(async () => {
    const res = await fetch(`${consul.url}/v1/kv/${key}`);
    const [pair] = (await res.json()) as { Session?: string }[];
    return !pair?.Session;
  }, { timeoutMs: 10_000, intervalMs: 20, what: "Consul to invalidate the stalled leader's session" });
  const lapsedAt = performance.now();
  // Said at error, with why: writes fail with NOREPLICAS now, which would point at the replicas.
  expect(fenced["level"]).toBe("error");
  expect(fenced["reason"]).toMatch(/^cannot renew the lease: Consul agent unreachable since \d{4}-\d\d-\d\dT\S+Z; writes blocked until it answers$/);
  expect(fencedAt).toBeLessThan(lapsedAt);
  // 3s check TTL - 0.7s margin after the last heartbeat (<= 750ms before the stall).
  expect(fencedAt - t0).toBeLessThan(2300 + 300);
  proxy.fault = undefined;
});

scenario("403 from ACLs: the error names the missing permission; the token never appears", async () => {
  const acl = await startDevAgent({ acl: { enabled: true, default_policy: "deny", tokens: { initial_management: "root-mgmt-token-1234" } } }, { token: "root-mgmt-token-1234" });
  const name = `acl${++n}`;
  await acl.api("PUT", "/v1/acl/policy", {
    Name: `no-session-${name}`,
    Rules: `key_prefix "test/" { policy = "write" }\nservice_prefix "" { policy = "write" }\nnode_prefix "" { policy = "read" }`,
  });
  const tok = await acl.api<{ SecretID: string }>("PUT", "/v1/acl/token", { Policies: [{ Name: `no-session-${name}` }] });
  const s = standaloneSidecar(acl.addr, name, 1, { CONSUL_HTTP_TOKEN: tok.SecretID, CONSUL_LEADER_KEY: `test/${name}/lock`, CONSUL_LEADER_LOG_LEVEL: "warn" });
  const line = await s.waitForLog((l) => l.msg === "action failed; will retry" && (l["err"] as { code?: string })?.code === "CONSUL_FORBIDDEN", 10_000);
  expect((line["err"] as { message: string }).message).toMatch(/lacks session:write/);
  expect(s.proc.lines.join("\n")).not.toContain(tok.SecretID);
});

scenario("the local agent restarts: no failover, the leader keeps its session and role", async () => {
  const { clients } = await startCluster(1, 1);
  const agent = clients[0]!;
  const name = `restart${++n}`;
  const s = [standaloneSidecar(agent.addr, name, 1, { CONSUL_LEADER_CHECK_TTL: "5s", CONSUL_LEADER_FENCE_MARGIN: "1s" }), standaloneSidecar(agent.addr, name, 2, { CONSUL_LEADER_CHECK_TTL: "5s", CONSUL_LEADER_FENCE_MARGIN: "1s" })];
  const leader = await oneLeader(s, 20_000);
  await Bun.sleep(1500);
  const before = s.map((x) => x.logs().filter((l) => l.msg === "role changed").length);
  const session = leader.logs().find((l) => l.msg === "created session")!["session"];
  await agent.proc.kill9();
  agent.restart();
  await agent.waitReady();
  await Bun.sleep(6000); // past the check TTL: a lapsed check would have invalidated the session by now
  expect(s.map((x) => x.logs().filter((l) => l.msg === "role changed").length)).toEqual(before);
  expect(leader.role()).toBe("leader");
  expect(leader.logs().filter((l) => l.msg === "created session").length).toBe(1);
  const info = await agent.api<{ ID: string }[]>("GET", `/v1/session/info/${session}`);
  expect(info[0]?.ID).toBe(session as string);
}, 90_000);

scenario("--help prints every knob of the table with its default; --version prints the version", async () => {
  const { KNOBS } = await import("../../src/config/knobs.ts");
  const help = new Sidecar("help", {}, ["--help"]);
  expect(await help.proc.exited).toBe(0);
  const text = help.proc.lines.join("\n");
  for (const k of KNOBS) expect(text).toContain(`  ${k.name}\n      default ${k.default === "" ? "(unset)" : k.default};`);
  const version = new Sidecar("version", {}, ["--version"]);
  expect(await version.proc.exited).toBe(0);
  const pkg = (await import("../../package.json")).default;
  expect(version.proc.lines[0]).toBe(`consul-leader ${pkg.version}`);
  const bad = new Sidecar("bad-flag", {}, ["--frobnicate"]);
  expect(await bad.proc.exited).toBe(2);
});
