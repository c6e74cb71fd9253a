/**
 * When a new leader may promote its Redis: a pure judgement over what it
 * knows of the previous primary, in the style of decide.ts. The elector asks
 * it before every promotion attempt and acts on the verdict; the reason goes
 * to the log and to /state.
 *
 * The rule (README, "One writer"): promote only over a previous primary that
 * confirmed its fence or is confirmed dead. An error reply and a timeout are
 * neither. Two kinds of confirmation exist besides our own fence:
 * - a planned handover: the old leader released only after its own Redis
 *   confirmed the fence, and published the offset it had then
 *   (`fencedOffset`); catching up to it loses nothing;
 * - the timing model, for a primary whose host cannot be reached at all (no
 *   TCP connection is accepted: the host is down or cut off): a lock freed
 *   without a release (the session lapsed, or an operator destroyed it or
 *   deleted the key) means the old leader's fencing deadline has passed or
 *   it saw the loss, and its own fence timer fenced its Redis. It is promoted
 *   over once the old leader has had `reactionGraceMs` to act. What stays
 *   open: an old leader whose sidecar died while its host became unreachable
 *   to us (both at once), and a whole node frozen past the session TTL (a VM
 *   pause), whose Redis may run writes it had already received when it
 *   resumes.
 * A previous primary whose host accepts the connection but whose Redis does
 * not answer (frozen, busy with a slow script, a stalled disk), or whose own
 * sidecar released because it stopped answering (`released: "redis-down"`),
 * is stuck, not gone: it gets `frozenWaitMs` (null: forever, the default) to
 * run the queued fence, which confirms it.
 */

import type { Config } from "../config/config.ts";
import type { LockValue, PreviousPrimary } from "./types.ts";

export interface TakeoverContext {
  /** The previous holder's last value (its release marker, its fenced offset); null when unknown. */
  previous: LockValue | null;
  /** Monotonic time we acquired the lock. */
  acquiredAt: number;
  now: number;
  /** How long an old leader that lost the lock without releasing it may take to fence its own Redis. */
  reactionGraceMs: number;
  /** How long a frozen previous primary gets to run the queued fence; null waits until it answers. */
  frozenWaitMs: number | null;
  /** Our Redis's replication history. */
  ours: { replid: string; replid2: string; offset: number };
}

export type TakeoverVerdict =
  /** Promote, once our Redis has replicated up to `catchUpTo` (when given); `mustCatchUp`: never promote short of it. */
  | { kind: "promote"; catchUpTo?: number; mustCatchUp: boolean; reason: string }
  /** Do not promote yet; look again by `until` (monotonic) or when something changes. */
  | { kind: "wait"; until?: number; reason: string }
  /**
   * Do not promote at all: the previous primary, fenced and alive, holds
   * data our Redis has no history of (it restarted empty, say); promoting
   * would make every replica full-sync from us and lose it. Hand the lock
   * back to `to`.
   */
  | { kind: "yield"; to: string; reason: string };

const PLANNED = new Set<LockValue["released"]>(["handover", "maintenance", "shutdown", "priority"]);

