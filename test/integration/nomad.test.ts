/**
 * The jobspecs on a real Nomad: `nomad job validate` and `nomad fmt -check`
 * on every file in nomad/, then the raw_exec job with count 3 on a Nomad dev
 * agent registering in a Consul dev agent: one Nomad-registered service tagged
 * primary with its Redis primary; `nomad alloc stop` on the leader hands over;
 * a job update that makes Nomad re-register its services leaves the tags
 * right; `nomad job stop` leaves no lock held and no session behind.
 */

import { expect } from "bun:test";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { type ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { record } from "../harness/figures.ts";
import { NomadAgent } from "../harness/nomad.ts";
import { fileScope, ROOT, scenario, waitFor } from "../harness/proc.ts";
import { BINARY } from "../harness/sidecar.ts";

let consul: ConsulAgent;
let nomad: NomadAgent;
const JOBS = readdirSync(join(ROOT, "nomad")).filter((f) => f.endsWith(".hcl")).map((f) => join(ROOT, "nomad", f));
const RAW = join(ROOT, "nomad", "redis-raw-exec.nomad.hcl");

fileScope("nomad.test.ts", async () => {
  consul = await startDevAgent();
  nomad = await NomadAgent.start(consul.addr);
}, 180_000);

interface Svc {
  Service: { ID: string; Tags: string[]; Address: string; Port: number; Meta: Record<string, string> };
  Checks: { Status: string }[];
}

async function instances(name: string): Promise<Svc[]> {
  return await consul.api<Svc[]>("GET", `/v1/health/service/${name}`);
}

async function redisRole(addr: string): Promise<string> {
  const c = new Bun.RedisClient(`redis://${addr}`, { autoReconnect: false, connectionTimeout: 1000 });
  try {
    await c.connect();
    return /role:(\w+)/.exec(String(await c.send("INFO", ["replication"])))?.[1] ?? "unknown";
  } finally {
    c.close();
  }
}

/** Exactly one Nomad-registered instance tagged primary and passing, its Redis a master, the rest replicas of it. */
async function oneNomadPrimary(name: string, count: number, timeoutMs = 60_000): Promise<Svc> {
  return await waitFor(async () => {
    const all = await instances(name);
    if (all.length !== count) throw new Error(`${all.length} instances of ${name}`);
    if (!all.every((s) => s.Service.ID.startsWith("_nomad-task-"))) throw new Error("an instance is not Nomad's");
    const primaries = all.filter((s) => s.Service.Tags.includes("primary") && s.Checks.every((c) => c.Status === "passing"));
    if (primaries.length !== 1) throw new Error(`${primaries.length} passing primaries`);
    const p = primaries[0]!;
    if ((await redisRole(`${p.Service.Address}:${p.Service.Port}`)) !== "master") throw new Error("the tagged primary's Redis is not a master");
    for (const s of all.filter((x) => x !== p)) {
      if (!s.Service.Tags.includes("replica")) throw new Error(`${s.Service.ID} is not tagged replica`);
      if ((await redisRole(`${s.Service.Address}:${s.Service.Port}`)) !== "slave") throw new Error(`${s.Service.ID}'s Redis is not a replica`);
    }
    return p;
  }, { timeoutMs, intervalMs: 200, what: `one Nomad-registered ${name} primary` });
}

function allocOf(serviceId: string): string {
  return /^_nomad-task-([0-9a-f-]{36})-/.exec(serviceId)![1]!;
}

scenario("every jobspec passes nomad job validate and nomad fmt -check", async () => {
  expect(JOBS.length).toBeGreaterThanOrEqual(2);
  for (const job of JOBS) {
    const v = await nomad.cli(["job", "validate", job]);
    expect(v.out).toContain("Job validation successful");
    expect(v.code).toBe(0);
  }
  const fmt = await nomad.cli(["fmt", "-check", join(ROOT, "nomad")]);
  expect(fmt.code, fmt.out).toBe(0);
}, 60_000);

scenario("the raw_exec job on a real Nomad: one primary, handover on alloc stop, tags kept through a job update, nothing left after job stop", async () => {
  const name = `redis-nomad-${process.pid}`;
  const key = `consul-leader/${name}/lock`;
  const vars = ["-var", `consul_leader=${BINARY}`, "-var", `redis_server=${Bun.which("redis-server")}`, "-var", `consul_http_addr=${consul.addr}`, "-var", `service_name=${name}`];
  const run = await nomad.cli(["job", "run", "-detach", ...vars, RAW]);
  expect(run.code, run.out).toBe(0);

  const first = await oneNomadPrimary(name, 3, 90_000);
  // The DNS-friendly service is passing on the leader only.
  await waitFor(async () => {
    const p = (await instances(`${name}-primary`)).filter((s) => s.Checks.every((c) => c.Status === "passing"));
    return p.length === 1 && allocOf(p[0]!.Service.ID) === allocOf(first.Service.ID);
  }, { timeoutMs: 15_000, what: `${name}-primary passing on the leader only` });

  // nomad alloc stop on the leader: the sidecar gets SIGINT (Nomad's default kill signal) and hands over.
  const t0 = performance.now();
  const stop = await nomad.cli(["alloc", "stop", "-detach", allocOf(first.Service.ID)]);
  expect(stop.code, stop.out).toBe(0);
  const second = await waitFor(async () => {
    const p = (await instances(name)).filter((s) => s.Service.Tags.includes("primary") && s.Checks.every((c) => c.Status === "passing"));
    return p.length === 1 && allocOf(p[0]!.Service.ID) !== allocOf(first.Service.ID) ? p[0] : undefined;
  }, { timeoutMs: 30_000, intervalMs: 20, what: "another allocation's service tagged primary" });
  record("Nomad: alloc stop on the leader -> another primary in discovery, ms", performance.now() - t0);
  // Nomad replaces the stopped allocation; the group settles with three again.
  await oneNomadPrimary(name, 3, 90_000);

  // A job update (new static tags) makes Nomad re-register every service with its own tags.
  const tUpdate = performance.now();
  const update = await nomad.cli(["job", "run", "-detach", ...vars, "-var", 'tags=["v2"]', RAW]);
  expect(update.code, update.out).toBe(0);
  let seen = "";
  const after = await waitFor(async () => {
    const all = await instances(name);
    seen = JSON.stringify(all.map((x) => ({ id: x.Service.ID, tags: x.Service.Tags })));
    return all.length === 3 && all.every((s) => s.Service.Tags.includes("v2")) ? all : undefined;
  }, { timeoutMs: 60_000, what: "Nomad to re-register the services with tag v2" }).catch((err: Error) => {
    throw new Error(`${err.message}; seen: ${seen}`);
  });
  record("Nomad: job update -> new tags on all three services, ms", performance.now() - tUpdate);
  expect(after.length).toBe(3);
  const third = await oneNomadPrimary(name, 3, 30_000);
  expect(third.Service.Tags).toContain("v2");
  void second;

  // nomad job stop: every sidecar releases, deregisters and destroys its session.
  const tStop = performance.now();
  const jobStop = await nomad.cli(["job", "stop", "-purge", "redis"]);
  expect(jobStop.code, jobStop.out).toBe(0);
  let left = "";
  await waitFor(async () => {
    const res = await fetch(`${consul.url}/v1/kv/${key}`);
    const pair = res.status === 404 ? undefined : ((await res.json()) as { Session?: string }[])[0];
    const sessions = (await consul.api<{ ID: string; Name: string; ServiceChecks: { ID: string }[] | null }[]>("GET", "/v1/session/list")).filter((s) => s.Name.includes(`:${name}:`));
    const services = await instances(name);
    left = JSON.stringify({ lock: pair?.Session ?? null, sessions, services: services.map((x) => ({ id: x.Service.ID, tags: x.Service.Tags })) });
    return !pair?.Session && sessions.length === 0 && services.length === 0;
  }, { timeoutMs: 60_000, what: "no lock held, no session and no service left" }).catch((err: Error) => {
    throw new Error(`${err.message}; left: ${left}`);
  });
  record("Nomad: job stop -> no lock, session or service left, ms", performance.now() - tStop);
}, 400_000);
