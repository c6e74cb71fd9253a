/**
 * The election loop: observe -> decide -> apply, plus the background work
 * that keeps the observation current (a blocking watch on the lock key, the
 * lease's renewals and heartbeats, a watch on our service, Redis polling,
 * switchover requests, our own member entry, and while leading the other
 * primary-tagged instances) and the fencing timer.
 *
 * What it decides is decide.ts's (and takeover.ts's for when to promote);
 * how it talks to Consul is the lease's (session, deadline, proof), the lock
 * key's and identity.ts's; how it changes Redis is redis/role.ts's.
 *
 * Guarantees:
 * - Whenever this sidecar holds the lock, in every role, a timer fires at the
 *   fencing deadline (the earliest moment Consul could let another node
 *   acquire, minus the margin; README "Timing") and fences Redis and stops
 *   guarded work without waiting for the loop or for Consul.
 * - Losing the lock (an operator destroyed the session or deleted the key)
 *   fences the moment the watch sees it, not at the next tick and not after a
 *   failure backoff.
 * - Every Redis-changing action (promote, lift a fence) comes right after a
 *   lease proof (a renew, a heartbeat and consistent reads of the lock and
 *   our member entry) showing the lease outlives it; a fence that fired since
 *   aborts it (`#generation`).
 * - A new leader promotes only over a previous primary that confirmed its
 *   fence or is gone (takeover.ts).
 * - A planned handover releases only after its own Redis confirmed the fence,
 *   publishing the offset it had then; otherwise it is aborted and this
 *   sidecar stays leader (on shutdown: releases marked "redis-down", so the
 *   successor waits for that fence itself).
 * - One process per identity (identity.ts): a twin fails closed at start;
 *   a process superseded while frozen stops without touching the lock.
 * - Every decision is logged at debug with its reason, every change of
 *   decision kind and every role change at info.
 * Does not guarantee Consul sees what we wrote: writes that fail are retried
 * on the next tick with backoff.
 */

import type { Clock } from "../clock.ts";
import type { Config } from "../config/config.ts";
import type { Consul, KVPair } from "../consul/client.ts";
import { describeLeaseTrouble, Lease } from "../consul/lease.ts";
import { LockKey, WATCH_WAIT_MS } from "../consul/lock.ts";
import { type Member, pickSuccessor } from "../consul/members.ts";
import { stripStalePrimaries, watchStalePrimaries } from "../consul/primary-tags.ts";
import type { ServiceManager } from "../consul/service.ts";
import { describeError, isConsulError, LeaderError, serializeError } from "../errors.ts";
import { formatHostPort, type HostPort, isLoopback, parseHostPort } from "../host-port.ts";
import type { Logger } from "../log.ts";
import type { RedisRole } from "../redis/role.ts";
import { decide, followerHealth, releaseMarker, shouldPark, whyIneligible } from "./decide.ts";
import { FenceTimer } from "./fence-timer.ts";
import { DecisionLog, Pacer } from "./pacer.ts";
import { type Failover, failoverWhy, parseValue, type PauseRecord, sameValue } from "./lock-value.ts";
import { Membership } from "./membership.ts";
import { Promotion } from "./promotion.ts";
import { reactionGraceMs } from "./takeover.ts";
import { watchRedis, watchService } from "./watches.ts";
import type { Decision, Election, ElectorState, GuardedWork, LockValue, LockView, Observation, Role, RoleChange } from "./types.ts";

/**
 * Candidates publish, then wait at most this long before ranking (less once
 * every live member has published for the round). A KV write commits in a
 * few ms; 100ms lets every live candidate in.
 */
export const GATHER_MS = 100;
/** After ELECTION_WAIT, the 2nd-best candidate goes first, the 3rd this much later, and so on, so they do not all collide. */
export const STAGGER_MS = 250;
/** A refused acquire on a free key means lock-delay; api.Lock retries every 5s, we retry four times a second. */
export const ACQUIRE_RETRY_MS = 250;
/** How often a waiting takeover looks again when nothing wakes it sooner (a queued fence coming back does). */
export const TAKEOVER_RETRY_MS = 250;


export interface ElectorDeps {
  consul: Consul;
  clock: Clock;
  log: Logger;
  service: ServiceManager;
  /** A fresh random identifier; tells this run of the process from any other using the same instance ID. */
  randomId: () => string;
  redis?: RedisRole;
  /** Called after every role change; must return quickly (hooks run detached). */
  onRoleChange?: (change: RoleChange) => void;
  /** Called whenever this sidecar's view of the lock, or its role, changed; must return quickly. */
  onLockChange?: () => void;
  /** Work that must stop when we stop leading (exec mode's command). */
  guarded?: GuardedWork;
  /** Called once per renew with its latency; for metrics. */
  onRenew?: (ms: number, ok: boolean) => void;
  /** This process's host and pid, written into the member entry so a twin can be told where the other runs. */
  process?: { host: string; pid: number };
}

