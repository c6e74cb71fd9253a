import { describe, expect, test } from "bun:test";
import type { Clock } from "../clock.ts";
import { silentLogger } from "../log.ts";
import type { AgentService, Consul } from "./client.ts";
import { roleTtlMs, ServiceManager, type Want } from "./service.ts";

/** A stand-in for the agent: one service, and a log of every request the manager sends. */
function fakeAgent() {
  let now = 0;
  const calls: string[] = [];
  let held: Promise<void> = Promise.resolve();
  let svc: AgentService = { ID: "redis-1", Service: "redis", Tags: [], Address: "", Port: 6379, Meta: {}, EnableTagOverride: false, ContentHash: "h0" } as AgentService;
  const consul = {
    agentService: (_id: string, opts?: { hash?: string }) => {
      calls.push(opts?.hash ? "watch" : "GET service");
      return Promise.resolve(structuredClone(svc));
    },
    agentServiceRegister: async (reg: { Tags: string[]; Meta: Record<string, string> }) => {
      calls.push("PUT register");
      await held;
      svc = { ...svc, Tags: [...reg.Tags], Meta: { ...reg.Meta }, ContentHash: `h${calls.length}` };
    },
    agentCheckRegister: () => (calls.push("PUT check register"), Promise.resolve()),
    agentCheckUpdate: (id: string) => (calls.push(`PUT update ${id}`), Promise.resolve()),
    catalogService: () => Promise.resolve([]),
    catalogRegister: () => Promise.resolve(),
  } as unknown as Consul;
  const clock: Clock = { now: () => now, monotonic: () => now, sleep: () => Promise.resolve(), timer: () => ({ cancel: () => {} }) };
  const manager = new ServiceManager(
    { serviceName: "redis", lockKey: "k", primaryLabel: "primary", replicaLabel: "replica", checkTtlMs: 5000, heartbeatTimeoutMs: 500, mode: { kind: "standalone", serviceId: "redis-1", address: "", port: 6379, tags: [], deregisterAfterMs: 60_000 } } as ConstructorParameters<typeof ServiceManager>[0],
    { consul, clock, log: silentLogger },
  );
  return {
    manager,
    calls,
    advance: (ms: number) => (now += ms),
    /** Someone else (Nomad's sync, an operator) re-registers the service. */
    foreign: (tags: string[]) => (svc = { ...svc, Tags: tags, ContentHash: "foreign" }),
    /** Holds every re-registration until the returned function is called. */
    hold: () => {
      let release!: () => void;
      held = new Promise<void>((r) => (release = r));
      return () => {
        held = Promise.resolve();
        release();
      };
    },
  };
}

const FOLLOWER: Want = { primary: false, replica: true, session: "s1", healthy: true, note: "replica of 10.0.0.1:6379, in sync" };

describe("ServiceManager.ensure", () => {
  test("asked again for what it applied last, it sends nothing until the role check is due its refresh", async () => {
    const a = fakeAgent();
    await a.manager.setup(new AbortController().signal);
    await a.manager.ensure(FOLLOWER);
    const after = a.calls.length;
    a.advance(roleTtlMs(5000) / 3 - 1);
    expect(await a.manager.ensure(FOLLOWER)).toBe(false);
    expect(a.calls.length).toBe(after);
    a.advance(1);
    await a.manager.ensure(FOLLOWER);
    expect(a.calls.slice(after)).toEqual(["GET service", "PUT update redis-1:role"]);
  });

  test("a different want, or a definition the watch saw change, is applied at once", async () => {
    const a = fakeAgent();
    await a.manager.setup(new AbortController().signal);
    await a.manager.ensure(FOLLOWER);
    let mark = a.calls.length;
    await a.manager.ensure({ ...FOLLOWER, replica: false, healthy: false, note: "replica of 10.0.0.1:6379, link down" });
    expect(a.calls.slice(mark)).toContain("PUT register");
    await a.manager.ensure(FOLLOWER);
    mark = a.calls.length;
    // Nomad's sync puts its own tags back: the watch sees it, and the same want is applied again.
    a.foreign(["v2"]);
    await a.manager.watch("h", 1000, new AbortController().signal);
    await a.manager.ensure(FOLLOWER);
    expect(a.calls.slice(mark)).toEqual(["watch", "GET service", "PUT update redis-1:role", "PUT register"]);
  });

  test("a definition the watch saw change while a write was in flight is applied again, not taken as done", async () => {
    const a = fakeAgent();
    await a.manager.setup(new AbortController().signal);
    const release = a.hold();
    const writing = a.manager.ensure(FOLLOWER);
    await Bun.sleep(0);
    a.foreign(["v2"]);
    await a.manager.watch("h", 1000, new AbortController().signal);
    release();
    await writing;
    const mark = a.calls.length;
    await a.manager.ensure(FOLLOWER);
    expect(a.calls.slice(mark)).toContain("GET service");
  });

  test("the role check outlives its refreshes beside a liveness check, and is the liveness signal without one", () => {
    expect(roleTtlMs(5000)).toBe(600_000);
    expect(roleTtlMs(0)).toBe(30_000);
  });
});
