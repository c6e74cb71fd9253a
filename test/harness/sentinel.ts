/**
 * Redis Sentinel as the benchmark runs it beside consul-leader: three
 * redis-server processes (the first one starts as the primary, the others
 * replicate it) and three redis-sentinel processes monitoring them with a
 * quorum of 2, all on free loopback ports. Each sentinel gets its own config
 * file in a temp dir, since Sentinel rewrites it. Also the client side:
 * discovery through `SENTINEL get-master-addr-by-name`, the way Sentinel
 * clients find the primary.
 */

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, Proc, Scope, waitFor } from "./proc.ts";
import { RedisServer, type RedisOptions } from "./redis.ts";

export interface SentinelGroupOptions {
  /** Master name given to `sentinel monitor`. */
  name: string;
  /** `down-after-milliseconds`: how long a primary may not answer before a sentinel thinks it down. */
  downAfterMs: number;
  /** `failover-timeout`; also paces Sentinel's retries and its reconfiguration of stray replicas. */
  failoverTimeoutMs: number;
  redis?: RedisOptions;
  size?: number;
}

/** One redis-sentinel process. */
export class Sentinel {
  readonly proc: Proc;
  readonly port: number;

  constructor(name: string, dir: string, g: { name: string; primary: RedisServer; downAfterMs: number; failoverTimeoutMs: number }) {
    this.port = freePort();
    const conf = [
      `port ${this.port}`,
      "bind 127.0.0.1",
      "protected-mode no",
      `dir ${dir}`,
      `sentinel monitor ${g.name} 127.0.0.1 ${g.primary.port} 2`,
      `sentinel down-after-milliseconds ${g.name} ${g.downAfterMs}`,
      `sentinel failover-timeout ${g.name} ${g.failoverTimeoutMs}`,
      `sentinel parallel-syncs ${g.name} 1`,
    ];
    const file = join(dir, "sentinel.conf");
    writeFileSync(file, conf.join("\n") + "\n");
    this.proc = new Proc(name, ["redis-sentinel", file]);
  }

  get addr(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** One SENTINEL subcommand on a fresh connection. */
  async ask(args: string[]): Promise<unknown> {
    const c = new Bun.RedisClient(`redis://${this.addr}`, { autoReconnect: false, connectionTimeout: 1000, enableOfflineQueue: false });
    try {
      await c.connect();
      return await c.send("SENTINEL", args);
    } finally {
      c.close();
    }
  }

  /** `SENTINEL MASTER <name>` as a field map. */
  async master(name: string): Promise<Record<string, string>> {
    return fields(await this.ask(["MASTER", name]));
  }

  async replicas(name: string): Promise<Record<string, string>[]> {
    return ((await this.ask(["REPLICAS", name])) as unknown[]).map(fields);
  }
}

/** RESP2 answers come as [k, v, k, v, ...], RESP3 ones as maps; both become a record. */
function fields(reply: unknown): Record<string, string> {
  if (Array.isArray(reply)) {
    const out: Record<string, string> = {};
    for (let i = 0; i + 1 < reply.length; i += 2) out[String(reply[i])] = String(reply[i + 1]);
    return out;
  }
  return Object.fromEntries(Object.entries(reply as Record<string, unknown>).map(([k, v]) => [k, String(v)]));
}

/**
 * Discovery through Sentinel: asks the sentinels in order and returns the
 * first answer to `SENTINEL get-master-addr-by-name`, as host:port (undefined
 * when the first sentinel that answers knows no primary). Throws when none
 * answers. Keeps one connection per sentinel, as Sentinel clients do.
 */
export function sentinelDiscovery(sentinels: string[], name: string): () => Promise<string | undefined> {
  const clients = new Map<string, Bun.RedisClient>();
  return async () => {
    for (const addr of sentinels) {
      let c = clients.get(addr);
      try {
        if (!c?.connected) {
          c?.close();
          c = new Bun.RedisClient(`redis://${addr}`, { autoReconnect: false, connectionTimeout: 500, enableOfflineQueue: false });
          clients.set(addr, c);
          await c.connect();
        }
        const reply = (await c.send("SENTINEL", ["get-master-addr-by-name", name])) as [string, string] | null;
        return reply ? `${reply[0]}:${reply[1]}` : undefined;
      } catch {
        c?.close();
        clients.delete(addr);
      }
    }
    throw new Error(`no sentinel answered (${sentinels.join(", ")})`);
  };
}

export class SentinelGroup {
  readonly members: RedisServer[];
  readonly sentinels: Sentinel[];