export class Elector {
  readonly #c: Config;
  readonly #d: ElectorDeps;
  readonly #lease: Lease;
  readonly #lockKey: LockKey;
  readonly #fenceTimer: FenceTimer;
  /** This run of the process (see identity.ts). */
  readonly #incarnation: string;
  /** The service is set up (registered or found) and our identity is ours. */
  #ready = false;
  readonly #membership: Membership;
  readonly #promotion: Promotion | undefined;
  #lock: LockView | undefined;
  /** The last holder other than us whose Redis was primary: the one a takeover must fence. */
  #lastLeader: LockValue | null = null;
  /** The last holder other than us, whatever it ran: the one that must have stopped before we start. */
  #lastHolder: LockValue | null = null;
  /** The lock's last non-empty value, whoever wrote it (us included): the election's "last leader". */
  #lastValue: LockValue | null = null;
  #role: Role = "starting";
  #election: Election | undefined;
  #epoch: number | undefined;
  /** Monotonic time we acquired the lock this tenure; undefined when re-adopted or not holding. */
  #acquiredAt: number | undefined;
  /** Bumped by every fence: an action started before it must not finish (no role or tag flap back). */
  #generation = 0;
  /**
   * Our Redis is the primary for this tenure: only then does the lock value
   * carry its address, so that nobody (the old primary least of all, which
   * may hold writes we are still catching up on) replicates from us before.
   */
  #primaryReady = false;
  readonly #pacer: Pacer;
  readonly #decisions: DecisionLog;
  /** Why the takeover waits, while it does. */
  #waiting: string | undefined;
  #consulError: unknown;
  #announce: HostPort | undefined;
  #transitions = 0;
  #maintenance = false;
  #lagBytes: number | null = null;
  /** A pending switchover request: from KV (with its ModifyIndex, to delete it) or from POST /switchover. */
  #switchover: { to?: string; index?: number } | undefined;
  /** A release of ours is in flight. */
  #releasing = false;
  /** While following: our Redis was seen as a replica (a master later is someone else's doing), and its run id then. */
  #followedAsReplica = false;
  #followedRunId = "";
  /** The pause flag as last read (`consul-leader pause`); undefined when the group is not paused. */
  #paused: PauseRecord | undefined;
  /** False once Consul refused to let us read the pause flag (ACLs): acquire without the check, as before pauses existed. */
  #pauseReadable = true;
  /** The lock's last value when we acquired it this tenure (null: nobody led before): the failover the history records. */
  #tenureFrom: LockValue | null | undefined;
  /** Said once: the failover history cannot be written (ACLs). */
  #historyForbidden = false;
  /** Why writes are blocked while the role is "fenced", and since when (ISO 8601). */
  #fenceCause: { reason: string; since: string } | undefined;
  /** Set when this process must stop at once (a twin took over its identity). */
  #fatal: LeaderError | undefined;
  #signal: AbortSignal = new AbortController().signal;

