/**
 * A Redis group as the tests and the demo run it: N redis-server processes and
 * N sidecars (standalone mode) on one Consul agent, with helpers to find the
 * primary the way clients do and to check what every Redis believes.
 */

import type { ConsulAgent } from "./consul.ts";
import { waitFor } from "./proc.ts";
import { RedisServer, type RedisOptions } from "./redis.ts";
import { Sidecar } from "./sidecar.ts";

export interface Member {
  index: number;
  id: string;
  redis: RedisServer;
  sidecar: Sidecar;
}

export interface GroupOptions {
  size?: number;
  name?: string;
  /** The lock key; default test/<name>/lock. */
  key?: string;
  redis?: RedisOptions | ((i: number) => RedisOptions);
  env?: Record<string, string> | ((i: number) => Record<string, string>);
  /** Command prefix for sidecar i, e.g. ["ip", "netns", "exec", ns]. */
  wrap?: (i: number) => string[];
}

let groups = 0;

export class RedisGroup {
  readonly name: string;
  readonly key: string;
  readonly members: Member[] = [];

  /** The agent the harness asks about discovery; a test may point it elsewhere during a fault. */
  consul: ConsulAgent;

  private constructor(consul: ConsulAgent, name: string, key?: string) {
    this.consul = consul;
    this.name = name;
    this.key = key ?? `test/${name}/lock`;
  }

  static async start(consul: ConsulAgent, opts: GroupOptions = {}): Promise<RedisGroup> {
    const g = new RedisGroup(consul, opts.name ?? `rg${++groups}-${process.pid}`, opts.key);
    const size = opts.size ?? 3;
    const servers = await Promise.all(Array.from({ length: size }, (_, i) => RedisServer.start({ name: `redis-${g.name}-${i + 1}`, ...(typeof opts.redis === "function" ? opts.redis(i) : opts.redis ?? {}) })));
    for (let i = 0; i < size; i++) {
      const redis = servers[i]!;
      const id = `${g.name}-${i + 1}`;
      g.members.push({ index: i, id, redis, sidecar: new Sidecar(`sidecar-${id}`, g.env(i, redis, opts), [], opts.wrap?.(i) ?? []) });
    }
    return g;
  }

  env(i: number, redis: RedisServer, opts: GroupOptions = {}): Record<string, string> {
    const password = redis.opts.password;
    return {
      CONSUL_HTTP_ADDR: this.consul.addr,
      CONSUL_LEADER_SERVICE_NAME: this.name,
      CONSUL_LEADER_SERVICE_ID: `${this.name}-${i + 1}`,
      CONSUL_LEADER_KEY: this.key,
      CONSUL_LEADER_REPLICA_LABEL: "replica",
      CONSUL_LEADER_REDIS_ADDR: redis.addr,
      CONSUL_LEADER_CHECK_TTL: "3s",
      CONSUL_LEADER_FENCE_MARGIN: "700ms",
      CONSUL_LEADER_SLEEP: "2s",
      ...(password ? { CONSUL_LEADER_REDIS_PASSWORD: password } : {}),
      ...(typeof opts.env === "function" ? opts.env(i) : opts.env ?? {}),
    };
  }

  member(id: string): Member {
    const m = this.members.find((x) => x.id === id);
    if (!m) throw new Error(`no member ${id}`);
    return m;
  }

  /** What clients see: services tagged primary and passing. */
  async discoveredPrimaries(): Promise<string[]> {
    const entries = await this.consul.api<{ Service: { ID: string } }[]>("GET", `/v1/health/service/${this.name}?passing&tag=primary`);
    return entries.map((e) => e.Service.ID);
  }

  /**
   * The moment clients could write again: discovery names exactly one primary
   * other than `old` and that Redis takes a write. Returns it and the time.
   */
  async newWritablePrimary(old: string, timeoutMs = 15_000): Promise<{ member: Member; at: number }> {
    return await waitFor(async () => {
      const primaries = await this.discoveredPrimaries();
      // Thrown, not returned: waitFor's timeout message then says what it last saw.
      if (primaries.length !== 1 || primaries[0] === old) throw new Error(`discovery names ${JSON.stringify(primaries)}`);
      const m = this.member(primaries[0]!);
      await m.redis.cmd("SET", ["__probe", "1"]).catch((e: Error) => {
        throw new Error(`discovery names ${m.id}, whose Redis refuses a write: ${e.message}`);
      });
      return { member: m, at: performance.now() };
    }, { timeoutMs, intervalMs: 10, what: `${this.name}: a new writable primary in discovery` });
  }

  /** Members whose Redis reports role:master, and whether each accepts a write right now. */
  async masters(): Promise<{ id: string; writable: boolean }[]> {
    const out: { id: string; writable: boolean }[] = [];
    for (const m of this.members) {
      if (!m.redis.proc.running || m.redis.paused) continue;
      const info = await m.redis.info().catch(() => undefined);
      if (info?.["role"] !== "master") continue;
      const writable = await m.redis.cmd("SET", ["__probe", "1"]).then(() => true, () => false);
      out.push({ id: m.id, writable });
    }
    return out;
  }

  /**
   * Waits until a member other than `leader` publishes itself eligible in its
   * member entry: what `consul-leader switchover` checks before it asks (a
   * replica is not eligible during its first full sync).
   */
  async takeoverReady(leader: string, timeoutMs = 15_000): Promise<void> {
    await waitFor(async () => {
      const entries = await this.consul.api<{ Value: string | null; Session?: string }[]>("GET", `/v1/kv/${this.key}/members/?recurse`);
      return entries.some((e) => {
        if (!e.Session || !e.Value) return false;
        const m = JSON.parse(Buffer.from(e.Value, "base64").toString()) as { instance: string; eligible: boolean };
        return m.instance !== leader && m.eligible;
      });
    }, { timeoutMs, what: `a member other than ${leader} eligible to take over` });
  }

  /**
   * Waits until discovery names exactly one primary, its Redis is a writable
   * master, every other running Redis is a replica of it with its link up.
   */
  async converged(timeoutMs = 15_000, exclude: string[] = []): Promise<Member> {
    return await waitFor(async () => {
      const primaries = await this.discoveredPrimaries();
      if (primaries.length !== 1) return undefined;
      const p = this.member(primaries[0]!);
      const masters = await this.masters();
      if (masters.length !== 1 || masters[0]!.id !== p.id || !masters[0]!.writable) return undefined;
      for (const m of this.members) {
        if (m === p || exclude.includes(m.id) || !m.redis.proc.running || m.redis.paused || !m.sidecar.proc.running) continue;
        const info = await m.redis.info();
        if (info["role"] !== "slave" || info["master_port"] !== String(p.redis.port) || info["master_link_status"] !== "up") return undefined;
      }
      return p;
    }, { timeoutMs, intervalMs: 25, what: `${this.name}: one writable, discoverable primary and linked replicas` });
  }
}
