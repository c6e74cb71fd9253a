/**
 * The sidecar against a Consul that locks things down: ACLs with
 * default_policy = "deny" (the policy in packaging/acl-policy.hcl, exactly,
 * then without each of its rules in turn; the token from a file; no secret in
 * the output), and an HTTPS-only agent that verifies client certificates
 * (CA file, CA directory, client certificate, server name, CONSUL_HTTP_SSL,
 * CONSUL_HTTP_SSL_VERIFY=false, and what each mistake looks like).
 */

import { afterAll, expect } from "bun:test";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ConsulAgent, consulBinary, startDevAgent } from "../harness/consul.ts";
import { type NomadService, randomAllocId, registerLikeNomad } from "../harness/discovery.ts";
import { RedisGroup } from "../harness/group.ts";
import { freePort, Proc, ROOT, scenario, Scope, waitFor } from "../harness/proc.ts";
import { BINARY, type LogLine, oneLeader, Sidecar } from "../harness/sidecar.ts";

const file = new Scope("security.test.ts");
afterAll(async () => {
  await file.close();
});

// ------------------------------------------------------------------ ACLs

const POLICY_FILE = join(ROOT, "packaging", "acl-policy.hcl");
/** The agent's node name: what session:write is checked on. */
const NODE = "node1";
/** The policy file is written for this service and the key it implies. */
const SERVICE = "redis";
const KEY = "consul-leader/redis/lock";

/** One `resource "name" { policy = "..." }` block of the policy file. */
interface Rule {
  /** e.g. `key_prefix "consul-leader/redis/lock/members/"` */
  label: string;
  /** The block as written in the file. */
  text: string;
}

const RULE_RE = /^(\w+)\s+("[^"]*")\s*\{\s*policy\s*=\s*"(\w+)"\s*\}/gm;

function policyText(): string {
  return readFileSync(POLICY_FILE, "utf8");
}

function policyRules(): Rule[] {
  return [...policyText().matchAll(RULE_RE)].map((m) => ({ label: `${m[1]} ${m[2]}`, text: m[0] }));
}

function rule(label: string): Rule {
  const r = policyRules().find((x) => x.label === label);
  if (!r) throw new Error(`packaging/acl-policy.hcl has no rule ${label}`);
  return r;
}

/** The optional rule the file carries commented out, for CONSUL_LEADER_PREPARED_QUERY. */
const QUERY_RULE_RE = /^#\s*(query "([^"]+)" \{ policy = "write" \})\s*$/m;

function queryRule(): { rule: string; name: string } {
  const m = QUERY_RULE_RE.exec(policyText());
  if (!m) throw new Error("packaging/acl-policy.hcl has no commented-out query rule");
  return { rule: m[1]!, name: m[2]! };
}

/** The policy file, without `drop` when given. */
function policy(drop?: Rule): string {
  const text = policyText();
  if (!drop) return text;
  const out = text.replace(drop.text, "");
  if (out === text) throw new Error(`could not remove ${drop.label}`);
  return out;
}

/**
 * A dev agent with ACLs on, default deny; `api` uses its management token.
 * The agent has an agent token, as every agent in an ACL cluster needs for
 * its own node: without one it cannot sync node-level changes (a
 * `consul maint` ending stays critical in the catalog). Services and checks
 * the sidecar registers still sync with the sidecar's token, so this grants
 * the sidecar nothing.
 */
async function aclAgent(): Promise<ConsulAgent> {
  const mgmt = crypto.randomUUID();
  return await startDevAgent(
    { node_name: NODE, acl: { enabled: true, default_policy: "deny", tokens: { initial_management: mgmt, agent: mgmt } } },
    { token: mgmt },
  );
}

/** Creates a policy from `rules` and a token holding only it; returns the token's SecretID. */
async function tokenWith(agent: ConsulAgent, rules: string): Promise<string> {
  const name = `p-${crypto.randomUUID().slice(0, 8)}`;
  await agent.api("PUT", "/v1/acl/policy", { Name: name, Rules: rules });
  const t = await agent.api<{ SecretID: string }>("PUT", "/v1/acl/token", { Policies: [{ Name: name }] });
  return t.SecretID;
}

/** A token with no policy at all: default deny everywhere. */
async function powerlessToken(agent: ConsulAgent): Promise<string> {
  const t = await agent.api<{ SecretID: string }>("PUT", "/v1/acl/token", { Description: "no policy" });
  return t.SecretID;
}

/** Writes `token` to a file in the current scope's temp dir, with the trailing newline editors add. */
function tokenFile(token: string): string {
  const path = join(Scope.current!.tmpdir("token-"), "token");
  writeFileSync(path, `${token}\n`, { mode: 0o600 });
  return path;
}

/** Three Redis and three standalone sidecars, CONSUL_LEADER_SERVICE_NAME=redis and the default key. */
async function standaloneGroup(agent: ConsulAgent, env: Record<string, string>, opts: { size?: number; password?: string } = {}): Promise<RedisGroup> {
  return await RedisGroup.start(agent, {
    name: SERVICE,
    size: opts.size ?? 3,
    ...(opts.password ? { redis: { password: opts.password } } : {}),
    // CONSUL_LEADER_KEY empty = unset: the default key for the service name, the one the policy names.
    env: { CONSUL_LEADER_KEY: "", ...env },
  });
}

/** A tags-only standalone sidecar for service `redis` (no Redis). */
function tagsOnly(agent: ConsulAgent, i: number, env: Record<string, string>): Sidecar {
  return new Sidecar(`sidecar-${SERVICE}-tags-${i}`, {
    CONSUL_HTTP_ADDR: agent.addr,
    CONSUL_LEADER_SERVICE_NAME: SERVICE,
    CONSUL_LEADER_SERVICE_ID: `${SERVICE}-tags-${i}`,
    CONSUL_LEADER_SERVICE_PORT: String(7000 + i),
    CONSUL_LEADER_REPLICA_LABEL: "replica",
    CONSUL_LEADER_CHECK_TTL: "3s",
    CONSUL_LEADER_FENCE_MARGIN: "700ms",
    ...env,
  });
}

