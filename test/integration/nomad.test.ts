/**
 * The jobspecs on a real Nomad: `nomad job validate` and `nomad fmt -check`
 * on every file in nomad/, then the raw_exec job with count 3 on a Nomad dev
 * agent registering in a Consul dev agent: one Nomad-registered service tagged
 * primary with its Redis primary; `nomad alloc stop` on the leader hands over;
 * a job update that makes Nomad re-register its services leaves the tags
 * right; `nomad job stop` leaves no lock held and no session behind. Then
 * each jobspec as shipped: the docker one planned with its defaults (no
 * Docker engine here to run it), the raw_exec one run with every default on
 * a client of its own.
 */

import { expect } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { Net, netnsUnavailable } from "../harness/netns.ts";
import { record } from "../harness/figures.ts";
import { allocOf, instances as instancesIn, NomadAgent, oneNomadPrimary as oneNomadPrimaryIn } from "../harness/nomad.ts";
import { fileScope, ROOT, scenario, Scope, waitFor } from "../harness/proc.ts";
import { BINARY } from "../harness/sidecar.ts";

let consul: ConsulAgent;
let nomad: NomadAgent;
const JOBS = readdirSync(join(ROOT, "nomad")).filter((f) => f.endsWith(".hcl")).map((f) => join(ROOT, "nomad", f));
const RAW = join(ROOT, "nomad", "redis-raw-exec.nomad.hcl");

const instances = (name: string) => instancesIn(consul, name);
const oneNomadPrimary = (name: string, count: number, timeoutMs?: number) => oneNomadPrimaryIn(consul, name, count, timeoutMs);

fileScope("nomad.test.ts", async () => {
  consul = await startDevAgent();
  nomad = await NomadAgent.start(consul.addr);
}, 180_000);

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

/** The docker jobspec's variable defaults and the sidecar task's resources, as written. */
function dockerJobDefaults(): { image: string; memory: number; measuredMiB: number } {
  const text = readFileSync(join(ROOT, "nomad", "redis.nomad.hcl"), "utf8");
  const image = /variable "image" \{[^}]*default\s*=\s*"([^"]+)"/s.exec(text)?.[1] ?? "";
  const task = text.slice(text.indexOf('task "consul-leader"'), text.indexOf('task "redis"'));
  const memory = Number(/memory\s*=\s*(\d+)/.exec(task)?.[1]);
  const measuredMiB = Number(/measured ([\d.]+) MiB/.exec(task)?.[1]);
  return { image, memory, measuredMiB };
}

scenario("the docker jobspec as shipped: its default image is the tag the README builds, the sidecar's memory has room over what it was measured using, and Nomad plans it with every default", async () => {
  const { image, memory, measuredMiB } = dockerJobDefaults();
  const version = (JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as { version: string }).version;
  expect(image).toBe(`consul-leader:${version}`);
  // What the README builds and the compose file runs (asked as booleans: a failure prints the tag, not the README).
  expect(readFileSync(join(ROOT, "README.md"), "utf8").includes(`docker build -t ${image} .`), `README builds ${image}`).toBe(true);
  expect(readFileSync(join(ROOT, "docker-compose.yml"), "utf8").includes(`image: ${image}`), `docker-compose.yml runs ${image}`).toBe(true);
  // The limit is a hard one for the docker driver (an OOM kill is a failover): headroom over the 30-minute measurement.
  expect(measuredMiB).toBeGreaterThan(0);
  expect(memory).toBeGreaterThanOrEqual(Math.ceil(measuredMiB * 1.5));
  // No variable given: Nomad parses and plans it; this agent has no Docker, so placing it is all that fails.
  const plan = await nomad.cli(["job", "plan", "-verbose", join(ROOT, "nomad", "redis.nomad.hcl")]);
  expect(plan.code, plan.out).toBe(1);
  expect(plan.out).toContain(`"${image}"`);
  expect(plan.out).toMatch(/missing drivers/);
  expect(plan.out).not.toMatch(/Error|error parsing/);
});

scenario("the raw_exec jobspec as shipped, every variable at its default (/usr/local/bin/consul-leader, Consul at 127.0.0.1:8500, service redis), on a Nomad client whose address is not loopback", async () => {
  const why = netnsUnavailable();
  if (why) {
    console.log(`skipped: ${why}`);
    return;
  }
  // A host of its own (a network namespace): Consul at 127.0.0.1:8500 there, as the job's default expects,
  // and Nomad in a private mount namespace whose /usr/local/bin holds the binary under test.
  const net = new Net(["nomadhost"]);
  const h = net.host("nomadhost");
  const dir = Scope.current!.tmpdir("nomad-defaults-");
  writeFileSync(join(dir, "consul.json"), JSON.stringify({ node_name: "nomadhost", bind_addr: h.ip, client_addr: `127.0.0.1 ${h.ip}`, ports: { dns: -1, grpc: -1, grpc_tls: -1, serf_wan: -1 }, disable_update_check: true, log_level: "warn" }));
  const agent = new ConsulAgent("consul-nomadhost", ["agent", "-dev", "-config-file", join(dir, "consul.json")], { http: 8500, dns: 0, server: 8300, serfLan: 8301 }, undefined, { host: h.ip, wrap: ["ip", "netns", "exec", h.ns] });
  await agent.waitReady();
  const binDir = "/usr/local/bin";
  const mounts = `mount -t tmpfs -o mode=0755 tmpfs ${binDir} && cp ${BINARY} ${binDir}/consul-leader && exec "$0" "$@"`;
  // nsenter, not `ip netns exec`: that one mounts a sysfs of its own over /sys, which hides the cgroups Nomad's executor needs.
  const nomadHere = await NomadAgent.start("127.0.0.1:8500", { ip: h.ip, iface: h.dev, wrap: ["nsenter", `--net=/var/run/netns/${h.ns}`, "unshare", "--mount", "--propagation", "private", "sh", "-c", mounts] });
  const run = await nomadHere.cli(["job", "run", "-detach", RAW]);
  expect(run.code, run.out).toBe(0);
  // The tasks bind the client's address: the sidecar reaches its Redis there, not on loopback.
  const p = await oneNomadPrimaryIn(agent, "redis", 3, 120_000);
  expect(p.Service.Address).toBe(h.ip);
  await waitFor(async () => (await instancesIn(agent, "redis-primary")).filter((s) => s.Checks.every((c) => c.Status === "passing")).length === 1, { timeoutMs: 20_000, what: "redis-primary passing on the leader only" });
  const stop = await nomadHere.cli(["job", "stop", "-purge", "redis"]);
  expect(stop.code, stop.out).toBe(0);
  await waitFor(async () => (await instancesIn(agent, "redis")).length === 0, { timeoutMs: 60_000, what: "every instance deregistered" });
}, 300_000);
