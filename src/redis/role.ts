/**
 * This sidecar's Redis over time: polls its replication state, decides when it
 * counts as down, and carries out the multi-step role changes the elector asks
 * for (take over from a previous primary, follow, park, hand over).
 *
 * Guarantees:
 * - `takeover` fences a reachable previous primary and lets this replica catch
 *   up to it before promoting, so a leader whose sidecar died (its Redis still
 *   writable) is never writable at the same time as the new one.
 * - after a planned handover (the old primary fenced itself first) the same
 *   catch-up means no acknowledged write is lost.
 * Does not guarantee a previous primary that cannot be reached is fenced; the
 * elector's timing model covers that case (README, "One writer").
 */

import type { Clock } from "../clock.ts";
import type { RedisConfig } from "../config/config.ts";
import type { LockValue, PreviousPrimary, RedisView } from "../election/types.ts";
import { describeError, isRedisError, LeaderError } from "../errors.ts";
import type { Logger } from "../log.ts";
import { formatHostPort, type HostPort, parseHostPort } from "../host-port.ts";
import { PARK_HOST, PARK_PORT, type RedisNode, type RedisSnapshot } from "./node.ts";
import { checkPermissions, type PermissionReport, permissionProblem } from "./permissions.ts";

export interface RedisRoleDeps {
  node: RedisNode;
  /** Opens a connection to another member's Redis (same credentials). */
  connect: (addr: HostPort) => RedisNode;
  clock: Clock;
  log: Logger;
  /** Something the elector decides on changed outside a poll (a queued fence came back). */
  onChange?: () => void;
}

/** How often a catching-up replica's offset is read: the bytes arrive within a millisecond or two of the fence, and a read of a local Redis costs a fraction of one. */
export const CATCH_UP_POLL_MS = 2;

export class RedisRole {
  readonly #cfg: RedisConfig;
  readonly #d: RedisRoleDeps;
  #snap: RedisSnapshot | undefined;
  #lastOkAt: number | undefined;
  #failure: { code: string; since: number; message: string } | undefined;
  #linkDownSince: number | undefined;
  #lastAuthMessage: string | undefined;
  /** The queued fence (see queueFence) while its replies are outstanding. */
  #queued: Promise<void> | undefined;
  /**
   * Previous primaries that did not answer, by address: in which take-over
   * (`attempt`), since when, and how their queued fence ended. Only the
   * take-over that queued a fence may act on its result: by the next one the
   * same address may be a primary again.
   */
  readonly #silent = new Map<string, { attempt: number; since: number; accepted: boolean; result?: PreviousPrimary }>();
  /** The Redis user's permissions (permissions.ts): checked once, the first time Redis answers. */
  #permissions: "unchecked" | "ok" | LeaderError = "unchecked";

  constructor(cfg: RedisConfig, deps: RedisRoleDeps) {
    this.#cfg = cfg;
    this.#d = deps;
  }

  get snapshot(): RedisSnapshot | undefined {
    return this.#snap;
  }

  get lastError(): string | undefined {
    return this.#failure?.message;
  }

  get lastErrorCode(): string | undefined {
    return this.#failure?.code;
  }

  get node(): RedisNode {
    return this.#d.node;
  }

  /** REDIS_PERMISSIONS when the Redis user may not run a command a failover needs: the sidecar stops (exit 78). */
  get permissionProblem(): LeaderError | undefined {
    return this.#permissions instanceof LeaderError ? this.#permissions : undefined;
  }