/** See the module comment. */
export function takeoverVerdict(p: PreviousPrimary, c: TakeoverContext): TakeoverVerdict {
  const prev = c.previous;
  const who = prev?.address ? `the previous primary ${prev.address}` : "the previous primary";
  const confirmedOffset = prev && PLANNED.has(prev.released) && prev.fencedOffset !== undefined ? prev.fencedOffset : undefined;
  switch (p.kind) {
    case "none":
      return { kind: "promote", mustCatchUp: false, reason: "no previous primary to take over from" };
    case "fenced":
      if (lacksHistory(p, c)) return yieldTo(prev, who, p.offset);
      return {
        kind: "promote",
        catchUpTo: Math.max(p.offset, confirmedOffset ?? 0),
        mustCatchUp: confirmedOffset !== undefined,
        reason: `${who} confirmed our fence at offset ${p.offset}`,
      };
    case "not-writable":
      if (p.why === "fenced" && lacksHistory(p, c)) return yieldTo(prev, who, p.offset);
      return {
        kind: "promote",
        catchUpTo: Math.max(p.offset, confirmedOffset ?? 0),
        mustCatchUp: confirmedOffset !== undefined,
        reason: `${who} does not take writes (${p.why === "replica" ? "it is a replica" : p.why === "loading" ? "it is loading" : "it is fenced"})`,
      };
    case "dead":
      return { kind: "promote", mustCatchUp: false, reason: `${who} is gone (${p.detail})` };
    case "refused":
      return { kind: "wait", reason: `${who} answered our fence with an error (${p.detail}); not promoting while it may still take writes` };
    case "silent": {
      if (confirmedOffset !== undefined) {
        return { kind: "promote", catchUpTo: confirmedOffset, mustCatchUp: true, reason: `${who} does not answer, but its leader confirmed the fence at offset ${confirmedOffset} before handing over` };
      }
      if (p.accepted || prev?.released === "redis-down" || (prev && PLANNED.has(prev.released))) {
        // Its own sidecar saw it stop answering (or handed over without a confirmed fence, as older versions did).
        if (c.frozenWaitMs !== null && c.now - p.since >= c.frozenWaitMs) {
          return { kind: "promote", mustCatchUp: false, reason: `${who} has not answered for ${Math.round(c.now - p.since)}ms (CONSUL_LEADER_FROZEN_PRIMARY_WAIT); promoting without its fence, so writes it had already received may be lost` };
        }
        return {
          kind: "wait",
          ...(c.frozenWaitMs !== null ? { until: p.since + c.frozenWaitMs } : {}),
          reason: `${who} ${p.accepted ? "accepts connections but does not answer" : "stopped answering while its sidecar still ran"} (frozen or busy); waiting for it to run the queued fence`,
        };
      }
      const after = Math.max(c.acquiredAt, p.since) + c.reactionGraceMs;
      if (c.now < after) {
        return { kind: "wait", until: after, reason: `${who} cannot be reached; giving its leader time to fence it on its own timer` };
      }
      return { kind: "promote", mustCatchUp: false, reason: `${who} cannot be reached (no connection accepted) and its leader's lease has ended; its own fence timer has fenced it` };
    }
  }
}

/** Our Redis does not carry the history of the fenced previous primary, which holds more. */
function lacksHistory(p: { replid: string; offset: number }, c: TakeoverContext): boolean {
  return p.replid !== "" && p.replid !== c.ours.replid && p.replid !== c.ours.replid2 && p.offset > c.ours.offset;
}

function yieldTo(prev: LockValue | null, who: string, offset: number): TakeoverVerdict {
  return {
    kind: "yield",
    to: prev?.instance ?? "",
    reason: `${who} holds ${offset} bytes of a history this Redis does not have (it restarted empty?); handing the lock back instead of wiping it`,
  };
}

/**
 * How long a holder that lost the lock without releasing it (its session
 * lapsed, or an operator destroyed it or deleted the key) may still act.
 * With Redis: its watch hears of it within one request timeout, then its
 * fence (REDIS_TIMEOUT) runs; a holder that cannot hear (frozen, cut off) is
 * covered by the successor fencing its Redis. Without Redis nobody can stop
 * its command for it, so the successor waits out the holder's own deadline,
 * counted from its last heartbeat, which came before the loss: (CHECK_TTL,
 * or TTL without a check) + LOCKDELAY - margin. Left open: an operator
 * destroying the session of a holder cut off from the servers while its own
 * agent still takes heartbeats (its deadline then runs from its last renew,
 * up to TTL).
 */
export function reactionGraceMs(c: Pick<Config, "timing" | "redis" | "exec">): number {
  const t = c.timing;
  if (c.redis) return t.requestTimeoutMs + c.redis.timeoutMs;
  return Math.max(t.requestTimeoutMs + c.exec.killGraceMs, (t.checkTtlMs || t.ttlMs) + t.lockDelayMs - t.fenceMarginMs);
}
