/**
 * One identity, one process. A sidecar's identity is its instance ID, and its
 * member key (`<key>/members/<instance>`, see members.ts) is held by exactly
 * one session, used by exactly one process: the `incarnation` named in the
 * entry. A process that starts and finds that key held by a live session
 * cannot know on its own whether it is a restart (the previous process is
 * gone and its session should be re-adopted: a restart is not a failover) or
 * a twin (another process runs with the same instance ID right now). It asks:
 *
 * 1. it writes its incarnation into the entry as a `claim`, with a
 *    check-and-set on the index it read (a plain PUT keeps the lock's session);
 * 2. a live holder watches its own entry and answers within milliseconds by
 *    writing its entry back (`answerClaim`);
 * 3. an answer within `claimWaitMs` means a twin: the newcomer fails closed,
 *    naming the knob that tells them apart; silence means the previous
 *    process is gone, and the newcomer re-adopts the session, writing its
 *    own entry with a check-and-set on its claim's index: if the holder woke
 *    up and answered in the meantime, that write fails and the newcomer
 *    stands down after all. Exactly one of them ends up owning the entry.
 *
 * A holder that was only frozen during the claim, and finds on waking that
 * its entry now names another incarnation, has been superseded: it must stop
 * at once, without touching the lock or the session (they are the
 * newcomer's now). The elector checks the incarnation again right before
 * every Redis-changing action, so a superseded process never acts on them.
 *
 * Guarantees: `claimIdentity` resolves "adopt" only after a full claim wait
 * without an answer, and "twin" only on an answer from another incarnation.
 * Does not guarantee that a twin frozen through the whole claim wait is
 * noticed before the newcomer adopts; it is noticed when it wakes.
 */

import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Consul } from "./client.ts";
import { type Member, memberKey, parseEntry } from "./members.ts";

export interface IdentityOptions {
  key: string;
  instance: string;
  incarnation: string;
  /** How long a live holder has to answer a claim; silence means it is gone. */
  claimWaitMs: number;
  /** The session name every run of this sidecar uses; a session with another name is not ours to adopt. */
  sessionName: string;
}

export interface IdentityDeps {
  consul: Consul;
  clock: Clock;
  log: Logger;
  /** Keeps the previous run's liveness check passing while we wait (a restart must not lapse the session). */
  keepAlive?: () => Promise<void>;
}

export type ClaimResult =
  /** Nobody uses the identity: create a session. */
  | { kind: "free" }
  /**
   * The previous process is gone; its session is alive: re-adopt it. The
   * first entry written replaces our claim with a check-and-set (the claim
   * was at `claimIndex`; Membership.publish reads it again and checks).
   */
  | { kind: "adopt"; session: string; claimIndex: number }
  /** Another live process uses the identity. */
  | { kind: "twin"; holder: { incarnation?: string; host?: string; pid?: number } };

/** How many times a claim is retried when the entry changes under it before the wait starts. */
const CLAIM_ATTEMPTS = 5;

/** See the module comment. Throws on Consul errors (the caller retries). */
export async function claimIdentity(o: IdentityOptions, d: IdentityDeps, signal: AbortSignal): Promise<ClaimResult> {
  const { consul, clock, log } = d;
  const key = memberKey(o.key, o.instance);
  for (let attempt = 0; attempt < CLAIM_ATTEMPTS; attempt++) {
    const { pair } = await consul.kvGet(key, { consistent: true, signal });
    if (!pair?.Session) return { kind: "free" };
    const info = await consul.sessionInfo(pair.Session);
    if (!info) return { kind: "free" };
    if (info.Name !== o.sessionName) {
      // Held by a session that is not a consul-leader session of ours (an operator's): never adopt it.
      return { kind: "twin", holder: {} };
    }
    const parsed = parseEntry(pair);
    const held: Partial<Member> = parsed && typeof parsed !== "string" ? parsed.member : {};
    const claim: Partial<Member> = { ...held, instance: o.instance, claim: o.incarnation };
    if (!(await consul.kvPut(key, JSON.stringify(claim), { cas: pair.ModifyIndex }))) continue;
    log.info("another session holds this sidecar's identity; asking whether its process still runs", {
      instance: o.instance,
      session: pair.Session,
      holder: held.incarnation ?? null,
      waitMs: o.claimWaitMs,
    });
    const until = clock.monotonic() + o.claimWaitMs;
    let now = await consul.kvGet(key, { consistent: true, signal });
    let claimIndex = 0;
    for (;;) {
      if (!now.pair?.Session) return { kind: "free" };
      const e = parseEntry(now.pair);
      const m = e && typeof e !== "string" ? e.member : undefined;
      if (m?.claim === o.incarnation) {
        claimIndex = now.pair.ModifyIndex; // still our claim: no answer yet
      } else if (m?.claim) {
        // Another newcomer claims it too: one of us must stand down, and it is whoever saw the other's claim.
        return { kind: "twin", holder: { incarnation: m.claim } };
      } else {
        return { kind: "twin", holder: { ...(m?.incarnation ? { incarnation: m.incarnation } : {}), ...(m?.host ? { host: m.host } : {}), ...(m?.pid !== undefined ? { pid: m.pid } : {}) } };
      }
      const left = until - clock.monotonic();
      if (left <= 0) break;
      await d.keepAlive?.().catch(() => {});
      now = await consul.kvGet(key, { consistent: true, index: Math.max(1, now.index), waitMs: Math.max(1, Math.min(left, 1000)), signal });
    }
    return { kind: "adopt", session: pair.Session, claimIndex };
  }
  return { kind: "twin", holder: {} };
}

/**
 * What a running sidecar makes of its own member entry as it changes:
 * "ok" (ours), "claimed" (a newcomer asks: write ours back now), "superseded"
 * (another incarnation took it over while we could not answer: stop at
 * once), "gone" (deleted or no longer held by our session: publish again).
 * Pure.
 */
export function judgeOwnEntry(
  entry: { session: string; member: Member } | string | undefined,
  mine: { session: string; incarnation: string },
): "ok" | "claimed" | "superseded" | "gone" {
  if (entry === undefined || typeof entry === "string") return "gone";
  if (entry.session !== mine.session) return "gone";
  const m = entry.member;
  if (m.claim && m.claim !== mine.incarnation) return "claimed";
  if (m.incarnation && m.incarnation !== mine.incarnation) return "superseded";
  return "ok";
}
