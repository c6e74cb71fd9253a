/**
 * This sidecar's place in the group, as Consul KV records it: its identity
 * (one process per instance ID, consul/identity.ts), its member entry (held
 * by its session, published when what peers rank on changes), the
 * candidates of an election round, and the cleanup of entries left behind.
 *
 * Guarantees: a twin is reported as IDENTITY_TWIN naming the knob that tells
 * processes apart, never ignored; the first entry written after re-adopting a
 * session is a check-and-set on our claim, so a holder that woke up and
 * answered meanwhile wins. Does not decide anything about the lock.
 */

import type { Clock } from "../clock.ts";
import type { Mode } from "../config/config.ts";
import type { Consul } from "../consul/client.ts";
import { claimIdentity, judgeOwnEntry } from "../consul/identity.ts";
import { type Member, memberKey, membersPrefix, parseEntries, parseEntry, readMembers, staleEntries } from "../consul/members.ts";
import { describeError, LeaderError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { isRelated } from "./decide.ts";
import type { Candidate, LockValue } from "./types.ts";

/** Server-side wait of the watch on our own member entry (a twin's claim returns it at once). */
export const MEMBER_WATCH_WAIT_MS = 300_000;
/** How often the leader deletes member entries left behind (Nomad gives every deploy new instance IDs). */
export const MEMBER_GC_EVERY_MS = 600_000;
/** A member entry without a session and not published for this long is left behind: half an hour outlasts any restart. */
export const MEMBER_GC_AFTER_MS = 1_800_000;

export interface MembershipOptions {
  key: string;
  instance: string;
  /** This run of the process. */
  incarnation: string;
  mode: Mode;
  /** How long a live holder of our identity has to answer a claim. */
  claimWaitMs: number;
}

export interface MembershipDeps {
  consul: Consul;
  clock: Clock;
  log: Logger;
}

export class Membership {
  readonly #o: MembershipOptions;
  readonly #d: MembershipDeps;
  #published = "";

  constructor(o: MembershipOptions, d: MembershipDeps) {
    this.#o = o;
    this.#d = d;
  }

  /** What to do when the knob-level identity is shared, in one sentence. */
  get identityFix(): string {
    return this.#o.mode.kind === "nomad"
      ? "NOMAD_ALLOC_ID is the instance ID in Nomad mode: run one consul-leader task per allocation"
      : "each sidecar or exec process needs its own: set CONSUL_LEADER_SERVICE_ID to a unique value (the default, <name>-<host>-<Redis port>, differs only by Redis address)";
  }

  /** True once our entry is written. */
  get settled(): boolean {
    return this.#published !== "";
  }

  /**
   * Makes sure no other live process uses this identity before anything is
   * registered. Returns the session to re-adopt, if any. `sessionName`: what
   * our sessions are called. `keepAlive` passes a restarted sidecar's old
   * check while we wait. `neverAdopt` (exec): wait for a previous run's
   * session to lapse instead, since its command may still run until that
   * run's own deadline. Throws IDENTITY_TWIN when another process answers.
   */
  async claim(sessionName: string, signal: AbortSignal, opts: { keepAlive?: () => Promise<void>; neverAdopt: boolean }): Promise<string | undefined> {
    const { consul, clock, log } = this.#d;
    const r = await claimIdentity(
      { key: this.#o.key, instance: this.#o.instance, incarnation: this.#o.incarnation, claimWaitMs: this.#o.claimWaitMs, sessionName },
      { consul, clock, log, ...(opts.keepAlive ? { keepAlive: opts.keepAlive } : {}) },
      signal,
    );
    if (r.kind === "twin") {
      const where = [r.holder.host ? `on host ${r.holder.host}` : "", r.holder.pid !== undefined ? `pid ${r.holder.pid}` : ""].filter(Boolean).join(", ");
      throw new LeaderError("IDENTITY_TWIN", `another consul-leader process runs as instance "${this.#o.instance}"${where ? ` (${where})` : ""}; ${this.identityFix}`);
    }
    if (r.kind !== "adopt") return undefined;
    if (opts.neverAdopt) {
      log.info("the previous run's session is alive; exec does not re-adopt it, and waits for it to lapse", { session: r.session });
      while (!signal.aborted && (await consul.sessionInfo(r.session))) await clock.sleep(500, signal).catch(() => {});
      return undefined;
    }
    return r.session;
  }

  /**
   * Publishes `m` with `session` when what peers rank on has changed (or
   * `force`). Every write is a check-and-set against the entry as read just
   * before: it replaces our own entry, our own claim (after re-adopting a
   * session), or a newcomer's claim on our identity (which answers it); an
   * entry another process took over, or held by another session, is never
   * overwritten: IDENTITY_TWIN. `onWriteError` sees (and rethrows) Consul
   * errors, so the lease can notice a session Consul no longer has.
   */
  async publish(m: Member, session: string, force: boolean, onWriteError: (err: unknown) => never): Promise<void> {
    const fingerprint = JSON.stringify([m.role, m.eligible, m.redisUp, m.replid, m.replid2, m.address, m.service, m.ineligible]);
    if (!force && fingerprint === this.#published) return;
    const key = memberKey(this.#o.key, m.instance);
    const { consul } = this.#d;
    const twin = () => new LeaderError("IDENTITY_TWIN", `another consul-leader process holds the member entry of instance "${this.#o.instance}"; ${this.identityFix}`);
    for (let attempt = 0; attempt < 3; attempt++) {
      const { pair } = await consul.kvGet(key, { consistent: true });
      let ok: boolean;
      if (!pair?.Session) {
        ok = await consul.kvAcquire(key, session, JSON.stringify(m)).catch(onWriteError);
        if (!ok) throw twin();
      } else {
        if (pair.Session !== session) throw twin();
        const e = parseEntry(pair);
        const held = e && typeof e !== "string" ? e.member : undefined;
        if (held?.incarnation && held.incarnation !== this.#o.incarnation && held.claim !== this.#o.incarnation) {
          throw new LeaderError("IDENTITY_TWIN", `another consul-leader process took over instance "${this.#o.instance}" while this one was not answering; ${this.identityFix}`);
        }
        // A plain write keeps the lock's session; the check-and-set keeps anyone else's change.
        ok = await consul.kvPut(key, JSON.stringify(m), { cas: pair.ModifyIndex }).catch(onWriteError);
        if (!ok) continue; // changed since we read it: look again
      }
      this.#published = fingerprint;
      return;
    }
    throw twin();
  }

  /** The next publish writes whatever changed (a new session, a claim answered). */
  invalidate(): void {
    this.#published = "";
  }

  /**
   * Watches our own entry until `signal` aborts: answers a newcomer's claim
   * on our identity and publishes again after a deletion (both through
   * `republish`, see `publish`), and calls `onSuperseded`
   * (once, then returns) when another process took the identity over while
   * we could not answer.
   */
  async watchOwn(
    signal: AbortSignal,
    current: () => string | null,
    republish: () => Promise<void>,
    onSuperseded: (err: LeaderError) => void,
  ): Promise<void> {
    const { consul, clock, log } = this.#d;
    const key = memberKey(this.#o.key, this.#o.instance);
    let index = 0;
    while (!signal.aborted) {
      const session = current();
      if (!session || !this.settled) {
        await clock.sleep(200, signal).catch(() => {});
        index = 0;
        continue;
      }
      try {
        const { pair, index: next } = await consul.kvGet(key, { consistent: true, ...(index > 0 ? { index, waitMs: MEMBER_WATCH_WAIT_MS } : {}), signal });
        index = next < index ? 0 : Math.max(1, next);
        if (current() !== session) continue;
        const entry = pair ? parseEntry(pair) : undefined;
        switch (judgeOwnEntry(entry, { session, incarnation: this.#o.incarnation })) {
          case "ok":
            break;
          case "claimed": {
            const claim = entry && typeof entry !== "string" ? entry.member.claim : undefined;
            log.error("another process started with this sidecar's identity; answering that this one runs, so it stops", { instance: this.#o.instance, claimedBy: claim ?? null, fix: this.identityFix });
            // publish() replaces exactly the entry it reads: if the newcomer already took
            // it over (we were frozen through its wait), that is IDENTITY_TWIN for us.
            this.invalidate();
            await republish();
            break;
          }
          case "superseded":
            onSuperseded(new LeaderError("IDENTITY_TWIN", `another consul-leader process took over instance "${this.#o.instance}" while this one was not answering; ${this.identityFix}`));
            return;
          case "gone":
            log.warn("our member entry was deleted or lost its session; publishing it again", { key });
            this.invalidate();
            await republish();
            break;
        }
      } catch (err) {
        if (signal.aborted) return;
        if (err instanceof LeaderError && err.code === "IDENTITY_TWIN") {
          onSuperseded(err);
          return;
        }
        index = 0;
        await clock.sleep(1000, signal).catch(() => {});
      }
    }
  }

  /**
   * Waits until every member with a live session has written its entry since
   * the lock was freed (`freeIndex`), or until `until` (monotonic), whichever
   * comes first: once all have spoken, the round's ranking cannot change by
   * waiting out the rest of GATHER_MS. Blocks on the members prefix instead
   * of polling it. Only a member that was in the group before the lock went
   * free (its entry is older than `freeIndex`: a failover) ends the wait
   * early; one that joined since (the group is starting, and members that
   * have no entry yet are on their way) waits it out, as does everyone while
   * a member stays silent (frozen, or ineligible with nothing new to say).
   * Never throws: a read that fails waits out the rest.
   */
  async awaitRound(freeIndex: number, until: number, signal: AbortSignal): Promise<void> {
    const { consul, clock } = this.#d;
    const prefix = membersPrefix(this.#o.key);
    const mine = memberKey(this.#o.key, this.#o.instance);
    let index = 0;
    try {
      for (;;) {
        const left = Math.ceil(until - clock.monotonic());
        if (left <= 0 || signal.aborted) return;
        const r = await consul.kvListIndexed(prefix, { consistent: true, ...(index > 0 ? { index, waitMs: left } : {}), signal });
        const joined = r.pairs.find((p) => p.Key === mine)?.CreateIndex ?? Infinity;
        if (joined < freeIndex && parseEntries(r.pairs).every((e) => !e.session || e.modifyIndex > freeIndex)) return;
        index = Math.max(1, r.index);
      }
    } catch {
      await clock.sleep(until - clock.monotonic(), signal).catch(() => {});
    }
  }

  /**
   * The candidates of an election round: every eligible member with a live
   * session that published after the lock was freed (`freeIndex`), and how
   * many other live members carry the last leader's history.
   */
  async gather(freeIndex: number, last: LockValue | null): Promise<{ rivals: Candidate[]; relatedAlive: number }> {
    const { consul, log } = this.#d;
    const entries = await readMembers(consul, this.#o.key, (key, problem) => log.warn("ignoring a malformed member entry", { key, problem }));
    const rivals = entries
      .filter((e) => e.session && e.modifyIndex > freeIndex && e.member.eligible)
      .map((e) => ({ instance: e.member.instance, offset: e.member.offset, replid: e.member.replid, replid2: e.member.replid2, priority: e.member.priority, eligible: e.member.eligible }));
    // Members that carry the last leader's data and could still lead once their Redis is ready.
    const relatedAlive = entries.filter((e) => e.session && e.member.redisUp && e.member.instance !== this.#o.instance && isRelated(e.member, last)).length;
    return { rivals, relatedAlive };
  }

  /**
   * Deletes member entries left behind (see staleEntries) while `leading()`:
   * soon after leading starts, then every MEMBER_GC_EVERY_MS. Each delete is a
   * check-and-set, so an entry rewritten meanwhile survives.
   */
  async cleanLoop(signal: AbortSignal, leading: () => boolean): Promise<void> {
    const { consul, clock, log } = this.#d;
    let cleanedAt = -Infinity;
    let wasLeader = false;
    while (!signal.aborted) {
      await clock.sleep(wasLeader ? MEMBER_GC_EVERY_MS : 1000, signal).catch(() => {});
      if (signal.aborted || !leading()) {
        wasLeader = false;
        continue;
      }
      if (wasLeader && clock.monotonic() - cleanedAt < MEMBER_GC_EVERY_MS) continue;
      wasLeader = true;
      cleanedAt = clock.monotonic();
      try {
        const stale = staleEntries(await consul.kvList(membersPrefix(this.#o.key)), clock.now(), MEMBER_GC_AFTER_MS);
        for (const p of stale) {
          if (await consul.kvDelete(p.Key, { cas: p.ModifyIndex })) log.info("deleted a member entry left behind", { key: p.Key });
        }
      } catch (err) {
        log.debug("could not clean up member entries", { err: describeError(err) });
      }
    }
  }

  /** On shutdown: our entry goes. */
  async remove(): Promise<void> {
    await this.#d.consul.kvDelete(memberKey(this.#o.key, this.#o.instance));
  }
}