  /** Checks the user's permissions once Redis answers; a Redis that stops answering midway is asked again at the next poll. */
  async #checkPermissions(): Promise<void> {
    const { node, log } = this.#d;
    const where = formatHostPort(node.addr);
    let r: PermissionReport;
    try {
      r = await checkPermissions(node.link);
    } catch (err) {
      log.debug("could not check the Redis user's permissions yet", { addr: where, err });
      return;
    }
    if (r.missing.length === 0) {
      this.#permissions = "ok";
      log.info("redis user may run every command a failover needs", { addr: where, user: r.user, method: r.method });
      return;
    }
    this.#permissions = new LeaderError("REDIS_PERMISSIONS", permissionProblem(r, where));
    log.error("redis user lacks permissions", { addr: where, user: r.user, missing: r.missing.map((n) => n.acl), method: r.method });
  }

  /** Reads Redis now and records the result; never throws. Returns true when something the elector cares about changed. */
  async poll(): Promise<boolean> {
    const { clock, log, node } = this.#d;
    const before = this.#fingerprint();
    try {
      // A connection Redis dropped (a CLIENT KILL) says nothing about Redis: ask again on a new one.
      const snap = await node.snapshot().catch((err: unknown) => {
        if (isRedisError(err) && err.code === "REDIS_DROPPED") return node.snapshot();
        throw err;
      });
      const now = clock.monotonic();
      if (this.#failure) log.info("redis answers again", { addr: formatHostPort(node.addr), after: this.#failure.code });
      if (this.#permissions === "unchecked") await this.#checkPermissions();
      this.#snap = snap;
      this.#lastOkAt = now;
      this.#failure = undefined;
      this.#lastAuthMessage = undefined;
      if (snap.role === "replica" && !snap.linkUp) this.#linkDownSince ??= now;
      else this.#linkDownSince = undefined;
    } catch (err) {
      const code = isRedisError(err) ? err.code : "REDIS_COMMAND";
      const message = describeError(err);
      if (code === "REDIS_LOADING") {
        // Alive but refusing even the handshake until its dataset is loaded.
        this.#lastOkAt = this.#d.clock.monotonic();
        this.#failure = undefined;
        this.#snap = { ...(this.#snap ?? emptySnapshot()), loading: true };
        return before !== this.#fingerprint();
      }
      if (!this.#failure || this.#failure.code !== code) {
        this.#failure = { code, since: this.#d.clock.monotonic(), message };
        if (code === "REDIS_AUTH") {
          if (this.#lastAuthMessage !== message) log.error("redis refused the credentials", { err });
          this.#lastAuthMessage = message;
        } else {
          log.warn("redis does not answer", { addr: formatHostPort(node.addr), err });
        }
      }
    }
    return before !== this.#fingerprint();
  }

  /**
   * The decision's view of Redis. `leaderAlive`: someone else holds the lock,
   * so a long-down link means this replica is stale rather than orphaned.
   */
  view(now: number, leaderAlive: boolean): RedisView {
    const s = this.#snap;
    const f = this.#failure;
    // Not up until the user's permissions are known good: nothing acts on a Redis it may not be able to fence.
    const up = !!s && this.#lastOkAt !== undefined && !this.#queued && this.#permissions === "ok" &&
      (!f || (f.code === "REDIS_TIMEOUT" && now - this.#lastOkAt < this.#cfg.downAfterMs));
    const linkDownMs = this.#linkDownSince === undefined ? 0 : now - this.#linkDownSince;
    return {
      up,
      role: s?.role ?? "replica",
      loading: !!s?.loading,
      syncing: !!s?.syncing,
      linkUp: !!s?.linkUp,
      masterAddr: s?.masterHost ? formatHostPort({ host: s.masterHost, port: s.masterPort ?? 0 }) : null,
      offset: s?.offset ?? 0,
      replid: s?.replid ?? "",
      replid2: s?.replid2 ?? "",
      runId: s?.runId ?? "",
      writable: !!s && s.role === "master" && !s.fenced && !s.loading,
      stale: leaderAlive && s?.role === "replica" && linkDownMs > this.#cfg.maxLinkDownMs,
    };
  }

  /**
   * Fences our Redis (see node.ts) and records it. When Redis does not
   * answer, queues the fence instead (see queueFence) and still rejects.
   */
  async fence(): Promise<void> {
    try {
      await this.#d.node.fence();
    } catch (err) {
      if (isRedisError(err) && (err.code === "REDIS_TIMEOUT" || err.code === "REDIS_UNREACHABLE" || err.code === "REDIS_DROPPED")) this.queueFence();
      throw err;
    }
    if (this.#snap) this.#snap = { ...this.#snap, fenced: true };
  }

  /**
   * Queues the fence for a Redis that does not answer (RedisNode.queueFence):
   * a frozen Redis runs it the moment it resumes, before it serves clients
   * that connect afterwards. Until its replies arrive, or its connection
   * fails, the view reports Redis down, so this node neither leads nor
   * competes with a Redis whose fence has not run. Returns at once; one
   * queued fence at a time.
   */
  queueFence(): void {
    if (this.#queued) return;
    const { node, log } = this.#d;
    const addr = formatHostPort(node.addr);
    log.info("fence queued for a Redis that does not answer", { addr });
    this.#queued = node.queueFence().then((r) => {
      if (r.outcome === "fenced") {
        log.info("queued fence ran", { addr });
        if (this.#snap) this.#snap = { ...this.#snap, fenced: true };
      } else if (r.outcome === "refused") {
        log.warn("queued fence refused", { addr, reply: r.detail });
      } else {
        log.info("queued fence dropped: the connection closed before Redis answered", { addr });
      }
    }).finally(() => {
      this.#queued = undefined;
    });
  }

  /** True while a queued fence waits for Redis. */
  get fenceQueued(): boolean {
    return this.#queued !== undefined;
  }

  /**
   * What the previous primary `prev` looks like now, from a fresh connection:
   * fenced by us when it answers as a writable master (its offset read right
   * after), or why it needs no fence, or that it is gone, silent or refusing.
   * A silent one gets a queued fence (RedisNode.queueFence), and is reported
   * "fenced" once that fence's replies arrive. `allowed()` is asked right
   * before any fence is sent: a process that lost the lock meanwhile must not
   * fence the primary that replaced it. Throws LEASE_UNPROVEN when it says no;
   * nothing else. `attempt` names this take-over (when the lock was acquired).
   */
  async assessPrevious(prev: LockValue | null, self: HostPort, allowed: () => boolean, attempt: number): Promise<PreviousPrimary> {
    const addr = prev?.address ? parseHostPort(prev.address) : undefined;
    if (!addr || formatHostPort(addr) === formatHostPort(self)) return { kind: "none" };
    const key = formatHostPort(addr);
    const { clock, connect, log } = this.#d;
    let silent = this.#silent.get(key);
    if (silent && silent.attempt !== attempt) {
      this.#silent.delete(key);
      silent = undefined;
    }
    if (silent?.result) {
      this.#silent.delete(key);
      return silent.result;
    }
    const remote = connect(addr);
    try {
      const theirs = await remote.snapshot();
      this.#silent.delete(key);
      if (theirs.loading) return { kind: "not-writable", offset: theirs.offset, replid: theirs.replid, why: "loading" };
      if (theirs.role === "replica") return { kind: "not-writable", offset: theirs.offset, replid: theirs.replid, why: "replica" };
      if (theirs.fenced) return { kind: "not-writable", offset: theirs.offset, replid: theirs.replid, why: "fenced" };
      mustBeAllowed(allowed, "fencing the previous primary");
      const { offset, replid } = await remote.fence();
      log.info("fenced the previous primary", { previous: key, offset });
      return { kind: "fenced", offset, replid };
    } catch (err) {
      if (err instanceof LeaderError && err.code === "LEASE_UNPROVEN") throw err;
      const code = isRedisError(err) ? err.code : "REDIS_COMMAND";
      const detail = describeError(err);
      if (code === "REDIS_LOADING") return { kind: "not-writable", offset: 0, replid: "", why: "loading" };
      if (code === "REDIS_UNREACHABLE") {
        this.#silent.delete(key);
        return { kind: "dead", detail };
      }
      if (code === "REDIS_TIMEOUT" || code === "REDIS_DROPPED") {
        const now = clock.monotonic();
        if (!this.#silent.has(key)) {
          mustBeAllowed(allowed, "queueing a fence for the previous primary");
          const entry: { attempt: number; since: number; accepted: boolean; result?: PreviousPrimary } = { attempt, since: now, accepted: false };
          this.#silent.set(key, entry);
          log.info("the previous primary does not answer; queued a fence for it", { previous: key });
          void connect(addr).queueFence(() => {
            entry.accepted = true;
            this.#d.onChange?.();
          }).then((r) => {
            if (r.outcome === "fenced") entry.result = { kind: "fenced", offset: r.offset ?? 0, replid: r.replid ?? "" };
            else if (r.outcome === "refused") entry.result = { kind: "refused", detail: r.detail ?? "an error reply" };
            // "unreachable": the next probe finds out whether it is gone or still silent.
            this.#d.onChange?.();
          });
        }
        const entry = this.#silent.get(key)!;
        return { kind: "silent", detail, since: entry.since, accepted: entry.accepted };
      }
      return { kind: "refused", detail };
    } finally {
      remote.link.close();
    }
  }

  /**
   * Waits until our replication offset reaches `target`, polling every
   * CATCH_UP_POLL_MS, for at most `timeoutMs`. Returns the offset reached.
   * `from`: the fenced previous primary. When our Redis does not replicate
   * from it (it was parked while that primary did not answer) but carries
   * the same history (`replid`), it is pointed back at it first, so the
   * writes that primary acknowledged before its fence reach us.
   */
  async catchUp(target: number, timeoutMs: number, signal: AbortSignal, from?: { addr: HostPort; replid: string }): Promise<number> {
    const { node, clock, log } = this.#d;
    const deadline = clock.monotonic() + timeoutMs;
    const s = await node.snapshot();
    let mine = s.offset;
    if (mine < target && from && s.role === "replica" && s.replid === from.replid && (s.masterHost !== from.addr.host || s.masterPort !== from.addr.port)) {
      log.info("replicating from the fenced previous primary to catch up before promoting", { previous: formatHostPort(from.addr), missingBytes: target - mine });
      await node.follow(from.addr, false);
    }
    while (mine < target && clock.monotonic() < deadline && !signal.aborted) {
      await clock.sleep(CATCH_UP_POLL_MS, signal).catch(() => {});
      mine = (await node.snapshot()).offset;
    }
    return mine;
  }

  /**
   * REPLICAOF NO ONE, then lift the fence, each only while `allowed()` (the
   * lease proven for longer than the command may take). Throws a
   * LeaderError LEASE_UNPROVEN when it says no before a command.
   */
  async promote(allowed: () => boolean): Promise<void> {
    const { node } = this.#d;
    const snap = await node.snapshot();
    if (snap.role !== "master") {
      mustBeAllowed(allowed, "REPLICAOF NO ONE");
      await node.link.cmd("REPLICAOF", ["NO", "ONE"]);
    }
    mustBeAllowed(allowed, "lifting the fence");
    await node.unfence();
    this.#snap = await node.snapshot();
  }

  /** Points the previous primary at us once we lead (best effort: it may be gone). */
  async demotePrevious(prev: HostPort, self: HostPort): Promise<void> {
    const remote = this.#d.connect(prev);
    try {
      await remote.follow(self, true);
    } catch (err) {
      this.#d.log.warn("could not point the previous primary at us", { previous: formatHostPort(prev), err });
    } finally {
      remote.link.close();
    }
  }

  /**
   * Fences our own Redis and returns its offset right after (RedisNode.fence),
   * waiting up to `timeoutMs` for each reply. Throws when Redis does not
   * confirm: a timeout (REDIS_TIMEOUT, busy or frozen) or an error reply.
   */
  async fenceConfirmed(timeoutMs: number): Promise<number> {
    const { offset } = await this.#d.node.fence(timeoutMs);
    if (this.#snap) this.#snap = { ...this.#snap, fenced: true };
    return offset;
  }

  /** Replicates from `leader` unless already doing so. Returns true when it changed something. */
  async follow(leader: HostPort): Promise<boolean> {
    const s = this.#snap ?? await this.#d.node.snapshot();
    const following = s.role === "replica" && s.masterHost === leader.host && s.masterPort === leader.port;
    if (following) return false;
    await this.#d.node.follow(leader, s.role === "master");
    this.#snap = await this.#d.node.snapshot();
    return true;
  }

  /** Detaches a replica from a leader whose Redis died, so a restarted-empty Redis there cannot wipe it. */
  async park(): Promise<boolean> {
    const s = this.#snap;
    if (!s || s.role !== "replica" || (s.masterHost === PARK_HOST && s.masterPort === PARK_PORT)) return false;
    await this.#d.node.park();
    this.#snap = await this.#d.node.snapshot();
    return true;
  }

  /**
   * Detaches our Redis whatever its role (REPLICAOF 127.0.0.1 1): a replica of
   * nowhere keeps its data, takes no writes, and refuses to serve a sync, so
   * an emptied Redis cannot wipe the replicas that connect to it.
   */
  async detach(): Promise<void> {
    const wasMaster = (this.#snap ?? await this.#d.node.snapshot()).role === "master";
    await this.#d.node.park();
    if (wasMaster) await this.#d.node.killClients();
    this.#snap = await this.#d.node.snapshot();
  }

  /** The leader's replication offset, for our lag; undefined when it does not answer. */
  async leaderOffset(leader: HostPort): Promise<number | undefined> {
    const remote = this.#d.connect(leader);
    try {
      return (await remote.snapshot()).offset;
    } catch {
      return undefined;
    } finally {
      remote.link.close();
    }
  }

  /** Online replicas of our Redis as host:port with their offsets, best first. */
  replicas(): { addr: string; offset: number }[] {
    return (this.#snap?.replicas ?? [])
      .filter((r) => r.state === "online")
      .sort((a, b) => b.offset - a.offset)
      .map((r) => ({ addr: formatHostPort({ host: r.host, port: r.port }), offset: r.offset }));
  }

  #fingerprint(): string {
    const s = this.#snap;
    return [this.#failure?.code ?? "ok", !!this.#queued, s?.role, s?.loading, s?.syncing, s?.linkUp, s?.masterHost, s?.masterPort, s?.fenced, s?.replid].join("|");
  }
}

/** What we know of a Redis that is loading before it has answered once: not writable, not ready. */
function emptySnapshot(): RedisSnapshot {
  return {
    role: "master", runId: "", loading: true, masterHost: null, masterPort: null, linkUp: false, linkDownSeconds: 0,
    syncing: false, offset: 0, replid: "", replid2: "", failoverState: "no-failover", replicas: [], fenced: true,
  };
}

function mustBeAllowed(allowed: () => boolean, what: string): void {
  if (!allowed()) throw new LeaderError("LEASE_UNPROVEN", `not ${what}: the lease is no longer proven to outlive it`);
}
