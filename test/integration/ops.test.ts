/**
 * What operators touch, against real Consul and Redis: role-change hooks
 * (and their failure modes), the Nomad alloc-dir files, the prepared query
 * through Consul's DNS interface, `consul maint` on the service and the node,
 * and `consul-leader status`.
 */

import { expect } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { randomAllocId, registerLikeNomad } from "../harness/discovery.ts";
import { RedisGroup } from "../harness/group.ts";
import { fileScope, freePort, Proc, scenario, Scope, waitFor } from "../harness/proc.ts";
import { BINARY, oneLeader, Sidecar, standaloneSidecar } from "../harness/sidecar.ts";

let consul: ConsulAgent;
let n = 0;
fileScope("ops.test.ts", async () => {
  consul = await startDevAgent();
});

/** Hook output is read at info level; the tests' default is debug. */
function standalone(name: string, i: number, extra: Record<string, string> = {}): Sidecar {
  return standaloneSidecar(consul.addr, name, i, { CONSUL_LEADER_LOG_LEVEL: "info", ...extra });
}

scenario("role-change hooks run with the role, epoch and leader address, never a secret; failing and hanging hooks are logged and do not block", async () => {
  const name = `hook${++n}`;
  const dir = Scope.current!.tmpdir("hook-");
  const out = join(dir, "hook.log");
  // A script file, so the knob's own value (the command line) holds no secret-looking text.
  writeFileSync(join(dir, "hook.sh"), `echo "$CONSUL_LEADER_INSTANCE $CONSUL_LEADER_ROLE epoch=$CONSUL_LEADER_EPOCH leader=$CONSUL_LEADER_LEADER_INSTANCE secrets=$(env | grep -c -e s3cret-token -e CONSUL_HTTP_TOKEN)" >> ${out}\n`);
  const hook = `sh ${join(dir, "hook.sh")}`;
  const ss = [1, 2].map((i) => standalone(name, i, { CONSUL_LEADER_ON_ROLE_CHANGE: hook, CONSUL_HTTP_TOKEN: "s3cret-token-for-hooks" }));
  const leader = await oneLeader(ss);
  await waitFor(() => existsSync(out) && readFileSync(out, "utf8").split("\n").filter(Boolean).length >= 2, { what: "both hooks to run" });
  const lines = readFileSync(out, "utf8").split("\n").filter(Boolean);
  const leaderId = leader === ss[0] ? `${name}-1` : `${name}-2`;
  expect(lines).toContainEqual(expect.stringMatching(new RegExp(`^${leaderId} leader epoch=\\d+ leader=${leaderId} secrets=0$`)));
  expect(lines.every((l) => l.endsWith("secrets=0"))).toBe(true);

  // A failing hook and a hanging one: logged, and the election goes on.
  const bad = `${name}-bad`;
  const failing = [1, 2].map((i) => standalone(bad, i, { CONSUL_LEADER_ON_ROLE_CHANGE: "exit 5" }));
  const fl = await oneLeader(failing);
  const failed = await fl.waitForLog((l) => l.msg === "role-change hook failed", 5000);
  expect(failed["code"]).toBe(5);
  const slow = `${name}-slow`;
  const hanging = [1, 2].map((i) => standalone(slow, i, { CONSUL_LEADER_ON_ROLE_CHANGE: "sleep 60", CONSUL_LEADER_HOOK_TIMEOUT: "500ms" }));
  const hl = await oneLeader(hanging, 5000);
  const killed = await hl.waitForLog((l) => l.msg === "role-change hook killed after the timeout", 5000);
  expect(killed["timeoutMs"]).toBe(500);
  // The hang did not hold the election: a SIGTERM hands over at once.
  const t0 = performance.now();
  expect(await hl.stop()).toBe(0);
  await oneLeader(hanging.filter((s) => s !== hl), 3000);
  expect(performance.now() - t0).toBeLessThan(2000);
});

