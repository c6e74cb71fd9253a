/**
 * The status HTTP server from the outside, on a real group (ACL-enabled
 * Consul, three password-protected Redis, three sidecars with
 * CONSUL_LEADER_HTTP_ADDR): the checks agree with discovery, /state with the
 * lock in Consul, /metrics parses, no answer carries the token or the
 * password, POST /switchover moves the primary, the HTML overview renders in
 * headless Chromium, and a port in use stops the sidecar with a clear error.
 *
 * A stuck loop failing /liveness is tested in src/status.test.ts: a SIGSTOPped
 * sidecar cannot answer at all, so only a fake source shows the 503.
 */

import { expect } from "bun:test";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { type ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { type Member, RedisGroup } from "../harness/group.ts";
import { fileScope, freePort, ROOT, scenario, Scope, waitFor } from "../harness/proc.ts";
import { parseExposition } from "../harness/prometheus.ts";
import { Sidecar } from "../harness/sidecar.ts";

/** Distinctive, so finding either anywhere in an answer is a leak. */
const TOKEN = "5e7a1c2d-status-test-mgmt-token-0b9f";
const PASSWORD = "redis-pw-status-test-77c3e1";
/** The status server's token: POST /switchover needs it. */
const STATUS_TOKEN = "status-token-4d1f9a7e2b6c";
const POST = { method: "POST", headers: { Authorization: `Bearer ${STATUS_TOKEN}` } };

let consul: ConsulAgent;
let g: RedisGroup;
const ports: number[] = [];

fileScope("status.test.ts", async () => {
  consul = await startDevAgent({ acl: { enabled: true, default_policy: "deny", tokens: { initial_management: TOKEN } } }, { token: TOKEN });
  ports.push(freePort(), freePort(), freePort());
  g = await RedisGroup.start(consul, {
    redis: { password: PASSWORD },
    env: (i) => ({ CONSUL_HTTP_TOKEN: TOKEN, CONSUL_LEADER_HTTP_ADDR: `127.0.0.1:${ports[i]}`, CONSUL_LEADER_HTTP_TOKEN: STATUS_TOKEN }),
  });
}, 60_000);

function url(m: Member, path: string): string {
  return `http://127.0.0.1:${ports[m.index]}${path}`;
}

async function call(m: Member, path: string, init: RequestInit = {}): Promise<{ status: number; body: string; type: string }> {
  const res = await fetch(url(m, path), { ...init, signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: await res.text(), type: res.headers.get("Content-Type") ?? "" };
}

async function statusOf(path: string): Promise<number[]> {
  return await Promise.all(g.members.map(async (m) => (await call(m, path)).status));
}

/** Waits until /primary is 200 on exactly `primary` and /replica and /readiness on every member agree. */
async function checksSettled(primary: Member): Promise<void> {
  await waitFor(async () => {
    const [p, r, ready] = await Promise.all([statusOf("/primary"), statusOf("/replica"), statusOf("/readiness")]);
    return g.members.every((m) => p[m.index] === (m === primary ? 200 : 503) && r[m.index] === (m === primary ? 503 : 200) && ready[m.index] === 200);
  }, { timeoutMs: 15_000, what: `/primary 200 only on ${primary.id}, /replica 200 on the others, /readiness 200 everywhere` });
}

// ElectorState as /state serves it (only what the tests read).
interface StateDoc {
  version: string;
  role: string;
  instance: string;
  session: string | null;
  epoch: number | null;
  lock: { holder: string | null; instance: string | null; address: string | null; epoch: number | null } | null;
  knobs: Record<string, string>;
  loopAgeMs: number;
}

async function stateOf(m: Member): Promise<StateDoc> {
  const r = await call(m, "/state");
  expect(r.status).toBe(200);
  expect(r.type).toStartWith("application/json");
  return JSON.parse(r.body) as StateDoc;
}

async function lockInConsul(): Promise<{ session: string; instance: string; epoch: number }> {
  const [pair] = await consul.api<{ Value: string; Session?: string }[]>("GET", `/v1/kv/${g.key}?consistent`);
  const value = JSON.parse(Buffer.from(pair!.Value, "base64").toString("utf8")) as { instance: string; epoch: number };
  return { session: pair!.Session ?? "", instance: value.instance, epoch: value.epoch };
}

scenario("the checks agree with discovery; /state matches the lock in Consul; /metrics parses; no answer carries a secret", async () => {
  const p = await g.converged();
  await checksSettled(p);
  expect(await g.discoveredPrimaries()).toEqual([p.id]);
  expect(await statusOf("/health")).toEqual([200, 200, 200]);
  expect(await statusOf("/liveness")).toEqual([200, 200, 200]);

  // /state: every member names the same holder and epoch, and so does Consul.
  const lock = await lockInConsul();
  expect(lock.instance).toBe(p.id);
  for (const m of g.members) {
    const s = await stateOf(m);
    expect(s.instance).toBe(m.id);
    expect(s.role).toBe(m === p ? "leader" : "follower");
    expect(s.lock?.instance).toBe(p.id);
    expect(s.lock?.holder).toBe(lock.session);
    expect(s.lock?.epoch).toBe(lock.epoch);
    if (m === p) {
      expect(s.epoch).toBe(lock.epoch);
      expect(s.session).toBe(lock.session);
    }
    expect(s.knobs["CONSUL_HTTP_TOKEN"]).toBe("[redacted]");
    expect(s.knobs["CONSUL_LEADER_REDIS_PASSWORD"]).toBe("[redacted]");
    expect(s.knobs["CONSUL_LEADER_HTTP_ADDR"]).toBe(`127.0.0.1:${ports[m.index]}`);
    expect(s.version).toMatch(/^\d+\.\d+\.\d+/);
  }

  // SIGUSR1 logs the same document /state serves, less what is unknown (null: a follower has no epoch of its own).
  const follower = g.members.find((m) => m !== p)!;
  follower.sidecar.signal("SIGUSR1");
  const dumped = (await follower.sidecar.waitForLog((l) => l.msg === "state", 5000, "the SIGUSR1 state dump"))["state"] as StateDoc;
  const served = await stateOf(follower);
  expect(Object.keys(dumped).sort()).toEqual(Object.keys(served).filter((k) => served[k as keyof StateDoc] !== null).sort());
  expect("epoch" in dumped).toBe(false);
  expect(dumped).toMatchObject({ version: served.version, instance: served.instance, role: served.role, lock: served.lock!, knobs: served.knobs });

  // /metrics parses, carries every metric, and agrees with the roles.
  const names = [
    "consul_leader_role", "consul_leader_transitions_total", "consul_leader_is_leader", "consul_leader_epoch",
    "consul_leader_fence_remaining_seconds", "consul_leader_renew_seconds", "consul_leader_consul_requests_total",
    "consul_leader_consul_errors_total", "consul_leader_redis_offset_bytes", "consul_leader_redis_lag_bytes", "consul_leader_redis_up",
    "process_cpu_seconds_total", "process_resident_memory_bytes", "process_open_fds", "process_start_time_seconds",
    "consul_leader_heap_used_bytes", "consul_leader_heap_total_bytes",
  ];
  for (const m of g.members) {
    // Sessions renew every TTL/3 (5 s): wait for the first renew, and for a follower's first lag reading.
    const text = await waitFor(async () => {
      const r = await call(m, "/metrics");
      expect(r.status).toBe(200);
      expect(r.type).toBe("text/plain; version=0.0.4; charset=utf-8");
      const ex = parseExposition(r.body);
      const renewed = ex.samples.some((s) => s.name === "consul_leader_renew_seconds_count" && s.labels["result"] === "ok" && s.value >= 1);
      const lagKnown = m === p || ex.samples.some((s) => s.name === "consul_leader_redis_lag_bytes");
      return renewed && lagKnown ? r.body : undefined;
    }, { timeoutMs: 12_000, what: `${m.id}: a renew and a lag reading in /metrics` });
    const ex = parseExposition(text);
    for (const n of names) expect(ex.types.has(n)).toBe(true);
    const value = (name: string, labels: Record<string, string> = {}) =>
      ex.samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    expect(value("consul_leader_is_leader")).toBe(m === p ? 1 : 0);
    expect(value("consul_leader_role", { role: m === p ? "leader" : "follower" })).toBe(1);
    expect(value("consul_leader_role", { role: "candidate" })).toBe(0);
    expect(value("consul_leader_epoch")).toBe(lock.epoch);
    expect(value("consul_leader_redis_up")).toBe(1);
    expect(value("consul_leader_redis_offset_bytes")).toBeGreaterThanOrEqual(0);
    // The process figures are the sidecar's own, as /proc shows them.
    const vmRss = Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${m.sidecar.pid}/status`, "utf8"))![1]) * 1024;
    expect(Math.abs(value("process_resident_memory_bytes")! - vmRss)).toBeLessThan(4 * 2 ** 20);
    // Within a few: a Consul or Redis connection may open or close between the scrape and this read.
    expect(Math.abs(value("process_open_fds")! - readdirSync(`/proc/${m.sidecar.pid}/fd`).length)).toBeLessThanOrEqual(3);
    expect(value("consul_leader_transitions_total", { to: m === p ? "leader" : "follower" })).toBeGreaterThanOrEqual(1);
    expect(value("consul_leader_consul_requests_total", { method: "PUT", route: "/v1/session/renew/:id", status: "200" })).toBeGreaterThanOrEqual(1);
    expect(value("consul_leader_consul_requests_total", { method: "GET", route: "/v1/kv/:key", status: "200" })).toBeGreaterThanOrEqual(1);
    if (m === p) expect(value("consul_leader_fence_remaining_seconds")).toBeGreaterThan(0);
    else expect(value("consul_leader_fence_remaining_seconds")).toBeUndefined();
    // Routes are templated: no session ID or KV key in any label.
    const routes = new Set(ex.samples.filter((s) => s.labels["route"]).map((s) => s.labels["route"]!));
    for (const r of routes) expect(r).not.toMatch(/[0-9a-f]{8}-[0-9a-f]{4}|test\//);
  }

  // No answer anywhere carries the token or the password.
  for (const m of g.members) {
    for (const path of ["/state", "/metrics", "/", "/health", "/liveness", "/readiness", "/primary", "/replica"]) {
      const r = await call(m, path);
      expect(r.body).not.toContain(TOKEN);
      expect(r.body).not.toContain(PASSWORD);
      expect(r.body).not.toContain(STATUS_TOKEN);
    }
  }

  // Methods and paths on the real server.
  expect((await call(p, "/switchover")).status).toBe(405);
  expect((await call(p, "/no-such-route")).status).toBe(404);
  const refused = await call(follower, "/switchover", POST);
  expect(refused.status).toBe(409);
  expect(refused.body).toContain(`${p.id} leads`);
  const typo = await call(p, "/switchover?to=no-such-member", POST);
  expect(typo.status).toBe(409);
  expect(typo.body).toContain("no-such-member is not an eligible member");
  expect((await g.discoveredPrimaries())).toEqual([p.id]);
});

// ---------------------------------------------------------------- the HTML overview in a browser

/** The path of Chromium, installing Debian's package when it is missing and we are root; throws saying why not otherwise. */
async function chromium(): Promise<string> {
  const found = Bun.which("chromium");
  if (found) return found;
  if (process.getuid?.() !== 0) {
    throw new Error("headless Chromium is needed for the HTML overview test and is not installed; install Debian's chromium (apt-get install -y chromium) or run the tests as root, which installs it");
  }
  process.stdout.write("installing Debian's chromium for the HTML overview test (apt-get install -y chromium)\n");
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  let r = await run(["apt-get", "install", "-y", "chromium"], 600_000, env);
  if (r.code !== 0) {
    await run(["apt-get", "update"], 300_000, env);
    r = await run(["apt-get", "install", "-y", "chromium"], 600_000, env);
  }
  const installed = Bun.which("chromium");
  if (!installed) throw new Error(`headless Chromium could not be installed (apt-get install -y chromium exited ${r.code}):\n${r.stderr.slice(-2000)}`);
  return installed;
}

/** Runs a command to completion (killed after `timeoutMs`) without blocking the event loop, so the group's output keeps draining. */
async function run(cmd: string[], timeoutMs: number, env: Record<string, string | undefined> = process.env): Promise<{ code: number; stdout: string; stderr: string }> {
  const p = Bun.spawn(cmd, { stdout: "pipe", stderr: "pipe", stdin: "ignore", env });
  const timer = setTimeout(() => p.kill("SIGKILL"), timeoutMs);
  const [stdout, stderr, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  clearTimeout(timer);
  return { code, stdout, stderr };
}

function headless(bin: string, userDataDir: string): string[] {
  return [
    bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", `--user-data-dir=${userDataDir}`,
  ];
}

scenario("the HTML overview renders in headless Chromium with the members, their roles and the lock holder", async () => {
  const bin = await chromium();
  const p = await g.converged();
  await checksSettled(p);
  const follower = g.members.find((m) => m !== p)!;
  const { epoch } = await lockInConsul();

  // What a browser builds from a follower's page: every member, the leader holding the lock.
  const dom = await run([...headless(bin, Scope.current!.tmpdir("chromium-")), "--dump-dom", url(follower, "/")], 60_000);
  expect(dom.code).toBe(0);
  const html = dom.stdout;
  expect(html).toContain(`<td id="lock-holder">${p.id}</td>`);
  expect(html).toContain(`<td id="lock-epoch">${epoch}</td>`);
  expect(html).toContain(`<td id="self-instance">${follower.id}</td>`);
  for (const m of g.members) expect(html).toContain(`data-instance="${m.id}"`);
  expect(html).toMatch(new RegExp(`<tr data-instance="${p.id}" class="holder">.*?holds the lock`));
  for (const m of g.members.filter((x) => x !== p)) {
    expect(html).toMatch(new RegExp(`<tr data-instance="${m.id}"><td>(?:(?!</td>).)*</td><td><span class="role role-follower">`));
  }
  expect(html).not.toContain(TOKEN);
  expect(html).not.toContain(PASSWORD);

  // A screenshot of the leader's page, kept for people to look at.
  const out = join(ROOT, "test-output");
  mkdirSync(out, { recursive: true });
  const png = join(out, "status-overview.png");
  rmSync(png, { force: true });
  const shot = await run([...headless(bin, Scope.current!.tmpdir("chromium-")), `--screenshot=${png}`, "--window-size=1280,900", url(p, "/")], 60_000);
  expect(existsSync(png) ? "" : `no screenshot; chromium exited ${shot.code}: ${shot.stderr.slice(-1000)}`).toBe("");
  const bytes = readFileSync(png);
  expect(bytes.subarray(1, 4).toString("latin1")).toBe("PNG");
  expect([bytes.readUInt32BE(16), bytes.readUInt32BE(20)]).toEqual([1280, 900]);
  // A blank 1280x900 page compresses to a few kB; text, tables and badges do not.
  expect(statSync(png).size).toBeGreaterThan(20_000);
  process.stdout.write(`screenshot: ${png} (${statSync(png).size} bytes; the overview of ${p.id}, leader at epoch ${epoch})\n`);
}, 900_000);

// ---------------------------------------------------------------- switchover

scenario("POST /switchover on the leader moves the primary; the checks follow", async () => {
  const p = await g.converged();
  await checksSettled(p);
  const before = await lockInConsul();
  const r = await call(p, "/switchover", POST);
  expect(r.status).toBe(202);
  expect(r.body).toContain(`switchover requested: ${p.id}`);
  const { member: next } = await g.newWritablePrimary(p.id);
  await checksSettled(next);
  const after = await lockInConsul();
  expect(after.instance).toBe(next.id);
  expect(after.epoch).toBeGreaterThan(before.epoch);
  expect((await stateOf(next)).epoch).toBe(after.epoch);
  expect((await stateOf(p)).role).toBe("follower");

  // ?to= hands it to the member named.
  const chosen = g.members.find((m) => m !== next && m !== p)!;
  const to = await call(next, `/switchover?to=${chosen.id}`, POST);
  expect(to.status).toBe(202);
  const final = await g.newWritablePrimary(next.id);
  expect(final.member.id).toBe(chosen.id);
  await checksSettled(chosen);
});

// ---------------------------------------------------------------- a port in use

scenario("a status port already in use: exit 1 with an error naming the knob, before any session exists", async () => {
  const busy = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("taken") });
  Scope.current!.defer(() => busy.stop(true));
  const name = "status-busy";
  const s = new Sidecar("sidecar-busy-port", {
    CONSUL_HTTP_ADDR: consul.addr,
    CONSUL_HTTP_TOKEN: TOKEN,
    CONSUL_LEADER_SERVICE_NAME: name,
    CONSUL_LEADER_SERVICE_ID: `${name}-1`,
    CONSUL_LEADER_SERVICE_PORT: "7001",
    CONSUL_LEADER_HTTP_ADDR: `127.0.0.1:${busy.port}`,
  });
  const code = await Promise.race([s.proc.exited, Bun.sleep(10_000).then(() => "still running")]);
  expect(code).toBe(1);
  expect(s.proc.lines.join("\n")).toContain(`consul-leader: cannot listen on CONSUL_LEADER_HTTP_ADDR=127.0.0.1:${busy.port}: the address is already in use`);
  expect(s.logs().some((l) => l.msg === "created session")).toBe(false);
  expect(s.proc.lines.join("\n")).not.toContain(TOKEN);
});
