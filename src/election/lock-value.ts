/**
 * What lives in and next to the lock key: the holder's JSON value (who holds
 * it, its Redis address, its epoch) and the switchover request that
 * `consul-leader switchover` leaves beside it. Parsing only, through a schema
 * (wire.ts): a value written by someone else (the shell consul-leader, an
 * operator, an attacker with KV write) parses as null and is reported.
 */

import type { KVPair } from "../consul/client.ts";
import { parseRecord, type Schema } from "../wire.ts";
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