scenario("Nomad mode writes $NOMAD_ALLOC_DIR/$NOMAD_ALLOC_ID while primary, and a role file", async () => {
  const name = `alloc${++n}`;
  const dirs = [0, 1].map(() => Scope.current!.tmpdir("alloc-"));
  const svcs = await Promise.all([0, 1].map(() => registerLikeNomad(consul, { allocId: randomAllocId(), name, port: consul.ports.http })));
  const ss = svcs.map((s, i) => new Sidecar(`sidecar-${name}-${i}`, {
    CONSUL_HTTP_ADDR: consul.addr,
    NOMAD_ALLOC_ID: s.allocId,
    NOMAD_ALLOC_DIR: dirs[i]!,
    CONSUL_LEADER_SERVICE_NAME: name,
    CONSUL_LEADER_KEY: `test/${name}/lock`,
    CONSUL_LEADER_CHECK_TTL: "3s",
    CONSUL_LEADER_FENCE_MARGIN: "700ms",
    CONSUL_LEADER_LOG_LEVEL: "info",
  }));
  const leader = await oneLeader(ss);
  const li = ss.indexOf(leader);
  const fi = 1 - li;
  await waitFor(() => existsSync(join(dirs[li]!, svcs[li]!.allocId)) && existsSync(join(dirs[fi]!, "consul-leader.role")), { what: "the primary marker and the follower's role file" });
  expect(readFileSync(join(dirs[li]!, "consul-leader.role"), "utf8")).toBe("leader\n");
  expect(existsSync(join(dirs[fi]!, svcs[fi]!.allocId))).toBe(false);
  expect(readFileSync(join(dirs[fi]!, "consul-leader.role"), "utf8")).toBe("follower\n");
  await leader.stop();
  await waitFor(() => existsSync(join(dirs[fi]!, svcs[fi]!.allocId)), { what: "the marker on the new primary" });
  expect(existsSync(join(dirs[li]!, svcs[li]!.allocId))).toBe(false);
});

scenario("CONSUL_LEADER_PREPARED_QUERY: <name>.query.consul answers with the primary, through Consul DNS, also after a failover", async () => {
  expect(Bun.which("dig"), "dig is missing (Debian's dnsutils)").toBeTruthy();
  const query = `writer${++n}`;
  const g = await RedisGroup.start(consul, { env: { CONSUL_LEADER_PREPARED_QUERY: query } });
  const dig = async () => {
    const r = Bun.spawnSync(["dig", "@127.0.0.1", "-p", String(consul.ports.dns), `${query}.query.consul`, "SRV", "+short"]);
    return r.stdout.toString().trim().split("\n").filter(Boolean).map((l) => Number(l.split(" ")[2]));
  };
  const p = await g.converged();
  await waitFor(async () => {
    const ports = await dig();
    return ports.length === 1 && ports[0] === p.redis.port;
  }, { timeoutMs: 10_000, what: `${query}.query.consul to name the primary's port ${p.redis.port}` });
  const def = (await consul.api<{ Name: string; Service: { Tags: string[]; OnlyPassing: boolean } }[]>("GET", "/v1/query")).find((q) => q.Name === query)!;
  expect(def.Service).toMatchObject({ Tags: ["primary"], OnlyPassing: true });
  await p.redis.kill9();
  const next = await g.converged(15_000, [p.id]);
  await waitFor(async () => {
    const ports = await dig();
    return ports.length === 1 && ports[0] === next.redis.port;
  }, { timeoutMs: 10_000, what: "the query to follow the new primary" });
});

scenario("consul maint on the leader's service hands over; on the node nobody competes; leaving maintenance rejoins", async () => {
  const g = await RedisGroup.start(consul);
  const p = await g.converged();
  await consul.api("PUT", `/v1/agent/service/maintenance/${p.id}?enable=true&reason=test`);
  const next = await g.converged(15_000, [p.id]);
  expect(next.id).not.toBe(p.id);
  await p.sidecar.waitForLog((l) => l.msg === "maintenance on", 5000);
  // In maintenance it follows but does not compete: kill the new primary's Redis, p must not win.
  await next.redis.kill9();
  const third = await g.converged(15_000, [p.id, next.id]);
  expect(third.id).not.toBe(p.id);
  await next.redis.restart();
  await consul.api("PUT", `/v1/agent/service/maintenance/${p.id}?enable=false`);
  await p.sidecar.waitForLog((l) => l.msg === "maintenance off", 5000);
  await g.converged(15_000);
  // Node maintenance (the one dev agent is every member's node): nobody leads.
  await consul.api("PUT", "/v1/agent/maintenance?enable=true&reason=drain");
  await waitFor(async () => {
    const [pair] = await consul.api<{ Session?: string }[]>("GET", `/v1/kv/${g.key}`);
    return !pair?.Session;
  }, { timeoutMs: 15_000, what: "the lock to be released and left free" });
  await Bun.sleep(3000);
  const [still] = await consul.api<{ Session?: string }[]>("GET", `/v1/kv/${g.key}`);
  expect(still?.Session).toBeFalsy();
  await consul.api("PUT", "/v1/agent/maintenance?enable=false");
  await g.converged(15_000);
}, 90_000);

