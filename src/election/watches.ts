/**
 * Two of the elector's eyes, as background loops: the agent's view of our
 * service (so tags or Meta that Nomad's sync reset are put back at once) and
 * the local Redis (polled; faster while its port refuses, since a Redis
 * restarted by its supervisor boots writable unless configured otherwise).
 * Each only reports; the elector decides.
 */

import type { Clock } from "../clock.ts";
import type { ServiceManager } from "../consul/service.ts";
import type { RedisRole } from "../redis/role.ts";

/** Server-side wait of the service watch (agent-local, so cheap). */
export const SERVICE_WATCH_WAIT_MS = 300_000;
/** Redis poll period while its port refuses connections (a restart is on its way). */
export const FAST_POLL_MS = 20;

/** Calls `onChange` whenever the agent's definition of our service changes, once `ready()`. */
export async function watchService(signal: AbortSignal, d: { service: ServiceManager; clock: Clock }, ready: () => boolean, onChange: () => void): Promise<void> {
  const { service, clock } = d;
  let hash: string | undefined;
  while (!signal.aborted) {
    if (!ready()) {
      await clock.sleep(200, signal).catch(() => {});
      continue;
    }
    try {
      const next = await service.watch(hash, SERVICE_WATCH_WAIT_MS, signal);
      // The first answer is a baseline we have not checked yet: look at it too.
      if (next !== hash) onChange();
      hash = next;
      if (!next) await clock.sleep(1000, signal).catch(() => {});
    } catch {
      if (signal.aborted) return;
      hash = undefined;
      await clock.sleep(1000, signal).catch(() => {});
    }
  }
}

/**
 * Polls Redis every `pollMs` (every FAST_POLL_MS while its port refuses) and
 * calls `onChange(upChanged)` when something the elector decides on changed;
 * `upChanged` when Redis went up or down. `leaderAlive`: another node holds
 * the lock (see RedisRole.view).
 */
export async function watchRedis(signal: AbortSignal, d: { redis: RedisRole; clock: Clock }, pollMs: number, leaderAlive: () => boolean, onChange: (upChanged: boolean) => void): Promise<void> {
  const { redis, clock } = d;
  let wasUp: boolean | undefined;
  while (!signal.aborted) {
    const changed = await redis.poll();
    const up = redis.view(clock.monotonic(), leaderAlive()).up;
    const upChanged = wasUp !== undefined && up !== wasUp;
    if (changed || up !== wasUp) onChange(upChanged);
    wasUp = up;
    const refused = redis.lastErrorCode === "REDIS_UNREACHABLE";
    await clock.sleep(refused ? Math.min(pollMs, FAST_POLL_MS) : pollMs, signal).catch(() => {});
  }
}
