/**
 * The lock key and what lives next to it, as the elector uses them: a
 * blocking watch on the key, acquire / write / release with our session, the
 * switchover requests `consul-leader switchover` leaves at
 * `<key>/switchover`, the pause flag at `<key>/pause` (acquisition checks it
 * in the same transaction), and the failover history at `<key>/history`. The session itself and its deadline are the lease's
 * (lease.ts); the decisions are the elector's.
 *
 * Guarantees: the watch reports every value it reads, in order, and never
 * two at once; a read it could not complete is reported as an error and
 * retried with backoff (100 ms doubling to 2 s). Does not guarantee the view
 * is current: a watch stuck on a dead connection can lag until `refresh`.
 * Writes are not retried here: a failed acquire may still have gone through,
 * so the caller reads the key again before believing either way.
 */

import type { Clock } from "../clock.ts";
import { describeError, isConsulError } from "../errors.ts";
import type { Logger } from "../log.ts";
import type { Consul, KVPair } from "./client.ts";
import {
  appendFailover,
  type Failover,
  historyKey,
  parseHistory,
  parsePause,
  parseSwitchover,
  pauseKey,
  type PauseRecord,
  switchoverKey,
  type SwitchoverRequest,
} from "../election/lock-value.ts";

/**
 * Server-side wait of the watch on the lock. Changes return at once; this
 * bounds idle requests (one a minute) and how long a watch stuck on a dead
 * connection could hide a free lock.
 */
export const WATCH_WAIT_MS = 60_000;
/** The same for the pause flag and switchover requests, which only an operator changes: one idle request each per 5 min. */
export const FLAG_WATCH_WAIT_MS = 300_000;

export interface LockKeyDeps {
  consul: Consul;
  clock: Clock;
  log: Logger;
}

export class LockKey {
  readonly key: string;
  readonly #d: LockKeyDeps;
  #request: AbortController | undefined;

  constructor(key: string, deps: LockKeyDeps) {
    this.key = key;
    this.#d = deps;
  }

  /**
   * Watches the key until `signal` aborts: `onValue` gets every read (the
   * pair, or null when the key does not exist, with its index); `onError` every
   * failed read.
   */
  async watch(signal: AbortSignal, onValue: (pair: KVPair | null, index: number) => void, onError: (err: unknown) => void): Promise<void> {
    const { consul, clock } = this.#d;
    let index = 0;
    let backoff = 100;
    let warned = "";
    while (!signal.aborted) {
      const started = clock.monotonic();
      const request = new AbortController();
      this.#request = request;
      try {
        const { pair, index: next } = await consul.kvGet(this.key, {
          consistent: true,
          ...(index > 0 ? { index, waitMs: WATCH_WAIT_MS } : {}),
          signal: AbortSignal.any([signal, request.signal]),
        });
        backoff = 100;
        if (warned) this.#d.log.info("the lock can be read again", { key: this.key });
        warned = "";
        const unchanged = next === index;
        index = next < index ? 0 : Math.max(1, next);
        onValue(pair, next);
        // A blocking query may return early without a change; do not spin.
        if (unchanged && clock.monotonic() - started < 50) await clock.sleep(100, signal).catch(() => {});
      } catch (err) {
        if (signal.aborted) return;
        index = 0;
        if (request.signal.aborted) continue; // restarted on purpose: read again now
        onError(err);
        // Said once per distinct failure: nothing else would say why the lock is not seen (a 403 on it, TLS).
        const msg = describeError(err);
        if (msg !== warned) this.#d.log.warn("cannot read the lock; retrying", { key: this.key, err });
        warned = msg;
        await clock.sleep(backoff, signal).catch(() => {});
        backoff = Math.min(backoff * 2, 2000);
      }
    }
  }

  /**
   * A blocking query stuck on a dead connection keeps an old view for up to a
   * minute. When another Consul call recovers or finds the session gone, the
   * watch starts over with a fresh read.
   */
  refresh(): void {
    this.#request?.abort();
  }

  /** Takes the lock (or rewrites its value while holding it); true when `session` holds it now. */
  async acquire(session: string, value: string): Promise<boolean> {
    return await this.#d.consul.kvAcquire(this.key, session, value);
  }

