/**
 * Making our Redis the primary once we hold the lock: find out what the
 * previous primary is doing (fence it, or learn it is gone, silent or
 * refusing), let takeover.ts judge, catch up to what it acknowledged, prove
 * the lease, then REPLICAOF NO ONE and lift the fence, each step only while
 * `still()` says we hold the lock and no fence fired since.
 *
 * Guarantees: never promotes a Redis whose run id differs from the one the
 * lock was taken with (it restarted, maybe empty); never promotes without a lease proof made right before,
 * showing the lease outlives the two commands; never sends a fence to a
 * previous primary without holding the lock; never promotes short of a
 * planned handover's fenced offset. Does not release the lock itself: a
 * "yield" is the elector's to carry out.
 */

import type { Clock } from "../clock.ts";
import type { RedisConfig } from "../config/config.ts";
import type { Lease } from "../consul/lease.ts";
import { formatHostPort, type HostPort, parseHostPort } from "../host-port.ts";
import type { Logger } from "../log.ts";
import type { RedisRole } from "../redis/role.ts";
import { takeoverVerdict } from "./takeover.ts";
import type { LockValue } from "./types.ts";

export type PromotionResult =
  | { kind: "primary"; reason: string }
  | { kind: "wait"; reason: string; until?: number }
  | { kind: "yield"; to: string; reason: string };

export interface PromotionContext {
  /** The previous primary (the last holder whose Redis was primary), null when none. */
  previous: LockValue | null;
  /** Monotonic time we acquired the lock; -Infinity when re-adopted. */
  acquiredAt: number;
  self: HostPort;
  /** The run id our Redis had when we took the lock (the lock value's); undefined when unknown. */
  tookWith?: string;
  incarnation: string;
  /** True while we hold the lock and no fence fired since this attempt began. */
  still: () => boolean;
  reactionGraceMs: number;
  signal: AbortSignal;
}

export interface PromotionDeps {
  redis: RedisRole;
  lease: Lease;
  clock: Clock;
  log: Logger;
}

export class Promotion {
  readonly #r: RedisConfig;
  readonly #d: PromotionDeps;

  constructor(redis: RedisConfig, deps: PromotionDeps) {
    this.#r = redis;
    this.#d = deps;
  }

  /** See the module comment. Throws on Redis or Consul errors (the elector retries with backoff). */
  async run(c: PromotionContext): Promise<PromotionResult> {
    const { redis, lease, clock, log } = this.#d;
    const r = this.#r;
    const stopped = { kind: "wait", reason: "the lock was lost or a fence fired meanwhile" } as const;
    await redis.poll();
    const snap = redis.snapshot;
    // The decision was made on an older poll: a Redis that restarted since (maybe empty) is never
    // promoted; the next decision sees the new run id and releases.
    if (c.tookWith && snap?.runId && snap.runId !== c.tookWith) return { kind: "wait", reason: `not promoting: this Redis restarted since the lock was taken (run id ${snap.runId.slice(0, 8)})` };
    if (snap && snap.role === "master" && !snap.fenced && !snap.loading) return { kind: "primary", reason: "this Redis is the writable primary already" };
    const prev = snap?.role === "master" ? null : c.previous;
    const state = snap?.role === "master" ? { kind: "none" as const } : await redis.assessPrevious(prev, c.self, c.still, c.acquiredAt);
    if (!c.still()) return stopped;
    const v = takeoverVerdict(state, {
      previous: prev,
      acquiredAt: c.acquiredAt,
      now: clock.monotonic(),
      reactionGraceMs: c.reactionGraceMs,
      frozenWaitMs: r.frozenPrimaryWaitMs,
      ours: { replid: snap?.replid ?? "", replid2: snap?.replid2 ?? "", offset: snap?.offset ?? 0 },
    });
    if (v.kind !== "promote") return v;
    const prevAddr = prev?.address ? parseHostPort(prev.address) : undefined;
    const fencedPrev = prevAddr && (state.kind === "fenced" || (state.kind === "not-writable" && state.why === "fenced")) ? { addr: prevAddr, replid: state.replid } : undefined;
    if (v.catchUpTo !== undefined) {
      const reached = await redis.catchUp(v.catchUpTo, r.handoverTimeoutMs, c.signal, fencedPrev);
      if (!c.still()) return stopped;
      if (reached < v.catchUpTo) {
        if (v.mustCatchUp) return { kind: "wait", reason: `not promoting before this Redis has the ${v.catchUpTo - reached} bytes the previous primary acknowledged before its fence (at ${reached} of ${v.catchUpTo})` };
        log.warn("promoting before this Redis caught up with the fenced previous primary", { previous: prev?.address ?? null, missingBytes: v.catchUpTo - reached });
      }
    }
    const proof = await lease.prove(2 * r.timeoutMs, c.incarnation);
    if (!proof.ok) return { kind: "wait", reason: `not promoting: ${proof.why}` };
    await redis.promote(() => c.still() && clock.monotonic() + r.timeoutMs < proof.deadline);
    log.info("promoted", { reason: v.reason, previous: prev?.address ?? null, leaseLeftMs: Math.round(proof.deadline - clock.monotonic()) });
    // A fenced master stays one, taking no writes, until pointed at us (its sidecar may be gone).
    if (fencedPrev && formatHostPort(fencedPrev.addr) !== formatHostPort(c.self)) void redis.demotePrevious(fencedPrev.addr, c.self);
    return { kind: "primary", reason: v.reason };
  }
}
