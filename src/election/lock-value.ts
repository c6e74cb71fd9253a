/**
 * What lives in and next to the lock key: the holder's JSON value (who holds
 * it, its Redis address, its epoch) and the switchover request that
 * `consul-leader switchover` leaves beside it. Parsing only; a value written
 * by someone else (the shell consul-leader, an operator) parses as null.
 */

import type { KVPair } from "../consul/client.ts";
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

/** The request in `pair`, or undefined when absent or not ours to parse. */
export function parseSwitchover(pair: KVPair | null): SwitchoverRequest | undefined {
  if (!pair?.Value) return undefined;
  try {
    const r = JSON.parse(pair.Value) as SwitchoverRequest;
    return typeof r.leader === "string" ? r : undefined;
  } catch {
    return undefined;
  }
}

/** The holder's value in `pair`, or null when absent or not a consul-leader value. */
export function parseValue(pair: KVPair | null): LockValue | null {
  if (!pair?.Value) return null;
  try {
    const v = JSON.parse(pair.Value) as LockValue;
    return typeof v?.session === "string" && typeof v.instance === "string" ? v : null;
  } catch {
    return null;
  }
}

/** True when `b` already says what `a` would: no need to write the value again. */
export function sameValue(a: LockValue, b: LockValue | null): boolean {
  if (!b) return false;
  return a.session === b.session && a.instance === b.instance && a.service === b.service && a.address === b.address &&
    a.epoch === b.epoch && a.replid === b.replid && a.runId === b.runId && b.handoverTo === undefined && b.released === undefined;
}
