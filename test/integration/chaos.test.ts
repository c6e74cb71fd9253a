/**
 * The chaos suite. Each node is its own network namespace (a Consul client
 * agent, a Redis and a sidecar); three Consul servers have theirs. A checker
 * writes continuously through discovery and through one client pinned to each
 * Redis. Faults, a few trials each: the primary's Redis killed, the leader's
 * sidecar killed or frozen, the leader's Consul agent frozen, the leader's
 * node partitioned from everything, the Consul server leader restarted, the
 * key deleted, the session destroyed. After each: no split brain (no two
 * Redis acknowledging writes at the same time), exactly one primary in
 * discovery within the fault's budget, no acknowledged write lost where the
 * design promises it, and the loss reported where it does not.
 *
 * Without root or iproute2 the suite says why and runs nothing: these faults
 * need real hosts (the loopback suites cover the rest).
 */

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Checker, consulDiscovery } from "../harness/checker.ts";
import { ConsulAgent } from "../harness/consul.ts";
import { record } from "../harness/figures.ts";
import { RedisGroup } from "../harness/group.ts";
import { Net, netnsUnavailable } from "../harness/netns.ts";
import { scenario, Scope, waitFor } from "../harness/proc.ts";

const why = netnsUnavailable();
const TRIALS = Number(process.env.CHAOS_TRIALS ?? 2);
const TTL_S = 10;
const CHECK_TTL_S = 3;

// Budgets from the timing model (README "Timing"), plus slack for a loaded 2-core CI box.
// Lost contact (agent frozen, node cut off): Consul expires an unrenewed session
// after up to 2 x TTL from the last renew, but every Raft leader election
// restarts its session timers, and under load a cluster may have one; one
// more TTL covers that.
const BUDGET = {
  redisCrash: 2000,
  sidecarDeath: CHECK_TTL_S * 1000 + 1500,
  lostContact: 3 * TTL_S * 1000,
  operator: 3000,
};

let net: Net;
let servers: ConsulAgent[];
let clients: ConsulAgent[];
let g: RedisGroup;
const file = new Scope("chaos.test.ts");

