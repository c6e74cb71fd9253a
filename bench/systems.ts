/**
 * The two systems the benchmark compares, behind one interface: how clients
 * discover the primary, when the group has converged, and what each fault
 * does to it (and how it is undone). consul-leader runs on a Consul cluster
 * with its sidecars on a client agent; Sentinel runs with three sentinels.
 * Both get the same Redis configuration.
 */

import { consulDiscovery } from "../test/harness/checker.ts";
import { type ConsulAgent, startCluster } from "../test/harness/consul.ts";
import { RedisGroup, type Member } from "../test/harness/group.ts";
import { freePort, type Proc, waitFor } from "../test/harness/proc.ts";
import { SentinelGroup } from "../test/harness/sentinel.ts";
import { knob } from "../src/config/knobs.ts";
import { parseDuration } from "../src/config/duration.ts";

export type FaultId = "graceful" | "redis-kill" | "redis-stop" | "sidecar-kill" | "sidecar-stop" | "agent-restart" | "server-election";

/** Every fault, in the order they run; `moves`: whether it should move the primary. */
export const FAULTS: readonly { id: FaultId; title: string; moves: boolean }[] = [
  { id: "graceful", title: "graceful handover", moves: true },
  { id: "redis-kill", title: "primary Redis kill -9, restarted empty", moves: true },
  { id: "redis-stop", title: "primary Redis SIGSTOP 10 s", moves: true },
  { id: "sidecar-kill", title: "leader sidecar kill -9", moves: true },
  { id: "sidecar-stop", title: "leader sidecar SIGSTOP", moves: true },
  { id: "agent-restart", title: "local Consul agent kill -9 + restart", moves: false },
  { id: "server-election", title: "Consul raft leader kill -9 + restart", moves: false },
];

/**
 * Every Redis boots as a replica of nothing, as the README recommends: a
 * restarted Redis cannot take a write before its sidecar has looked at the
 * lock. Sentinel gets the same redis.conf, so a restarted old primary does not
 * come back as a writable, empty master before the sentinels reconfigure it.
 */
export const BOOT_AS_REPLICA = ["replicaof 127.0.0.1 1"];

/** The sidecar's timing knobs at their documented defaults (RedisGroup sets shorter test values). */
const DEFAULT_TIMING = Object.fromEntries(
  ["CONSUL_LEADER_CHECK_TTL", "CONSUL_LEADER_FENCE_MARGIN", "CONSUL_LEADER_SLEEP", "CONSUL_LEADER_TTL", "CONSUL_LEADER_REDIS_DOWN_AFTER"].map((k) => [k, knob(k).default]),
);

export const CHECK_TTL_MS = parseDuration(knob("CONSUL_LEADER_CHECK_TTL").default)!;

/** How long a SIGSTOP of the primary's Redis lasts. */
const REDIS_STOP_MS = 10_000;
/** How long the "no failover expected" faults are watched for a change of primary: three check TTLs. */
const WATCH_MS = 3 * CHECK_TTL_MS;
/**
 * How long a fault that must move the primary may take before the trial
 * counts it as missing and undoes the fault: longer than the sidecar's
 * slowest safety nets (a 60 s lock watch, the reconcile loop).
 */
const FAILOVER_WAIT_MS = 90_000;

/** What one fault does to one system. */
export interface Plan {
  /** Breaks something; the fault's time is taken just before. */
  inject(): Promise<void>;
  /** How long after the fault a new primary is waited for. */
  waitMs: number;
  /** When set, `recover` runs this long after the fault even if the primary already moved. */
  holdMs?: number;
  /** Undoes the fault: restarts what was killed, resumes what was stopped. */
  recover(): Promise<void>;
}

export interface BenchSystem {
  /** Row label, e.g. "Sentinel (down-after 1000 ms)". */
  readonly label: string;
  /** Short name for files and the CSV. */
  readonly key: string;
  /** host:port of every Redis (one pinned checker writer each). */
  readonly servers: string[];
  /** How this system's clients find the primary. */
  discovery(): () => Promise<string | undefined>;
  /** Waits for one writable, discoverable primary with linked replicas; returns its address. */
  converged(timeoutMs: number): Promise<string>;
  /** Waits until discovery names a writable primary other than `old`; returns its address. */
  newWritablePrimary(old: string, timeoutMs: number): Promise<string>;
  /** The faults this system has an equivalent of. */
  readonly faults: ReadonlySet<FaultId>;
  /** The fault as this system suffers it, against the primary at `primary`. */
  plan(fault: FaultId, primary: string): Plan;
  /** Every process of the system now, for the per-trial logs. */
  procs(): Proc[];
  /** Stops the group and starts a fresh one, after a trial it did not come back from. */
  replace(): Promise<void>;
}