  /**
   * Takes the lock unless the group is paused, in one transaction: "acquired"
   * (with the index it was taken at, when Consul said), "refused" (held, or
   * lock-delay) or "paused". Throws CONSUL_FORBIDDEN when the token may not
   * read the pause flag (then use `acquire`).
   */
  async acquireUnlessPaused(session: string, value: string): Promise<{ result: "acquired"; modifyIndex?: number } | { result: "refused" | "paused" }> {
    const r = await this.#d.consul.kvAcquireUnless(this.key, session, value, pauseKey(this.key));
    if (r.result === "acquired") return r;
    return { result: r.result === "blocked" ? "paused" : "refused" };
  }

  /**
   * Watches `<key>/pause` until `signal` aborts: `onChange` gets the flag on
   * every read (undefined: not paused). Without key:read on it (ACLs), says
   * so once through `onForbidden` and keeps trying every 10 s; the group then
   * cannot be paused.
   */
  async watchPause(signal: AbortSignal, onChange: (p: PauseRecord | undefined) => void, onForbidden: (err: unknown) => void): Promise<void> {
    const { consul, clock } = this.#d;
    const key = pauseKey(this.key);
    let index = 0;
    let forbidden = false;
    while (!signal.aborted) {
      try {
        const { pair, index: next } = await consul.kvGet(key, { consistent: true, ...(index > 0 ? { index, waitMs: FLAG_WATCH_WAIT_MS } : {}), signal });
        index = next < index ? 0 : Math.max(1, next);
        forbidden = false;
        onChange(parsePause(pair));
      } catch (err) {
        if (signal.aborted) return;
        index = 0;
        if (isConsulError(err, "CONSUL_FORBIDDEN")) {
          if (!forbidden) onForbidden(err);
          forbidden = true;
          await clock.sleep(10_000, signal).catch(() => {});
        } else {
          await clock.sleep(1000, signal).catch(() => {});
        }
      }
    }
  }

  /**
   * Adds `f` to the failover history (bounded, oldest dropped), with a
   * check-and-set so that two writers never lose each other's entry. False
   * when it kept changing under us (three tries).
   */
  async recordFailover(f: Failover): Promise<boolean> {
    const { consul, log } = this.#d;
    const key = historyKey(this.key);
    for (let attempt = 0; attempt < 3; attempt++) {
      const { pair } = await consul.kvGet(key, { consistent: true });
      const list = appendFailover(parseHistory(pair, (problem) => log.warn("ignoring part of the failover history", { problem })), f);
      if (await consul.kvPut(key, JSON.stringify(list), { cas: pair?.ModifyIndex ?? 0 })) return true;
    }
    return false;
  }

  /** A consistent read of the key. */
  async read(): Promise<{ pair: KVPair | null; index: number }> {
    return await this.#d.consul.kvGet(this.key, { consistent: true });
  }

  /** Gives the lock up with a last value; does not arm lock-delay. */
  async release(session: string, value: string): Promise<boolean> {
    return await this.#d.consul.kvRelease(this.key, session, value);
  }

  /**
   * Watches `<key>/switchover` until `signal` aborts and passes every request
   * that parses, with its ModifyIndex, to `onRequest`. Without key:read on it
   * (ACLs), says so once and keeps trying every second.
   */
  async watchSwitchover(signal: AbortSignal, onRequest: (req: SwitchoverRequest, index: number) => void): Promise<void> {
    const { consul, clock, log } = this.#d;
    const key = switchoverKey(this.key);
    let index = 0;
    let warned = false;
    while (!signal.aborted) {
      try {
        const { pair, index: next } = await consul.kvGet(key, { ...(index > 0 ? { index, waitMs: FLAG_WATCH_WAIT_MS } : {}), signal });
        index = next < index ? 0 : Math.max(1, next);
        const req = parseSwitchover(pair, (problem) => log.warn("ignoring a malformed switchover request", { problem }));
        if (req) onRequest(req, pair!.ModifyIndex);
      } catch (err) {
        if (signal.aborted) return;
        index = 0;
        if (isConsulError(err, "CONSUL_FORBIDDEN") && !warned) {
          warned = true;
          log.warn("cannot watch for switchover requests; consul-leader switchover will not reach this sidecar", { err });
        }
        await clock.sleep(1000, signal).catch(() => {});
      }
    }
  }

  /** Deletes a switchover request once acted on (or abandoned), if it is still the one read at `index`. */
  async deleteSwitchover(index: number): Promise<void> {
    await this.#d.consul.kvDelete(switchoverKey(this.key), { cas: index }).catch(() => false);
  }
}