  private constructor(readonly opts: SentinelGroupOptions, members: RedisServer[], sentinels: Sentinel[]) {
    this.members = members;
    this.sentinels = sentinels;
  }

  /** Starts the Redis group with the first member as primary, then the sentinels; resolves once they agree. */
  static async start(opts: SentinelGroupOptions): Promise<SentinelGroup> {
    const scope = Scope.current ?? new Scope("sentinel");
    const size = opts.size ?? 3;
    const members = await Promise.all(Array.from({ length: size }, (_, i) => RedisServer.start({ name: `redis-${opts.name}-${i + 1}`, ...opts.redis })));
    const primary = members[0]!;
    await primary.cmd("REPLICAOF", ["NO", "ONE"]);
    for (const r of members.slice(1)) await r.cmd("REPLICAOF", ["127.0.0.1", String(primary.port)]);
    const sentinels = Array.from({ length: 3 }, (_, i) => new Sentinel(`sentinel-${opts.name}-${i + 1}`, scope.tmpdir("sentinel-"), { ...opts, primary }));
    const g = new SentinelGroup(opts, members, sentinels);
    await g.converged(30_000);
    return g;
  }

  get name(): string {
    return this.opts.name;
  }

  discovery(): () => Promise<string | undefined> {
    return sentinelDiscovery(this.sentinels.map((s) => s.addr), this.name);
  }

  member(addr: string): RedisServer {
    const r = this.members.find((m) => m.addr === addr);
    if (!r) throw new Error(`${this.name}: no member at ${addr}`);
    return r;
  }

  /** Every sentinel's answer to get-master-addr-by-name (undefined where one does not answer). */
  async primaries(): Promise<(string | undefined)[]> {
    return await Promise.all(this.sentinels.map(async (s) => {
      const reply = (await s.ask(["get-master-addr-by-name", this.name]).catch(() => null)) as [string, string] | null;
      return reply ? `${reply[0]}:${reply[1]}` : undefined;
    }));
  }

  /**
   * The moment clients could write again: the first sentinel names a primary
   * other than `old` and that Redis takes a write.
   */
  async newWritablePrimary(old: string, timeoutMs = 30_000): Promise<{ addr: string; at: number }> {
    return await waitFor(async () => {
      const [addr] = await this.primaries();
      if (!addr || addr === old) return undefined;
      const ok = await this.member(addr).cmd("SET", ["__probe", "1"]).then(() => true, () => false);
      return ok ? { addr, at: performance.now() } : undefined;
    }, { timeoutMs, intervalMs: 10, what: `${this.name}: a new writable primary named by Sentinel` });
  }

  /**
   * Waits until every sentinel names the same primary, none sees a failover
   * in progress or an instance down, that Redis is the only master and takes
   * writes, and every other running Redis replicates it with its link up.
   */
  async converged(timeoutMs = 30_000): Promise<RedisServer> {
    return await waitFor(async () => {
      const named = await this.primaries();
      const addr = named[0];
      if (!addr || named.some((a) => a !== addr)) return undefined;
      for (const s of this.sentinels) {
        const m = await s.master(this.name);
        if (m["flags"] !== "master" || m["num-other-sentinels"] !== String(this.sentinels.length - 1)) return undefined;
        const down = (await s.replicas(this.name)).filter((r) => r["flags"] !== "slave" && this.members.some((x) => x.addr === `${r["ip"]}:${r["port"]}` && x.proc.running && !x.paused));
        if (down.length > 0) return undefined;
      }
      const p = this.member(addr);
      if ((await p.role()) !== "master" || !(await p.cmd("SET", ["__probe", "1"]).then(() => true, () => false))) return undefined;
      for (const r of this.members) {
        if (r === p || !r.proc.running || r.paused) continue;
        const info = await r.info();
        if (info["role"] !== "slave" || info["master_port"] !== String(p.port) || info["master_link_status"] !== "up") return undefined;
      }
      return p;
    }, { timeoutMs, intervalMs: 50, what: `${this.name}: sentinels agreeing on one writable primary with linked replicas` });
  }
}
