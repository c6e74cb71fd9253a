/**
 * The election on a real Consul agent, with the sidecar as the compiled
 * binary: Nomad-registered services, SIGTERM/SIGKILL of the leader, an
 * operator deleting the key or destroying the session, Nomad's sync resetting
 * tags and Meta, and a standalone service with its TTL check.
 */

import { expect } from "bun:test";
import { type ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { nomadResync, PrimaryObserver, randomAllocId, registerLikeNomad, type NomadService } from "../harness/discovery.ts";
import { FaultProxy } from "../harness/fault-proxy.ts";
import { fileScope, scenario, Scope, waitFor } from "../harness/proc.ts";
import { Sidecar } from "../harness/sidecar.ts";
import { record } from "../harness/figures.ts";

let consul: ConsulAgent;
fileScope("election.test.ts", async () => {
  consul = await startDevAgent();
});


let groupNo = 0;

interface Group {
  name: string;
  key: string;
  services: NomadService[];
  sidecars: Sidecar[];
}

/** Three Nomad-style services and three sidecars on them (fast check TTL for crash tests). */
async function nomadGroup(extra: Record<string, string> = {}): Promise<Group> {
  const name = `redis${++groupNo}`;
  const key = `test/${name}/lock`;
  const services: NomadService[] = [];
  const sidecars: Sidecar[] = [];
  for (let i = 0; i < 3; i++) {
    const svc = await registerLikeNomad(consul, { allocId: randomAllocId(), name, port: consul.ports.http });
    services.push(svc);
    sidecars.push(new Sidecar(`sidecar-${name}-${i}`, {
      CONSUL_HTTP_ADDR: consul.addr,
      NOMAD_ALLOC_ID: svc.allocId,
      CONSUL_LEADER_SERVICE_NAME: name,
      CONSUL_LEADER_KEY: key,
      CONSUL_LEADER_REPLICA_LABEL: "replica",
      CONSUL_LEADER_CHECK_TTL: "3s",
      CONSUL_LEADER_FENCE_MARGIN: "700ms",
      ...extra,
    }));
  }
  return { name, key, services, sidecars };
}

async function agentService(id: string): Promise<{ Tags: string[]; Meta: Record<string, string> }> {
  return await consul.api("GET", `/v1/agent/service/${id}`);
}

async function lockPair(key: string): Promise<{ Session?: string; Value: string } | undefined> {
  const res = await fetch(`${consul.url}/v1/kv/${key}`);
  if (res.status === 404) return undefined;
  const [pair] = (await res.json()) as { Session?: string; Value: string }[];
  return pair;
}

/** Waits until exactly one service is tagged primary and the rest replica; returns the leader's index. */
async function converged(g: Group, timeoutMs = 10_000): Promise<number> {
  return await waitFor(async () => {
    const svcs = await Promise.all(g.services.map((s) => agentService(s.id)));
    const primaries = svcs.flatMap((s, i) => (s.Tags.includes("primary") ? [i] : []));
    const replicas = svcs.filter((s) => s.Tags.includes("replica")).length;
    const running = g.sidecars.filter((s) => s.proc.running).length;
    if (primaries.length !== 1 || replicas !== running - 1) return undefined;
    const pair = await lockPair(g.key);
    const leader = primaries[0]!;
    return pair?.Session && pair.Session === svcs[leader]!.Meta["session"] ? leader + 1 : undefined;
  }, { timeoutMs, what: "one primary, the rest replicas, the key held by the primary's session" }) - 1;
}

/** When discovery first shows exactly one primary other than `old`. */
async function newPrimary(obs: PrimaryObserver, old: string, timeoutMs: number): Promise<number> {
  return await waitFor(() => {
    const cur = obs.current();
    return cur.length === 1 && cur[0] !== old ? performance.now() : undefined;
  }, { timeoutMs, intervalMs: 5, what: "a new primary" });
}

/**
 * One sidecar on a Nomad-style service, its Consul traffic through a fault
 * proxy, leading; then "Nomad" drops the role tag and the sidecar's write
 * putting it back is held in the proxy until `release()`.
 */
async function sidecarWithHeldWrite(prefix: string) {
  const proxy = new FaultProxy(consul.url);
  Scope.current!.defer(() => proxy.stop());
  const name = `${prefix}${++groupNo}`;
  const svc = await registerLikeNomad(consul, { allocId: randomAllocId(), name, port: consul.ports.http });
  const sidecar = new Sidecar(`sidecar-${name}`, { CONSUL_HTTP_ADDR: proxy.addr, NOMAD_ALLOC_ID: svc.allocId, CONSUL_LEADER_SERVICE_NAME: name, CONSUL_LEADER_KEY: `test/${name}/lock` });
  await waitFor(async () => (await agentService(svc.id)).Tags.includes("primary"), { what: "the sidecar to tag its service primary" });
  let release!: () => void;
  proxy.fault = { kind: "hold", until: new Promise<void>((r) => (release = r)), match: /^\/v1\/agent\/service\/register/ };
  await nomadResync(consul, svc, ["v1"]);
  await waitFor(() => proxy.injected.length > 0, { what: "the sidecar's re-registration to reach the proxy" });
  return {
    svc,
    sidecar,
    release: () => {
      proxy.fault = undefined;
      release();
    },
  };
}

scenario("three sidecars on Nomad-registered services elect exactly one primary; tags, Meta.session and the key agree", async () => {
  const g = await nomadGroup();
  const leader = await converged(g);
  const svcs = await Promise.all(g.services.map((s) => agentService(s.id)));
  const sessions = svcs.map((s) => s.Meta["session"]);
  expect(new Set(sessions).size).toBe(3);
  for (const s of svcs) {
    expect(s.Meta["external-source"]).toBe("nomad");
    expect(s.Tags).toContain("v1");
  }
  const pair = await lockPair(g.key);
  expect(pair!.Session).toBe(sessions[leader]);
  const value = JSON.parse(Buffer.from(pair!.Value, "base64").toString());
  expect(value.instance).toBe(g.services[leader]!.allocId);
  expect(value.epoch).toBeGreaterThan(0);
  // Every session is bound to its sidecar's own liveness check, not serfHealth.
  const info = await consul.api<{ NodeChecks: string[]; ServiceChecks: { ID: string }[] }[]>("GET", `/v1/session/info/${sessions[leader]}`);
  expect(info[0]!.NodeChecks).toEqual([]);
  expect(info[0]!.ServiceChecks[0]!.ID).toBe(`consul-leader-${g.services[leader]!.allocId}:alive`);
});

scenario("SIGTERM to the leader: another holds the primary tag well under a second later, never two at once", async () => {
  const g = await nomadGroup();
  const first = await converged(g);
  const obs = new PrimaryObserver(consul, g.name);
  await Bun.sleep(100);
  const t0 = performance.now();
  const exit = g.sidecars[first]!.stop("SIGTERM");
  const code = await exit;
  const exitedMs = performance.now() - t0;
  const t1 = await newPrimary(obs, g.services[first]!.id, 5000);
  const takeover = (obs.firstSingle(t0) ?? t1) - t0;
  await obs.stop();
  record("takeover after SIGTERM (tags only), ms", takeover);
  expect(code).toBe(0);
  expect(exitedMs).toBeLessThan(1000);
  expect(takeover).toBeLessThan(1000);
  expect(obs.maxTagged(), obs.doubles()).toBeLessThanOrEqual(1);
  // The stopped sidecar took its tags and Meta.session off Nomad's service.
  const old = await agentService(g.services[first]!.id);
  expect(old.Tags).not.toContain("primary");
  expect(old.Meta["session"]).toBeUndefined();
  await converged(g);
});

scenario("SIGKILL to the leader: another takes over once Consul invalidates the session; never two tagged primary", async () => {
  const g = await nomadGroup();
  const first = await converged(g);
  const obs = new PrimaryObserver(consul, g.name);
  await Bun.sleep(100);
  const t0 = performance.now();
  await g.sidecars[first]!.kill9();
  const t1 = await newPrimary(obs, g.services[first]!.id, 15_000);
  await obs.stop();
  record("takeover after SIGKILL (tags only, CHECK_TTL 3s), ms", t1 - t0);
  expect(obs.maxTagged(), obs.doubles()).toBeLessThanOrEqual(1);
  // Invalidation comes from the 3s liveness check (beaten every 750ms), not the 15s session TTL (x2).
  expect(t1 - t0).toBeGreaterThan(2000);
  expect(t1 - t0).toBeLessThan(6000);
});

scenario("an operator deletes the key: one primary again within one loop", async () => {
  const g = await nomadGroup({ CONSUL_LEADER_SLEEP: "2s" });
  await converged(g);
  const obs = new PrimaryObserver(consul, g.name);
  await consul.api("DELETE", `/v1/kv/${g.key}`);
  const t0 = performance.now();
  await converged(g, 2000);
  await obs.stop();
  expect(obs.maxTagged(), obs.doubles()).toBeLessThanOrEqual(1);
  expect(performance.now() - t0).toBeLessThan(2000);
  expect((await lockPair(g.key))?.Session).toBeTruthy();
});

scenario("an operator destroys the leader's session: one primary again, with a new session", async () => {
  const g = await nomadGroup({ CONSUL_LEADER_SLEEP: "2s" });
  const first = await converged(g);
  const oldSession = (await agentService(g.services[first]!.id)).Meta["session"]!;
  const obs = new PrimaryObserver(consul, g.name);
  await consul.api("PUT", `/v1/session/destroy/${oldSession}`);
  await waitFor(async () => {
    const pair = await lockPair(g.key);
    return pair?.Session && pair.Session !== oldSession;
  }, { timeoutMs: 3000, what: "the key held by another session" });
  await converged(g, 3000);
  await obs.stop();
  expect(obs.maxTagged(), obs.doubles()).toBeLessThanOrEqual(1);
  const sessions = await Promise.all(g.services.map(async (s) => (await agentService(s.id)).Meta["session"]));
  expect(sessions).not.toContain(oldSession);
});

scenario("Nomad's sync drops the tags and Meta.session: restored within one loop", async () => {
  const g = await nomadGroup({ CONSUL_LEADER_SLEEP: "2s" });
  const leader = await converged(g);
  const t0 = performance.now();
  await Promise.all(g.services.map((s) => nomadResync(consul, s)));
  await converged(g, 2000);
  const restored = await agentService(g.services[leader]!.id);
  expect(restored.Tags).toContain("primary");
  expect(restored.Meta["session"]).toBeTruthy();
  expect(restored.Meta["external-source"]).toBe("nomad");
  record("tags restored after a Nomad re-registration, ms", performance.now() - t0);
});

scenario("Nomad re-registers while the sidecar's own re-registration is in flight: Nomad's new tags win, the role tag is added to them", async () => {
  // The agent has no compare-and-set for services. The sidecar's write lands
  // after Nomad's job update: without care it would put back the old tags, and
  // Nomad's periodic sync ignores tags under enable_tag_override, so "v2"
  // would stay lost.
  const { svc, sidecar, release } = await sidecarWithHeldWrite("race");
  await nomadResync(consul, svc, ["v2"]); // the job update, while the sidecar's write is on its way
  await Bun.sleep(300); // the sidecar's watch sees v2
  release();
  const final = await waitFor(async () => {
    const cur = await agentService(svc.id);
    return cur.Tags.includes("v2") && cur.Tags.includes("primary") ? cur : undefined;
  }, { timeoutMs: 5000, what: "tags v2 and primary together" });
  expect(final.Tags).not.toContain("v1");
  await sidecar.waitForLog((l) => l.msg === "put back a service definition our last write had overwritten", 1000);
});

scenario("Nomad deregisters the service while the sidecar's write is in flight: the copy that write re-creates is gone once the sidecar stops", async () => {
  // Nomad deregisters an allocation's services (with their checks) as it
  // stops it, then signals the tasks; it ignores unknown services for a minute
  // after it starts. A sidecar write landing after the deregistration re-creates
  // the service without checks: a ghost instance in discovery.
  const { svc, sidecar, release } = await sidecarWithHeldWrite("ghost");
  await consul.api("PUT", `/v1/agent/service/deregister/${svc.id}`); // the allocation stops
  release();
  await waitFor(async () => (await consul.api<Record<string, unknown>>("GET", "/v1/agent/services"))[svc.id], { what: "the sidecar's write to re-create the service" });
  expect(await sidecar.stop("SIGINT")).toBe(0);
  const left = await consul.api<Record<string, unknown>>("GET", "/v1/agent/services");
  expect(Object.keys(left).filter((id) => id === svc.id || id === `consul-leader-${svc.allocId}`)).toEqual([]);
  expect(sidecar.logs().some((l) => l.msg === "removed a copy of the Nomad service that our write re-created after Nomad deregistered it")).toBe(true);
});

scenario("a service without enable_tag_override gets a loud warning naming the fix", async () => {
  const name = `noeto${++groupNo}`;
  const svc = await registerLikeNomad(consul, { allocId: randomAllocId(), name, port: consul.ports.http, eto: false });
  const s = new Sidecar(`sidecar-${name}`, { CONSUL_HTTP_ADDR: consul.addr, NOMAD_ALLOC_ID: svc.allocId, CONSUL_LEADER_SERVICE_NAME: name, CONSUL_LEADER_KEY: `test/${name}/lock` });
  const warn = await s.waitForLog((l) => l.level === "warn" && /enable_tag_override/.test(l.msg), 10_000);
  expect(String(warn["fix"])).toContain("enable_tag_override = true");
});

scenario("Nomad mode: a missing service is waited for, then the sidecar exits 1 with a clear message", async () => {
  const s = new Sidecar("sidecar-nosvc", { CONSUL_HTTP_ADDR: consul.addr, NOMAD_ALLOC_ID: randomAllocId(), CONSUL_LEADER_SERVICE_NAME: "nothing", CONSUL_LEADER_SERVICE_WAIT: "1s" });
  const code = await s.proc.exited;
  expect(code).toBe(1);
  expect(s.proc.lines.join("\n")).toMatch(/no Consul service with an ID starting _nomad-task-.* appeared on the local agent within CONSUL_LEADER_SERVICE_WAIT=1s/);
});
