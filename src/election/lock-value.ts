/**
 * What lives in and next to the lock key: the holder's JSON value (who holds
 * it, its Redis address, its epoch), the switchover request that
 * `consul-leader switchover` leaves beside it, the pause flag of
 * `consul-leader pause`, and the bounded history of failovers. Parsing only, through a schema
 * (wire.ts): a value written by someone else (the shell consul-leader, an
 * operator, an attacker with KV write) parses as null and is reported.
 */

import type { KVPair } from "../consul/client.ts";
import { checkRecord, MAX_RECORD, parseRecord, type Schema } from "../wire.ts";
import type { LockValue } from "./types.ts";

/** Where `consul-leader switchover` leaves its request for the leader. */
export function switchoverKey(lockKey: string): string {
  return `${lockKey}/switchover`;
}

export interface SwitchoverRequest {
  /** The instance that led when the request was made; only it acts on it. */
  leader: string;
  to?: string;
  requested: string;
}

const SWITCHOVER: Schema = {
  leader: { type: "string" },
  to: { type: "string", optional: true },
  requested: { type: "string" },
};

/** The request in `pair`, or undefined when absent; a malformed one is reported to `warn` and treated as absent. */
export function parseSwitchover(pair: KVPair | null, warn?: (problem: string) => void): SwitchoverRequest | undefined {
  if (!pair?.Value) return undefined;
  const r = parseRecord<SwitchoverRequest>(pair.Value, SWITCHOVER, `the switchover request at ${pair.Key}`);
  if (r.ok) return r.value;
  warn?.(r.problem);
  return undefined;
}

/** The lock value's fields and their types; see LockValue. */
const LOCK_VALUE: Schema = {
  session: { type: "string" },
  instance: { type: "string" },
  service: { type: "string" },
  address: { type: "string", optional: true },
  epoch: { type: "number", optional: true, integer: true, min: 0 },
  replid: { type: "string", optional: true },
  runId: { type: "string", optional: true },
  handoverTo: { type: "string", optional: true },
  fencedOffset: { type: "number", optional: true, integer: true, min: 0 },
  incarnation: { type: "string", optional: true },
  prevAddress: { type: "string", optional: true },
  prevInstance: { type: "string", optional: true },
  prevReleased: { type: "string", optional: true, oneOf: ["redis-down", "redis-restarted", "handover", "maintenance", "shutdown", "priority", "yield"] },
  prevFencedOffset: { type: "number", optional: true, integer: true, min: 0 },
  released: { type: "string", optional: true, oneOf: ["redis-down", "redis-restarted", "handover", "maintenance", "shutdown", "priority", "yield"] },
  since: { type: "string", optional: true },
  why: { type: "string", optional: true },
};

/**
 * The holder's value in `pair`, or null when absent or not a consul-leader
 * value (the shell consul-leader writes none; an operator may write
 * anything). A value that is not ours is reported to `warn`, once per call.
 */
export function parseValue(pair: KVPair | null, warn?: (problem: string) => void): LockValue | null {
  if (!pair?.Value) return null;
  const r = parseRecord<LockValue>(pair.Value, LOCK_VALUE, `the lock value at ${pair.Key}`);
  if (r.ok) return r.value;
  warn?.(r.problem);
  return null;
}

/** True when `b` already says what `a` would: no need to write the value again. */
export function sameValue(a: LockValue, b: LockValue | null): boolean {
  if (!b) return false;
  return a.session === b.session && a.instance === b.instance && a.service === b.service && a.address === b.address &&
    a.epoch === b.epoch && a.replid === b.replid && a.runId === b.runId && a.incarnation === b.incarnation &&
    a.prevAddress === b.prevAddress && a.prevFencedOffset === b.prevFencedOffset &&
    b.handoverTo === undefined && b.released === undefined && b.fencedOffset === undefined;
}

/** Where `consul-leader pause` leaves its flag: while the key exists, the group is paused. */
export function pauseKey(lockKey: string): string {
  return `${lockKey}/pause`;
}

/** What `consul-leader pause` writes; the key's existence is the flag, this says who and why. */
export interface PauseRecord {
  since: string;
  by?: string;
  reason?: string;
}