/** Services registered the way Nomad does (with the management token, as Nomad uses its own), a sidecar on each. */
async function nomadGroup(agent: ConsulAgent, env: Record<string, string>, size = 3): Promise<{ services: NomadService[]; sidecars: Sidecar[] }> {
  const services: NomadService[] = [];
  const sidecars: Sidecar[] = [];
  for (let i = 0; i < size; i++) {
    const svc = await registerLikeNomad(agent, { allocId: randomAllocId(), name: SERVICE, port: agent.ports.http });
    services.push(svc);
    sidecars.push(new Sidecar(`sidecar-nomad-${i + 1}`, {
      CONSUL_HTTP_ADDR: agent.addr,
      NOMAD_ALLOC_ID: svc.allocId,
      CONSUL_LEADER_SERVICE_NAME: SERVICE,
      CONSUL_LEADER_REPLICA_LABEL: "replica",
      CONSUL_LEADER_CHECK_TTL: "3s",
      CONSUL_LEADER_FENCE_MARGIN: "700ms",
      ...env,
    }));
  }
  return { services, sidecars };
}

/** A primary left behind on another host: node2, known only to the catalog (its agent and sidecar are gone). */
async function registerCrashedPrimary(agent: ConsulAgent): Promise<void> {
  await agent.api("PUT", "/v1/catalog/register", {
    Node: "node2",
    Address: "127.0.0.2",
    Service: { ID: `${SERVICE}-crashed`, Service: SERVICE, Tags: ["primary"], Address: "127.0.0.2", Port: 6379 },
  });
}

async function catalogPrimaries(agent: ConsulAgent): Promise<string[]> {
  const list = await agent.api<{ ServiceID: string }[]>("GET", `/v1/catalog/service/${SERVICE}?tag=primary`);
  return list.map((s) => s.ServiceID).sort();
}

/** What clients see: passing instances tagged primary. */
async function passingPrimaries(agent: ConsulAgent): Promise<string[]> {
  const list = await agent.api<{ Service: { ID: string } }[]>("GET", `/v1/health/service/${SERVICE}?passing&tag=primary`);
  return list.map((e) => e.Service.ID).sort();
}

function errOf(l: LogLine): { code?: string; message?: string } {
  return (l["err"] ?? {}) as { code?: string; message?: string };
}

/** Waits for the loop's "action failed; will retry" warning with `code`; returns the error message. */
async function actionFailed(s: Sidecar, code: string, timeoutMs = 15_000): Promise<string> {
  const line = await s.waitForLog((l) => l.msg === "action failed; will retry" && errOf(l).code === code, timeoutMs, `an "action failed; will retry" warning with ${code}`);
  expect(line["level"]).toBe("warn");
  return errOf(line).message ?? "";
}

/** Every Consul call the sidecar logged (debug) that got 401 or 403. */
function forbiddenCalls(s: Sidecar): LogLine[] {
  return s.logs().filter((l) => l.msg === "consul request" && (l["status"] === 401 || l["status"] === 403));
}

/** The whole output, stdout and stderr, of every process given. */
function outputOf(procs: Proc[]): string {
  return procs.map((p) => p.lines.join("\n")).join("\n");
}

/**
 * None of them ever led. (A sidecar that cannot get a session may still fence
 * its Redis, a writable master without the lock: role "fenced", not "starting".)
 */
function expectNobodyLed(sidecars: Sidecar[]): void {
  for (const s of sidecars) {
    expect(s.logs().filter((l) => l.msg === "role changed" && l["to"] === "leader"), s.name).toEqual([]);
    expect(["starting", "fenced"], s.name).toContain(s.role());
  }
}