export class ConsulLeaderSystem implements BenchSystem {
  readonly label = "consul-leader";
  readonly key = "consul-leader";
  readonly faults: ReadonlySet<FaultId> = new Set(FAULTS.map((f) => f.id));

  #groups = 0;

  private constructor(readonly consulServers: ConsulAgent[], readonly agent: ConsulAgent, public group: RedisGroup) {}

  /** A 3-server Consul cluster and one client agent, which the three sidecars talk to. */
  static async start(env: (i: number) => Record<string, string> = () => ({})): Promise<ConsulLeaderSystem> {
    const cluster = await startCluster(3, 1);
    const agent = cluster.clients[0]!;
    const sys = new ConsulLeaderSystem(cluster.servers, agent, await ConsulLeaderSystem.#startGroup(agent, "bench", env));
    await sys.converged(60_000);
    return sys;
  }

  /**
   * An already running group on an already running cluster (the scale mode's
   * groups): `agent` is the one discovery asks and the agent-restart fault
   * restarts; `replace` starts its fresh group there.
   */
  static around(consulServers: ConsulAgent[], agent: ConsulAgent, group: RedisGroup): ConsulLeaderSystem {
    return new ConsulLeaderSystem(consulServers, agent, group);
  }

  static #startGroup(agent: ConsulAgent, name: string, env: (i: number) => Record<string, string> = () => ({})): Promise<RedisGroup> {
    return RedisGroup.start(agent, { name, redis: { conf: BOOT_AS_REPLICA }, env: (i) => ConsulLeaderSystem.env(env(i)) });
  }

  /**
   * A second group on the same Consul cluster for the client-observed rows:
   * every sidecar serves the Sentinel endpoint (`endpoints`), and the three
   * Redis listen on one port, each on its own loopback address, so that the
   * Consul DNS name `primary.<name>.service.consul` (an A record) and that
   * port reach the primary.
   */
  async clientGroup(name: string): Promise<{ system: ConsulLeaderSystem; endpoints: string[]; port: number }> {
    const port = freePort();
    const sentinelPorts = [freePort(), freePort(), freePort()];
    const group = await RedisGroup.start(this.agent, {
      name,
      // replica-announce-ip: a replica connecting from 127.0.0.1 must still be known by its own address,
      // or the leader finds no member among its replicas to hand over to.
      redis: (i) => ({ host: `127.0.0.${i + 2}`, port, bindOnly: true, conf: [...BOOT_AS_REPLICA, `replica-announce-ip 127.0.0.${i + 2}`] }),
      env: (i) => ConsulLeaderSystem.env({ CONSUL_LEADER_SENTINEL_ADDR: `127.0.0.1:${sentinelPorts[i]}`, CONSUL_LEADER_SENTINEL_MASTER_NAME: name }),
    });
    const system = new ConsulLeaderSystem(this.consulServers, this.agent, group);
    await system.converged(60_000);
    return { system, endpoints: sentinelPorts.map((p) => `127.0.0.1:${p}`), port };
  }

  /** A new group under a new name (a new lock key and services), on the same Consul cluster, restarted where down. */
  async replace(): Promise<void> {
    await Promise.all(this.group.members.map((m) => m.sidecar.stop()));
    await Promise.all(this.group.members.map((m) => m.redis.stop()));
    for (const a of [...this.consulServers, this.agent]) if (!a.proc.running) a.restart();
    this.group = await ConsulLeaderSystem.#startGroup(this.agent, `bench${++this.#groups}`);
    await this.converged(60_000);
  }

  /** Sidecar environment on top of RedisGroup's: default timing, info logs. */
  static env(extra: Record<string, string> = {}): Record<string, string> {
    return { ...DEFAULT_TIMING, CONSUL_LEADER_LOG_LEVEL: "info", ...extra };
  }

  get servers(): string[] {
    return this.group.members.map((m) => m.redis.addr);
  }

  discovery(): () => Promise<string | undefined> {
    return consulDiscovery(this.agent.url, this.group.name);
  }