describe.skipIf(!!why)("chaos (network namespaces)", () => {
  beforeAll(async () => {
    Scope.current = file;
    net = new Net(["s1", "s2", "s3", "n1", "n2", "n3"]);
    const serverIps = net.hosts.filter((h) => h.name.startsWith("s")).map((h) => h.ip);
    const agents = net.hosts.map((h) => {
      const server = h.name.startsWith("s");
      const dir = file.tmpdir(`chaos-${h.name}-`);
      const cfg = {
        node_name: h.name,
        datacenter: "dc1",
        data_dir: join(dir, "data"),
        server,
        ...(server ? { bootstrap_expect: 3 } : {}),
        bind_addr: h.ip,
        client_addr: `127.0.0.1 ${h.ip}`,
        retry_join: serverIps,
        ports: { dns: -1, grpc: -1, grpc_tls: -1, serf_wan: -1 },
        disable_update_check: true,
        leave_on_terminate: false,
        performance: { raft_multiplier: 1 },
        log_level: "warn",
      };
      writeFileSync(join(dir, "agent.json"), JSON.stringify(cfg));
      return new ConsulAgent(`consul-${h.name}`, ["agent", "-config-file", join(dir, "agent.json")], { http: 8500, dns: 0, server: 8300, serfLan: 8301 }, dir, { host: h.ip, wrap: ["ip", "netns", "exec", h.ns] });
    });
    servers = agents.slice(0, 3);
    clients = agents.slice(3);
    await Promise.all(agents.map((a) => a.waitReady(60_000)));
    const nodes = net.hosts.filter((h) => h.name.startsWith("n"));
    g = await RedisGroup.start(servers[0]!, {
      name: "chaos",
      // The recommended Redis setting: boot as a replica of nothing, so a restarted
      // Redis takes no write before its sidecar has looked at the lock.
      redis: (i) => ({ host: nodes[i]!.ip, port: 6379, wrap: ["ip", "netns", "exec", nodes[i]!.ns], conf: ["replicaof 127.0.0.1 1"] }),
      wrap: (i) => ["ip", "netns", "exec", nodes[i]!.ns],
      env: (i) => ({
        CONSUL_HTTP_ADDR: "127.0.0.1:8500",
        CONSUL_LEADER_REDIS_ADDR: "127.0.0.1:6379",
        CONSUL_LEADER_ANNOUNCE_ADDR: `${nodes[i]!.ip}:6379`,
        CONSUL_LEADER_SERVICE_ADDRESS: nodes[i]!.ip,
        CONSUL_LEADER_TTL: `${TTL_S}s`,
        CONSUL_LEADER_CHECK_TTL: `${CHECK_TTL_S}s`,
        CONSUL_LEADER_FENCE_MARGIN: "700ms",
        CONSUL_LEADER_SLEEP: "2s",
        CONSUL_LEADER_LOG_LEVEL: "info",
      }),
    });
    await g.converged(60_000);
  }, 120_000);

  afterAll(async () => {
    Scope.current = undefined;
    await file.close();
  });

  /** Which Consul client agent runs on the same host as member `m`. */
  const agentOf = (index: number) => clients[index]!;

  /** The server that currently leads the Raft cluster. */
  async function raftLeader(): Promise<ConsulAgent> {
    const addr = await servers[0]!.api<string>("GET", "/v1/status/leader").catch(() => servers[1]!.api<string>("GET", "/v1/status/leader"));
    const ip = addr.split(":")[0];
    return servers.find((s) => s.host === ip)!;
  }

  interface Fault {
    name: string;
    budgetMs: number;
    /** The design promises no acknowledged write lost (graceful or no failover). */
    noLoss: boolean;
    /** The primary must not change. */
    sameLeader?: boolean;
    /** An operator action on the lock: the primary may stay the same. */
    operator?: boolean;
    inject(p: (typeof g.members)[number]): Promise<() => Promise<void>>;
  }

  const faults: Fault[] = [
    {
      name: "kill -9 the primary's Redis",
      budgetMs: BUDGET.redisCrash,
      noLoss: false,
      async inject(p) {
        await p.redis.kill9();
        return () => p.redis.restart({ empty: true });
      },
    },
    {
      name: "kill -9 the leader's sidecar",
      budgetMs: BUDGET.sidecarDeath,
      noLoss: true, // its Redis still answers: the successor fences it and catches up
      async inject(p) {
        await p.sidecar.kill9();
        return async () => p.sidecar.restart();
      },
    },
    {
      name: "SIGSTOP the leader's sidecar",
      budgetMs: BUDGET.sidecarDeath,
      noLoss: true,
      async inject(p) {
        p.sidecar.signal("SIGSTOP");
        return async () => p.sidecar.signal("SIGCONT");
      },
    },
    {
      name: "SIGSTOP the leader's Consul agent",
      budgetMs: BUDGET.lostContact,
      noLoss: false,
      async inject(p) {
        agentOf(p.index).proc.signal("SIGSTOP");
        return async () => agentOf(p.index).proc.signal("SIGCONT");
      },
    },
    {
      name: "partition the leader's node from everything",
      budgetMs: BUDGET.lostContact,
      noLoss: false,
      async inject(p) {
        const host = net.host(`n${p.index + 1}`);
        net.partition(host);
        return async () => net.heal(host);
      },
    },
    {
      name: "restart the Consul server leader",
      budgetMs: BUDGET.operator,
      noLoss: true,
      sameLeader: true,
      async inject() {
        const leader = await raftLeader();
        g.consul = servers.find((s) => s !== leader)!;
        await leader.proc.kill9();
        leader.restart();
        return async () => {
          await leader.waitReady(60_000);
        };
      },
    },
    {
      name: "delete the key",
      budgetMs: BUDGET.operator,
      noLoss: true,
      operator: true,
      async inject() {
        await g.consul.api("DELETE", `/v1/kv/${g.key}`);
        return async () => {};
      },
    },
    {
      name: "destroy the leader's session",
      budgetMs: BUDGET.operator,
      noLoss: true,
      operator: true,
      async inject() {
        const [pair] = await g.consul.api<{ Session?: string }[]>("GET", `/v1/kv/${g.key}`);
        await g.consul.api("PUT", `/v1/session/destroy/${pair!.Session}`);
        return async () => {};
      },
    },
  ];

  for (const f of faults) {
    for (let trial = 1; trial <= TRIALS; trial++) {
      scenario(`${f.name} (trial ${trial}): one writer at a time, one primary within ${f.budgetMs} ms`, async () => {
        g.consul = servers[0]!;
        const p = await g.converged(60_000);
        // Discovery as a client would do it: ask any server that answers.
        const ask = servers.map((sv) => consulDiscovery(sv.url, g.name));
        const discover = async () => {
          for (const a of ask) {
            const r = await a().catch(() => null);
            if (r !== null) return r;
          }
          return undefined;
        };
        const [before] = await g.consul.api<{ Session?: string; ModifyIndex: number }[]>("GET", `/v1/kv/${g.key}`);
        const ck = new Checker({ discover, servers: g.members.map((m) => m.redis.addr), timeoutMs: 300 });
        await Bun.sleep(500);
        const t0 = performance.now();
        const heal = await f.inject(p);
        let at = t0;
        try {
          if (f.sameLeader) {
            await Bun.sleep(3000);
          } else if (f.operator) {
            // The primary may stay: wait for the lock to be held again, then for a writable primary.
            await waitFor(async () => {
              const [pair] = await g.consul.api<{ Session?: string; ModifyIndex: number }[]>("GET", `/v1/kv/${g.key}`).catch(() => [undefined]);
              return pair?.Session && (pair.Session !== before!.Session || pair.ModifyIndex !== before!.ModifyIndex);
            }, { timeoutMs: f.budgetMs + 15_000, intervalMs: 10, what: "the lock to be held again" });
            at = (await g.newWritablePrimary("", f.budgetMs + 15_000)).at;
          } else {
            at = (await g.newWritablePrimary(p.id, f.budgetMs + 15_000)).at;
          }
        } finally {
          await heal(); // also when the trial failed: the next trial needs a whole cluster
        }
        const settled = await g.converged(60_000);
        await Bun.sleep(1000);
        await ck.stop();
        const lost = (await ck.lost(settled.redis.addr)).length;
        const split = ck.splitBrainMs();
        const resumed = ck.resumedAt(t0, settled.redis.addr);
        record(`chaos: ${f.name} -> one writable primary, ms`, at - t0);
        record(`chaos: ${f.name} -> acknowledged writes lost`, lost);
        record(`chaos: ${f.name} -> split-brain window, ms`, split);
        if (resumed !== undefined) record(`chaos: ${f.name} -> writes resumed on the final primary, ms`, resumed - t0);
        expect(split).toBe(0);
        expect(at - t0).toBeLessThanOrEqual(f.budgetMs);
        if (f.sameLeader) expect(settled.id).toBe(p.id);
        if (f.noLoss) expect(lost).toBe(0);
        expect(ck.acks.length).toBeGreaterThan(100);
      }, f.budgetMs + 150_000);
    }
  }
});

// Shown as a skipped test, with the reason, only where namespaces are unavailable.
if (why) test.skip(`chaos suite skipped: ${why}`, () => {});