scenario("packaging/acl-policy.hcl holds exactly the rules this file tests, each on its own", async () => {
  const rules = policyRules().map((r) => r.label);
  expect(rules).toEqual([
    `key "${KEY}"`,
    `key_prefix "${KEY}/members/"`,
    `key "${KEY}/switchover"`,
    `key "${KEY}/pause"`,
    `key "${KEY}/history"`,
    `session_prefix ""`,
    `service "${SERVICE}"`,
    `service "${SERVICE}-consul-leader"`,
    `node_prefix ""`,
  ]);
  // Nothing else in the file but comments: no rule the parser above missed.
  expect(policyText().replace(/#.*$/gm, "").replace(RULE_RE, "").trim()).toBe("");
  // The prepared query's rule is there, commented out: only CONSUL_LEADER_PREPARED_QUERY needs it.
  expect(queryRule()).toEqual({ rule: 'query "redis-writer" { policy = "write" }', name: "redis-writer" });
  // Consul itself accepts it as written, and with the query rule.
  const agent = await aclAgent();
  expect((await tokenWith(agent, policy())).length).toBe(36);
  expect((await tokenWith(agent, `${policy()}\n${queryRule().rule}\n`)).length).toBe(36);
});

scenario("standalone with Redis and exactly the policy: one primary, kill -9 of its Redis fails over, switchover works; token from the file; no secret printed", async () => {
  const agent = await aclAgent();
  const token = await tokenWith(agent, policy());
  // CONSUL_HTTP_TOKEN holds a real token with no rights: only the file's token can make this group work.
  const decoy = await powerlessToken(agent);
  const password = `pw-${crypto.randomUUID()}`;
  const tokenPath = tokenFile(token);
  await registerCrashedPrimary(agent);
  expect(await passingPrimaries(agent)).toEqual([`${SERVICE}-crashed`]);

  const g = await standaloneGroup(agent, { CONSUL_HTTP_TOKEN: decoy, CONSUL_HTTP_TOKEN_FILE: tokenPath }, { password });
  const first = await g.converged(30_000);
  // The stale primary on node2 was taken off with this token: no node:write needed.
  expect(await catalogPrimaries(agent)).toEqual([first.id]);
  const stripped = g.members.flatMap((m) => m.sidecar.logs()).find((l) => l.msg === "took the primary tag off a service that does not hold the lock");
  expect(stripped).toMatchObject({ level: "warn", service: `${SERVICE}-crashed`, node: "node2" });
  const lock = await agent.api<{ Session: string }[]>("GET", `/v1/kv/${KEY}`);
  expect(lock[0]!.Session).toBeTruthy();

  // Failover: the primary's Redis dies.
  await first.redis.kill9();
  const { member: second } = await g.newWritablePrimary(first.id, 15_000);
  expect(second.id).not.toBe(first.id);
  expect(await g.converged(15_000)).toBe(second);
  expect(await passingPrimaries(agent)).toEqual([second.id]);

  // consul-leader switchover, run with the same token: the switchover key rule at work.
  const cli = new Proc("switchover", [BINARY, "switchover", "--timeout", "10s"], {
    env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: agent.addr, CONSUL_HTTP_TOKEN_FILE: tokenPath, CONSUL_LEADER_SERVICE_NAME: SERVICE },
  });
  expect(await cli.exited).toBe(0);
  const third = await g.converged(15_000);
  expect(third.id).not.toBe(second.id);
  expect(third.id).not.toBe(first.id);
  expect(cli.lines.join("\n")).toContain(`switchover: ${second.id} -> ${third.id}`);

  // consul maint on the node (node:read lets the sidecars see _node_maintenance): the leader hands over, nobody competes.
  await agent.api("PUT", "/v1/agent/maintenance?enable=true&reason=drain");
  for (const m of g.members) await m.sidecar.waitForLog((l) => l.msg === "maintenance on" && l["why"] === "_node_maintenance (drain)", 8000, "maintenance on");
  await waitFor(async () => !(await agent.api<{ Session?: string }[]>("GET", `/v1/kv/${KEY}`))[0]!.Session, { timeoutMs: 5000, what: "the lock to be free" });
  await agent.api("PUT", "/v1/agent/maintenance?enable=false");
  for (const m of g.members) await m.sidecar.waitForLog((l) => l.msg === "maintenance off", 8000, "maintenance off");
  const fourth = await g.converged(15_000);

  // consul-leader status with the same token: the lock, the members and discovery agree.
  const status = new Proc("status", [BINARY, "status", "--json"], {
    env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: agent.addr, CONSUL_HTTP_TOKEN_FILE: tokenPath, CONSUL_LEADER_SERVICE_NAME: SERVICE },
  });
  expect(await status.exited).toBe(0);
  const doc = JSON.parse(status.lines.join("\n")) as { leader: { instance: string }; discoveredPrimaries: string[]; members: { instance: string }[]; healthy: boolean; failovers: { from: string | null; to: string }[] };
  expect(doc.leader.instance).toBe(fourth.id);
  expect(doc.discoveredPrimaries).toEqual([fourth.id]);
  expect(doc.members.map((x) => x.instance)).toEqual(g.members.map((m) => m.id));
  expect(doc.healthy).toBe(true);
  // The history rule at work: the failovers above are recorded.
  expect(doc.failovers.some((f) => f.to === fourth.id)).toBe(true);

  // consul-leader pause and resume with the same token: the pause rule at work; every sidecar sees the flag.
  const run = (args: string[]) => new Proc(args[0]!, [BINARY, ...args], { env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: agent.addr, CONSUL_HTTP_TOKEN_FILE: tokenPath, CONSUL_LEADER_SERVICE_NAME: SERVICE } });
  expect(await run(["pause", "--reason", "policy test"]).exited).toBe(0);
  for (const m of g.members) await m.sidecar.waitForLog((l) => l.msg === "the group is paused: no failover, no switchover", 5000, "the pause seen");
  expect(await run(["resume"]).exited).toBe(0);
  for (const m of g.members) await m.sidecar.waitForLog((l) => l.msg === "the group is no longer paused", 5000, "the resume seen");

  // The policy was enough for every call: not one 401/403 in any sidecar's debug log.
  for (const m of g.members) expect(forbiddenCalls(m.sidecar), m.id).toEqual([]);
  // ... including the graceful shutdown: tags, member entry, session, service.
  for (const m of g.members) expect(await m.sidecar.stop("SIGTERM", 10_000), m.id).toBe(0);
  for (const m of g.members) expect(m.sidecar.logs().filter((l) => l.msg.startsWith("shutdown:")), m.id).toEqual([]);
  expect(await agent.api<Record<string, unknown>>("GET", "/v1/agent/services")).toEqual({});
  // The agent synced the sidecars' services and checks to the catalog with their token, never refused.
  expect(agent.proc.lines.filter((l) => /blocked by ACLs/.test(l))).toEqual([]);

  const out = outputOf([...g.members.map((m) => m.sidecar.proc), cli, status]);
  expect(g.members[0]!.sidecar.logs().some((l) => l.msg === "consul request")).toBe(true); // debug was on
  for (const secret of [token, decoy, password]) expect(out).not.toContain(secret);
}, 90_000);

