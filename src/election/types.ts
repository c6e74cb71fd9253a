/**
 * The election's vocabulary, shared by the decision, the loop, the Consul and
 * Redis layers and the status server: what the lock holder publishes, what a
 * sidecar observes, the decisions it can take, and the role changes it
 * announces. Plain data only.
 */

import type { SerializedError } from "../errors.ts";

/**
 * Why a holder released the lock. "redis-down" and "redis-restarted" (its
 * Redis came back with a new run id, maybe empty) make its replicas detach
 * from it, so they cannot full-sync from an emptied primary; "yield": its
 * Redis lacks the history the previous primary holds, so it hands the lock
 * back rather than promote and wipe the group.
 */
export type ReleaseReason = "redis-down" | "redis-restarted" | "handover" | "maintenance" | "shutdown" | "priority" | "yield";

/** What the lock holder publishes in the lock key's value (JSON). */
export interface LockValue {
  session: string;
  /** The holder's instance ID (Nomad alloc ID or standalone service ID). */
  instance: string;
  /** The Consul service the holder tags primary. */
  service: string;
  /** Redis announce address, host:port, when Redis is managed. */
  address?: string;
  /** Fencing token: the key's ModifyIndex when this holder acquired it; grows across holders. */
  epoch?: number;
  /** The holder's Redis replication ID: candidates with this history have its data. */
  replid?: string;
  /**
   * The holder's Redis run_id when it took the lock, kept for its whole
   * tenure: a different one later means that Redis restarted under the lock.
   */
  runId?: string;
  /** Set by a leader handing over: the instance that should take the lock next. */
  handoverTo?: string;
  /**
   * Set by a leader that released after its own Redis confirmed the fence:
   * that Redis's replication offset right after the fence. Every write it
   * acknowledged is at or below it, so a successor that has caught up to it
   * loses nothing, whether or not the old primary still answers.
   */
  fencedOffset?: number;
  /** The process (one run of the sidecar) that wrote this value; see members.ts on identity. */
  incarnation?: string;
  /**
   * While the holder takes over (its Redis not yet primary, so no `address`):
   * the previous primary it must fence or wait for, with that one's release
   * marker and fenced offset. A restarted holder that re-adopts the session
   * reads them back instead of promoting over a primary it forgot.
   */
  prevAddress?: string;
  prevInstance?: string;
  prevReleased?: ReleaseReason;
  prevFencedOffset?: number;
  /**
   * Why the last holder released the lock. "redis-down" and "redis-restarted"
   * (its Redis came back with a new run id, maybe empty) make its replicas
   * detach from it, so they cannot full-sync from an emptied primary.
   */
  released?: ReleaseReason;
  /** Wall time of acquisition, for people. */
  since?: string;
  /** Set on a release: why this holder gave the lock up, in one sentence (the failover history shows it). */
  why?: string;
}

export interface LockView {
  /** Session holding the lock; null when the key is free or absent. */
  holder: string | null;
  /** Parsed value; null when absent or not ours to parse. */
  value: LockValue | null;
  modifyIndex: number;
  exists: boolean;
}

/** What this sidecar's Redis looks like, from its last poll. */
export interface RedisView {
  /** Answered recently enough (see redis/role.ts for the down-after rule). */
  up: boolean;
  role: "master" | "replica";
  loading: boolean;
  syncing: boolean;
  /** Replica with its link to the master up. */
  linkUp: boolean;
  /** host:port this replica follows; null for a master. */
  masterAddr: string | null;
  offset: number;
  replid: string;
  replid2: string;
  /** Redis's run_id: a new one means the process restarted (and may have lost data). */
  runId: string;
  /** A master that accepts writes: not fenced by us, not loading. */
  writable: boolean;
  /** Link down longer than CONSUL_LEADER_MAX_LINK_DOWN while a leader held the lock. */
  stale: boolean;
}

/** One candidate's published state during an election round. */
export interface Candidate {
  instance: string;
  offset: number;
  replid: string;
  replid2: string;
  priority: number;
  eligible: boolean;
}

export interface Election {
  /** Monotonic time the lock was first seen free this round. */
  freeSince: number;
  /** When we published our candidacy this round; undefined until then. */
  announcedAt?: number;
  /** Candidates read after the gather window (ours included); undefined until read. */
  rivals?: Candidate[];
  /** Other members whose Redis shares the last leader's history and whose session is live. */
  relatedAlive: number;
  /** The last leader's value, kept from before the lock was freed. */
  last: LockValue | null;
}

export type Role = "starting" | "leader" | "follower" | "candidate" | "fenced";

export interface Observation {
  /** Monotonic now. */
  now: number;
  instance: string;
  priority: number;
  sessionId: string | null;
  /** Last good read of the lock; undefined before the first. */
  lock: LockView | undefined;
  /** Monotonic time by which a leader must have fenced; undefined without a lease. */
  fenceAt: number | undefined;
  role: Role;
  /** undefined in tags-only mode (no CONSUL_LEADER_REDIS_ADDR). */
  redis: RedisView | undefined;
  maintenance: boolean;
  /** An operator asked the leader to hand over (`consul-leader switchover`, POST /switchover). */
  switchover: boolean;
  /**
   * The group is paused (`consul-leader pause`, Patroni's pause): no
   * failover, no switchover; the leader keeps leading. Safety still wins
   * (see decide.ts).
   */
  paused: boolean;
  election: Election | undefined;
  timing: { gatherMs: number; electionWaitMs: number; staggerMs: number };
}