scenario("consul-leader status: the group as Consul sees it; exit 0 healthy, 1 not, 3 when Consul cannot be read", async () => {
  const g = await RedisGroup.start(consul);
  const p = await g.converged();
  const status = (extra: string[] = [], addr = consul.addr) =>
    new Proc("status", [BINARY, "status", ...extra], { env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: addr, CONSUL_LEADER_KEY: g.key, CONSUL_LEADER_SERVICE_NAME: g.name } });
  const text = status();
  expect(await text.exited).toBe(0);
  const out = text.lines.join("\n");
  expect(out).toContain(`leader: ${p.id} at ${p.redis.addr}, epoch `);
  for (const m of g.members) expect(out).toContain(m.id);
  expect(out).toContain(`healthy: one primary (${p.id})`);
  const json = status(["--json"]);
  expect(await json.exited).toBe(0);
  const doc = JSON.parse(json.lines.join("\n"));
  expect(doc.leader.instance).toBe(p.id);
  expect(doc.members).toHaveLength(3);
  expect(doc.discoveredPrimaries).toEqual([p.id]);
  // Every sidecar gone: nobody holds the lock.
  await Promise.all(g.members.map((m) => m.sidecar.stop()));
  const down = status();
  expect(await down.exited).toBe(1);
  expect(down.lines.join("\n")).toContain("NOT healthy");
  const nowhere = status([], `127.0.0.1:${freePort()}`);
  expect(await nowhere.exited).toBe(3);
  // The error goes to stderr; stdout, which scripts parse, stays empty.
  expect(nowhere.stdoutLines).toEqual([]);
  expect(nowhere.lines.join("\n")).toMatch(/^status: .*cannot reach the Consul agent/m);
});

/** `consul-leader <args>` against group `g` (its key and service name), with `extra` in the environment. */
function cli(g: RedisGroup, args: string[], extra: Record<string, string> = {}, cwd?: string): Proc {
  return new Proc(`cli ${args[0]}`, [BINARY, ...args], {
    env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: consul.addr, CONSUL_LEADER_KEY: g.key, CONSUL_LEADER_SERVICE_NAME: g.name, ...extra },
    ...(cwd ? { cwd } : {}),
  });
}

interface StatusDoc {
  leader: { instance: string; epoch: number } | null;
  members: { instance: string; role: string; eligible: boolean; ineligible: string | null; redis: { ok: boolean; role?: string; offset?: number } | null; lagBytes: number | null; lagSeconds: number | null }[];
  paused: { since: string; by?: string; reason?: string } | null;
  failovers: { at: string; from: string | null; to: string; why: string; epoch?: number }[];
  problems: string[];
}

async function statusDoc(g: RedisGroup, extra: Record<string, string> = {}): Promise<{ code: number; doc: StatusDoc }> {
  const p = cli(g, ["status", "--json"], extra);
  const code = await p.exited;
  await Bun.sleep(20); // the last stdout chunk
  return { code, doc: JSON.parse(p.stdoutLines.join("\n")) as StatusDoc };
}

