/**
 * Group membership in KV: one key per sidecar under `<lock key>/members/`,
 * held with the sidecar's own session, so a member whose session dies shows
 * up with an empty Session (Behavior release keeps the value).
 *
 * The member key is also the sidecar's identity: exactly one session holds
 * it, and the entry names the one process (its `incarnation`, a random id
 * drawn at start) using that session. identity.ts uses it to tell a restart
 * (the previous process is gone) from a twin (another live process with the
 * same instance ID).
 *
 * A member publishes its replication state when it joins, when its role or
 * eligibility changes, and when it stands as a candidate for a free lock;
 * candidates read each other's entries to let the one with the most data go
 * first. `consul-leader status` and the HTML overview read the same entries.
 *
 * Guarantees: every entry returned has passed the schema (wire.ts); a
 * malformed one is reported once per read and left out. Does not guarantee
 * freshness: offsets are as of the last publish.
 */

import { type HostPort, parseHostPort } from "../host-port.ts";
import { parseRecord, type Schema } from "../wire.ts";
import type { Consul, KVPair } from "./client.ts";

export interface Member {
  instance: string;
  /** Consul service being tagged. */
  service: string;
  node?: string;
  /** Redis announce address, host:port. */
  address?: string;
  role: string;
  /** Could take the lock now (Redis up, not loading or syncing, not in maintenance, priority > 0). */
  eligible: boolean;
  /** Its Redis answers (it may still be loading or syncing). */
  redisUp: boolean;
  priority: number;
  offset: number;
  replid: string;
  replid2: string;
  /** Wall time of the publish, ISO 8601. */
  updated: string;
  /** The process that wrote it: a random id drawn when the sidecar started. */
  incarnation?: string;
  /** Host and pid of that process, for the message a twin prints. */
  host?: string;
  pid?: number;
  /**
   * Set by a newly started process that found this entry held by a live
   * session: the process asking for the identity. The holder answers by
   * writing its own entry back; silence means it is gone. See identity.ts.
   */
  claim?: string;
  /** Why this member may not lead, in one sentence; absent when eligible. */
  ineligible?: string;
  /** Its Sentinel-compatible endpoint, host:port, when it serves one (listed by SENTINEL sentinels). */
  sentinel?: string;
}

const MEMBER: Schema = {
  instance: { type: "string" },
  service: { type: "string" },
  node: { type: "string", optional: true },
  address: { type: "string", optional: true },
  role: { type: "string" },
  eligible: { type: "boolean" },
  redisUp: { type: "boolean" },
  priority: { type: "number", integer: true, min: 0 },
  offset: { type: "number", integer: true, min: 0 },
  replid: { type: "string" },
  replid2: { type: "string" },
  updated: { type: "string" },
  incarnation: { type: "string", optional: true },
  host: { type: "string", optional: true },
  pid: { type: "number", optional: true, integer: true, min: 0 },
  claim: { type: "string", optional: true },
  ineligible: { type: "string", optional: true },
  sentinel: { type: "string", optional: true, pattern: /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):\d{1,5}$/ },
};

export interface MemberEntry {
  member: Member;
  /** Session holding the entry; empty when the member's session is gone. */
  session: string;
  modifyIndex: number;
}

export function membersPrefix(lockKey: string): string {
  return `${lockKey}/members/`;
}

export function memberKey(lockKey: string, instance: string): string {
  return `${membersPrefix(lockKey)}${instance}`;
}

/**
 * Every member entry that passes the schema; a consistent read. Entries that
 * do not are reported to `warn` (key and problem) and left out.
 */
export async function readMembers(consul: Consul, lockKey: string, warn?: (key: string, problem: string) => void): Promise<MemberEntry[]> {
  return parseEntries(await consul.kvList(membersPrefix(lockKey), { consistent: true }), warn);
}

/** The member entries among `pairs`; a malformed one is left out and passed to `warn`. */
export function parseEntries(pairs: KVPair[], warn?: (key: string, problem: string) => void): MemberEntry[] {
  return pairs.flatMap((p) => {
    const r = parseEntry(p);
    if (typeof r === "string") {
      warn?.(p.Key, r);
      return [];
    }
    return r ? [r] : [];
  });
}

/** The entry in `p`, undefined for an empty key, or the problem with it. */
export function parseEntry(p: KVPair): MemberEntry | string | undefined {
  if (!p.Value) return undefined;
  const r = parseRecord<Member>(p.Value, MEMBER, `the member entry at ${p.Key}`);
  if (!r.ok) return r.problem;
  return { member: r.value, session: p.Session ?? "", modifyIndex: p.ModifyIndex };
}

/**
 * Who to hand the lock over to: a member other than `self` with a live
 * session that is eligible. With Redis (`replicas`: our online replicas as
 * host:port, most caught-up first), only a member whose Redis is one of them.
 * `to` narrows it to one instance ID or address. Undefined when nobody fits.
 */
export async function pickSuccessor(
  consul: Consul,
  lockKey: string,
  self: string,
  replicas: { addr: string }[] | undefined,
  to?: string,
): Promise<{ instance: string; addr?: HostPort } | undefined> {
  const members = (await readMembers(consul, lockKey))
    .filter((e) => e.session && e.member.eligible && e.member.instance !== self)
    .filter((e) => !to || e.member.instance === to || e.member.address === to);
  if (!replicas) return members[0] ? { instance: members[0].member.instance } : undefined;
  for (const r of replicas) {
    const m = members.find((e) => e.member.address === r.addr);
    const addr = parseHostPort(r.addr);
    if (m && addr) return { instance: m.member.instance, addr };
  }
  return undefined;
}

/**
 * Entries left behind: no live session and last published more than
 * `olderThanMs` ago (wall clock), or unreadable and without a session. Nomad
 * gives every allocation a new ID, so without this the prefix grows with
 * every deploy. Pure; the leader deletes what it returns, each with a
 * check-and-set on the index it read, so an entry a member rewrote
 * meanwhile survives.
 */
export function staleEntries(pairs: readonly KVPair[], nowMs: number, olderThanMs: number): KVPair[] {
  return pairs.filter((p) => {
    if (p.Session) return false;
    const r = parseEntry(p);
    if (r === undefined || typeof r === "string") return true;
    const at = Date.parse(r.member.updated);
    return !Number.isFinite(at) || nowMs - at > olderThanMs;
  });
}