scenario("CONSUL_HTTP_TOKEN_FILE wins over CONSUL_HTTP_TOKEN the other way round too: an unknown token in the file is named as such", async () => {
  const agent = await aclAgent();
  const token = await tokenWith(agent, policy());
  const unknown = crypto.randomUUID();
  const s = tagsOnly(agent, 1, { CONSUL_HTTP_TOKEN: token, CONSUL_HTTP_TOKEN_FILE: tokenFile(unknown), CONSUL_LEADER_LOG_LEVEL: "warn" });
  const msg = await actionFailed(s, "CONSUL_FORBIDDEN");
  // The first call is the identity check on the member entry, before anything is registered.
  expect(msg).toMatch(/^GET \/v1\/kv\/consul-leader\/redis\/lock\/members\/[^:?]+(\?consistent)?: 403 the ACL token is unknown to Consul \(check CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE\): ACL not found$/);
  expect(s.role()).toBe("starting");
  // With the good token in the file instead, the same sidecar leads.
  const ok = tagsOnly(agent, 2, { CONSUL_HTTP_TOKEN: unknown, CONSUL_HTTP_TOKEN_FILE: tokenFile(token) });
  await waitFor(() => ok.role() === "leader", { timeoutMs: 15_000, what: "the sidecar with the good token file to lead" });
  const out = outputOf([s.proc, ok.proc]);
  for (const secret of [token, unknown]) expect(out).not.toContain(secret);
});

scenario("Nomad mode with exactly the policy: one primary, companion services registered, a killed leader's stale tag taken off", async () => {
  const agent = await aclAgent();
  const token = await tokenWith(agent, policy());
  const { services, sidecars } = await nomadGroup(agent, { CONSUL_HTTP_TOKEN: token });
  const leader = await oneLeader(sidecars, 15_000);
  const li = sidecars.indexOf(leader);
  await waitFor(async () => {
    const tagged = await catalogPrimaries(agent);
    return tagged.length === 1 && tagged[0] === services[li]!.id;
  }, { timeoutMs: 10_000, what: "the leader's Nomad service to carry the primary tag" });
  const companions = await agent.api<{ ServiceID: string }[]>("GET", `/v1/catalog/service/${SERVICE}-consul-leader`);
  expect(companions.map((c) => c.ServiceID).sort()).toEqual(services.map((s) => `consul-leader-${s.allocId}`).sort());

  // kill -9 the leader's sidecar: its tag stays on Nomad's service until the next leader takes it off.
  await leader.kill9();
  const next = await oneLeader(sidecars, 20_000);
  const ni = sidecars.indexOf(next);
  await waitFor(async () => {
    const tagged = await catalogPrimaries(agent);
    return tagged.length === 1 && tagged[0] === services[ni]!.id;
  }, { timeoutMs: 10_000, what: "only the new leader's service tagged primary" });
  expect(next.logs().find((l) => l.msg === "took the primary tag off a service that does not hold the lock")).toMatchObject({ service: services[li]!.id, node: NODE });
  for (const s of sidecars) expect(forbiddenCalls(s), s.name).toEqual([]);
  expect(agent.proc.lines.filter((l) => /blocked by ACLs/.test(l))).toEqual([]);
  expect(outputOf(sidecars.map((s) => s.proc))).not.toContain(token);
}, 90_000);

// Each rule removed in turn.

scenario(`without key "${KEY}": every sidecar says it lacks key:read on the lock, nobody leads`, async () => {
  const agent = await aclAgent();
  const g = await standaloneGroup(agent, { CONSUL_HTTP_TOKEN: await tokenWith(agent, policy(rule(`key "${KEY}"`))) }, { size: 2 });
  for (const m of g.members) {
    // The watch on the lock says why nobody leads (no tick action fails: the lock is simply never seen).
    const line = await m.sidecar.waitForLog((l) => l.msg === "cannot read the lock; retrying" && errOf(l).code === "CONSUL_FORBIDDEN", 15_000, "the lock watch naming the missing permission");
    expect(line["level"]).toBe("warn");
    expect(errOf(line).message ?? "").toStartWith(`GET /v1/kv/${KEY}: 403 the ACL token lacks key:read on "${KEY}": Permission denied: token with AccessorID '`);
  }
  expectNobodyLed(g.members.map((m) => m.sidecar));
  expect(await catalogPrimaries(agent)).toEqual([]);
});

scenario(`without key_prefix "${KEY}/members/": every sidecar says it lacks key:read on its member key, nobody leads`, async () => {
  const agent = await aclAgent();
  const g = await standaloneGroup(agent, { CONSUL_HTTP_TOKEN: await tokenWith(agent, policy(rule(`key_prefix "${KEY}/members/"`))) }, { size: 2 });
  for (const m of g.members) {
    const msg = await actionFailed(m.sidecar, "CONSUL_FORBIDDEN");
    expect(msg).toStartWith(`GET /v1/kv/${KEY}/members/${m.id}: 403 the ACL token lacks key:read on "${KEY}/members/${m.id}": `);
  }
  expectNobodyLed(g.members.map((m) => m.sidecar));
  expect(await catalogPrimaries(agent)).toEqual([]);
});

scenario(`without key "${KEY}/switchover": elections work, each sidecar warns once that switchover cannot reach it, switchover fails naming key:write`, async () => {
  const agent = await aclAgent();
  const token = await tokenWith(agent, policy(rule(`key "${KEY}/switchover"`)));
  const g = await standaloneGroup(agent, { CONSUL_HTTP_TOKEN: token }, { size: 2 });
  const p = await g.converged(20_000);
  // Every sidecar's switchover watch is refused: the 403s at debug, and one warning naming key:read on the key.
  await waitFor(() => g.members.every((m) => forbiddenCalls(m.sidecar).length >= 2), { timeoutMs: 10_000, what: "two refused switchover watches per sidecar" });
  for (const m of g.members) {
    const refused = forbiddenCalls(m.sidecar);
    expect(refused.every((l) => l["level"] === "debug" && l["code"] === "CONSUL_FORBIDDEN" && l["path"] === `/v1/kv/${KEY}/switchover`), JSON.stringify(refused[0])).toBe(true);
    const warned = m.sidecar.logs().filter((l) => l.msg === "cannot watch for switchover requests; consul-leader switchover will not reach this sidecar");
    expect(warned, m.id).toHaveLength(1);
    expect(JSON.stringify(warned[0])).toContain(`lacks key:read on \\"${KEY}/switchover\\"`);
  }
  const cli = new Proc("switchover", [BINARY, "switchover", "--timeout", "5s"], {
    env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: agent.addr, CONSUL_HTTP_TOKEN: token, CONSUL_LEADER_SERVICE_NAME: SERVICE },
  });
  expect(await cli.exited).toBe(1);
  expect(cli.lines.join("\n")).toContain(`switchover: PUT /v1/kv/${KEY}/switchover: 403 the ACL token lacks key:write on "${KEY}/switchover": `);
  expect(await g.converged()).toBe(p);
});

