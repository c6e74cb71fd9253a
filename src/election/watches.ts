/**
 * Two of the elector's eyes, as background loops: the agent's view of our
 * service (so tags or Meta that Nomad's sync reset are put back at once) and
 * the local Redis (polled; faster while its port refuses, since a Redis
 * restarted by its supervisor boots writable unless configured otherwise;
 * and at once when the connection the polls keep open is closed by Redis's
 * side, which is how a crash shows). Each only reports; the elector decides.
 */

import type { Clock } from "../clock.ts";
import type { ServiceManager } from "../consul/service.ts";
import type { RedisRole } from "../redis/role.ts";

/** Server-side wait of the service watch (agent-local, so cheap). */
export const SERVICE_WATCH_WAIT_MS = 300_000;
/** Redis poll period while its port refuses connections (a restart is on its way). */
export const FAST_POLL_MS = 20;
/**
 * Redis poll period while anything is unsettled (a poll failed, Redis is
 * loading or syncing, a replica's link is down), when REDIS_POLL is longer:
 * a frozen Redis is then timed against REDIS_DOWN_AFTER as closely as with
 * steady quarter-second polls, and a replica's sync is seen to finish.
 */
export const UNSETTLED_POLL_MS = 250;

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
 * Polls Redis every `pollMs` while all is steady, every UNSETTLED_POLL_MS
 * while not, and every FAST_POLL_MS while its port refuses; calls
 * `onChange(upChanged)` when something the elector decides on changed;
 * `upChanged` when Redis went up or down. `leaderAlive`: another node holds
 * the lock (see RedisRole.view).
 *
 * The crash signal: the connection the polls use stays open between polls,
 * and when Redis's side closes it the next poll starts at once instead of up
 * to `pollMs` later. A close alone proves nothing (CLIENT KILL, a client
 * timeout, maxclients close connections of a live Redis): that poll opens a
 * fresh connection, and only a refused one counts as down (RedisRole.poll),
 * exactly as when a scheduled poll finds it. A frozen Redis closes nothing;
 * the polls and REDIS_DOWN_AFTER still cover it.
 */
export async function watchRedis(signal: AbortSignal, d: { redis: RedisRole; clock: Clock }, pollMs: number, leaderAlive: () => boolean, onChange: (upChanged: boolean) => void): Promise<void> {
  const { redis, clock } = d;
  let wasUp: boolean | undefined;
  let dropped = false;
  let wake: (() => void) | undefined;
  // One listener each for the whole loop: no signal or listener per poll (four a second).
  redis.node.link.onDrop(() => {
    dropped = true;
    wake?.();
  });
  signal.addEventListener("abort", () => wake?.(), { once: true });
  const nap = (ms: number) =>
    new Promise<void>((resolve) => {
      const t = clock.timer(ms, () => resolve());
      wake = () => {
        t.cancel();
        resolve();
      };
    }).finally(() => (wake = undefined));
  while (!signal.aborted) {
    dropped = false;
    const polledAt = clock.monotonic();
    const changed = await redis.poll();
    const v = redis.view(clock.monotonic(), leaderAlive());
    const upChanged = wasUp !== undefined && v.up !== wasUp;
    if (changed || v.up !== wasUp) onChange(upChanged);
    wasUp = v.up;
    const failed = redis.lastErrorCode;
    const settled = !failed && v.up && !v.loading && !v.syncing && (v.role === "master" || v.linkUp);
    const period = failed === "REDIS_UNREACHABLE" ? FAST_POLL_MS : settled ? pollMs : UNSETTLED_POLL_MS;
    if (!dropped && !signal.aborted) await nap(Math.min(pollMs, period));
    // A close polls at once, yet never more often than every FAST_POLL_MS (a storm of CLIENT KILLs).
    if (dropped && !signal.aborted) await nap(Math.max(0, FAST_POLL_MS - (clock.monotonic() - polledAt)));
  }
}