scenario("consul-leader status: each replica's live lag, why a member cannot lead (its role check says the same), the last failovers, and the key a primary under another key holds", async () => {
  const http = [freePort(), freePort(), freePort()];
  const g = await RedisGroup.start(consul, { env: (i) => ({ CONSUL_LEADER_HTTP_ADDR: `127.0.0.1:${http[i]}` }) });
  const p = await g.converged();
  for (let i = 0; i < 200; i++) await p.redis.cmd("SET", [`k${i}`, "v".repeat(200)]);
  const replicas = g.members.filter((m) => m !== p);

  // Live: the leader's Redis a master, each replica's lag read now from the primary, in bytes and seconds.
  const live = await waitFor(async () => {
    const { code, doc } = await statusDoc(g);
    const rs = doc.members.filter((m) => m.instance !== p.id);
    return code === 0 && rs.every((m) => m.redis?.ok && m.lagBytes !== null && m.lagBytes < 1024 && m.lagSeconds !== null) ? doc : undefined;
  }, { timeoutMs: 15_000, what: "status with every replica's live lag" });
  expect(live.members.find((m) => m.instance === p.id)?.redis).toMatchObject({ ok: true, role: "master" });
  for (const m of live.members.filter((x) => x.instance !== p.id)) {
    expect(m.redis).toMatchObject({ ok: true, role: "replica" });
    expect(m.lagSeconds!).toBeLessThanOrEqual(2);
  }
  const text = cli(g, ["status"]);
  expect(await text.exited).toBe(0);
  expect(text.stdoutLines.join("\n")).toMatch(/ \d+ B, \d+ s /);

  // A replica's Redis down: status says why it cannot lead, its Consul check and /readiness say the same.
  const r = replicas[0]!;
  await r.redis.kill9();
  const down = await waitFor(async () => (await statusDoc(g)).doc.members.find((m) => m.instance === r.id && m.ineligible === "Redis is down"), { timeoutMs: 10_000, what: "status to say the replica cannot lead because its Redis is down" });
  expect(down.eligible).toBe(false);
  await waitFor(async () => {
    const checks = await consul.api<{ CheckID: string; Status: string; Output: string }[]>("GET", `/v1/health/checks/${g.name}`);
    const role = checks.find((c) => c.CheckID === `${r.id}:role`);
    return role?.Status === "critical" && role.Output.includes(`not eligible: ${down.ineligible}`);
  }, { timeoutMs: 10_000, what: "the replica's role check in the catalog to carry the same reason" });
  const ready = await fetch(`http://127.0.0.1:${http[r.index]}/readiness`);
  expect(ready.status).toBe(503);
  expect(await ready.text()).toStartWith("not ready: Redis down");

  // The primary's Redis killed: the failover is in the history, with who, to whom and why.
  await p.redis.kill9();
  const { member: next } = await g.newWritablePrimary(p.id, 15_000);
  const after = await waitFor(async () => {
    const { doc } = await statusDoc(g);
    return doc.failovers.find((f) => f.from === p.id && f.to === next.id) ? doc : undefined;
  }, { timeoutMs: 10_000, what: "the failover in the history" });
  const f = after.failovers.at(-1)!;
  expect(f.why).toMatch(/Redis is down/);
  expect(f.epoch).toBe(after.leader!.epoch);
  expect(Date.parse(f.at)).toBeGreaterThan(Date.now() - 60_000);
  const shown = cli(g, ["status"]);
  await shown.exited;
  expect(shown.stdoutLines.join("\n")).toContain(`${p.id} -> ${next.id} (epoch ${f.epoch}): ${f.why}`);

  // Asked about the default key of the service name instead of the group's: it names the key the primary's sidecar holds.
  const other = `consul-leader/${g.name}/lock`;
  const elsewhere = await statusDoc(g, { CONSUL_LEADER_KEY: other });
  expect(elsewhere.code).toBe(1);
  expect(elsewhere.doc.problems).toContain(`${next.id} is tagged primary by a consul-leader that locks ${g.key}, not ${other}: run status with CONSUL_LEADER_KEY=${g.key}`);
});

scenario("consul-leader switchover checks first: an unknown member lists the ones that can take over, an ineligible one says why, and nothing changes; a valid one moves the primary", async () => {
  const g = await RedisGroup.start(consul);
  const p = await g.converged();
  const [a, b] = g.members.filter((m) => m !== p);
  const epoch = () => consul.api<{ Value: string }[]>("GET", `/v1/kv/${g.key}`).then(([x]) => (JSON.parse(Buffer.from(x!.Value, "base64").toString()) as { epoch: number }).epoch);
  const before = await epoch();
  // The replicas publish that they may lead once their first sync is done.
  await waitFor(async () => (await statusDoc(g)).doc.members.every((m) => m.eligible), { timeoutMs: 10_000, what: "every member eligible" });
  const nosuch = cli(g, ["switchover", "--to", "nosuch"]);
  expect(await nosuch.exited).toBe(1);
  expect(nosuch.stdoutLines).toEqual([]);
  const said = nosuch.lines.join("\n");
  expect(said).toContain("switchover: nosuch is not a member of this group; members that can take over: ");
  expect(said).toContain(a!.id);
  expect(said).toContain(b!.id);
  expect(said).toContain("Nothing changed");
  // A member whose Redis is down cannot take over, and says why.
  await a!.redis.kill9();
  await waitFor(async () => (await statusDoc(g)).doc.members.find((m) => m.instance === a!.id)?.ineligible === "Redis is down", { timeoutMs: 10_000, what: `${a!.id} to be ineligible` });
  const ineligible = cli(g, ["switchover", "--to", a!.id]);
  expect(await ineligible.exited).toBe(1);
  expect(ineligible.lines.join("\n")).toContain(`switchover: ${a!.id} cannot take over: Redis is down; members that can: ${b!.id}`);
  await Bun.sleep(500);
  expect(await epoch()).toBe(before);
  expect(await g.discoveredPrimaries()).toEqual([p.id]);
  // A valid one goes through.
  const ok = cli(g, ["switchover", "--to", b!.id]);
  expect(await ok.exited).toBe(0);
  await g.newWritablePrimary(p.id, 10_000);
  expect(await g.discoveredPrimaries()).toEqual([b!.id]);
});