scenario(`without key "${KEY}/pause": elections and failovers work as before pauses existed, each sidecar warns once, pause fails naming the permission`, async () => {
  const agent = await aclAgent();
  const token = await tokenWith(agent, policy(rule(`key "${KEY}/pause"`)));
  const g = await standaloneGroup(agent, { CONSUL_HTTP_TOKEN: token }, { size: 3 });
  const p = await g.converged(20_000);
  const warning = "cannot read the pause flag; consul-leader pause will not reach this sidecar";
  for (const m of g.members) await m.sidecar.waitForLog((l) => l.msg === warning, 10_000, "the warning about the pause flag");
  // The failover's acquire cannot check the flag in a transaction: it takes the lock without the check.
  await p.redis.kill9();
  const { member: next } = await g.newWritablePrimary(p.id, 15_000);
  expect(next.id).not.toBe(p.id);
  for (const m of g.members) expect(m.sidecar.logs().filter((l) => l.msg === warning), m.id).toHaveLength(1);
  const cli = new Proc("pause", [BINARY, "pause"], { env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: agent.addr, CONSUL_HTTP_TOKEN: token, CONSUL_LEADER_SERVICE_NAME: SERVICE } });
  expect(await cli.exited).toBe(1);
  expect(cli.lines.join("\n")).toContain(`pause: GET /v1/kv/${KEY}/pause: 403 the ACL token lacks key:read on "${KEY}/pause": `);
});

scenario(`without key "${KEY}/history": elections work; each new leader warns once that it cannot record the failover`, async () => {
  const agent = await aclAgent();
  const g = await standaloneGroup(agent, { CONSUL_HTTP_TOKEN: await tokenWith(agent, policy(rule(`key "${KEY}/history"`))) }, { size: 2 });
  const p = await g.converged(20_000);
  const warning = "cannot write the failover history; consul-leader status will not show the last failovers";
  const warned = await p.sidecar.waitForLog((l) => l.msg === warning, 10_000, "the history warning");
  expect(JSON.stringify(warned)).toContain(`${KEY}/history`);
  await p.redis.kill9();
  const { member: next } = await g.newWritablePrimary(p.id, 15_000);
  await next.sidecar.waitForLog((l) => l.msg === warning, 10_000, "the new leader's history warning");
});

scenario(`without session_prefix "": every sidecar says it lacks session:write on "${NODE}", nobody leads`, async () => {
  const agent = await aclAgent();
  const g = await standaloneGroup(agent, { CONSUL_HTTP_TOKEN: await tokenWith(agent, policy(rule(`session_prefix ""`))) }, { size: 2 });
  for (const m of g.members) {
    const msg = await actionFailed(m.sidecar, "CONSUL_FORBIDDEN");
    expect(msg).toStartWith(`PUT /v1/session/create: 403 the ACL token lacks session:write on "${NODE}": `);
  }
  expectNobodyLed(g.members.map((m) => m.sidecar));
  expect(await catalogPrimaries(agent)).toEqual([]);
});

scenario(`without service "${SERVICE}": standalone says it lacks service:write; Nomad mode only sees no service and exits after SERVICE_WAIT`, async () => {
  const agent = await aclAgent();
  const token = await tokenWith(agent, policy(rule(`service "${SERVICE}"`)));
  const g = await standaloneGroup(agent, { CONSUL_HTTP_TOKEN: token }, { size: 2 });
  for (const m of g.members) {
    const msg = await actionFailed(m.sidecar, "CONSUL_FORBIDDEN");
    expect(msg).toStartWith(`PUT /v1/agent/service/register: 403 the ACL token lacks service:write on "${SERVICE}": `);
  }
  expectNobodyLed(g.members.map((m) => m.sidecar));
  // Nomad mode: the agent filters Nomad's service out of GET /v1/agent/services (200, not 403),
  // so the sidecar waits for a service it is not allowed to see, then gives up without naming the permission.
  const { services, sidecars } = await nomadGroup(agent, { CONSUL_HTTP_TOKEN: token, CONSUL_LEADER_SERVICE_WAIT: "2s" }, 1);
  expect(await sidecars[0]!.proc.exited).toBe(1);
  const fatal = sidecars[0]!.logs().find((l) => l.msg === "fatal")!;
  expect(errOf(fatal)).toMatchObject({
    code: "SERVICE_NOT_FOUND",
    message: `no Consul service with an ID starting _nomad-task-${services[0]!.allocId}- appeared on the local agent within CONSUL_LEADER_SERVICE_WAIT=2s; is the service registered by this allocation's group or tasks, with provider = "consul"?`,
  });
  expect(forbiddenCalls(sidecars[0]!)).toEqual([]);
  const seen = sidecars[0]!.logs().filter((l) => l.msg === "consul request" && String(l["path"]).startsWith("/v1/agent/services"));
  expect(seen.length).toBeGreaterThan(0);
  expect(seen.every((l) => l["status"] === 200)).toBe(true);
});

