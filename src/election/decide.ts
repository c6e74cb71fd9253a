/**
 * The election decision: one observation in, one decision and the sentence
 * that explains it out. Pure and synchronous; the elector observes, calls
 * `decide`, applies, logs the reason when it changes, and shows it in /state.
 *
 * The rules are a flat list of guarded returns, checked in order of safety
 * (Patroni's HA loop is the model): first the fencing deadline, then whether we
 * have a session and a view of the lock, then "I hold the lock", "someone else
 * does", "nobody does".
 *
 * Guarantees: never returns "lead" unless the observed lock holder is our
 * session and the fencing deadline has not passed; never leaves a writable
 * Redis master in place without the lock ("fence" or "follow" come first).
 * While the group is paused, never returns "acquire" or "handover", and a
 * holder does not give the lock up for its Redis being down or loading, for
 * maintenance or for priority 0: the primary stays where it is. Safety is
 * not paused: the fencing deadline, a lost lock, a writable master without
 * the lock, and a Redis that restarted under the lock (it may be empty:
 * released so that its replicas detach) all act as usual.
 * Does not guarantee the observation is current: the elector must feed it
 * reads that are fresh enough, and the fencing timer covers the time between.
 */

import type { Candidate, Decision, LockValue, Observation, RedisView } from "./types.ts";

/** See the module comment. */
export function decide(o: Observation): Decision {
  const redis = o.redis;
  const lock = o.lock;
  const holds = !!lock && lock.holder !== null && lock.holder === o.sessionId;
  const pastDeadline = o.fenceAt !== undefined && o.now >= o.fenceAt;

  if (o.role === "leader" && pastDeadline) {
    return {
      kind: "fence",
      reason: "no successful renew or heartbeat in time; fencing before another node could take the lock",
    };
  }
  if (holds && pastDeadline) {
    if (redis?.up && redis.writable) {
      return { kind: "fence", reason: "past the fencing deadline and Redis still takes writes (the last fence failed); fencing again" };
    }
    return { kind: "wait", reason: "fenced: the session may have lapsed; waiting for Consul to confirm it" };
  }

  if (holds) {
    if (o.paused && redis && (!redis.up || redis.loading)) {
      return { kind: "wait", reason: `holding the lock; Redis is ${redis.up ? "loading its dataset" : "down"} but the group is paused: no failover, waiting for it` };
    }
    if (redis && !redis.up) return { kind: "release", reason: "holding the lock but Redis is down; releasing so a healthy replica takes over" };
    if (redis?.loading) return { kind: "release", reason: "holding the lock but Redis is loading its dataset; releasing" };
    // Also after a sidecar restart that re-adopted the session: the run id
    // published with the lock is the Redis this node took the lock with.
    const tookWith = lock?.value?.session === o.sessionId ? lock.value.runId : undefined;
    if (redis && tookWith && redis.runId && redis.runId !== tookWith) {
      return {
        kind: "release",
        lostData: true,
        reason: `holding the lock but Redis restarted (run id ${short(redis.runId)}, took the lock with ${short(tookWith)}) and may have lost writes; releasing so a replica with the data takes over`,
      };
    }
    if (!o.paused) {
      if (o.maintenance) return { kind: "handover", reason: "in maintenance; handing the lock over" };
      if (o.switchover) return { kind: "handover", reason: "a switchover was requested; handing the lock over" };
      if (o.priority === 0) return { kind: "release", reason: "CONSUL_LEADER_PRIORITY is 0, which never leads; releasing" };
    }
    if (redis && redis.role !== "master") return { kind: "lead", reason: "holding the lock and Redis is a replica; promoting" };
    if (redis && !redis.writable) return { kind: "lead", reason: "holding the lock and Redis is fenced; lifting the fence" };
    return { kind: "lead", reason: "holding the lock" };
  }

  // From here on we do not hold the lock: a writable master is never acceptable.
  const holderValue = lock?.holder ? lock.value : null;
  if (o.role === "leader" && !holds) {
    // Step down before competing again, so two nodes never claim the role at once.
    const v = holderValue;
    if (redis && v?.address) return { kind: "follow", leader: v, reason: `lost the lock to ${v.instance}; demoting to its replica` };
    return { kind: "fence", reason: `lost the lock (now held by ${lock?.holder ? v?.instance ?? "another session" : "nobody"}); stepping down before anything else` };
  }
  if (redis?.up && redis.writable) {
    if (holderValue?.address) {
      return {
        kind: "follow",
        leader: holderValue,
        reason: `Redis is a writable master but ${holderValue.instance} holds the lock (a Redis restarted without replicaof boots as one); demoting it to ${holderValue.instance}'s replica`,
      };
    }
    return { kind: "fence", reason: "Redis is a writable master but this sidecar does not hold the lock; blocking writes" };
  }

  if (!o.sessionId) return { kind: "new-session", reason: "no Consul session; creating one" };
  if (!lock) return { kind: "wait", reason: "waiting for the first read of the lock" };

  if (lock.holder) {
    const who = lock.value?.instance ?? `session ${lock.holder}`;
    if (redis && !lock.value?.address) {
      return { kind: "follow", leader: lock.value, reason: `${who} holds the lock but has not published its Redis address yet` };
    }
    return { kind: "follow", leader: lock.value, reason: `${who} holds the lock` };
  }

  // The lock is free.
  if (o.paused) return { kind: "wait", reason: "the lock is free but the group is paused: nobody takes it until consul-leader resume" };
  const ineligible = whyIneligible(o);
  if (ineligible) return { kind: "wait", reason: `the lock is free but this node cannot lead: ${ineligible}` };
  const el = o.election;
  const successor = el?.last?.handoverTo;
  if (successor === o.instance) return { kind: "acquire", reason: "the previous leader handed over to this node" };
  if (el && successor && o.now < el.freeSince + o.timing.electionWaitMs) {
    return { kind: "defer", until: el.freeSince + o.timing.electionWaitMs, reason: `the previous leader handed over to ${successor}` };
  }
  if (!redis) return { kind: "acquire", reason: "the lock is free" };
  if (!el) return { kind: "wait", reason: "the lock is free; starting an election round" };
  if (el.announcedAt === undefined) return { kind: "announce", reason: "the lock is free; publishing this node's replication state as a candidate" };
  // The rivals arrive at the end of the gather: GATHER_MS, or sooner once every live member has published.
  if (!el.rivals) return { kind: "defer", until: el.announcedAt + o.timing.gatherMs, reason: "the lock is free; gathering candidates" };

  // Rank ourselves on what we published (what every rival ranks us on), or on
  // what we observe if our entry did not make it; and as eligible, since we are.
  const published = el.rivals.find((c) => c.instance === o.instance);
  const mine: Candidate = published
    ? { ...published, eligible: true }
    : { instance: o.instance, offset: redis.offset, replid: redis.replid, replid2: redis.replid2, priority: o.priority, eligible: true };
  const related = (c: Pick<Candidate, "replid" | "replid2">) => isRelated(c, el.last);
  if (!related(mine) && el.relatedAlive > 0) {
    return {
      kind: "wait",
      reason: `this Redis does not hold the last leader's data (replid ${short(mine.replid)}) and ${el.relatedAlive} member(s) that do are alive; not competing`,
    };
  }
  const ranked = rankCandidates([...el.rivals.filter((c) => c.eligible && c.instance !== o.instance), mine], el.last);
  const rank = ranked.findIndex((c) => c.instance === o.instance);
  const best = ranked[0];
  if (rank <= 0 || !best) return { kind: "acquire", reason: `best candidate: ${describe(mine)}` };
  const until = el.freeSince + o.timing.electionWaitMs + (rank - 1) * o.timing.staggerMs;
  if (o.now >= until) {
    return { kind: "acquire", reason: `better candidate ${best.instance} did not take the lock within CONSUL_LEADER_ELECTION_WAIT` };
  }
  return { kind: "defer", until, reason: `${best.instance} is a better candidate (${describe(best)} vs ${describe(mine)}); deferring` };
}