export type Decision =
  /** Stop our Redis from accepting writes now; drop the primary tag. */
  | { kind: "fence"; reason: string }
  | { kind: "new-session"; reason: string }
  /** Hold the lock, make Redis a writable primary, tag primary. */
  | { kind: "lead"; reason: string }
  /**
   * Give the lock up (release, no lock-delay) and stop accepting writes.
   * `lostData`: our Redis restarted or lost the data we led with; detach it
   * (REPLICAOF 127.0.0.1 1) so no replica full-syncs from it.
   */
  | { kind: "release"; reason: string; lostData?: true }
  /** Fence, then release naming the best replica as successor; then follow it. */
  | { kind: "handover"; reason: string }
  /** Replicate from the holder and tag replica. */
  | { kind: "follow"; leader: LockValue | null; reason: string }
  /** Lock free: publish our replication state as a candidate. */
  | { kind: "announce"; reason: string }
  /** Lock free: let a better candidate go first, until `until` (monotonic). */
  | { kind: "defer"; until: number; reason: string }
  | { kind: "acquire"; reason: string }
  /** Nothing useful to do now; keep Redis safe and look again. */
  | { kind: "wait"; reason: string };

export type DecisionKind = Decision["kind"];

export interface RoleChange {
  from: Role;
  to: Role;
  reason: string;
  /** The lock holder's published value, when known. */
  leader: LockValue | null;
  epoch: number | undefined;
}

export interface ElectorState {
  role: Role;
  instance: string;
  service: string | undefined;
  session: string | null;
  lock: { holder: string | null; instance: string | null; address: string | null; epoch: number | null; modifyIndex: number } | null;
  epoch: number | null;
  /** Monotonic ms left before the fencing deadline; null without a lease. */
  fenceInMs: number | null;
  decision: { kind: string; reason: string; ageMs: number } | null;
  redis: (RedisView & { error?: string }) | null;
  consul: { ok: boolean; error: SerializedError | null };
  transitions: number;
  lastRenewMs: number | null;
  announce: string | null;
  /** Monotonic ms since the loop last finished a tick; a stuck loop grows it. */
  loopAgeMs: number;
  /** Wall time of the fencing deadline, ISO 8601; null without a lease. */
  fenceAt: string | null;
  /** The last decisions that changed, newest last (at most RECENT_DECISIONS). */
  recent: { time: string; kind: string; reason: string }[];
  /** Bytes this replica is behind the leader, as of the last follow tick; null when unknown or not a replica. */
  lagBytes: number | null;
  maintenance: boolean;
  /** Why a takeover waits before promoting (takeover.ts), while it does. */
  waiting: string | null;
  /** A switchover was asked of this leader and has not been carried out yet. */
  switchoverPending: boolean;
  /** This run of the process (identity.ts). */
  incarnation: string;
  /** While the role is "fenced": why writes are blocked, and since when (ISO 8601). */
  fenced: { reason: string; since: string } | null;
  /** Since when renews or heartbeats have failed without a success (ISO 8601); null while they work. */
  leaseFailingSince: string | null;
  /** The group's pause flag (`consul-leader pause`): since when, by whom, why; null when not paused. */
  paused: { since: string; by?: string; reason?: string } | null;
}


/**
 * Work that may run only while this sidecar leads and must be gone before
 * another holder could start (exec mode's command). The elector tells it how
 * long the lease is proven for, and stops it before giving the lock up.
 */
export interface GuardedWork {
  /** Leading is proven for `msLeft` more ms: the work must be dead by then unless told again. */
  lease(msLeft: number): void;
  /** Stop now; resolves once the work is gone. */
  stop(): Promise<void>;
}

/**
 * What a new leader learned about the previous primary's Redis before
 * promoting its own (redis/role.ts finds out; takeover.ts judges).
 * An error reply and silence are different outcomes, and neither is "dead".
 */
export type PreviousPrimary =
  /** Nobody to take over from: no previous leader, or it was us, or it published no address. */
  | { kind: "none" }
  /** It answered and does not take writes: a replica, loading, or already fenced. `offset`, `replid`: its replication state. */
  | { kind: "not-writable"; offset: number; replid: string; why: "replica" | "loading" | "fenced" }
  /** It answered as a writable master and confirmed the fence we sent; `offset` read right after. */
  | { kind: "fenced"; offset: number; replid: string }
  /** Its port refused the connection, or the connection was reset: no Redis runs there. */
  | { kind: "dead"; detail: string }
  /**
   * It did not answer in time; a fence is queued for it. `accepted`: the
   * queued fence's TCP connection was accepted, so its host is up and the
   * process is stuck (frozen, busy); false while nothing accepted it (the
   * host is down or cut off, or not yet known).
   */
  | { kind: "silent"; detail: string; since: number; accepted: boolean }
  /** It answered with an error (NOPERM, WRONGPASS, max clients, ...): reachable, and not fenced. */
  | { kind: "refused"; detail: string };
