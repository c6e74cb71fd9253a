/**
 * The election loop: observe -> decide -> apply, plus the background work
 * that keeps the observation current (a blocking watch on the lock key,
 * session renewal, the liveness heartbeat, a watch on our service, Redis
 * polling) and the fencing timer.
 *
 * Guarantees:
 * - While this sidecar leads, a timer fires at the fencing deadline (earliest
 *   moment Consul could let another node acquire, minus the margin; README
 *   "Timing") and fences Redis without waiting for the loop or for Consul.
 * - Every decision is logged at debug with its reason, every change of
 *   decision kind and every role change at info.
 * - On shutdown a leader hands over: fences its Redis, releases the lock (no
 *   lock-delay) naming the most caught-up replica, drops its tags and destroys
 *   its session, in that order. The successor catches up before promoting.
 * Does not guarantee Consul sees what we wrote: writes that fail are retried
 * on the next tick with backoff.
 */

import type { Clock } from "../clock.ts";
import type { Config } from "../config/config.ts";
import type { Consul, KVPair } from "../consul/client.ts";
import { decide, isRelated } from "./decide.ts";
import type { Decision, Election, ElectorState, GuardedWork, LockValue, LockView, Observation, Role, RoleChange } from "./types.ts";
import { describeError, isConsulError, LeaderError, serializeError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { Lease } from "../consul/lease.ts";
import { parseSwitchover, parseValue, sameValue, switchoverKey } from "./lock-value.ts";
import { type Member, memberKey, pickSuccessor, readMembers } from "../consul/members.ts";
import { stripStalePrimaries } from "../consul/primary-tags.ts";
import { formatHostPort, type HostPort, isLoopback, parseHostPort } from "../host-port.ts";
import type { RedisRole } from "../redis/role.ts";
import { FenceTimer } from "./fence-timer.ts";
import type { ServiceManager } from "../consul/service.ts";

/** Candidates publish, then wait this long before ranking. A KV write commits in a few ms; 100ms lets every live candidate in. */
export const GATHER_MS = 100;
/** After ELECTION_WAIT, the 2nd-best candidate goes first, the 3rd this much later, and so on, so they do not all collide. */
export const STAGGER_MS = 250;
/** A refused acquire on a free key means lock-delay; api.Lock retries every 5s, we retry four times a second. */
export const ACQUIRE_RETRY_MS = 250;
/** Server-side wait of the lock watch. Changes return at once; this only bounds idle requests (one a minute). */
export const WATCH_WAIT_MS = 60_000;
/** Redis poll period while its port refuses connections (a restart is on its way). */
export const FAST_POLL_MS = 20;
/** Server-side wait of the service watch (agent-local, so cheap). */
export const SERVICE_WATCH_WAIT_MS = 300_000;

export interface ElectorDeps {
  consul: Consul;
  clock: Clock;
  log: Logger;
  service: ServiceManager;
  redis?: RedisRole;
  /** Called after every role change; must return quickly (hooks run detached). */
  onRoleChange?: (change: RoleChange) => void;
  /** A fresh random identifier; tells this run of the process from any other using the same instance ID. */
  randomId: () => string;
  /** Work that must stop when we stop leading (exec mode's command). */
  guarded?: GuardedWork;
  /** Called once per renew with its latency; for metrics. */
  onRenew?: (ms: number, ok: boolean) => void;
}

/** How many changed decisions `state().recent` keeps. */
export const RECENT_DECISIONS = 20;

export class Elector {
  readonly #c: Config;
  readonly #d: ElectorDeps;
  #ready = false;
  readonly #lease: Lease;
  #lock: LockView | undefined;
  #lastLeader: LockValue | null = null;
  #role: Role = "starting";
  #election: Election | undefined;
  #epoch: number | undefined;
  #decision: Decision | undefined;
  #decidedAt = 0;
  #wake: (() => void) | undefined;
  /** Set by #kick; a change seen while a tick was running must not wait for the next timer. */
  #pending = false;
  #watchRequest: AbortController | undefined;
  readonly #fenceTimer: FenceTimer;
  #retryAt = 0;
  /** The lock's last non-empty value, whoever wrote it (us included): the election's "last leader". */
  #lastValue: LockValue | null = null;
  #failures = 0;
  #lastWarn = { msg: "", at: -Infinity };
  #consulError: unknown;
  #announce: HostPort | undefined;
  #published = "";
  #transitions = 0;
  #maintenance = false;
  #tickedAt = 0;
  #recent: { time: string; kind: string; reason: string }[] = [];
  #lagBytes: number | null = null;
  /** A pending switchover request: from KV (with its ModifyIndex, to delete it) or from POST /switchover. */
  #switchover: { to?: string; index?: number } | undefined;
  #signal: AbortSignal = new AbortController().signal;

  constructor(config: Config, deps: ElectorDeps) {
    this.#c = config;
    this.#d = deps;
    this.#lease = new Lease(
      { timing: config.timing, key: config.key, serviceName: config.serviceName, instanceId: config.instanceId },
      {
        consul: deps.consul,
        clock: deps.clock,
        log: deps.log,
        service: deps.service,
        ...(deps.onRenew ? { onRenew: deps.onRenew } : {}),
        onRefresh: () => this.#armFence(),
        onRecovered: () => this.#refreshWatch(),
        onError: (err) => (this.#consulError = err),
        onLost: () => {
          this.#refreshWatch();
          this.#forgetLeadership();
          this.#fenceTimer.cancel();
          this.#kick();
        },
      },
    );
    this.#fenceTimer = new FenceTimer(deps.clock, () => this.#lease.deadline());
  }

  /** Runs until `signal` aborts, then shuts down gracefully (see module comment). */
  async run(signal: AbortSignal): Promise<void> {
    this.#signal = signal;
    this.#tickedAt = this.#d.clock.monotonic();
    const bg = new AbortController();
    const loops = [
      this.#watchKey(bg.signal),
      this.#lease.renewLoop(bg.signal),
      this.#lease.heartbeatLoop(bg.signal, () => this.#ready),
      this.#serviceWatchLoop(bg.signal),
      this.#redisLoop(bg.signal),
      this.#switchoverLoop(bg.signal),
    ];
    try {
      while (!signal.aborted) {
        await this.#tick();
        await this.#sleepUntilWake();
      }
    } finally {
      this.#fenceTimer.cancel();
      await this.#shutdown();
      bg.abort();
      this.#kick();
      await Promise.allSettled(loops);
    }
  }

  /**
   * Asks this sidecar, if it leads, to hand the primary role over (to `to`, an
   * instance ID or Redis address, when given). Returns false when it does not lead.
   */
  requestSwitchover(to?: string): boolean {
    if (!this.#holds() || this.#role !== "leader") return false;
    this.#switchover = to ? { to } : {};
    this.#kick();
    return true;
  }

  /** Sets maintenance mode (stop competing; a leader hands over). */
  setMaintenance(on: boolean): void {
    if (this.#maintenance !== on) {
      this.#maintenance = on;
      this.#kick();
    }
  }

  /** What this sidecar believes, for /state, SIGUSR1 and tests. Never includes secrets. */
  state(): ElectorState {
    const now = this.#d.clock.monotonic();
    const lock = this.#lock;
    const fenceAt = this.#lease.deadline();
    const redis = this.#d.redis;
    return {
      role: this.#role,
      instance: this.#c.instanceId,
      service: this.#ready ? this.#d.service.serviceId : undefined,
      session: this.#lease.session,
      lock: lock
        ? {
          holder: lock.holder,
          instance: lock.holder ? lock.value?.instance ?? null : null,
          address: lock.holder ? lock.value?.address ?? null : null,
          epoch: lock.holder ? lock.value?.epoch ?? null : null,
          modifyIndex: lock.modifyIndex,
        }
        : null,
      epoch: this.#epoch ?? null,
      fenceInMs: fenceAt === undefined || !this.#holds() ? null : Math.round(fenceAt - now),
      decision: this.#decision ? { kind: this.#decision.kind, reason: this.#decision.reason, ageMs: Math.round(now - this.#decidedAt) } : null,
      redis: redis ? { ...redis.view(now, this.#otherHolds()), ...(redis.lastError ? { error: redis.lastError } : {}) } : null,
      consul: { ok: this.#consulError === undefined, error: this.#consulError === undefined ? null : serializeError(this.#consulError) },
      transitions: this.#transitions,
      lastRenewMs: this.#lease.lastRenewMs,
      announce: this.#announce ? formatHostPort(this.#announce) : null,
      loopAgeMs: Math.round(now - this.#tickedAt),
      fenceAt: fenceAt === undefined || !this.#holds() ? null : new Date(this.#d.clock.now() + (fenceAt - now)).toISOString(),
      recent: [...this.#recent],
      lagBytes: this.#lagBytes,
      maintenance: this.#maintenance,
    };
  }

  // ---------------------------------------------------------------- the loop

  async #tick(): Promise<void> {
    const { clock, log } = this.#d;
    if (clock.monotonic() < this.#retryAt) return;
    this.#pending = false;
    const o = this.#observe();
    const d = decide(o);
    this.#record(d);
    try {
      await this.#apply(d, o);
      await this.#publishMember();
      this.#tickedAt = clock.monotonic();
      this.#failures = 0;
      this.#retryAt = 0;
    } catch (err) {
      this.#tickedAt = clock.monotonic();
      if (this.#signal.aborted) return;
      if (err instanceof LeaderError && err.code === "SERVICE_NOT_FOUND") throw err;
      this.#failures++;
      const delay = Math.min(5000, 250 * 2 ** Math.min(this.#failures - 1, 5));
      this.#retryAt = clock.monotonic() + delay;
      if (isConsulError(err)) this.#consulError = err;
      const msg = describeError(err);
      const now = clock.monotonic();
      if (msg !== this.#lastWarn.msg || now - this.#lastWarn.at > 30_000) {
        this.#lastWarn = { msg, at: now };
        log.warn("action failed; will retry", { decision: d.kind, retryInMs: delay, err });
      } else {
        log.debug("action failed again", { decision: d.kind, retryInMs: delay, err: msg });
      }
    }
  }

  #observe(): Observation {
    const now = this.#d.clock.monotonic();
    return {
      now,
      instance: this.#c.instanceId,
      priority: this.#c.priority,
      sessionId: this.#lease.session,
      lock: this.#lock,
      fenceAt: this.#lease.deadline(),
      role: this.#role,
      redis: this.#d.redis?.view(now, this.#otherHolds()),
      maintenance: this.#maintenance,
      switchover: this.#switchover !== undefined,
      election: this.#election,
      timing: { gatherMs: GATHER_MS, electionWaitMs: this.#c.timing.electionWaitMs, staggerMs: STAGGER_MS },
    };
  }

  #record(d: Decision): void {
    const { log, clock } = this.#d;
    const prev = this.#decision;
    log.debug("decision", { kind: d.kind, reason: d.reason });
    if (!prev || prev.kind !== d.kind || prev.reason !== d.reason) {
      if (!prev || prev.kind !== d.kind) log.info("decision changed", { kind: d.kind, reason: d.reason });
      this.#decision = d;
      this.#decidedAt = clock.monotonic();
      this.#recent.push({ time: new Date(clock.now()).toISOString(), kind: d.kind, reason: d.reason });
      if (this.#recent.length > RECENT_DECISIONS) this.#recent.shift();
    }
  }

  async #sleepUntilWake(): Promise<void> {
    const { clock } = this.#d;
    const now = clock.monotonic();
    let until = now + this.#c.timing.sleepMs;
    if (this.#retryAt > now) until = Math.min(until, this.#retryAt);
    const d = this.#decision;
    if (d?.kind === "defer") until = Math.min(until, d.until);
    if (d?.kind === "acquire" || d?.kind === "announce" || d?.kind === "new-session") until = now;
    if (this.#pending && this.#retryAt <= now) until = now;
    if (until <= now) return;
    const woken = new Promise<void>((resolve) => (this.#wake = resolve));
    await Promise.race([clock.sleep(until - now, this.#signal).catch(() => {}), woken]);
    this.#wake = undefined;
  }

  /** Runs the loop again now (something changed). */
  #kick(): void {
    this.#pending = true;
    this.#wake?.();
  }

  // ---------------------------------------------------------------- apply

  async #apply(d: Decision, o: Observation): Promise<void> {
    switch (d.kind) {
      case "new-session":
        return await this.#ensureSession();
      case "fence":
        return await this.#fence(d.reason);
      case "lead":
        return await this.#lead(d.reason);
      case "release":
        return await this.#release(d, o);
      case "handover": {
        const req = this.#switchover;
        this.#switchover = undefined;
        await this.#handOver(d.reason, req?.to, o.maintenance ? "maintenance" : "handover");
        if (req?.index !== undefined) await this.#d.consul.kvDelete(switchoverKey(this.#c.key), { cas: req.index }).catch(() => false);
        return;
      }
      case "follow":
        return await this.#follow(d.leader, d.reason);
      case "announce":
        await this.#parkIfOrphaned();
        return await this.#announceCandidacy();
      case "acquire":
        await this.#parkIfOrphaned();
        return await this.#acquire();
      case "defer":
      case "wait":
        await this.#parkIfOrphaned();
        if (this.#lock && !this.#lock.holder && this.#role !== "fenced") this.#setRole("candidate", d.reason);
        if (this.#ready && this.#role !== "leader") await this.#syncTags(false, false, d.reason);
        return;
    }
  }

  async #ensureSession(): Promise<void> {
    const { service, log, clock } = this.#d;
    if (!this.#ready) {
      await service.setup(this.#signal);
      this.#ready = true;
      this.#lease.beatAt(clock.monotonic());
      this.#announce = await this.#announceAddress();
      log.info("service ready", { service: service.serviceId, check: service.aliveCheckId ?? null, announce: this.#announce ? formatHostPort(this.#announce) : null });
    }
    const { epoch } = await this.#lease.establish();
    if (epoch !== undefined) this.#epoch = epoch;
    this.#published = "";
    await this.#publishMember();
    this.#armFence();
  }

  async #lead(reason: string): Promise<void> {
    const { redis, log, consul, clock } = this.#d;
    const lock = this.#lock!;
    if (redis) {
      const fenceAt = this.#lease.deadline();
      if (fenceAt !== undefined && clock.monotonic() >= fenceAt) return; // the deadline passed since we decided
      const prev = this.#lastLeader && this.#lastLeader.instance !== this.#c.instanceId ? this.#lastLeader : null;
      await redis.takeover(prev, this.#self(), this.#signal);
    }
    if (this.#epoch === undefined) {
      this.#epoch = lock.value?.session === this.#lease.session && lock.value.epoch ? lock.value.epoch : lock.modifyIndex;
    }
    const value = this.#value();
    if (!sameValue(value, lock.value)) {
      const ok = await consul.kvAcquire(this.#c.key, this.#lease.session!, JSON.stringify(value)).catch((err: unknown) => this.#lease.noteWriteError(err));
      if (!ok) throw new Error("could not update the lock value: the lock is no longer ours");
      this.#lock = { ...lock, value };
    }
    await stripStalePrimaries(
      { consul, log, clock },
      { serviceName: this.#c.serviceName, primaryLabel: this.#c.primaryLabel, ownServiceId: this.#d.service.serviceId },
      this.#signal,
    );
    await this.#syncTags(true, false, reason);
    if (this.#role !== "leader") {
      this.#setRole("leader", reason);
      log.info("leading", { epoch: this.#epoch, session: this.#lease.session, address: value.address ?? null });
    }
    this.#armFence();
  }

  async #follow(leader: LockValue | null, reason: string): Promise<void> {
    const { redis } = this.#d;
    let healthy = true;
    let note = reason;
    if (redis) {
      const addr = leader?.address ? parseHostPort(leader.address) : undefined;
      const self = this.#self();
      const loading = redis.view(this.#d.clock.monotonic(), true).loading;
      if (loading) {
        // A loading Redis refuses REPLICAOF; follow once it has loaded.
        healthy = false;
        note = "Redis is loading its dataset";
      } else if (addr && formatHostPort(addr) !== formatHostPort(self)) {
        if (this.#role === "follower" && redis.snapshot?.role === "master") {
          this.#d.log.error("incident: this Redis became a master while another node holds the lock; demoting it", {
            leader: leader!.instance,
            fenced: redis.snapshot.fenced,
          });
        }
        if (await redis.follow(addr)) {
          this.#d.log.info("replicating from the leader", { leader: leader!.address });
          this.#kick();
        }
        const view = redis.view(this.#d.clock.monotonic(), true);
        const lagOk = await this.#lagWithin(addr, view.offset);
        healthy = view.up && view.linkUp && !view.syncing && !view.loading && lagOk;
        note = healthy ? `replica of ${leader!.address}, in sync` : `replica of ${leader!.address}, ${!view.up ? "Redis down" : view.syncing ? "syncing" : !view.linkUp ? "link down" : view.loading ? "loading" : "lagging"}`;
      } else {
        healthy = false;
      }
    }
    if (this.#ready) await this.#syncTags(false, healthy, note);
    if (this.#role !== "follower") this.#setRole("follower", reason);
  }

  async #lagWithin(leader: HostPort, ours: number): Promise<boolean> {
    const redis = this.#d.redis!;
    const theirs = await redis.leaderOffset(leader);
    this.#lagBytes = theirs === undefined ? null : Math.max(0, theirs - ours);
    return theirs === undefined ? true : theirs - ours <= this.#c.redis!.maxLagBytes;
  }

  async #fence(reason: string): Promise<void> {
    await this.#fenceWork(reason);
    this.#setRole("fenced", reason);
    if (this.#ready) {
      await this.#syncTags(false, false, reason).catch((err: unknown) => this.#d.log.debug("could not drop the primary tag while fenced", { err: describeError(err) }));
    }
  }

  /** Stops writes now: the Redis fence and the onFence hook, side by side. Never throws. */
  async #fenceWork(reason: string, redisDown = false): Promise<void> {
    const { redis, guarded, log } = this.#d;
    const work: Promise<unknown>[] = [];
    // A Redis already known down gets the queued fence straight away: a fence
    // through the connection would only wait out REDIS_TIMEOUT first.
    if (redis && redisDown) redis.queueFence();
    else if (redis) work.push(redis.fence());
    if (guarded) work.push(guarded.stop());
    const results = await Promise.allSettled(work);
    const failed = results.find((r) => r.status === "rejected") as PromiseRejectedResult | undefined;
    if (failed) (redisDown ? log.debug : log.warn)("could not fence", { reason, err: failed.reason });
    else if (work.length > 0) log.info("fenced", { reason, ...(redis && redisDown ? { redis: "queued" } : {}) });
  }

  async #release(d: Extract<Decision, { kind: "release" }>, o: Observation): Promise<void> {
    const { consul, log, redis } = this.#d;
    const reason = d.reason;
    if (d.lostData && redis) {
      // A replica of nowhere refuses to serve a sync (NOMASTERLINK), so the
      // replicas cannot be wiped from this emptied Redis; then fence as usual.
      await redis.detach();
      await this.#fenceWork(reason);
    } else if (o.redis && !o.redis.up) {
      // A dead Redis cannot take writes, and a frozen one cannot answer a fence
      // in time: queue the fence (it runs when Redis resumes) and release
      // without waiting for it.
      void this.#fenceWork(reason, true);
    } else {
      await this.#fenceWork(reason);
    }
    const released: LockValue["released"] = d.lostData ? "redis-restarted" : o.redis && !o.redis.up ? "redis-down" : o.maintenance ? "maintenance" : "priority";
    // The history we led with, not what our Redis reports now: after a restart
    // that is a fresh, empty history the election must not mistake for ours.
    const published = this.#lock?.value?.session === this.#lease.session ? this.#lock.value.replid : undefined;
    const value: LockValue = { ...this.#value(), ...(published ? { replid: published } : {}), released };
    await consul.kvRelease(this.#c.key, this.#lease.session!, JSON.stringify(value));
    log.info("released the lock", { reason, released });
    this.#forgetLeadership();
    this.#setRole("candidate", reason);
    if (this.#ready) await this.#syncTags(false, false, reason);
  }

  async #announceCandidacy(): Promise<void> {
    const { consul, redis, clock, log } = this.#d;
    const el = this.#election!;
    const freeIndex = this.#lock!.modifyIndex;
    if (redis) await redis.poll();
    this.#setRole("candidate", "the lock is free");
    await this.#publishMember(true);
    el.announcedAt = clock.monotonic();
    await clock.sleep(GATHER_MS, this.#signal);
    let entries;
    try {
      entries = await readMembers(consul, this.#c.key);
    } catch (err) {
      el.announcedAt = undefined; // announce again next time, or the round stalls
      throw err;
    }
    el.rivals = entries
      .filter((e) => e.session && e.modifyIndex > freeIndex && e.member.eligible)
      .map((e) => ({ instance: e.member.instance, offset: e.member.offset, replid: e.member.replid, replid2: e.member.replid2, priority: e.member.priority, eligible: e.member.eligible }));
    // Members that carry the last leader's data and could still lead once their Redis is ready.
    el.relatedAlive = entries.filter((e) => e.session && e.member.redisUp && e.member.instance !== this.#c.instanceId && isRelated(e.member, el.last)).length;
    log.debug("candidates gathered", { rivals: el.rivals, relatedAlive: el.relatedAlive });
  }

  async #acquire(): Promise<void> {
    const { consul, clock, log } = this.#d;
    const ok = await consul.kvAcquire(this.#c.key, this.#lease.session!, JSON.stringify(this.#value())).catch((err: unknown) => this.#lease.noteWriteError(err));
    if (!ok) {
      await clock.sleep(ACQUIRE_RETRY_MS, this.#signal).catch(() => {});
      return;
    }
    const { pair, index } = await consul.kvGet(this.#c.key, { consistent: true });
    this.#setLock(pair, index);
    if (this.#holds()) {
      this.#epoch = pair!.ModifyIndex;
      log.info("acquired the lock", { key: this.#c.key, epoch: this.#epoch, session: this.#lease.session });
    }
  }

  /** Replicas detach from a leader that released because its Redis died. */
  async #parkIfOrphaned(): Promise<void> {
    const redis = this.#d.redis;
    const last = this.#lastLeader;
    if (!redis || !last?.address || (last.released !== "redis-down" && last.released !== "redis-restarted") || this.#lock?.holder) return;
    const s = redis.snapshot;
    if (!s || s.role !== "replica" || `${s.masterHost}:${s.masterPort}` !== last.address) return;
    if (await redis.park()) {
      this.#d.log.info("detached from the previous leader, whose Redis died", { previous: last.address });
      this.#kick();
    }
  }

  // ---------------------------------------------------------------- tags and records

  async #syncTags(primary: boolean, replica: boolean, note: string): Promise<void> {
    await this.#d.service.ensure({ primary, replica, session: this.#lease.session, healthy: primary || replica, note });
  }

  /** Publishes our member entry when what peers rank on has changed (or `force`). */
  async #publishMember(force = false): Promise<void> {
    const role = this.#role;
    if (!this.#lease.session) return;
    const redis = this.#d.redis;
    const now = this.#d.clock.monotonic();
    const view = redis?.view(now, this.#otherHolds());
    const eligible = !this.#maintenance && this.#c.priority > 0 && (!view || (view.up && !view.loading && !view.syncing && !view.stale));
    const m: Member = {
      instance: this.#c.instanceId,
      service: this.#ready ? this.#d.service.serviceId : "",
      ...(this.#announce ? { address: formatHostPort(this.#announce) } : {}),
      role,
      eligible,
      redisUp: !view || view.up,
      priority: this.#c.priority,
      offset: view?.offset ?? 0,
      replid: view?.replid ?? "",
      replid2: view?.replid2 ?? "",
      updated: new Date(this.#d.clock.now()).toISOString(),
    };
    const fingerprint = JSON.stringify([m.role, m.eligible, m.redisUp, m.replid, m.replid2, m.address, m.service]);
    if (!force && fingerprint === this.#published) return;
    await this.#d.consul.kvAcquire(memberKey(this.#c.key, m.instance), this.#lease.session, JSON.stringify(m)).catch((err: unknown) => this.#lease.noteWriteError(err)).then((ok) => {
      if (!ok) this.#d.log.error("another session holds this sidecar's member key; is another sidecar running with the same instance ID?", { instance: m.instance });
    });
    this.#published = fingerprint;
  }

  #value(): LockValue {
    const redis = this.#d.redis;
    const snap = redis?.snapshot;
    // What we published while holding the lock: the run id and the time stay
    // the ones we took it with. A fresh acquisition starts over.
    const mine = this.#holds() && this.#lock?.value?.session === this.#lease.session ? this.#lock.value : undefined;
    return {
      session: this.#lease.session!,
      instance: this.#c.instanceId,
      service: this.#ready ? this.#d.service.serviceId : "",
      ...(redis && this.#announce ? { address: formatHostPort(this.#announce) } : {}),
      ...(this.#epoch !== undefined ? { epoch: this.#epoch } : {}),
      ...(snap?.replid ? { replid: snap.replid } : {}),
      ...(mine?.runId ? { runId: mine.runId } : snap?.runId ? { runId: snap.runId } : {}),
      since: mine?.since ?? new Date(this.#d.clock.now()).toISOString(),
    };
  }

  /** We no longer lead under this lock: the next lead pass starts a new epoch. */
  #forgetLeadership(): void {
    this.#epoch = undefined;
  }

  #setRole(to: Role, reason: string): void {
    const from = this.#role;
    if (from === to) return;
    this.#role = to;
    if (to !== "follower") this.#lagBytes = null;
    this.#transitions++;
    this.#d.log.info("role changed", { from, to, reason, epoch: this.#epoch ?? null });
    this.#d.onRoleChange?.({ from, to, reason, leader: this.#lock?.holder ? this.#lock.value : null, epoch: this.#epoch });
  }

  // ---------------------------------------------------------------- lock state

  #holds(): boolean {
    return !!this.#lock?.holder && this.#lock.holder === this.#lease.session;
  }

  #otherHolds(): boolean {
    return !!this.#lock?.holder && this.#lock.holder !== this.#lease.session;
  }

  #setLock(pair: KVPair | null, index: number): void {
    const { clock, log } = this.#d;
    const wasMine = this.#holds();
    const view: LockView = pair
      ? { holder: pair.Session || null, value: parseValue(pair), modifyIndex: pair.ModifyIndex, exists: true }
      : { holder: null, value: null, modifyIndex: index, exists: false };
    const before = this.#lock;
    this.#lock = view;
    // The last leader other than us: the one a takeover must fence.
    if (view.value && view.value.session !== this.#lease.session) this.#lastLeader = view.value;
    // The election ranks on the last leader whoever it was, us included: a
    // leader whose own Redis restarted empty must not win on its stale claim.
    if (view.value) this.#lastValue = view.value;
    if (view.holder) {
      this.#election = undefined;
    } else if (!this.#election || (before && (before.holder || before.modifyIndex !== view.modifyIndex))) {
      this.#election = { freeSince: clock.monotonic(), last: this.#lastValue, relatedAlive: 0 };
    }
    if (wasMine && !this.#holds() && this.#role === "leader") {
      log.warn("lost the lock", { holder: view.holder, exists: view.exists, role: this.#role });
      this.#forgetLeadership();
      // Usually an operator destroyed our session: find out now, not at the next renew.
      void this.#lease.check();
    }
    if (!before || before.holder !== view.holder || before.modifyIndex !== view.modifyIndex) this.#kick();
  }

  #armFence(): void {
    this.#fenceTimer.cancel();
    const at = this.#lease.deadline();
    if (at === undefined || !this.#holds()) return;
    const { clock, log } = this.#d;
    if (this.#role === "leader") this.#d.guarded?.lease(at - clock.monotonic());
    this.#fenceTimer.arm(() => this.#role === "leader", () => {
      log.warn("fencing deadline reached without a renew or heartbeat; fencing now", { session: this.#lease.session });
      this.#role = "fenced";
      this.#transitions++;
      void this.#fenceWork("fencing deadline reached").finally(() => this.#kick());
      this.#d.onRoleChange?.({ from: "leader", to: "fenced", reason: "fencing deadline reached", leader: this.#lock?.value ?? null, epoch: this.#epoch });
    });
  }

  #self(): HostPort {
    return this.#announce ?? this.#c.redis!.addr;
  }

  async #announceAddress(): Promise<HostPort | undefined> {
    const r = this.#c.redis;
    if (!r) return undefined;
    if (r.announce) return r.announce;
    if (!isLoopback(r.addr.host)) return r.addr;
    const svc = await this.#d.consul.agentService(this.#d.service.serviceId).catch(() => null);
    if (svc?.Address && svc.Port && !isLoopback(svc.Address)) return { host: svc.Address, port: svc.Port };
    return r.addr;
  }

  // ---------------------------------------------------------------- background loops

  /**
   * A blocking query stuck on a dead connection keeps an old view for up to a
   * minute. When another Consul call recovers or finds the session gone, the
   * watch is restarted with a fresh read instead.
   */
  #refreshWatch(): void {
    this.#watchRequest?.abort();
  }

  async #watchKey(signal: AbortSignal): Promise<void> {
    const { consul, clock } = this.#d;
    let index = 0;
    let backoff = 100;
    while (!signal.aborted) {
      const started = clock.monotonic();
      const request = new AbortController();
      this.#watchRequest = request;
      try {
        const { pair, index: next } = await consul.kvGet(this.#c.key, {
          consistent: true,
          ...(index > 0 ? { index, waitMs: WATCH_WAIT_MS } : {}),
          signal: AbortSignal.any([signal, request.signal]),
        });
        this.#consulError = undefined;
        backoff = 100;
        const unchanged = next === index;
        index = next < index ? 0 : Math.max(1, next);
        this.#setLock(pair, next);
        // A blocking query may return early without a change; do not spin.
        if (unchanged && clock.monotonic() - started < 50) await clock.sleep(100, signal);
      } catch (err) {
        if (signal.aborted) return;
        index = 0;
        if (request.signal.aborted) continue; // restarted on purpose: read again now
        this.#consulError = err;
        await clock.sleep(backoff, signal).catch(() => {});
        backoff = Math.min(backoff * 2, 2000);
      }
    }
  }

  async #serviceWatchLoop(signal: AbortSignal): Promise<void> {
    const { service, clock } = this.#d;
    let hash: string | undefined;
    while (!signal.aborted) {
      if (!this.#ready) {
        await clock.sleep(200, signal).catch(() => {});
        continue;
      }
      try {
        const next = await service.watch(hash, SERVICE_WATCH_WAIT_MS, signal);
        // The first answer is a baseline we have not checked yet: look at it too.
        if (next !== hash) this.#kick();
        hash = next;
        if (!next) await clock.sleep(1000, signal).catch(() => {});
      } catch {
        if (signal.aborted) return;
        hash = undefined;
        await clock.sleep(1000, signal).catch(() => {});
      }
    }
  }

  async #redisLoop(signal: AbortSignal): Promise<void> {
    const { redis, clock } = this.#d;
    if (!redis) return;
    const poll = this.#c.redis!.pollMs;
    let wasUp: boolean | undefined;
    while (!signal.aborted) {
      const changed = await redis.poll();
      const up = redis.view(clock.monotonic(), this.#otherHolds()).up;
      if (wasUp !== undefined && up !== wasUp) {
        // Actions that failed while Redis was down backed off up to 5 s; when
        // it answers again (a frozen master resuming writable) act now.
        this.#retryAt = 0;
        this.#failures = 0;
      }
      if (changed || up !== wasUp) this.#kick();
      wasUp = up;
      // While its port refuses, look every 20 ms: a Redis restarted by its
      // supervisor boots as a writable master unless its config says
      // otherwise, and the sooner we see it the shorter that window.
      const refused = redis.lastErrorCode === "REDIS_UNREACHABLE";
      await clock.sleep(refused ? Math.min(poll, FAST_POLL_MS) : poll, signal).catch(() => {});
    }
  }

  // ---------------------------------------------------------------- shutdown

  async #shutdown(): Promise<void> {
    const { consul, log, service } = this.#d;
    const step = async (what: string, fn: () => Promise<unknown>) => {
      try {
        await fn();
      } catch (err) {
        log.warn(`shutdown: ${what} failed`, { err });
      }
    };
    const sid = this.#lease.session;
    if (sid && this.#holds()) await step("handing over", () => this.#handOver("shutting down", undefined, "shutdown"));
    if (this.#ready) await step("removing tags", () => service.teardown());
    if (sid) {
      await step("removing the member entry", () => consul.kvDelete(memberKey(this.#c.key, this.#c.instanceId)));
      await step("destroying the session", () => consul.sessionDestroy(sid));
      this.#lease.forget();
    }
  }

  /**
   * Gives the lock up on purpose: stop writes (fence), then release naming a
   * successor (the most caught-up eligible replica, or the requested one). The
   * successor's takeover waits until its Redis has every byte the fenced one
   * had before promoting, so no acknowledged write is lost. (Redis FAILOVER
   * would do the same but waits for the replica's once-a-second ACK: 580-750 ms
   * of paused writes under load, measured here, against ~50 ms this way.)
   * Returns the successor's instance ID, if one was named.
   */
  async #handOver(reason: string, to: string | undefined, released: NonNullable<LockValue["released"]>): Promise<string | undefined> {
    const { consul, log } = this.#d;
    const sid = this.#lease.session!;
    const redis = this.#d.redis;
    if (redis) await redis.poll();
    const target = await pickSuccessor(this.#d.consul, this.#c.key, this.#c.instanceId, redis?.replicas(), to).catch((err: unknown) => {
      log.warn("could not choose a successor", { err });
      return undefined;
    });
    if (to && !target) log.warn("the requested successor is not an eligible member with a live session", { to });
    await this.#fenceWork(reason);
    const handoverTo = target?.instance;
    const value: LockValue = { ...this.#value(), ...(handoverTo ? { handoverTo } : {}), released: handoverTo ? "handover" : released };
    await consul.kvRelease(this.#c.key, sid, JSON.stringify(value));
    log.info("released the lock", { reason, handoverTo: handoverTo ?? null });
    this.#forgetLeadership();
    this.#setRole("candidate", reason);
    if (this.#ready && !this.#signal.aborted) await this.#syncTags(false, false, reason);
    return handoverTo;
  }

  /** Watches `<key>/switchover` for requests addressed to this leader. */
  async #switchoverLoop(signal: AbortSignal): Promise<void> {
    const { consul, clock, log } = this.#d;
    const key = switchoverKey(this.#c.key);
    let index = 0;
    let warned = false;
    while (!signal.aborted) {
      try {
        const { pair, index: next } = await consul.kvGet(key, { ...(index > 0 ? { index, waitMs: WATCH_WAIT_MS } : {}), signal });
        index = next < index ? 0 : Math.max(1, next);
        const req = parseSwitchover(pair);
        if (req && req.leader === this.#c.instanceId && this.#holds() && !this.#switchover) {
          log.info("switchover requested", { to: req.to ?? null });
          this.#switchover = { ...(req.to ? { to: req.to } : {}), index: pair!.ModifyIndex };
          this.#kick();
        }
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
}