scenario(`without service "${SERVICE}-consul-leader": Nomad mode says it lacks service:write on the companion; standalone does not need it`, async () => {
  const agent = await aclAgent();
  const token = await tokenWith(agent, policy(rule(`service "${SERVICE}-consul-leader"`)));
  const { sidecars } = await nomadGroup(agent, { CONSUL_HTTP_TOKEN: token }, 2);
  for (const s of sidecars) {
    const msg = await actionFailed(s, "CONSUL_FORBIDDEN");
    expect(msg).toStartWith(`PUT /v1/agent/service/register: 403 the ACL token lacks service:write on "${SERVICE}-consul-leader": `);
  }
  expect(sidecars.map((s) => s.role())).toEqual(["starting", "starting"]);
  await Promise.all(sidecars.map((s) => s.stop()));
  const g = await standaloneGroup(agent, { CONSUL_HTTP_TOKEN: token }, { size: 2 });
  await g.converged(20_000);
  for (const m of g.members) expect(forbiddenCalls(m.sidecar), m.id).toEqual([]);
});

scenario(`without node_prefix "": the leader cannot see, so leaves, another host's stale primary tag; it warns that Consul filtered its answers`, async () => {
  const agent = await aclAgent();
  const token = await tokenWith(agent, policy(rule(`node_prefix ""`)));
  await registerCrashedPrimary(agent);
  const s = tagsOnly(agent, 1, { CONSUL_HTTP_TOKEN: token });
  await waitFor(() => s.role() === "leader", { timeoutMs: 15_000, what: "the sidecar to lead" });
  // It looks before tagging itself, then again as its watch on the primaries starts (and blocks).
  const reads = () => s.logs().filter((l) => l.msg === "consul request" && l["path"] === `/v1/catalog/service/${SERVICE}?tag=primary`);
  await waitFor(() => reads().length >= 2, { timeoutMs: 10_000, what: "two looks for stale primaries" });
  // Discovery names two passing primaries, and keeps naming them.
  expect(await passingPrimaries(agent)).toEqual([`${SERVICE}-crashed`, `${SERVICE}-tags-1`]);
  // The catalog answered 200 with the instances filtered out; the sidecar warns, once per route, naming the fix.
  expect(reads().every((l) => l["status"] === 200)).toBe(true);
  expect(forbiddenCalls(s)).toEqual([]);
  const filtered = s.logs().filter((l) => l.msg === "Consul left out part of an answer the ACL token may not read");
  expect(filtered.map((l) => l["route"])).toContain("/v1/catalog/service/:name");
  expect(new Set(filtered.map((l) => l["route"])).size).toBe(filtered.length);
  expect(String(filtered[0]!["fix"])).toContain('node_prefix "" read');
  // What Consul says about that answer (the sidecar does not look at it).
  const res = await fetch(`${agent.url}/v1/catalog/service/${SERVICE}?tag=primary`, { headers: { "X-Consul-Token": token } });
  expect(await res.json()).toEqual([]);
  expect(res.headers.get("X-Consul-Results-Filtered-By-ACLs")).toBe("true");

  // consul maint on the node: the sidecar cannot see _node_maintenance and keeps leading.
  const polls = () => s.logs().filter((l) => l.msg === "consul request" && String(l["path"]).startsWith("/v1/agent/checks?filter=")).length;
  await agent.api("PUT", "/v1/agent/maintenance?enable=true&reason=drain");
  const before = polls();
  await waitFor(() => polls() >= before + 2, { timeoutMs: 8000, what: "two maintenance polls after consul maint -enable" });
  expect(s.logs().filter((l) => l.msg === "maintenance on")).toEqual([]);
  expect(s.role()).toBe("leader");
  const checks = await fetch(`${agent.url}/v1/agent/checks`, { headers: { "X-Consul-Token": token } });
  expect(Object.keys(await checks.json() as Record<string, unknown>)).not.toContain("_node_maintenance");
  expect(checks.headers.get("X-Consul-Results-Filtered-By-ACLs")).toBe("true");
  expect(Object.keys(await agent.api<Record<string, unknown>>("GET", "/v1/agent/checks"))).toContain("_node_maintenance");
});

scenario("CONSUL_LEADER_PREPARED_QUERY needs the commented-out query rule: without it the leader says it lacks query:write; with it the query is created", async () => {
  const agent = await aclAgent();
  const { rule: qrule, name } = queryRule();
  const without = tagsOnly(agent, 1, { CONSUL_HTTP_TOKEN: await tokenWith(agent, policy()), CONSUL_LEADER_PREPARED_QUERY: name });
  const warned = await without.waitForLog((l) => l.msg === "could not create or update the prepared query", 15_000, "the prepared query warning");
  expect(warned["level"]).toBe("warn");
  expect(errOf(warned).code).toBe("CONSUL_FORBIDDEN");
  expect(errOf(warned).message).toStartWith(`POST /v1/query: 403 the ACL token lacks query:write on "${name}": `);
  expect(without.role()).toBe("leader"); // the election itself does not need it
  expect(await without.stop()).toBe(0);
  expect(await agent.api("GET", "/v1/query")).toEqual([]);

  const withRule = tagsOnly(agent, 2, { CONSUL_HTTP_TOKEN: await tokenWith(agent, `${policy()}\n${qrule}\n`), CONSUL_LEADER_PREPARED_QUERY: name });
  await withRule.waitForLog((l) => l.msg === "prepared query" && l["result"] === "created", 15_000, "the prepared query to be created");
  const queries = await agent.api<{ Name: string; Service: { Service: string; Tags: string[]; OnlyPassing: boolean } }[]>("GET", "/v1/query");
  expect(queries.map((q) => [q.Name, q.Service.Service, q.Service.Tags, q.Service.OnlyPassing])).toEqual([[name, SERVICE, ["primary"], true]]);
  expect(forbiddenCalls(withRule)).toEqual([]);
});

// ------------------------------------------------------------------ TLS