  constructor(config: Config, deps: ElectorDeps) {
    this.#c = config;
    this.#d = deps;
    this.#incarnation = deps.randomId();
    this.#pacer = new Pacer(deps.clock, deps.log, config.timing.sleepMs);
    this.#decisions = new DecisionLog(deps.clock, deps.log);
    this.#lockKey = new LockKey(config.key, { consul: deps.consul, clock: deps.clock, log: deps.log });
    this.#lease = new Lease(
      { timing: config.timing, key: config.key, serviceName: config.serviceName, instanceId: config.instanceId },
      {
        consul: deps.consul,
        clock: deps.clock,
        log: deps.log,
        service: deps.service,
        ...(deps.onRenew ? { onRenew: deps.onRenew } : {}),
        onRefresh: () => this.#armFence(),
        onRecovered: () => this.#lockKey.refresh(),
        onError: (err) => (this.#consulError = err),
        onLost: () => {
          this.#lockKey.refresh();
          if (this.#holds()) this.#fenceNow("the session is gone");
          this.#forgetLeadership();
          this.#fenceTimer.cancel();
          this.#kick();
        },
      },
    );
    this.#fenceTimer = new FenceTimer(deps.clock, () => this.#lease.deadline());
    this.#membership = new Membership(
      { key: config.key, instance: config.instanceId, incarnation: this.#incarnation, mode: config.mode, claimWaitMs: Math.max(1000, config.timing.requestTimeoutMs) },
      { consul: deps.consul, clock: deps.clock, log: deps.log },
    );
    this.#promotion = deps.redis && config.redis ? new Promotion(config.redis, { redis: deps.redis, lease: this.#lease, clock: deps.clock, log: deps.log }) : undefined;
  }

  /** Runs until `signal` aborts, then shuts down gracefully (see module comment). */
  async run(signal: AbortSignal): Promise<void> {
    this.#signal = signal;
    const bg = new AbortController();
    const loops = [
      this.#lockKey.watch(bg.signal, (pair, index) => {
        this.#consulError = undefined;
        this.#setLock(pair, index);
      }, (err) => (this.#consulError = err)),
      this.#lease.renewLoop(bg.signal),
      this.#lease.heartbeatLoop(bg.signal, () => this.#ready),
      watchService(bg.signal, { service: this.#d.service, clock: this.#d.clock }, () => this.#ready, () => this.#kick()),
      ...(this.#d.redis ? [watchRedis(bg.signal, { redis: this.#d.redis, clock: this.#d.clock }, this.#c.redis!.pollMs, () => this.#otherHolds(), (upChanged: boolean) => {
        // Actions that failed while Redis was down backed off up to 5 s; when
        // it answers again (a frozen master resuming writable) act now.
        if (upChanged) this.#pacer.clearBackoff();
        this.#kick();
      })] : []),
      this.#lockKey.watchSwitchover(bg.signal, (req, index) => this.#onSwitchoverRequest(req.leader, req.to, index)),
      this.#lockKey.watchPause(bg.signal, (p) => this.#setPaused(p), (err) => {
        this.#pauseReadable = false;
        this.#d.log.warn("cannot read the pause flag; consul-leader pause will not reach this sidecar", { key: `${this.#c.key}/pause`, err });
      }),
      this.#membership.watchOwn(
        bg.signal,
        () => (this.#ready && !this.#signal.aborted ? this.#lease.session : null),
        () => this.#publishMember(true),
        (err) => this.#superseded(err),
      ),
      this.#membership.cleanLoop(bg.signal, () => this.#role === "leader"),
      watchStalePrimaries(
        { consul: this.#d.consul, log: this.#d.log, clock: this.#d.clock },
        { serviceName: this.#c.serviceName, primaryLabel: this.#c.primaryLabel, ownServiceId: () => this.#d.service.serviceId },
        bg.signal,
        () => this.#role === "leader" && this.#stillLeads(this.#generation),
      ),
    ];
    try {
      while (!signal.aborted && !this.#fatal) {
        await this.#tick();
        if (this.#fatal) break;
        await this.#pacer.sleep(this.#decisions.current, this.#signal);
      }
      if (this.#fatal) throw this.#fatal;
    } finally {
      this.#fenceTimer.cancel();
      // A twin touches nothing of the identity it lost; a Redis user without permissions never led, and cleans up.
      if (!this.#fatal || this.#fatal.code === "REDIS_PERMISSIONS") await this.#shutdown();
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
    if (!this.#holds() || this.#role !== "leader" || this.#paused) return false;
    this.#switchover = to ? { to } : {};
    this.#kick();
    return true;
  }

  /** Something this elector decides on changed outside its own watches (a queued fence came back): look again now. */
  nudge(): void {
    this.#kick();
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
    const trouble = this.#lease.trouble;
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
      ...this.#decisions.view(),
      redis: redis ? { ...redis.view(now, this.#otherHolds()), ...(redis.lastError ? { error: redis.lastError } : {}) } : null,
      consul: { ok: this.#consulError === undefined, error: this.#consulError === undefined ? null : serializeError(this.#consulError) },
      transitions: this.#transitions,
      lastRenewMs: this.#lease.lastRenewMs,
      announce: this.#announce ? formatHostPort(this.#announce) : null,
      loopAgeMs: Math.round(this.#pacer.loopAgeMs),
      fenceAt: fenceAt === undefined || !this.#holds() ? null : new Date(this.#d.clock.now() + (fenceAt - now)).toISOString(),
      lagBytes: this.#lagBytes,
      maintenance: this.#maintenance,
      waiting: this.#waiting ?? null,
      switchoverPending: this.#switchover !== undefined,
      incarnation: this.#incarnation,
      fenced: this.#role === "fenced" && this.#fenceCause ? { ...this.#fenceCause } : null,
      paused: this.#paused ? { ...this.#paused } : null,
      leaseFailingSince: trouble ? new Date(trouble.since).toISOString() : null,
    };
  }

  /** The lock as the watch last saw it (holder, parsed value, index); undefined before the first read. */
  lockView(): Readonly<LockView> | undefined {
    return this.#lock;
  }

  // ---------------------------------------------------------------- the loop

  async #tick(): Promise<void> {
    if (!this.#pacer.startTick()) return;
    const denied = this.#d.redis?.permissionProblem;
    if (denied) {
      // Found when Redis first answered, before anything was asked of it.
      this.#fatal = denied;
      return;
    }
    const o = this.#observe();
    const d = decide(o);
    this.#decisions.record(d);
    try {
      await this.#apply(d, o);
      await this.#publishMember();
      this.#pacer.succeeded();
    } catch (err) {
      if (this.#signal.aborted) return;
      if (err instanceof LeaderError && (err.code === "SERVICE_NOT_FOUND" || err.code === "IDENTITY_TWIN")) {
        this.#fatal = err;
        return;
      }
      if (isConsulError(err)) this.#consulError = err;
      this.#pacer.failed(d.kind, err, describeError(err));
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
      paused: this.#paused !== undefined,
      election: this.#election,
      timing: { gatherMs: GATHER_MS, electionWaitMs: this.#c.timing.electionWaitMs, staggerMs: STAGGER_MS },
    };
  }

  /** Runs the loop again now (something changed). */
  #kick(): void {
    this.#pacer.kick();
  }

  // ---------------------------------------------------------------- apply

  async #apply(d: Decision, o: Observation): Promise<void> {
    if (d.kind !== "lead") this.#waiting = undefined;
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
        try {
          await this.#handOver(d.reason, req?.to, o.maintenance ? "maintenance" : "handover");
        } finally {
          if (req?.index !== undefined) await this.#lockKey.deleteSwitchover(req.index);
        }
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
    let adopt: string | undefined;
    if (!this.#ready) {
      // No other live process may use this identity; a restart re-adopts its session (not in exec mode).
      const t = this.#c.timing;
      const guarded = !!this.#d.guarded;
      adopt = await this.#membership.claim(this.#lease.sessionName, this.#signal, {
        neverAdopt: guarded,
        ...(t.checkTtlMs && !guarded ? { keepAlive: () => service.heartbeat() } : {}),
      });
      await service.setup(this.#signal);
      this.#ready = true;
      this.#lease.beatAt(clock.monotonic());
      this.#announce = await this.#announceAddress();
      log.info("service ready", { service: service.serviceId, check: service.aliveCheckId ?? null, announce: this.#announce ? formatHostPort(this.#announce) : null });
    }
    await this.#lease.establish(adopt);
    this.#recallTenure();
    this.#membership.invalidate();
    await this.#publishMember(true);
    this.#armFence();
  }

  async #lead(reason: string): Promise<void> {
    const { redis, log, clock } = this.#d;
    const gen = this.#generation;
    if (redis) {
      if (!(await this.#makePrimary(gen))) return;
      this.#primaryReady = true;
      this.#waiting = undefined;
    } else if (this.#role !== "leader" && !this.#predecessorStopped()) {
      return;
    }
    if (gen !== this.#generation || !this.#holds()) return;
    const lock = this.#lock!;
    if (this.#epoch === undefined) {
      this.#epoch = lock.value?.session === this.#lease.session && lock.value.epoch ? lock.value.epoch : lock.modifyIndex;
    }
    const value = this.#value();
    const publish = async () => {
      if (sameValue(value, lock.value)) return;
      const ok = await this.#lockKey.acquire(this.#lease.session!, JSON.stringify(value)).catch((err: unknown) => this.#lease.noteWriteError(err));
      if (!ok) throw new Error("could not update the lock value: the lock is no longer ours");
      if (this.#lock === lock) {
        this.#lock = { ...lock, value };
        this.#d.onLockChange?.();
      }
    };
    // The value (our address, once primary) is written while we tag ourselves: the lease proof before
    // the promotion, and the fence timer, already bound this tenure; a value that cannot be written
    // (the lock is gone) fails this pass, and the loss fences and untags us as any loss does. Once per
    // tenure, other instances' stale primary tags come off before ours goes on (then
    // watchStalePrimaries keeps watch).
    const publishing = publish();
    publishing.catch(() => {}); // awaited below; not an unhandled rejection meanwhile
    if (this.#role !== "leader") {
      await stripStalePrimaries(
        { consul: this.#d.consul, log, clock },
        { serviceName: this.#c.serviceName, primaryLabel: this.#c.primaryLabel, ownServiceId: this.#d.service.serviceId },
        this.#signal,
        () => this.#stillLeads(gen),
      ).catch(async (err: unknown) => {
        await publishing;
        throw err;
      });
    }
    if (!this.#stillLeads(gen)) {
      await publishing;
      return;
    }
    await Promise.all([publishing, this.#syncTags(true, false, reason)]);
    // A fence that fired while the tags were written takes them off again at the next tick; do not claim the role.
    if (gen !== this.#generation || !this.#holds()) return;
    // The lease first: guarded work started on the role change below needs it.
    this.#armFence();
    if (this.#role !== "leader") {
      this.#setRole("leader", reason);
      log.info("leading", { epoch: this.#epoch, session: this.#lease.session, address: value.address ?? null });
      void this.#recordFailover();
    }
    this.#armFence();
  }

  /**
   * Makes our Redis the writable primary, taking over from the previous one
   * (takeover.ts decides when). Returns false while the takeover has to wait
   * (the reason is in `#waiting` and logged when it changes).
   */
  /**
   * Makes our Redis the writable primary (promotion.ts); false while the
   * takeover waits (the reason is in `#waiting`, logged when it changes) or
   * after it handed the lock back.
   */
  async #makePrimary(gen: number): Promise<boolean> {
    const still = () => gen === this.#generation && this.#holds();
    const prev = this.#lastLeader && this.#lastLeader.instance !== this.#c.instanceId ? this.#lastLeader : null;
    const r = await this.#promotion!.run({
      previous: prev,
      acquiredAt: this.#acquiredAt ?? -Infinity,
      self: this.#self(),
      ...(this.#lock?.value?.session === this.#lease.session && this.#lock.value.runId ? { tookWith: this.#lock.value.runId } : {}),
      incarnation: this.#incarnation,
      still,
      reactionGraceMs: reactionGraceMs(this.#c),
      signal: this.#signal,
    });
    if (r.kind === "primary") return true;
    if (r.kind === "wait") return this.#waitFor(r.reason, r.until);
    if (!still()) return false;
    this.#d.log.warn("handing the lock back: not promoting this Redis", { reason: r.reason, to: r.to });
    this.#generation++;
    await this.#releaseLock({ ...this.#value(), ...(r.to ? { handoverTo: r.to } : {}), released: "yield", why: whyText(r.reason) });
    this.#setRole("candidate", r.reason);
    return false;
  }

  /** Records why the takeover waits (logged when it changes) and when to look again. */
  #waitFor(reason: string, until?: number): false {
    if (this.#waiting !== reason) this.#d.log.info("takeover waits", { reason });
    this.#waiting = reason;
    this.#pacer.wakeBy(until, TAKEOVER_RETRY_MS);
    return false;
  }

  /**
   * Without Redis (exec, tags only): true once a predecessor that lost the
   * lock without releasing it has had time to notice and stop its command.
   */
  #predecessorStopped(): boolean {
    const prev = this.#lastHolder;
    // Tags only: nothing runs that could overlap, so nothing to wait for.
    if (!this.#d.guarded || !prev || prev.released || this.#acquiredAt === undefined) return true;
    const after = this.#acquiredAt + reactionGraceMs(this.#c);
    if (this.#d.clock.monotonic() >= after) return true;
    this.#waitFor(`${prev.instance} lost the lock without releasing it; giving it time to stop its command`, after);
    return false;
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
        // A follower whose Redis was a replica and is a master now, or a writable master: someone
        // changed it behind our back (the old primary stepping down after a handover is neither).
        const snap = redis.snapshot;
        if (this.#role === "follower" && snap?.role === "master" && (!snap.fenced || this.#followedAsReplica)) {
          if (this.#followedRunId && snap.runId && snap.runId !== this.#followedRunId) {
            // A restart (new run id) without `replicaof` in its configuration boots as a master: expected, not an incident.
            this.#d.log.warn("this Redis restarted as a master; demoting it to a replica of the leader (configure replicaof 127.0.0.1 1 so it boots as one)", {
              leader: leader!.instance,
              runId: snap.runId,
            });
          } else {
            this.#d.log.error("incident: this Redis became a master while another node holds the lock (someone ran REPLICAOF NO ONE?); demoting it", {
              leader: leader!.instance,
              fenced: snap.fenced,
            });
          }
        }
        if (await redis.follow(addr)) {
          this.#d.log.info("replicating from the leader", { leader: leader!.address });
          this.#kick();
        }
        this.#followedAsReplica = redis.snapshot?.role === "replica";
        if (this.#followedAsReplica) this.#followedRunId = redis.snapshot?.runId ?? "";
        const view = redis.view(this.#d.clock.monotonic(), true);
        ({ healthy, note } = followerHealth(view, leader!.address!, await this.#lagWithin(addr, view.offset)));
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
    this.#generation++;
    await this.#fenceWork(reason);
    if (this.#role !== "fenced") this.#fenceCause = { reason, since: new Date(this.#d.clock.now()).toISOString() };
    this.#setRole("fenced", reason);
    if (this.#ready) {
      await this.#syncTags(false, false, reason).catch((err: unknown) => this.#d.log.debug("could not drop the primary tag while fenced", { err: describeError(err) }));
    }
  }

  /**
   * Stops writes now, without waiting for the loop: from the fencing timer,
   * from the watch seeing the lock gone, from the lease finding the session
   * gone. Aborts any promotion in flight.
   */
  #fenceNow(reason: string, since = new Date(this.#d.clock.now()).toISOString()): void {
    this.#generation++;
    this.#pacer.clearBackoff();
    const wasLeader = this.#role === "leader";
    if (wasLeader || this.#role === "candidate") {
      const from = this.#role;
      this.#role = "fenced";
      this.#fenceCause = { reason, since };
      this.#transitions++;
      this.#d.log.warn("fencing now", { reason, from, session: this.#lease.session });
      this.#d.onRoleChange?.({ from, to: "fenced", reason, leader: this.#lock?.value ?? null, epoch: this.#epoch });
      this.#d.onLockChange?.();
    }
    void this.#fenceWork(reason).finally(() => {
      // The primary tag goes too, before anyone else could be tagged (invariant 3), not at the next follow.
      if (wasLeader && this.#ready) {
        void this.#syncTags(false, false, reason).catch((err: unknown) => this.#d.log.debug("could not drop the primary tag", { err: describeError(err) }));
      }
      this.#kick();
    });
  }

  /** Stops writes now: the Redis fence and the guarded work, side by side. Never throws. */
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
    else if (work.length > 0 || redisDown) log.info("fenced", { reason, ...(redis && redisDown ? { redis: "queued" } : {}) });
  }

  async #release(d: Extract<Decision, { kind: "release" }>, o: Observation): Promise<void> {
    const { log, redis } = this.#d;
    const reason = d.reason;
    this.#generation++;
    if (d.lostData && redis) {
      // A replica of nowhere refuses to serve a sync (NOMASTERLINK), so the
      // replicas cannot be wiped from this emptied Redis; then fence as usual.
      await redis.detach();
      await this.#fenceWork(reason);
    } else if (o.redis && !o.redis.up) {
      // A dead Redis cannot take writes, and a frozen one cannot answer a fence
      // in time: queue the fence (it runs when Redis resumes) and release
      // without waiting for it. The release says so: a successor waits for
      // that Redis to run a fence before promoting over it.
      await this.#fenceWork(reason, true);
    } else {
      await this.#fenceWork(reason);
    }
    const released = releaseMarker(d, o);
    // The history we led with, not what our Redis reports now: after a restart
    // that is a fresh, empty history the election must not mistake for ours.
    const published = this.#lock?.value?.session === this.#lease.session ? this.#lock.value.replid : undefined;
    const value: LockValue = { ...this.#value(), ...(published ? { replid: published } : {}), released, why: whyText(reason) };
    if (await this.#releaseLock(value)) log.info("released the lock", { reason, released });
    this.#setRole("candidate", reason);
    if (this.#ready) await this.#syncTags(false, false, reason);
  }

  /** Releases the lock with `value`; false when it was not ours any more. */
  async #releaseLock(value: LockValue): Promise<boolean> {
    // Released on purpose: the watch, which may see it before our answer
    // comes back, must not take it for a loss.
    this.#releasing = true;
    let released = false;
    try {
      released = await this.#lockKey.release(this.#lease.session!, JSON.stringify(value));
    } finally {
      this.#releasing = false;
    }
    // Not ours any more (our session lapsed meanwhile): our view of the lock is stale; read it again.
    if (!released) {
      this.#d.log.warn("the lock was not ours to release any more", { session: this.#lease.session });
      this.#lockKey.refresh();
    } else if (this.#lock) {
      this.#lock = { ...this.#lock, holder: null, value };
    }
    this.#forgetLeadership();
    this.#d.onLockChange?.();
    return released;
  }

  async #announceCandidacy(): Promise<void> {
    const { redis, clock, log } = this.#d;
    const el = this.#election!;
    const freeIndex = this.#lock!.modifyIndex;
    if (redis) await redis.poll();
    this.#setRole("candidate", "the lock is free");
    await this.#publishMember(true);
    el.announcedAt = clock.monotonic();
    await this.#membership.awaitRound(freeIndex, el.announcedAt + GATHER_MS, this.#signal);
    try {
      Object.assign(el, await this.#membership.gather(freeIndex, el.last));
    } catch (err) {
      el.announcedAt = undefined; // announce again next time, or the round stalls
      throw err;
    }
    log.debug("candidates gathered", { rivals: el.rivals, relatedAlive: el.relatedAlive });
  }

  /**
   * Takes the free lock, unless the group is paused: the acquire and the
   * check of the pause flag are one transaction, so a pause set while we
   * decided cannot be missed. Without key:read on the flag (an ACL policy
   * from before pauses existed), a plain acquire.
   */
  async #acquire(): Promise<void> {
    const { clock, log } = this.#d;
    const before = this.#election?.last ?? this.#lastValue;
    const session = this.#lease.session!;
    const value = JSON.stringify(this.#value());
    let ok: boolean;
    let takenAt: number | undefined;
    try {
      if (!this.#pauseReadable) throw new Error("the pause flag cannot be read");
      const r = await this.#lockKey.acquireUnlessPaused(session, value);
      if (r.result === "paused") {
        log.info("not taking the lock: the group was paused meanwhile", { key: this.#c.key });
        this.#paused ??= { since: "" };
        this.#kick();
        return;
      }
      ok = r.result === "acquired";
      if (r.result === "acquired") takenAt = r.modifyIndex;
    } catch (err) {
      if (isConsulError(err, "CONSUL_FORBIDDEN") && this.#pauseReadable) {
        this.#pauseReadable = false;
        log.warn("cannot check the pause flag when taking the lock; taking it without (consul-leader pause will not stop this sidecar)", { err });
      } else if (this.#pauseReadable) {
        this.#lease.noteWriteError(err);
      }
      ok = await this.#lockKey.acquire(session, value).catch((e: unknown) => this.#lease.noteWriteError(e));
    }
    if (!ok) {
      await clock.sleep(ACQUIRE_RETRY_MS, this.#signal).catch(() => {});
      return;
    }
    if (takenAt !== undefined) {
      // The transaction said at which index we took it: no read needed. The watch may already have
      // delivered that state or a newer one; an older view is replaced.
      if (!this.#lock || this.#lock.modifyIndex < takenAt) {
        this.#setLock({ Key: this.#c.key, CreateIndex: takenAt, ModifyIndex: takenAt, LockIndex: 1, Flags: 0, Value: value, Session: session }, takenAt);
      }
    } else {
      const { pair, index } = await this.#lockKey.read();
      this.#setLock(pair, index);
      takenAt = pair?.ModifyIndex;
    }
    if (this.#holds()) {
      this.#epoch = takenAt ?? this.#lock!.modifyIndex;
      this.#acquiredAt = clock.monotonic();
      this.#tenureFrom = before;
      log.info("acquired the lock", { key: this.#c.key, epoch: this.#epoch, session: this.#lease.session });
      this.#armFence();
    }
  }

  /** Replicas detach from a leader that released because its Redis died. */
  async #parkIfOrphaned(): Promise<void> {
    const redis = this.#d.redis;
    const last = this.#lastLeader;
    if (!redis || !shouldPark(last, !!this.#lock?.holder, redis.snapshot)) return;
    if (await redis.park()) {
      this.#d.log.info("detached from the previous leader, whose Redis died", { previous: last!.address });
      this.#kick();
    }
  }

  // ---------------------------------------------------------------- tags and records

  /**
   * Tags and the role check. The check's output is `note`, and, for a member
   * that may not lead, why (the same sentence its member entry carries as
   * `ineligible`, which `consul-leader status` shows).
   */
  async #syncTags(primary: boolean, replica: boolean, note: string): Promise<void> {
    const why = primary ? undefined : this.#ineligible();
    const output = why && !note.includes(why) ? `${note}; not eligible: ${why}` : note;
    await this.#d.service.ensure({ primary, replica, session: this.#lease.session, healthy: primary || replica, note: output });
  }

  /** Why this member may not lead now, or undefined (decide.ts's whyIneligible on what we observe). */
  #ineligible(): string | undefined {
    const view = this.#d.redis?.view(this.#d.clock.monotonic(), this.#otherHolds());
    return whyIneligible({ maintenance: this.#maintenance, priority: this.#c.priority, redis: view });
  }

  #member(): Member {
    const redis = this.#d.redis;
    const now = this.#d.clock.monotonic();
    const view = redis?.view(now, this.#otherHolds());
    const ineligible = this.#ineligible();
    const p = this.#d.process;
    return {
      instance: this.#c.instanceId,
      service: this.#ready ? this.#d.service.serviceId : "",
      ...(this.#announce ? { address: formatHostPort(this.#announce) } : {}),
      role: this.#role,
      eligible: ineligible === undefined,
      redisUp: !view || view.up,
      priority: this.#c.priority,
      offset: view?.offset ?? 0,
      replid: view?.replid ?? "",
      replid2: view?.replid2 ?? "",
      updated: new Date(this.#d.clock.now()).toISOString(),
      incarnation: this.#incarnation,
      ...(p ? { host: p.host, pid: p.pid } : {}),
      ...(ineligible ? { ineligible } : {}),
      ...(this.#c.sentinel ? { sentinel: formatHostPort(this.#c.sentinel.announce) } : {}),
    };
  }

  /**
   * Publishes our member entry when what peers rank on has changed (or
   * `force`); IDENTITY_TWIN when another process holds it.
   */
  async #publishMember(force = false): Promise<void> {
    const session = this.#lease.session;
    if (!session) return;
    await this.#membership.publish(this.#member(), session, force, (err: unknown) => this.#lease.noteWriteError(err));
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
      ...(redis && this.#announce && this.#primaryReady ? { address: formatHostPort(this.#announce) } : {}),
      ...(redis && !this.#primaryReady ? previousOf(this.#lastLeader, this.#c.instanceId) : {}),
      ...(this.#epoch !== undefined ? { epoch: this.#epoch } : {}),
      ...(snap?.replid ? { replid: snap.replid } : {}),
      ...(mine?.runId ? { runId: mine.runId } : snap?.runId ? { runId: snap.runId } : {}),
      incarnation: this.#incarnation,
      since: mine?.since ?? new Date(this.#d.clock.now()).toISOString(),
    };
  }

  /**
   * Adds this tenure to the failover history, once, when it started with an
   * acquisition from another leader (or from nobody). Best effort: the
   * election never waits on it.
   */
  async #recordFailover(): Promise<void> {
    const prev = this.#tenureFrom;
    this.#tenureFrom = undefined;
    if (prev === undefined || prev?.instance === this.#c.instanceId) return;
    const f: Failover = {
      at: new Date(this.#d.clock.now()).toISOString(),
      from: prev?.instance ?? null,
      to: this.#c.instanceId,
      why: failoverWhy(prev),
      ...(this.#epoch !== undefined ? { epoch: this.#epoch } : {}),
    };
    try {
      if (!(await this.#lockKey.recordFailover(f))) this.#d.log.debug("the failover history kept changing; this failover is not in it", { failover: f });
    } catch (err) {
      if (isConsulError(err, "CONSUL_FORBIDDEN")) {
        if (!this.#historyForbidden) this.#d.log.warn("cannot write the failover history; consul-leader status will not show the last failovers", { err });
        this.#historyForbidden = true;
      } else {
        this.#d.log.debug("could not record the failover", { err: describeError(err) });
      }
    }
  }

  /** The pause flag changed (`consul-leader pause` / `resume`). A pending switchover dies with a pause. */
  #setPaused(p: PauseRecord | undefined): void {
    // Read it: the token may read it (again, after an ACL fix), so the acquire may check it.
    this.#pauseReadable = true;
    const was = this.#paused !== undefined;
    this.#paused = p;
    if (was === (p !== undefined)) return;
    this.#d.log.info(p ? "the group is paused: no failover, no switchover" : "the group is no longer paused", p ? { since: p.since, by: p.by ?? null, reason: p.reason ?? null } : {});
    if (p && this.#switchover) {
      this.#d.log.warn("dropping the pending switchover: the group is paused", { to: this.#switchover.to ?? null });
      const index = this.#switchover.index;
      this.#switchover = undefined;
      if (index !== undefined) void this.#lockKey.deleteSwitchover(index);
    }
    this.#kick();
  }

  /** We no longer lead under this lock: the next lead pass starts a new epoch; a pending switchover is void. */
  #forgetLeadership(): void {
    this.#epoch = undefined;
    this.#primaryReady = false;
    this.#acquiredAt = undefined;
    this.#switchover = undefined;
    this.#waiting = undefined;
  }

  #setRole(to: Role, reason: string): void {
    const from = this.#role;
    if (from === to) return;
    this.#role = to;
    if (to !== "fenced") this.#fenceCause = undefined;
    if (to !== "follower") {
      this.#lagBytes = null;
      this.#followedAsReplica = false;
      this.#followedRunId = "";
    }
    this.#transitions++;
    this.#d.log.info("role changed", { from, to, reason, ...(this.#epoch !== undefined ? { epoch: this.#epoch } : {}) });
    this.#d.onRoleChange?.({ from, to, reason, leader: this.#lock?.holder ? this.#lock.value : null, epoch: this.#epoch });
    this.#d.onLockChange?.();
  }

  // ---------------------------------------------------------------- lock state

  /**
   * Still in the tenure of generation `gen`, by the lock view and by the
   * lease's own deadline: the view can be stale after a stall (its update
   * not yet delivered), the monotonic deadline cannot.
   */
  #stillLeads(gen: number): boolean {
    return gen === this.#generation && this.#holds() && (this.#lease.deadline() ?? -Infinity) > this.#d.clock.monotonic();
  }

  #holds(): boolean {
    return !!this.#lock?.holder && this.#lock.holder === this.#lease.session;
  }

  #otherHolds(): boolean {
    return !!this.#lock?.holder && this.#lock.holder !== this.#lease.session;
  }

  #setLock(pair: KVPair | null, index: number): void {
    const { clock, log } = this.#d;
    const wasMine = this.#holds();
    const value = parseValue(pair, (problem) => log.debug("the lock holds a value that is not ours to read", { problem }));
    const view: LockView = pair
      ? { holder: pair.Session || null, value, modifyIndex: pair.ModifyIndex, exists: true }
      : { holder: null, value: null, modifyIndex: index, exists: false };
    const before = this.#lock;
    this.#lock = view;
    // The last leader other than us whose Redis may have taken writes (it
    // published its address once primary): the one a takeover must fence.
    if (view.value?.address && view.value.session !== this.#lease.session) this.#lastLeader = view.value;
    // A holder that never got to promote still names the primary it was taking over from: that one still is the last.
    else if (view.value?.prevAddress && view.value.session !== this.#lease.session) this.#lastLeader = previousFrom(view.value);
    if (view.value && view.value.session !== this.#lease.session) this.#lastHolder = view.value;
    this.#recallTenure();
    // The election ranks on the last leader whoever it was, us included: a
    // leader whose own Redis restarted empty must not win on its stale claim.
    if (view.value) this.#lastValue = view.value;
    if (view.holder) {
      this.#election = undefined;
    } else if (!this.#election || (before && (before.holder || before.modifyIndex !== view.modifyIndex))) {
      this.#election = { freeSince: clock.monotonic(), last: this.#lastValue, relatedAlive: 0 };
    }
    if (wasMine && !this.#holds() && !this.#releasing) {
      // An operator destroyed our session or deleted the key (a release of
      // ours updates the view first): stop writes before anyone can start.
      const why = !view.exists ? "the lock key was deleted" : view.holder ? "another session holds the lock" : "the lock was freed";
      log.warn("lost the lock", { why, holder: view.holder, role: this.#role });
      this.#fenceNow(`lost the lock: ${why}`);
      this.#forgetLeadership();
      // Usually an operator destroyed our session: find out now, not at the next renew.
      void this.#lease.check();
    }
    if (!before || before.holder !== view.holder || before.modifyIndex !== view.modifyIndex) this.#kick();
    this.#d.onLockChange?.();
  }

  /**
   * Our own lock value, read back after a restart re-adopted the session:
   * whether our Redis was the primary (then every value we write, the release
   * included, keeps naming it, so a successor fences it), or else whom we
   * were taking over from.
   */
  #recallTenure(): void {
    const v = this.#lock?.value;
    // Only while we hold it: our own released value from an earlier tenure says nothing about now.
    if (!v || v.session !== this.#lease.session || this.#lock?.holder !== this.#lease.session) return;
    if (v.address && this.#announce && v.address === formatHostPort(this.#announce)) {
      this.#primaryReady = true;
      return;
    }
    if (this.#lastLeader || v.address || !v.prevAddress) return;
    this.#lastLeader = previousFrom(v);
  }

  #armFence(): void {
    this.#fenceTimer.cancel();
    const at = this.#lease.deadline();
    if (at === undefined || !this.#holds()) return;
    const { clock } = this.#d;
    this.#d.guarded?.lease(at - clock.monotonic());
    this.#fenceTimer.arm(() => this.#holds(), () => this.#fenceOnDeadline());
  }

  /**
   * The fencing deadline passed without a renew and a heartbeat: fence, and
   * say why at error level (the local agent unreachable since when, most
   * often), since writes now fail with NOREPLICAS, which points at the
   * replicas rather than at Consul.
   */
  #fenceOnDeadline(): void {
    const t = this.#lease.trouble;
    const reason = t ? describeLeaseTrouble(t) : "cannot renew the lease: no successful renew or heartbeat in time; writes blocked until one succeeds";
    const since = new Date(t?.since ?? this.#d.clock.now()).toISOString();
    this.#d.log.error("fencing deadline reached: cannot renew the lease, writes blocked", { reason, since, role: this.#role, ...(t ? { err: t.err } : {}) });
    this.#fenceNow(reason, since);
  }

  #onSwitchoverRequest(leader: string, to: string | undefined, index: number): void {
    if (leader !== this.#c.instanceId || !this.#holds() || this.#switchover) return;
    if (this.#paused) {
      this.#d.log.warn("ignoring a switchover request: the group is paused (consul-leader resume first)", { to: to ?? null });
      void this.#lockKey.deleteSwitchover(index);
      return;
    }
    this.#d.log.info("switchover requested", { to: to ?? null });
    this.#switchover = { ...(to ? { to } : {}), index };
    this.#kick();
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

  // ---------------------------------------------------------------- identity

  /** Another process owns our identity now: stop writes and stop, touching nothing in Consul. */
  #superseded(e: LeaderError): void {
    this.#d.log.error("this sidecar's identity belongs to another process now; stopping without touching the lock", { err: e });
    this.#fenceTimer.cancel();
    this.#fenceNow("another process took over this identity");
    this.#fatal = e;
    this.#kick();
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
      await step("removing the member entry", () => this.#membership.remove());
      await step("destroying the session", () => consul.sessionDestroy(sid));
      this.#lease.forget();
    }
  }

  /**
   * Gives the lock up on purpose: fence our Redis and have it confirm, then
   * release naming a successor (the most caught-up eligible replica, or the
   * requested one) and the offset our Redis had right after the fence. The
   * successor catches up to that offset before promoting, so no acknowledged
   * write is lost. (Redis FAILOVER would do the same but waits for the
   * replica's once-a-second ACK: 580-750 ms of paused writes under load,
   * measured here, against ~50 ms this way.)
   *
   * When Redis does not confirm the fence within HANDOVER_TIMEOUT (busy,
   * frozen) or refuses it (ACLs): a switchover or maintenance is aborted and
   * this sidecar stays leader (the fence may still land later; the loop then
   * lifts it); a shutdown queues the fence and releases marked "redis-down",
   * so the successor waits for that Redis to run a fence before promoting.
   */
  async #handOver(reason: string, to: string | undefined, released: NonNullable<LockValue["released"]>): Promise<void> {
    const { log, redis, guarded } = this.#d;
    let target: { instance: string } | undefined;
    let fencedOffset: number | undefined;
    if (redis) {
      await redis.poll();
      // The successor is chosen (a read) while the fence runs: neither waits for the other.
      const choosing = pickSuccessor(this.#d.consul, this.#c.key, this.#c.instanceId, redis.replicas(), to).catch((err: unknown) => {
        log.warn("could not choose a successor", { err });
        return undefined;
      });
      try {
        fencedOffset = await redis.fenceConfirmed(this.#c.redis!.handoverTimeoutMs);
        target = await choosing;
        if (to && !target) log.warn("the requested successor is not an eligible member with a live session", { to });
      } catch (err) {
        if (released !== "shutdown") {
          log.error("handover aborted: Redis did not confirm the fence; still leading", { reason, err });
          return;
        }
        log.error("Redis did not confirm the fence while shutting down; releasing so that the successor waits for it", { err });
        this.#generation++;
        await this.#fenceWork(reason, true);
        await this.#releaseLock({ ...this.#value(), released: "redis-down", why: whyText(`${reason}; its Redis did not confirm the fence`) });
        this.#setRole("candidate", reason);
        return;
      }
      this.#generation++;
      if (guarded) await guarded.stop();
      log.info("fenced", { reason, offset: fencedOffset });
    } else {
      target = await pickSuccessor(this.#d.consul, this.#c.key, this.#c.instanceId, undefined, to).catch(() => undefined);
      this.#generation++;
      if (guarded) await guarded.stop();
    }
    const handoverTo = target?.instance;
    const value: LockValue = {
      ...this.#value(),
      ...(handoverTo ? { handoverTo } : {}),
      ...(fencedOffset !== undefined ? { fencedOffset } : {}),
      released: handoverTo ? "handover" : released,
      why: whyText(reason),
    };
    if (await this.#releaseLock(value)) log.info("released the lock", { reason, handoverTo: handoverTo ?? null, fencedOffset: fencedOffset ?? null });
    this.#setRole("candidate", reason);
    if (this.#ready && !this.#signal.aborted) await this.#syncTags(false, false, reason);
  }
}

/** Re-exported for callers that watch the lock key themselves. */
export { WATCH_WAIT_MS };

/** A release's reason as the lock value carries it: within the schema's string limit. */
function whyText(reason: string): string {
  return reason.length > 500 ? `${reason.slice(0, 497)}...` : reason;
}

/** The previous primary's fields for our lock value while we take over from it (see LockValue.prevAddress). */
function previousOf(prev: LockValue | null, self: string): Partial<LockValue> {
  if (!prev?.address || prev.instance === self) return {};
  return {
    prevAddress: prev.address,
    prevInstance: prev.instance,
    ...(prev.released ? { prevReleased: prev.released } : {}),
    ...(prev.fencedOffset !== undefined ? { prevFencedOffset: prev.fencedOffset } : {}),
  };
}

/** The previous primary a holder was taking over from, as a lock value of its own (see LockValue.prevAddress). */
function previousFrom(v: LockValue): LockValue {
  return {
    session: "",
    instance: v.prevInstance ?? "",
    service: "",
    ...(v.prevAddress ? { address: v.prevAddress } : {}),
    ...(v.prevReleased ? { released: v.prevReleased } : {}),
    ...(v.prevFencedOffset !== undefined ? { fencedOffset: v.prevFencedOffset } : {}),
  };
}
