/**
 * When the election loop runs next, and what it decided last: the pacing
 * (the reconcile period, the backoff after a failed action, a takeover's
 * next look, a wake-up when something changed) and the record of decisions
 * shown in /state.
 *
 * Guarantees: while a failure backoff runs, the loop neither runs its tick
 * nor spins waiting for it (a step that needs no waiting, or a change that
 * arrived, waits for the backoff to end, unless `clearBackoff` ends it); a
 * change that arrives while a tick runs is not lost (the next sleep returns
 * at once). Does not decide what to do.
 */

import type { Clock } from "../clock.ts";
import type { Logger } from "../log.ts";
import type { Decision } from "./types.ts";

/** How many changed decisions `recent` keeps. */
export const RECENT_DECISIONS = 20;
/** The first backoff after a failed action; doubled per failure up to BACKOFF_MAX_MS. */
export const BACKOFF_FIRST_MS = 250;
/** Backoff ceiling: a failing action is retried at least this often. */
export const BACKOFF_MAX_MS = 5000;
/** The same failure is warned about again after this long (logged at debug in between). */
export const REWARN_MS = 30_000;
/** A takeover's next look is at most this far away, whatever it waits for. */
export const MAX_WAKE_MS = 5000;

/** Decisions after which the loop goes again at once (no waiting involved). */
const IMMEDIATE = new Set<Decision["kind"]>(["acquire", "announce", "new-session"]);

export class Pacer {
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #periodMs: number;
  #wake: (() => void) | undefined;
  #pending = false;
  #retryAt = 0;
  #wakeAt = 0;
  #failures = 0;
  #lastWarn = { msg: "", at: -Infinity };
  #tickedAt: number;

  /** `periodMs`: CONSUL_LEADER_SLEEP, the longest the loop sleeps. */
  constructor(clock: Clock, log: Logger, periodMs: number) {
    this.#clock = clock;
    this.#log = log;
    this.#periodMs = periodMs;
    this.#tickedAt = clock.monotonic();
  }

  /** False while a failure backoff runs: the tick must not act yet. Consumes a pending wake-up. */
  startTick(): boolean {
    if (this.#clock.monotonic() < this.#retryAt) return false;
    this.#pending = false;
    return true;
  }

  /** The tick's action succeeded. */
  succeeded(): void {
    this.#tickedAt = this.#clock.monotonic();
    this.#failures = 0;
    this.#retryAt = 0;
  }

  /** The tick's action failed: back off (250 ms doubling to 5 s) and warn, once per distinct failure. */
  failed(decision: Decision["kind"], err: unknown, msg: string): void {
    const now = this.#clock.monotonic();
    this.#tickedAt = now;
    this.#failures++;
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** Math.min(this.#failures - 1, 5));
    this.#retryAt = now + delay;
    if (msg !== this.#lastWarn.msg || now - this.#lastWarn.at > REWARN_MS) {
      this.#lastWarn = { msg, at: now };
      this.#log.warn("action failed; will retry", { decision, retryInMs: delay, err });
    } else {
      this.#log.debug("action failed again", { decision, retryInMs: delay, err: msg });
    }
  }

  /** Ends a running backoff: something that makes acting urgent happened (the lock was lost, Redis came back). */
  clearBackoff(): void {
    this.#retryAt = 0;
    this.#failures = 0;
  }

  /** A waiting takeover looks again by `until` (monotonic; at most MAX_WAKE_MS from now), or after `orMs`. */
  wakeBy(until: number | undefined, orMs: number): void {
    const now = this.#clock.monotonic();
    this.#wakeAt = until !== undefined ? Math.min(until, now + MAX_WAKE_MS) : now + orMs;
  }

  /** Something changed: run the loop again now (or as soon as a backoff ends). */
  kick(): void {
    this.#pending = true;
    this.#wake?.();
  }

  /** Monotonic ms since the loop last finished a tick; a stuck loop grows it. */
  get loopAgeMs(): number {
    return this.#clock.monotonic() - this.#tickedAt;
  }

  /** Sleeps until the next tick is due after `d`, or until kicked; never past the period. */
  async sleep(d: Decision | undefined, signal: AbortSignal): Promise<void> {
    const now = this.#clock.monotonic();
    let until = now + this.#periodMs;
    if (this.#retryAt > now) until = Math.min(until, this.#retryAt);
    // A wake-up asked for is honoured even if its moment has just passed (a
    // timer that fired a hair early made the tick ask again for the same
    // moment); it is used once.
    if (this.#wakeAt > 0) until = Math.min(until, Math.max(now, this.#wakeAt));
    this.#wakeAt = 0;
    if (d?.kind === "defer") until = Math.min(until, d.until);
    // Go again at once for the steps that need no waiting, unless a failure
    // backoff is running: the tick would return at once, and looping on that
    // spins the CPU until the backoff ends.
    const backingOff = this.#retryAt > now;
    if (!backingOff && ((d && IMMEDIATE.has(d.kind)) || this.#pending)) until = now;
    // Nor for a wait whose moment passed (a defer's until, a wake-up) while the backoff runs: the tick does nothing before it ends.
    if (backingOff) until = Math.max(until, Math.min(this.#retryAt, now + this.#periodMs));
    if (until <= now) return;
    const woken = new Promise<void>((resolve) => (this.#wake = resolve));
    await Promise.race([this.#clock.sleep(until - now, signal).catch(() => {}), woken]);
    this.#wake = undefined;
  }
}

/** The decisions the loop took, as /state and SIGUSR1 show them: the current one and the last changes. */
export class DecisionLog {
  readonly #clock: Clock;
  readonly #log: Logger;
  #current: Decision | undefined;
  #since = 0;
  readonly #recent: { time: string; kind: string; reason: string }[] = [];

  constructor(clock: Clock, log: Logger) {
    this.#clock = clock;
    this.#log = log;
  }

  get current(): Decision | undefined {
    return this.#current;
  }

  /**
   * Logs `d` once: a change of kind as "decision changed" at info, anything
   * else (a repeat, or the same kind with a new reason) as "decision" at
   * debug; keeps the last RECENT_DECISIONS changes.
   */
  record(d: Decision): void {
    const prev = this.#current;
    if (!prev || prev.kind !== d.kind) this.#log.info("decision changed", { kind: d.kind, reason: d.reason });
    else this.#log.debug("decision", { kind: d.kind, reason: d.reason });
    if (prev && prev.kind === d.kind && prev.reason === d.reason) return;
    this.#current = d;
    this.#since = this.#clock.monotonic();
    this.#recent.push({ time: new Date(this.#clock.now()).toISOString(), kind: d.kind, reason: d.reason });
    if (this.#recent.length > RECENT_DECISIONS) this.#recent.shift();
  }

  /** For /state: the current decision with its age, and the recent changes, newest last. */
  view(): { decision: { kind: string; reason: string; ageMs: number } | null; recent: { time: string; kind: string; reason: string }[] } {
    const d = this.#current;
    return {
      decision: d ? { kind: d.kind, reason: d.reason, ageMs: Math.round(this.#clock.monotonic() - this.#since) } : null,
      recent: [...this.#recent],
    };
  }
}
