/**
 * The lease: this sidecar's Consul session and the liveness heartbeat it is
 * bound to, and the one number that matters for safety: the earliest moment
 * Consul could let another node acquire the lock (README "Timing").
 *
 * Owns creating or re-adopting the session, renewing it every
 * `renewEveryMs` (every second after a failure), passing the liveness check
 * every `checkEveryMs` (both as rarely as the timing rule allows, see
 * config.ts), and noticing when Consul no longer has the session. Times are
 * taken when a request is *sent*, on the monotonic clock.
 *
 * Guarantees: `deadline()` never lies late: it is computed only from requests
 * that succeeded, from the moment they were sent. Does not fence anything
 * itself: the elector arms its timer on `deadline()` after every `onRefresh`.
 */

import type { Clock } from "../clock.ts";
import type { Timing } from "../config/config.ts";
import type { Consul } from "./client.ts";
import { formatDuration } from "../config/duration.ts";
import { describeError, isConsulError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { memberKey, parseEntry } from "./members.ts";
import type { ServiceManager } from "./service.ts";

/** After a failed heartbeat, how soon the next goes: an agent that comes back (a restart) is met within this. */
export const FAILING_BEAT_MS = 250;

export interface LeaseOptions {
  timing: Timing;
  key: string;
  serviceName: string;
  instanceId: string;
}

export interface LeaseDeps {
  consul: Consul;
  clock: Clock;
  log: Logger;
  service: ServiceManager;
  /** A renew or heartbeat succeeded: the deadline moved. */
  onRefresh: () => void;
  /** Consul no longer has the session (renew 404, "invalid session"). */
  onLost: (session: string, why: string) => void;
  /** A renew works again after failing: views fetched meanwhile may be stale. */
  onRecovered: () => void;
  /** Any Consul error seen while renewing, for /state. */
  onError: (err: unknown) => void;
  /** Every renew with its latency; for metrics. */
  onRenew?: (ms: number, ok: boolean) => void;
}

export class Lease {
  readonly #o: LeaseOptions;
  readonly #d: LeaseDeps;
  #session: string | null = null;
  #renewSent = 0;
  #beatSent = 0;
  #lastRenewMs: number | null = null;
  /** Since when (wall ms) renews, and heartbeats, have failed without a success, and the last error of each. */
  #renewFailing: { since: number; err: unknown } | undefined;
  #beatFailing: { since: number; err: unknown } | undefined;

  constructor(o: LeaseOptions, d: LeaseDeps) {
    this.#o = o;
    this.#d = d;
  }

  get session(): string | null {
    return this.#session;
  }

  get lastRenewMs(): number | null {
    return this.#lastRenewMs;
  }

  /**
   * Why the lease cannot be refreshed, while it cannot: since when (wall
   * ms) renews or heartbeats have failed without a success in between, and
   * the latest error. Undefined while both work.
   */
  get trouble(): { since: number; err: unknown } | undefined {
    const r = this.#renewFailing;
    const b = this.#beatFailing;
    if (!r || !b) return r ?? b;
    return { since: Math.min(r.since, b.since), err: r.since <= b.since ? r.err : b.err };
  }

  /** The name every session of this sidecar carries; how a restart recognises its own. */
  get sessionName(): string {
    return `consul-leader:${this.#o.serviceName}:${this.#o.instanceId}`;
  }

  /** Earliest moment (monotonic) Consul could let another node acquire, minus the margin; undefined without a session. */
  deadline(): number | undefined {
    if (!this.#session) return undefined;
    const t = this.#o.timing;
    let lease = this.#renewSent + t.ttlMs;
    if (t.checkTtlMs) lease = Math.min(lease, this.#beatSent + t.checkTtlMs);
    return lease + t.lockDelayMs - t.fenceMarginMs;
  }

  /** Records a heartbeat sent at `sentAt` that succeeded (the service's setup passes the check once). */
  beatAt(sentAt: number): void {
    this.#beatSent = sentAt;
  }

  /**
   * Re-adopts `adopt`, the still-living session of a previous run of this
   * sidecar (identity.ts decided it is ours to take), or creates a new one
   * bound to the liveness check. Returns whether it adopted.
   */
  async establish(adopt?: string): Promise<{ session: string; adopted: boolean }> {
    const { clock, log, consul, service } = this.#d;
    if (adopt) {
      const sent = clock.monotonic();
      if (await consul.sessionRenew(adopt)) {
        this.#session = adopt;
        this.#renewSent = sent;
        log.info("re-adopted the session of a previous run", { session: adopt });
        return { session: adopt, adopted: true };
      }
    }
    const sent = clock.monotonic();
    const id = await this.#create();
    this.#session = id;
    this.#renewSent = sent;
    this.#renewFailing = undefined;
    const t = this.#o.timing;
    log.info("created session", { session: id, ttl: formatDuration(t.ttlMs), lockDelay: formatDuration(t.lockDelayMs), check: service.aliveCheckId ?? null });
    return { session: id, adopted: false };
  }

  /**
   * Proves the lease before a Redis-changing action: renews the session,
   * passes the liveness check (when bound to one), and reads the lock key
   * and our member entry consistently, all at once. Resolves with the
   * fencing deadline when the session is alive, the lock is held by it, the
   * member entry names `incarnation`, and the deadline is at least `budgetMs`
   * away; otherwise with the reason it is not proven. Never throws.
   */
  async prove(budgetMs: number, incarnation: string): Promise<{ ok: true; deadline: number } | { ok: false; why: string }> {
    const { consul, clock, service } = this.#d;
    const sid = this.#session;
    if (!sid) return { ok: false, why: "no session" };
    const sent = clock.monotonic();
    const [renew, beat, lock, member] = await Promise.allSettled([
      consul.sessionRenew(sid),
      this.#o.timing.checkTtlMs ? service.heartbeat() : Promise.resolve(),
      consul.kvGet(this.#o.key, { consistent: true }),
      consul.kvGet(memberKey(this.#o.key, this.#o.instanceId), { consistent: true }),
    ]);
    if (renew.status === "rejected") return { ok: false, why: `the session renew failed (${describeError(renew.reason)})` };
    if (!renew.value) {
      this.lost(sid, "renew answered 404");
      return { ok: false, why: "the session is gone" };
    }
    if (this.#session !== sid) return { ok: false, why: "the session changed meanwhile" };
    this.#renewSent = Math.max(this.#renewSent, sent);
    if (beat.status === "rejected") return { ok: false, why: `the liveness check could not be passed (${describeError(beat.reason)})` };
    if (this.#o.timing.checkTtlMs) this.#beatSent = Math.max(this.#beatSent, sent);
    if (lock.status === "rejected") return { ok: false, why: `the lock could not be read (${describeError(lock.reason)})` };
    if (lock.value.pair?.Session !== sid) return { ok: false, why: "the lock is not held by this session" };
    if (member.status === "rejected") return { ok: false, why: `the member entry could not be read (${describeError(member.reason)})` };
    const entry = member.value.pair ? parseEntry(member.value.pair) : undefined;
    const m = entry && typeof entry !== "string" ? entry.member : undefined;
    if (!m || member.value.pair?.Session !== sid || m.incarnation !== incarnation || (m.claim && m.claim !== incarnation)) {
      return { ok: false, why: "the member entry does not name this process (another process claims this identity)" };
    }
    this.#d.onRefresh();
    const deadline = this.deadline()!;
    const left = deadline - clock.monotonic();
    if (left < budgetMs) return { ok: false, why: `the lease ends in ${Math.round(left)}ms, less than the ${budgetMs}ms the action may take` };
    return { ok: true, deadline };
  }

  /** Renews once now (the lock was lost unexpectedly); a 404 means the session is gone. */
  async check(): Promise<void> {
    const sid = this.#session;
    if (!sid) return;
    try {
      const sent = this.#d.clock.monotonic();
      const entry = await this.#d.consul.sessionRenew(sid);
      if (entry) {
        if (this.#session === sid) this.#renewSent = Math.max(this.#renewSent, sent);
      } else {
        this.lost(sid, "renew answered 404");
      }
    } catch {
      // the renew loop will try again
    }
  }

  /** Forgets a session Consul no longer has; the elector creates a new one. */
  lost(sid: string, why: string): void {
    if (this.#session !== sid) return;
    this.#d.log.warn("session is gone; stepping down and creating a new one", { session: sid, why });
    this.#session = null;
    this.#renewFailing = undefined;
    this.#d.onLost(sid, why);
  }

  /** Consul answers 500 "invalid session" to writes with a session it has destroyed: rethrows after noting it. */
  noteWriteError(err: unknown): never {
    const sid = this.#session;
    if (sid && isConsulError(err, "CONSUL_SERVER_ERROR") && /invalid session/i.test(err.message)) this.lost(sid, "a write answered invalid session");
    throw err;
  }

  /** After the shutdown destroyed it. */
  forget(): void {
    this.#session = null;
  }

  /** Renews every `renewEveryMs` after the last renewal sent, every second while failing, until `signal` aborts. */
  async renewLoop(signal: AbortSignal): Promise<void> {
    const { consul, clock, log, onRenew } = this.#d;
    const t = this.#o.timing;
    let failing = false;
    while (!signal.aborted) {
      const sid = this.#session;
      if (!sid) {
        await clock.sleep(100, signal).catch(() => {});
        continue;
      }
      const due = failing ? clock.monotonic() + Math.min(1000, t.renewEveryMs) : this.#renewSent + t.renewEveryMs;
      await clock.sleep(Math.max(0, due - clock.monotonic()), signal).catch(() => {});
      if (signal.aborted || this.#session !== sid) continue;
      const sent = clock.monotonic();
      try {
        const entry = await consul.sessionRenew(sid);
        onRenew?.(clock.monotonic() - sent, true);
        this.#lastRenewMs = Math.round(clock.monotonic() - sent);
        if (this.#session !== sid) continue;
        if (!entry) {
          this.lost(sid, "renew answered 404");
          continue;
        }
        if (failing) {
          log.info("session renew works again", { session: sid });
          this.#d.onRecovered();
        }
        failing = false;
        this.#renewFailing = undefined;
        this.#renewSent = sent;
        this.#d.onRefresh();
      } catch (err) {
        onRenew?.(clock.monotonic() - sent, false);
        if (signal.aborted) return;
        this.#d.onError(err);
        if (!failing) log.warn("session renew failed; retrying every second until the fencing deadline", { session: sid, err });
        failing = true;
        this.#renewFailing = { since: this.#renewFailing?.since ?? clock.now(), err };
      }
    }
  }

  /**
   * Passes the liveness check every `checkEveryMs` once `ready()`, until
   * `signal` aborts. Each heartbeat is due `checkEveryMs` after the previous
   * one was sent, not after it answered, so one that times out still leaves
   * the next on time (the timing rule counts on it); after a failure, they
   * come every FAILING_BEAT_MS until one succeeds.
   */
  async heartbeatLoop(signal: AbortSignal, ready: () => boolean): Promise<void> {
    const { service, clock, log } = this.#d;
    const every = this.#o.timing.checkEveryMs;
    if (!every) return;
    let failing = false;
    let sent = clock.monotonic();
    while (!signal.aborted) {
      const due = sent + (failing ? Math.min(every, FAILING_BEAT_MS) : every);
      await clock.sleep(Math.max(0, due - clock.monotonic()), signal).catch(() => {});
      if (signal.aborted) continue;
      if (!ready()) {
        sent = clock.monotonic();
        continue;
      }
      // A heartbeat sent meanwhile (the setup's, a lease proof's) counts: the next is due after it.
      if (!failing && this.#beatSent > sent) {
        sent = this.#beatSent;
        continue;
      }
      sent = clock.monotonic();
      try {
        await service.heartbeat();
        this.#beatSent = Math.max(this.#beatSent, sent);
        if (failing) log.info("heartbeat works again");
        failing = false;
        this.#beatFailing = undefined;
        this.#d.onRefresh();
      } catch (err) {
        if (signal.aborted) return;
        if (!failing) log.warn("heartbeat failed", { err });
        failing = true;
        this.#beatFailing = { since: this.#beatFailing?.since ?? clock.now(), err };
        // The agent forgot the check (restarted without state): register it again.
        if (isConsulError(err, "CONSUL_NOT_FOUND", "CONSUL_SERVER_ERROR") && /TTL|not found|unknown check/i.test(err.message)) {
          await service.repair().catch((e: unknown) => log.debug("check repair failed", { err: describeError(e) }));
        }
      }
    }
  }

  async #create(): Promise<string> {
    const { consul, service } = this.#d;
    const t = this.#o.timing;
    const check = service.aliveCheckId;
    const req = {
      Name: this.sessionName,
      TTL: formatDuration(t.ttlMs),
      LockDelay: formatDuration(t.lockDelayMs),
      Behavior: "release" as const,
      NodeChecks: [],
      ...(check ? { ServiceChecks: [{ ID: check }] } : {}),
    };
    try {
      return await consul.sessionCreate(req);
    } catch (err) {
      // The check may have lapsed or vanished (agent restart): put it back and try once more.
      if (check && isConsulError(err, "CONSUL_SERVER_ERROR", "CONSUL_BAD_REQUEST") && /check/i.test(err.message)) {
        await service.repair();
        await service.heartbeat();
        return await consul.sessionCreate(req);
      }
      throw err;
    }
  }
}

/**
 * Why the lease could not be refreshed, as an operator reads it: what fails
 * (the local agent, TLS to it, the servers behind it, the token), since
 * when, and what it means for writes. Pure.
 */
export function describeLeaseTrouble(t: { since: number; err: unknown }): string {
  const when = new Date(t.since).toISOString();
  const detail = t.err instanceof Error ? t.err.message : describeError(t.err);
  const [what, who] = isConsulError(t.err, "CONSUL_UNREACHABLE", "CONSUL_TIMEOUT") ? ["Consul agent unreachable", "it answers"]
    : isConsulError(t.err, "CONSUL_TLS") ? ["TLS to the Consul agent fails", "it connects"]
    : isConsulError(t.err, "CONSUL_SERVER_ERROR") ? [`the Consul servers do not answer the agent (${detail})`, "they answer"]
    : isConsulError(t.err, "CONSUL_FORBIDDEN") ? [`Consul refuses the token (${detail})`, "it accepts it"]
    : [detail, "Consul answers"];
  return `cannot renew the lease: ${what} since ${when}; writes blocked until ${who}`;
}