interface TlsSetup {
  agent: ConsulAgent;
  port: number;
  ca: string;
  otherCa: string;
  cert: string;
  key: string;
  dir: string;
}

let tlsSetup: Promise<TlsSetup> | undefined;

/** A CA, a server and a client certificate from `consul tls`, another CA, and an HTTPS-only agent verifying clients. Started once for the file. */
function tls(): Promise<TlsSetup> {
  tlsSetup ??= (async () => {
    const dir = file.tmpdir("consul-tls-");
    const run = (args: string[], cwd: string) => {
      const r = Bun.spawnSync([consulBinary(), "tls", ...args], { cwd });
      if (r.exitCode !== 0) throw new Error(`consul tls ${args.join(" ")}: ${r.stderr.toString()}`);
    };
    run(["ca", "create"], dir);
    run(["cert", "create", "-server", "-dc", "dc1"], dir);
    run(["cert", "create", "-client", "-dc", "dc1"], dir);
    mkdirSync(join(dir, "other"));
    run(["ca", "create"], join(dir, "other"));
    const port = freePort();
    const outer = Scope.current;
    Scope.current = file;
    try {
      const agent = await startDevAgent({
        // 127.0.0.2 is not in the server certificate (server.dc1.consul, localhost, 127.0.0.1).
        client_addr: "127.0.0.1 127.0.0.2",
        ports: { http: -1, https: port, dns: -1, server: freePort(), serf_lan: freePort(), serf_wan: -1, grpc: -1, grpc_tls: -1 },
        tls: {
          defaults: {
            ca_file: join(dir, "consul-agent-ca.pem"),
            cert_file: join(dir, "dc1-server-consul-0.pem"),
            key_file: join(dir, "dc1-server-consul-0-key.pem"),
            verify_incoming: true,
          },
        },
      }, { wait: false });
      const setup: TlsSetup = {
        agent,
        port,
        dir,
        ca: join(dir, "consul-agent-ca.pem"),
        otherCa: join(dir, "other", "consul-agent-ca.pem"),
        cert: join(dir, "dc1-client-consul-0.pem"),
        key: join(dir, "dc1-client-consul-0-key.pem"),
      };
      await waitFor(async () => {
        if (!agent.proc.running) throw new Error(`consul exited: ${agent.proc.tail(20)}`);
        return typeof (await tlsApi<string>(setup, "GET", "/v1/status/leader")) === "string";
      }, { timeoutMs: 30_000, what: "the HTTPS-only agent to have a leader" });
      return setup;
    } finally {
      Scope.current = outer;
    }
  })();
  return tlsSetup;
}