/** Why this node may not take a free lock, or undefined when it may. */
export function whyIneligible(o: Pick<Observation, "maintenance" | "priority" | "redis">): string | undefined {
  if (o.maintenance) return "in maintenance";
  if (o.priority === 0) return "CONSUL_LEADER_PRIORITY is 0";
  const r = o.redis;
  if (!r) return undefined;
  if (!r.up) return "Redis is down";
  if (r.loading) return "Redis is loading its dataset";
  if (r.syncing) return "Redis is in the middle of a full sync";
  if (r.stale) return "Redis lost its link to the leader too long ago";
  return undefined;
}

/** True when the candidate's Redis carries the last leader's replication history. */
export function isRelated(c: Pick<Candidate, "replid" | "replid2">, last: LockValue | null): boolean {
  if (!last?.replid) return true;
  return c.replid === last.replid || c.replid2 === last.replid;
}

/**
 * Best first: history of the last leader's data, then the most replicated
 * data, then priority, then the instance ID so every node agrees on the order.
 */
export function rankCandidates(cands: readonly Candidate[], last: LockValue | null): Candidate[] {
  return [...cands].sort((a, b) =>
    Number(isRelated(b, last)) - Number(isRelated(a, last)) ||
    b.offset - a.offset ||
    b.priority - a.priority ||
    (a.instance < b.instance ? -1 : a.instance > b.instance ? 1 : 0)
  );
}

function describe(c: Pick<Candidate, "offset" | "priority">): string {
  return `offset ${c.offset}, priority ${c.priority}`;
}

function short(id: string): string {
  return id.slice(0, 8) || "(none)";
}

/**
 * How a follower's Redis serves its role, for its replica tag and role
 * check: healthy only while it replicates with its link up, is neither
 * syncing nor loading, and is within the allowed lag (`lagOk`). `note` is the
 * sentence for the check output.
 */
export function followerHealth(view: RedisView, leaderAddress: string, lagOk: boolean): { healthy: boolean; note: string } {
  const healthy = view.up && view.linkUp && !view.syncing && !view.loading && lagOk;
  const why = !view.up ? "Redis down" : view.syncing ? "syncing" : !view.linkUp ? "link down" : view.loading ? "loading" : "lagging";
  return { healthy, note: healthy ? `replica of ${leaderAddress}, in sync` : `replica of ${leaderAddress}, ${why}` };
}

/** The marker a holder leaves when it releases for `d`: what its successor and its replicas must make of it. */
export function releaseMarker(d: Extract<Decision, { kind: "release" }>, o: Pick<Observation, "redis" | "maintenance">): NonNullable<LockValue["released"]> {
  if (d.lostData) return "redis-restarted";
  if (o.redis && !o.redis.up) return "redis-down";
  return o.maintenance ? "maintenance" : "priority";
}

/**
 * True when this replica must detach (park) from the previous leader: the
 * lock is free, and that leader released it because its Redis died or came
 * back with a new run id, possibly empty; a full sync from it could wipe us.
 */
export function shouldPark(last: LockValue | null, lockHeld: boolean, ours: { role: string; masterHost: string | null; masterPort: number | null } | undefined): boolean {
  if (!last?.address || lockHeld || (last.released !== "redis-down" && last.released !== "redis-restarted")) return false;
  return !!ours && ours.role === "replica" && `${ours.masterHost}:${ours.masterPort}` === last.address;
}