/** " (since ..., by ..., reason)" for a pause flag, with what it carries; "" when it carries nothing. */
export function pauseNote(p: PauseRecord): string {
  const parts = [p.since ? `since ${p.since}` : "", p.by ? `by ${p.by}` : "", p.reason ?? ""].filter(Boolean);
  return parts.length ? ` (${parts.join(", ")})` : "";
}

const PAUSE: Schema = {
  since: { type: "string" },
  by: { type: "string", optional: true },
  reason: { type: "string", optional: true },
};

/**
 * The pause flag in `pair`: undefined when the key is absent. A key whose
 * value does not parse still pauses (the key is the flag, and an operator
 * who wrote it by hand meant it); its record then says so.
 */
export function parsePause(pair: KVPair | null): PauseRecord | undefined {
  if (!pair) return undefined;
  const r = pair.Value ? parseRecord<PauseRecord>(pair.Value, PAUSE, `the pause flag at ${pair.Key}`) : undefined;
  return r?.ok ? r.value : { since: "", reason: "(set by hand: its value is not consul-leader's)" };
}

/** Where the leaders record the group's last failovers (`consul-leader status` shows them). */
export function historyKey(lockKey: string): string {
  return `${lockKey}/history`;
}

/** How many failovers the history keeps: enough to see a pattern, small enough to read in one screen. */
export const HISTORY_MAX = 20;

/** One change of leader: when the new one started leading, who led before (null: nobody), who leads now, why. */
export interface Failover {
  at: string;
  from: string | null;
  to: string;
  why: string;
  epoch?: number;
}

const FAILOVER: Schema = {
  at: { type: "string" },
  from: { type: "string", optional: true },
  to: { type: "string" },
  why: { type: "string" },
  epoch: { type: "number", optional: true, integer: true, min: 0 },
};

/** The newest HISTORY_MAX failovers in `pair`, oldest first; entries that do not parse are left out (reported to `warn`). */
export function parseHistory(pair: KVPair | null, warn?: (problem: string) => void): Failover[] {
  if (!pair?.Value) return [];
  if (pair.Value.length > HISTORY_MAX * MAX_RECORD) {
    warn?.(`the failover history at ${pair.Key} has ${pair.Value.length} characters; at most ${HISTORY_MAX * MAX_RECORD} are read`);
    return [];
  }
  let raw: unknown;
  try {
    raw = JSON.parse(pair.Value);
  } catch {
    warn?.(`the failover history at ${pair.Key} is not JSON`);
    return [];
  }
  if (!Array.isArray(raw)) {
    warn?.(`the failover history at ${pair.Key} is not a JSON array`);
    return [];
  }
  return raw.slice(-HISTORY_MAX).flatMap((e) => {
    const r = checkRecord<Failover>(e, FAILOVER, `a failover in ${pair.Key}`);
    if (!r.ok) warn?.(r.problem);
    return r.ok ? [{ ...r.value, from: r.value.from ?? null }] : [];
  });
}

/** `list` with `f` added last, keeping the newest `max`. Pure. */
export function appendFailover(list: readonly Failover[], f: Failover, max = HISTORY_MAX): Failover[] {
  return [...list, f].slice(-max);
}

/**
 * Why the last holder gave the lock up, as the history says it: its own
 * sentence when it wrote one (`why`), else what its release marker means,
 * else that it never released (its session ended: a crash, a freeze, a
 * node cut off, an operator).
 */
export function failoverWhy(prev: LockValue | null): string {
  if (!prev) return "no previous leader";
  if (prev.why) return prev.why;
  switch (prev.released) {
    case "redis-down": return "its Redis went down";
    case "redis-restarted": return "its Redis restarted and may have lost data";
    case "handover": return "it handed over (switchover or shutdown)";
    case "maintenance": return "it went into maintenance";
    case "shutdown": return "it shut down";
    case "priority": return "its priority is 0";
    case "yield": return "its Redis lacked the last leader's data";
    case undefined: return "its session ended without a release (its sidecar died, froze or lost Consul)";
  }
}
