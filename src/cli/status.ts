/**
 * `consul-leader status [--json]`: the group as Consul sees it, for people and
 * scripts: who holds the lock (epoch, since when), every member's role and
 * replication state from `<key>/members/`, whether its session is alive, and
 * what discovery says (tags, health).
 *
 * Exit codes: 0 healthy (the lock is held, exactly one instance is passing
 * and tagged primary, and it is the holder's); 1 not healthy (the problems are
 * listed); 3 Consul could not be read. Reads only; changes nothing.
 */

import type { Clock } from "../clock.ts";
import type { Consul, HealthEntry } from "../consul/client.ts";
import { parseValue } from "../election/lock-value.ts";
import { describeError } from "../errors.ts";
import { readMembers } from "../consul/members.ts";

export interface MemberStatus {
  instance: string;
  service: string;
  role: string;
  address: string | null;
  eligible: boolean;
  redisUp: boolean;
  offset: number;
  /** The member's session still exists (its key is held). */
  alive: boolean;
  tags: string[];
  /** Every health check of its service passes. */
  passing: boolean | null;
  updated: string;
}

export interface GroupStatus {
  key: string;
  service: string;
  leader: { instance: string; address: string | null; epoch: number | null; since: string | null; session: string } | null;
  members: MemberStatus[];
  /** Service IDs discovery returns for `?passing&tag=<primary>`. */
  discoveredPrimaries: string[];
  healthy: boolean;
  problems: string[];
}

export async function readGroupStatus(consul: Consul, o: { key: string; service: string; primaryLabel: string }): Promise<GroupStatus> {
  const [{ pair }, entries, health] = await Promise.all([
    consul.kvGet(o.key, { consistent: true }),
    readMembers(consul, o.key),
    consul.healthService(o.service),
  ]);
  const value = parseValue(pair);
  const leader = pair?.Session && value
    ? { instance: value.instance, address: value.address ?? null, epoch: value.epoch ?? null, since: value.since ?? null, session: pair.Session }
    : null;
  const byService = new Map<string, HealthEntry>(health.entries.map((e) => [e.Service.ID, e]));
  const members: MemberStatus[] = entries.map((e) => {
    const h = byService.get(e.member.service);
    return {
      instance: e.member.instance,
      service: e.member.service,
      role: e.session ? e.member.role : "gone",
      address: e.member.address ?? null,
      eligible: e.member.eligible,
      redisUp: e.member.redisUp ?? true,
      offset: e.member.offset,
      alive: !!e.session,
      tags: h?.Service.Tags ?? [],
      passing: h ? h.Checks.every((c) => c.Status === "passing") : null,
      updated: e.member.updated,
    };
  }).sort((a, b) => a.instance.localeCompare(b.instance));
  const discoveredPrimaries = health.entries
    .filter((e) => (e.Service.Tags ?? []).includes(o.primaryLabel) && e.Checks.every((c) => c.Status === "passing"))
    .map((e) => e.Service.ID);

  const problems: string[] = [];
  if (!leader) problems.push(`nobody holds ${o.key}`);
  if (discoveredPrimaries.length === 0) problems.push(`no passing instance of ${o.service} is tagged ${o.primaryLabel}`);
  if (discoveredPrimaries.length > 1) problems.push(`${discoveredPrimaries.length} passing instances are tagged ${o.primaryLabel}: ${discoveredPrimaries.join(", ")}`);
  if (leader) {
    const holder = members.find((m) => m.instance === leader.instance);
    if (holder && discoveredPrimaries.length === 1 && discoveredPrimaries[0] !== holder.service) {
      problems.push(`discovery names ${discoveredPrimaries[0]} but ${leader.instance} (${holder.service}) holds the lock`);
    }
  }
  for (const m of members) if (!m.alive) problems.push(`${m.instance} has no live session (its sidecar is gone)`);
  return { key: o.key, service: o.service, leader, members, discoveredPrimaries, healthy: problems.filter((p) => !/no live session/.test(p)).length === 0, problems };
}

/** The status as a table for people. */
export function renderStatus(s: GroupStatus, clock: Clock): string {
  const ago = (iso: string | null) => {
    if (!iso) return "";
    const sec = Math.max(0, Math.round((clock.now() - Date.parse(iso)) / 1000));
    return sec < 120 ? `${sec}s ago` : sec < 7200 ? `${Math.round(sec / 60)}m ago` : `${Math.round(sec / 3600)}h ago`;
  };
  const lines = [`group ${s.key} (service ${s.service})`];
  lines.push(s.leader
    ? `leader: ${s.leader.instance}${s.leader.address ? ` at ${s.leader.address}` : ""}, epoch ${s.leader.epoch ?? "?"}, since ${s.leader.since ?? "?"} (${ago(s.leader.since)})`
    : "leader: none");
  const rows = [["MEMBER", "ROLE", "ADDRESS", "OFFSET", "ELIGIBLE", "SESSION", "HEALTH", "TAGS", "UPDATED"]];
  for (const m of s.members) {
    rows.push([m.instance, m.role, m.address ?? "-", String(m.offset), m.eligible ? "yes" : "no", m.alive ? "live" : "gone", m.passing === null ? "-" : m.passing ? "passing" : "failing", m.tags.join(",") || "-", ago(m.updated)]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) lines.push(r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
  lines.push(s.healthy ? `healthy: one primary (${s.discoveredPrimaries[0]})` : `NOT healthy:\n  - ${s.problems.join("\n  - ")}`);
  if (s.healthy && s.problems.length) lines.push(`notes:\n  - ${s.problems.join("\n  - ")}`);
  return lines.join("\n");
}

/** Runs the subcommand; returns the exit code (see the module comment). */
export async function runStatus(o: { key: string; service: string; primaryLabel: string; json: boolean }, d: { consul: Consul; clock: Clock; out: (text: string) => void }): Promise<number> {
  let s: GroupStatus;
  try {
    s = await readGroupStatus(d.consul, o);
  } catch (err) {
    d.out(o.json ? JSON.stringify({ error: describeError(err) }) : `status: ${describeError(err)}`);
    return 3;
  }
  d.out(o.json ? JSON.stringify(s, null, 2) : renderStatus(s, d.clock));
  return s.healthy ? 0 : 1;
}