scenario("consul-leader pause: no failover while paused (the leader keeps the lock with its Redis down), switchover refused; resume lets the group fail over", async () => {
  const http = [freePort(), freePort(), freePort()];
  const g = await RedisGroup.start(consul, { env: (i) => ({ CONSUL_LEADER_HTTP_ADDR: `127.0.0.1:${http[i]}` }) });
  const p = await g.converged();
  const before = await statusDoc(g);
  const paused = cli(g, ["pause", "--reason", "upgrading Redis"]);
  expect(await paused.exited).toBe(0);
  expect(paused.stdoutLines.join("\n")).toContain("paused");
  await Promise.all(g.members.map((m) => m.sidecar.waitForLog((l) => l.msg === "the group is paused: no failover, no switchover", 5000, "the pause seen")));
  // Refused everywhere while paused: the CLI, and POST /switchover on the leader.
  const sw = cli(g, ["switchover"]);
  expect(await sw.exited).toBe(1);
  expect(sw.lines.join("\n")).toMatch(/^switchover: the group is paused \(since \S+, by \S+, upgrading Redis\); run consul-leader resume first/m);
  const post = await fetch(`http://127.0.0.1:${http[p.index]}/switchover`, { method: "POST" });
  expect(post.status).toBe(409);
  expect(await post.text()).toContain("the group is paused");
  // The primary's Redis dies: nobody takes over, the leader keeps the lock.
  await p.redis.kill9();
  await p.sidecar.waitForLog((l) => /the group is paused: no failover/.test(String(l["reason"] ?? "")), 5000, "the leader waiting for its Redis");
  await Bun.sleep(3000);
  const during = await statusDoc(g);
  expect(during.doc.leader).toMatchObject({ instance: p.id, epoch: before.doc.leader!.epoch });
  expect(during.doc.paused).toMatchObject({ reason: "upgrading Redis" });
  expect(g.members.every((m) => m === p || m.sidecar.role() === "follower")).toBe(true);
  const metrics = await (await fetch(`http://127.0.0.1:${http[p.index]}/metrics`)).text();
  expect(metrics).toContain("\nconsul_leader_paused 1\n");
  // Resume: the failover happens now.
  const resumed = cli(g, ["resume"]);
  expect(await resumed.exited).toBe(0);
  const { member: next } = await g.newWritablePrimary(p.id, 15_000);
  expect(next.id).not.toBe(p.id);
});

scenario("a misspelled knob, in .env or in the environment, is warned about naming the closest real knob", async () => {
  const g = await RedisGroup.start(consul, { size: 1 });
  await g.converged();
  const dir = Scope.current!.tmpdir("dotenv-");
  writeFileSync(join(dir, ".env"), "CONSUL_LEADER_LOGLEVEL=debug\n");
  const p = cli(g, ["status"], { CONSUL_LEADR_TTL: "20s" }, dir);
  expect(await p.exited).toBe(0);
  const err = p.lines.filter((l) => !p.stdoutLines.includes(l));
  expect(err).toEqual([
    "consul-leader: warning: CONSUL_LEADER_LOGLEVEL (in .env) is not a knob and is ignored; did you mean CONSUL_LEADER_LOG_LEVEL?",
    "consul-leader: warning: CONSUL_LEADR_TTL (in the environment) is not a knob and is ignored; did you mean CONSUL_LEADER_TTL?",
  ]);
});

scenario("SIGUSR1 with CONSUL_LEADER_LOG_FORMAT=text dumps the state as logfmt fields; a follower's dump names no epoch of its own", async () => {
  const name = `dump${++n}`;
  const text = { CONSUL_LEADER_LOG_FORMAT: "text" };
  const a = standalone(name, 1, text);
  await a.proc.waitForLine((l) => l.includes('msg="role changed"') && l.includes("to=leader"), 10_000, "the leader's role change");
  const b = standalone(name, 2, text);
  await b.proc.waitForLine((l) => l.includes('msg="role changed"') && l.includes("to=follower"), 10_000, "the follower's role change");
  for (const [s, role] of [[a, "leader"], [b, "follower"]] as const) {
    s.signal("SIGUSR1");
    const line = await s.proc.waitForLine((l) => / msg=state /.test(l), 5000, "the state dump");
    expect(line).toContain(`state.role=${role}`);
    expect(line).toContain(`state.lock.instance=${name}-1`);
    expect(line).toContain("state.knobs.CONSUL_LEADER_LOG_FORMAT=text");
    expect(line).not.toContain('state="{');
    expect(line).not.toContain("=null");
    if (role === "follower") expect(line).not.toMatch(/ state\.epoch=/);
    else expect(line).toMatch(/ state\.epoch=\d+ /);
  }
});