  #member(addr: string): Member {
    const m = this.group.members.find((x) => x.redis.addr === addr);
    if (!m) throw new Error(`no member with Redis ${addr}`);
    return m;
  }

  async converged(timeoutMs: number): Promise<string> {
    const deadline = performance.now() + timeoutMs;
    for (const a of [...this.consulServers, this.agent]) await a.waitReady(Math.max(1000, deadline - performance.now()));
    return (await this.group.converged(Math.max(1000, deadline - performance.now()))).redis.addr;
  }

  async newWritablePrimary(old: string, timeoutMs: number): Promise<string> {
    return (await this.group.newWritablePrimary(this.#member(old).id, timeoutMs)).member.redis.addr;
  }

  plan(fault: FaultId, primary: string): Plan {
    const m = this.#member(primary);
    const wait = { waitMs: FAILOVER_WAIT_MS };
    switch (fault) {
      case "graceful":
        return { ...wait, inject: async () => void (await m.sidecar.stop("SIGTERM", 30_000)), recover: async () => m.sidecar.restart() };
      case "redis-kill":
        return { ...wait, inject: () => m.redis.kill9(), recover: () => m.redis.restart({ empty: true }) };
      case "redis-stop":
        return { waitMs: REDIS_STOP_MS, holdMs: REDIS_STOP_MS, inject: async () => m.redis.pause(), recover: async () => m.redis.resume() };
      case "sidecar-kill":
        return { ...wait, inject: () => m.sidecar.kill9(), recover: async () => m.sidecar.restart() };
      case "sidecar-stop":
        return { ...wait, inject: async () => m.sidecar.signal("SIGSTOP"), recover: async () => m.sidecar.signal("SIGCONT") };
      case "agent-restart":
        return {
          waitMs: WATCH_MS,
          inject: async () => {
            await this.agent.proc.kill9();
            this.agent.restart();
          },
          recover: () => this.agent.waitReady(),
        };
      case "server-election":
        return { waitMs: WATCH_MS, inject: () => this.#killRaftLeader(), recover: () => Promise.all(this.consulServers.map((s) => s.waitReady())).then(() => {}) };
    }
  }

  /** kill -9 the raft leader, wait until the others elect a new one, start the killed server again. */
  async #killRaftLeader(): Promise<void> {
    const leaderAddr = await this.agent.api<string>("GET", "/v1/status/leader");
    const leader = this.consulServers.find((s) => leaderAddr === `127.0.0.1:${s.ports.server}`);
    if (!leader) throw new Error(`raft leader ${leaderAddr} is none of the servers`);
    await leader.proc.kill9();
    const other = this.consulServers.find((s) => s !== leader)!;
    await waitFor(async () => {
      const now = await other.api<string>("GET", "/v1/status/leader");
      return now !== "" && now !== leaderAddr;
    }, { timeoutMs: 30_000, intervalMs: 50, what: "the remaining servers to elect a raft leader" });
    leader.restart();
  }

  procs(): Proc[] {
    return [...this.group.members.flatMap((m) => [m.sidecar.proc, m.redis.proc]), this.agent.proc, ...this.consulServers.map((s) => s.proc)];
  }
}

export class SentinelSystem implements BenchSystem {
  readonly label: string;
  readonly key: string;
  readonly faults: ReadonlySet<FaultId>;

  /** The planned switchover (`graceful`) does not depend on down-after; only the 1000 ms group runs it. */
  private constructor(public group: SentinelGroup) {
    this.label = `Sentinel (down-after ${group.opts.downAfterMs} ms)`;
    this.key = `sentinel-${group.opts.downAfterMs}`;
    this.faults = new Set<FaultId>(group.opts.downAfterMs === 1000 ? ["graceful", "redis-kill", "redis-stop"] : ["redis-kill", "redis-stop"]);
  }

  static async start(downAfterMs: number): Promise<SentinelSystem> {
    return new SentinelSystem(await SentinelGroup.start({ name: `bench${downAfterMs}`, downAfterMs, failoverTimeoutMs: 5000, redis: { conf: BOOT_AS_REPLICA } }));
  }

  /** New Redis servers and sentinels with the same settings. */
  async replace(): Promise<void> {
    await Promise.all(this.group.sentinels.map((s) => s.proc.stop()));
    await Promise.all(this.group.members.map((m) => m.stop()));
    this.group = await SentinelGroup.start(this.group.opts);
  }

  get servers(): string[] {
    return this.group.members.map((m) => m.addr);
  }

  discovery(): () => Promise<string | undefined> {
    return this.group.discovery();
  }

  async converged(timeoutMs: number): Promise<string> {
    return (await this.group.converged(timeoutMs)).addr;
  }

  async newWritablePrimary(old: string, timeoutMs: number): Promise<string> {
    return (await this.group.newWritablePrimary(old, timeoutMs)).addr;
  }

  plan(fault: FaultId, primary: string): Plan {
    const r = this.group.member(primary);
    const wait = { waitMs: FAILOVER_WAIT_MS };
    switch (fault) {
      case "graceful":
        // Sentinel's planned switchover.
        return { ...wait, inject: async () => void (await this.group.sentinels[0]!.ask(["FAILOVER", this.group.name])), recover: async () => {} };
      case "redis-kill":
        return { ...wait, inject: () => r.kill9(), recover: () => r.restart({ empty: true }) };
      case "redis-stop":
        return { waitMs: REDIS_STOP_MS, holdMs: REDIS_STOP_MS, inject: async () => r.pause(), recover: async () => r.resume() };
      default:
        throw new Error(`${this.label} has no ${fault} fault`);
    }
  }

  procs(): Proc[] {
    return [...this.group.members.map((m) => m.proc), ...this.group.sentinels.map((s) => s.proc)];
  }
}
