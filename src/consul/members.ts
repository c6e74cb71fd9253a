/**
 * Group membership in KV: one key per sidecar under `<lock key>/members/`,
 * held with the sidecar's own session, so a member whose session dies shows
 * up with an empty Session (Behavior release keeps the value).
 *
 * A member publishes its replication state when it joins, when its role or
 * eligibility changes, and when it stands as a candidate for a free lock;
 * candidates read each other's entries to let the one with the most data go
 * first. `consul-leader status` and the HTML overview read the same entries.
 *
 * Guarantees: an entry written by `publish` is held by the given session or
 * the call throws. Does not guarantee freshness: offsets are as of the last
 * publish.
 */

import type { Consul, KVPair } from "./client.ts";
import { type HostPort, parseHostPort } from "../host-port.ts";

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
}

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

/** Writes our entry under our session. Throws when another session holds it. */
export async function publishMember(consul: Consul, lockKey: string, session: string, m: Member): Promise<void> {
  const ok = await consul.kvAcquire(memberKey(lockKey, m.instance), session, JSON.stringify(m));
  if (!ok) {
    throw new Error(`the member key ${memberKey(lockKey, m.instance)} is held by another session: is another sidecar running with instance ID ${m.instance}?`);
  }
}

/** Every member entry that parses; a consistent read. */
export async function readMembers(consul: Consul, lockKey: string): Promise<MemberEntry[]> {
  const pairs = await consul.kvList(membersPrefix(lockKey), { consistent: true });
  return pairs.flatMap((p) => parseEntry(p) ?? []);
}

export function parseEntry(p: KVPair): MemberEntry | undefined {
  if (!p.Value) return undefined;
  try {
    const m = JSON.parse(p.Value) as Member;
    if (typeof m.instance !== "string" || typeof m.offset !== "number") return undefined;
    return { member: m, session: p.Session ?? "", modifyIndex: p.ModifyIndex };
  } catch {
    return undefined;
  }
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
