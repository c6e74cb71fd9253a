/**
 * What an idle sidecar costs: resident memory and CPU of each sidecar process
 * over a quiet window, and the Consul requests it makes per minute, counted
 * by an HTTP proxy between each sidecar and its agent and split into calls
 * the local agent answers itself (/v1/agent/*) and calls that reach the
 * servers (kv, session, catalog, health, ...). Sentinel processes idling in
 * the same window are measured alongside for reference.
 */

import type { ConsulAgent } from "../test/harness/consul.ts";
import { FaultProxy } from "../test/harness/fault-proxy.ts";
import { RedisGroup } from "../test/harness/group.ts";
import type { Proc } from "../test/harness/proc.ts";
import { cpuSeconds, rssMiB } from "./proc-stats.ts";
import { BOOT_AS_REPLICA, ConsulLeaderSystem } from "./systems.ts";

export interface IdleRow {
  /** "consul-leader leader", "consul-leader follower 2", "redis-sentinel 1", ... */
  who: string;
  rssMiB: number;
  cpuPct: number;
  /** Requests per minute to /v1/agent/*; null when not counted. */
  agentPerMin: number | null;
  /** Requests per minute to any other endpoint (answered by the servers). */
  serversPerMin: number | null;
}

/** Quiet time after the group converged, before measuring: start-up traffic passes. */
const SETTLE_MS = 5000;

function split(seen: string[]): { agent: number; servers: number } {
  const agent = seen.filter((w) => w.split(" ")[1]!.startsWith("/v1/agent/")).length;
  return { agent, servers: seen.length - agent };
}

/**
 * Starts a three-member consul-leader group on `agent` with a counting proxy
 * in front of the agent for each sidecar, waits for it to settle, measures
 * it and `others` for `seconds`, and stops the group.
 */
export async function measureIdle(agent: ConsulAgent, others: { who: string; proc: Proc }[], seconds: number): Promise<IdleRow[]> {
  const proxies = [0, 1, 2].map(() => new FaultProxy(agent.url));
  const group = await RedisGroup.start(agent, { name: "idle", redis: { conf: BOOT_AS_REPLICA }, env: (i) => ConsulLeaderSystem.env({ CONSUL_HTTP_ADDR: proxies[i]!.addr }) });
  try {
    const leader = await group.converged(60_000);
    await Bun.sleep(SETTLE_MS);
    let follower = 0;
    const watched = [
      ...group.members.map((m, i) => ({ who: m === leader ? "consul-leader (leader)" : `consul-leader (follower ${++follower})`, pid: m.sidecar.pid, proxy: proxies[i] })),
      ...others.map((o) => ({ who: o.who, pid: o.proc.pid, proxy: undefined })),
    ];
    const before = watched.map((w) => ({ cpu: cpuSeconds(w.pid), seen: w.proxy?.seen.length ?? 0 }));
    const t0 = performance.now();
    await Bun.sleep(seconds * 1000);
    const wall = (performance.now() - t0) / 1000;
    return watched.map((w, i) => {
      const counts = w.proxy ? split(w.proxy.seen.slice(before[i]!.seen)) : undefined;
      return {
        who: w.who,
        rssMiB: rssMiB(w.pid),
        cpuPct: ((cpuSeconds(w.pid) - before[i]!.cpu) / wall) * 100,
        agentPerMin: counts ? (counts.agent * 60) / wall : null,
        serversPerMin: counts ? (counts.servers * 60) / wall : null,
      };
    });
  } finally {
    await Promise.all(group.members.map((m) => m.sidecar.stop()));
    await Promise.all(group.members.map((m) => m.redis.stop()));
    for (const p of proxies) p.stop();
  }
}