/** The test's own calls to the HTTPS agent, with the client certificate. */
async function tlsApi<T>(t: TlsSetup, method: string, path: string): Promise<T> {
  const res = await fetch(`https://127.0.0.1:${t.port}${path}`, {
    method,
    tls: { ca: readFileSync(t.ca, "utf8"), cert: readFileSync(t.cert, "utf8"), key: readFileSync(t.key, "utf8") },
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

let tlsNo = 0;

/** A tags-only standalone sidecar of its own service on the HTTPS agent. */
function tlsSidecar(env: Record<string, string>): { s: Sidecar; service: string } {
  const service = `tls${++tlsNo}`;
  const s = new Sidecar(`sidecar-${service}`, {
    CONSUL_LEADER_SERVICE_NAME: service,
    CONSUL_LEADER_SERVICE_ID: `${service}-1`,
    CONSUL_LEADER_SERVICE_PORT: "7001",
    CONSUL_LEADER_CHECK_TTL: "3s",
    CONSUL_LEADER_FENCE_MARGIN: "700ms",
    ...env,
  });
  return { s, service };
}

/** It leads, its service carries the primary tag, and it never hit a TLS error. */
async function leadsOverTls(t: TlsSetup, s: Sidecar, service: string): Promise<void> {
  await waitFor(async () => {
    if (!s.proc.running) throw new Error(`the sidecar exited with ${s.proc.exitCode}`);
    if (s.role() !== "leader") return false;
    const svc = await tlsApi<{ Tags: string[] }>(t, "GET", `/v1/agent/service/${service}-1`);
    return svc.Tags.includes("primary");
  }, { timeoutMs: 15_000, what: `${service} to lead and tag itself primary over HTTPS` });
  expect(s.logs().filter((l) => l.msg === "consul request" && l["code"] !== undefined)).toEqual([]);
  // Its graceful exit deregisters through TLS too.
  expect(await s.stop()).toBe(0);
  await waitFor(async () => {
    const services = await tlsApi<Record<string, unknown>>(t, "GET", "/v1/agent/services");
    return !(`${service}-1` in services);
  }, { timeoutMs: 5000, what: `${service}-1 to be deregistered` });
}

const TLS_HINT = "check CONSUL_CACERT or CONSUL_CAPATH, CONSUL_CLIENT_CERT/KEY and CONSUL_TLS_SERVER_NAME";

scenario("HTTPS with CONSUL_CACERT, a client certificate and CONSUL_TLS_SERVER_NAME: leads and tags itself; the server name is what gets verified", async () => {
  const t = await tls();
  const base = { CONSUL_CACERT: t.ca, CONSUL_CLIENT_CERT: t.cert, CONSUL_CLIENT_KEY: t.key };
  // 127.0.0.2 is not in the certificate; server.dc1.consul is.
  const good = tlsSidecar({ ...base, CONSUL_HTTP_ADDR: `https://127.0.0.2:${t.port}`, CONSUL_TLS_SERVER_NAME: "server.dc1.consul" });
  await leadsOverTls(t, good.s, good.service);
  // The same without the server name: the address itself is checked, and fails.
  const noName = tlsSidecar({ ...base, CONSUL_HTTP_ADDR: `https://127.0.0.2:${t.port}` });
  const m1 = await actionFailed(noName.s, "CONSUL_TLS");
  expect(m1).toContain("ERR_TLS_CERT_ALTNAME_INVALID");
  expect(m1).toContain(TLS_HINT);
  // A wrong server name fails even where the address (127.0.0.1) is in the certificate.
  const wrongName = tlsSidecar({ ...base, CONSUL_HTTP_ADDR: `https://127.0.0.1:${t.port}`, CONSUL_TLS_SERVER_NAME: "wrong.dc1.consul" });
  const m2 = await actionFailed(wrongName.s, "CONSUL_TLS");
  expect(m2).toContain("ERR_TLS_CERT_ALTNAME_INVALID");
  expect(noName.s.role()).toBe("starting");
  expect(wrongName.s.role()).toBe("starting");
});

scenario("CONSUL_CAPATH: every .pem and .crt in the directory is trusted, other files ignored", async () => {
  const t = await tls();
  const dir = Scope.current!.tmpdir("capath-");
  copyFileSync(t.otherCa, join(dir, "a-other.pem"));
  copyFileSync(t.ca, join(dir, "b-consul.crt"));
  writeFileSync(join(dir, "README.txt"), "not a certificate\n");
  const { s, service } = tlsSidecar({ CONSUL_HTTP_ADDR: `https://127.0.0.1:${t.port}`, CONSUL_CAPATH: dir, CONSUL_CLIENT_CERT: t.cert, CONSUL_CLIENT_KEY: t.key });
  await leadsOverTls(t, s, service);
  // Control: a directory with only the other CA is not enough.
  const only = Scope.current!.tmpdir("capath-other-");
  copyFileSync(t.otherCa, join(only, "other.pem"));
  const bad = tlsSidecar({ CONSUL_HTTP_ADDR: `https://127.0.0.1:${t.port}`, CONSUL_CAPATH: only, CONSUL_CLIENT_CERT: t.cert, CONSUL_CLIENT_KEY: t.key });
  expect(await actionFailed(bad.s, "CONSUL_TLS")).toContain("unable to verify the first certificate");
});

scenario("a wrong CA: one clear CONSUL_TLS warning pointing at CONSUL_CACERT, retries with backoff, no crash loop, clean exit", async () => {
  const t = await tls();
  const { s } = tlsSidecar({ CONSUL_HTTP_ADDR: `https://127.0.0.1:${t.port}`, CONSUL_CACERT: t.otherCa, CONSUL_CLIENT_CERT: t.cert, CONSUL_CLIENT_KEY: t.key });
  const msg = await actionFailed(s, "CONSUL_TLS");
  expect(msg).toMatch(/^GET \/v1\/kv\/[^:]+\/members\/[^:]+: TLS failed \(UNABLE_TO_VERIFY_LEAF_SIGNATURE: unable to verify the first certificate\); /);
  expect(msg).toEndWith(TLS_HINT);
  const t0 = performance.now();
  await Bun.sleep(4000);
  expect(s.proc.running).toBe(true);
  const elapsed = performance.now() - t0;
  const attempts = s.logs().filter((l) => l.msg === "consul request" && l["code"] === "CONSUL_TLS");
  // Four loops retry on their own backoff (loop 250ms->5s, lock watch 100ms->2s, switchover watch 1s): a few dozen at most, not a spin.
  expect(attempts.length).toBeLessThan(Math.ceil(elapsed / 1000) * 6);
  // The same warning is not repeated within 30 s.
  expect(s.logs().filter((l) => l.msg === "action failed; will retry").length).toBe(1);
  expect(s.role()).toBe("starting");
  expect(await s.stop()).toBe(0);
});

scenario("no client certificate while the agent verifies clients: a CONSUL_TLS warning that names CONSUL_CLIENT_CERT/KEY", async () => {
  const t = await tls();
  const { s } = tlsSidecar({ CONSUL_HTTP_ADDR: `https://127.0.0.1:${t.port}`, CONSUL_CACERT: t.ca });
  const msg = await actionFailed(s, "CONSUL_TLS");
  expect(msg).toMatch(/^GET \/v1\/kv\/[^:]+\/members\/[^:]+: TLS failed \(EPROTO: The TLS handshake failed. Does the server speak TLS on this port\?\); /);
  expect(msg).toEndWith(TLS_HINT);
  await Bun.sleep(1000);
  expect(s.proc.running).toBe(true);
  expect(await s.stop()).toBe(0);
});

scenario("CONSUL_HTTP_SSL=true makes a bare host:port HTTPS; without it the same address speaks HTTP and the agent says so", async () => {
  const t = await tls();
  const certs = { CONSUL_CACERT: t.ca, CONSUL_CLIENT_CERT: t.cert, CONSUL_CLIENT_KEY: t.key };
  const { s, service } = tlsSidecar({ ...certs, CONSUL_HTTP_ADDR: `127.0.0.1:${t.port}`, CONSUL_HTTP_SSL: "true" });
  await leadsOverTls(t, s, service);
  const plain = tlsSidecar({ ...certs, CONSUL_HTTP_ADDR: `127.0.0.1:${t.port}` });
  const msg = await actionFailed(plain.s, "CONSUL_BAD_REQUEST");
  expect(msg).toMatch(/^GET \/v1\/kv\/[^:]+\/members\/[^:]+: 400 Client sent an HTTP request to an HTTPS server\.$/);
});

scenario("CONSUL_HTTP_SSL_VERIFY=false: no CA and an address not in the certificate, and it still works", async () => {
  const t = await tls();
  const { s, service } = tlsSidecar({ CONSUL_HTTP_ADDR: `https://127.0.0.2:${t.port}`, CONSUL_HTTP_SSL_VERIFY: "false", CONSUL_CLIENT_CERT: t.cert, CONSUL_CLIENT_KEY: t.key });
  await leadsOverTls(t, s, service);
});
