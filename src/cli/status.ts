/**
 * `consul-leader status [--json]`: the group as Consul and its Redis servers
 * see it now, for people and scripts: who holds the lock (epoch, since
 * when), every member's role, its Redis live (role, offset, link) and each
 * replica's lag behind the primary in bytes and seconds, why a member may not
 * lead, whether its session is alive, what discovery says (tags, health),
 * whether the group is paused, and its last failovers.
 *
 * Live means read now: each member's Redis is asked INFO (through `probe`)
 * at its published address, with the Redis knobs' credentials. A Redis that
 * cannot be reached from here is shown so, with the offset its sidecar last
 * published, marked as such.
 *
 * It also notices a primary that discovery shows but that holds another key
 * than the one asked about (a sidecar run with another CONSUL_LEADER_KEY or
 * service name), and names that key.
 *
 * Exit codes: 0 healthy (the lock is held, exactly one instance is passing
 * and tagged primary, and it is the holder's); 1 not healthy (the problems are
 * listed); 3 Consul could not be read. Reads only; changes nothing.
 */

import type { Clock } from "../clock.ts";
import type { Consul, HealthEntry } from "../consul/client.ts";
import { type Failover, historyKey, parseHistory, parsePause, parseValue, pauseKey, pauseNote, type PauseRecord } from "../election/lock-value.ts";
import { describeError } from "../errors.ts";
import { readMembers } from "../consul/members.ts";
import type { ReplicationInfo } from "../redis/info.ts";

/** Reads INFO from the Redis at host:port; rejects when it cannot. */
export type RedisProbe = (addr: string) => Promise<ReplicationInfo>;

/** A member's Redis as read now. */
export type LiveRedis =
  | { ok: true; role: "master" | "replica"; offset: number; linkUp: boolean; loading: boolean; syncing: boolean }
  | { ok: false; error: string };

export interface MemberStatus {
  instance: string;
  service: string;
  role: string;
  address: string | null;
  eligible: boolean;
  /** Why it may not lead (maintenance, Redis down, link down, loading, ...); null when it may. */
  ineligible: string | null;
  redisUp: boolean;
  /** The offset its sidecar last published (see `updated`); `redis` has the live one. */
  offset: number;
  /** Its Redis as read now; null when it has none or it was not asked (tags-only, no address). */
  redis: LiveRedis | null;
  /** For a replica: bytes behind the primary's offset, read now; null when unknown. */
  lagBytes: number | null;
  /** For a replica: seconds since it last acknowledged the replication stream (the primary's INFO); null when unknown. */
  lagSeconds: number | null;
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
  /** The pause flag (`consul-leader pause`); null when the group is not paused. */
  paused: PauseRecord | null;
  /** The last failovers, oldest first (at most HISTORY_MAX). */
  failovers: Failover[];
  healthy: boolean;
  problems: string[];
}

/** How long status waits for each Redis: an operator is waiting. */
export const PROBE_TIMEOUT_MS = 1000;

export async function readGroupStatus(consul: Consul, o: { key: string; service: string; primaryLabel: string }, probe?: RedisProbe): Promise<GroupStatus> {
  const [{ pair }, entries, health, pause, history] = await Promise.all([
    consul.kvGet(o.key, { consistent: true }),
    readMembers(consul, o.key),
    consul.healthService(o.service),
    consul.kvGet(pauseKey(o.key)).then((r) => r.pair, () => null),
    consul.kvGet(historyKey(o.key)).then((r) => r.pair, () => null),
  ]);
  const value = parseValue(pair);
  const leader = pair?.Session && value
    ? { instance: value.instance, address: value.address ?? null, epoch: value.epoch ?? null, since: value.since ?? null, session: pair.Session }
    : null;
  const byService = new Map<string, HealthEntry>(health.entries.map((e) => [e.Service.ID, e]));
  // Every member's Redis, and the leader's, read now, side by side.
  const addrs = [...new Set([...entries.map((e) => e.member.address), leader?.address].filter((a): a is string => !!a))];
  const infos = new Map<string, ReplicationInfo | string>();
  if (probe) {
    await Promise.all(addrs.map(async (a) => infos.set(a, await probe(a).catch((err: unknown) => describeError(err)))));
  }
  const primaryInfo = leader?.address ? infos.get(leader.address) : undefined;
  const members: MemberStatus[] = entries.map((e) => {
    const h = byService.get(e.member.service);
    const info = e.member.address ? infos.get(e.member.address) : undefined;
    const redis: LiveRedis | null = info === undefined ? null : typeof info === "string" ? { ok: false, error: info } : { ok: true, role: info.role, offset: info.offset, linkUp: info.linkUp, loading: info.loading, syncing: info.syncing };
    const isLeader = leader?.instance === e.member.instance;
    const lag = !isLeader && redis?.ok && redis.role === "replica" && primaryInfo && typeof primaryInfo !== "string"
      ? replicaLag(primaryInfo, e.member.address!, redis.offset)
      : { bytes: null, seconds: null };
    return {
      instance: e.member.instance,
      service: e.member.service,
      role: e.session ? e.member.role : "gone",
      address: e.member.address ?? null,
      eligible: e.member.eligible,
      ineligible: e.member.eligible ? null : e.member.ineligible ?? "not eligible (its sidecar did not say why)",
      redisUp: e.member.redisUp ?? true,
      offset: e.member.offset,
      redis,
      lagBytes: lag.bytes,
      lagSeconds: lag.seconds,
      alive: !!e.session,
      tags: h?.Service.Tags ?? [],
      passing: h ? h.Checks.every((c) => c.Status === "passing") : null,
      updated: e.member.updated,
    };
  }).sort((a, b) => a.instance.localeCompare(b.instance));
  const primaries = health.entries.filter((e) => (e.Service.Tags ?? []).includes(o.primaryLabel) && e.Checks.every((c) => c.Status === "passing"));
  const discoveredPrimaries = primaries.map((e) => e.Service.ID);

  const problems: string[] = [];
  const elsewhere = leader ? [] : primaries.map((e) => lockedElsewhere(e, o.key)).filter((x): x is string => x !== undefined);
  if (!leader) problems.push(`nobody holds ${o.key}`);
  problems.push(...elsewhere);
  if (discoveredPrimaries.length === 0) problems.push(`no passing instance of ${o.service} is tagged ${o.primaryLabel}`);
  if (discoveredPrimaries.length > 1) problems.push(`${discoveredPrimaries.length} passing instances are tagged ${o.primaryLabel}: ${discoveredPrimaries.join(", ")}`);
  if (leader) {
    const holder = members.find((m) => m.instance === leader.instance);
    if (holder && discoveredPrimaries.length === 1 && discoveredPrimaries[0] !== holder.service) {
      problems.push(`discovery names ${discoveredPrimaries[0]} but ${leader.instance} (${holder.service}) holds the lock`);
    }
  }
  for (const m of members) if (!m.alive) problems.push(`${m.instance} has no live session (its sidecar is gone)`);
  return {
    key: o.key,
    service: o.service,
    leader,
    members,
    discoveredPrimaries,
    paused: parsePause(pause) ?? null,
    failovers: parseHistory(history),
    healthy: problems.filter((p) => !/no live session/.test(p)).length === 0,
    problems,
  };

}

/**
 * A replica's lag behind the primary, from the primary's INFO read now:
 * bytes = the primary's offset - the replica's own offset (read just
 * before, so never negative), seconds = the primary's `lag` for that replica
 * (since its last acknowledgement, which a healthy replica sends every
 * second). The replica is found among the primary's by host and port, or by
 * port alone when only one has it (the primary sees the replica's source IP,
 * which may differ from the announced one).
 */
export function replicaLag(primary: Pick<ReplicationInfo, "offset" | "replicas">, replicaAddr: string, replicaOffset: number): { bytes: number | null; seconds: number | null } {
  const i = replicaAddr.lastIndexOf(":");
  const host = replicaAddr.slice(0, i).replace(/^\[|\]$/g, "");
  const port = Number(replicaAddr.slice(i + 1));
  const samePort = primary.replicas.filter((r) => r.port === port);
  const line = samePort.find((r) => r.host === host) ?? (samePort.length === 1 ? samePort[0] : undefined);
  return { bytes: Math.max(0, primary.offset - replicaOffset), seconds: line ? line.lag : null };
}

/**
 * For a discovered primary that nobody under our key explains: the key its
 * sidecar locks instead (service Meta `lock_key`, written by this version),
 * or at least its session's name; undefined when it says nothing.
 */
export function lockedElsewhere(e: Pick<HealthEntry, "Service">, key: string): string | undefined {
  const meta = e.Service.Meta ?? {};
  const other = meta["lock_key"];
  if (other && other !== key) return `${e.Service.ID} is tagged primary by a consul-leader that locks ${other}, not ${key}: run status with CONSUL_LEADER_KEY=${other}`;
  if (!other && meta["session"]) return `${e.Service.ID} is tagged primary by the consul-leader session ${meta["session"]}, which does not hold ${key}: it locks another key (set CONSUL_LEADER_KEY to that sidecar's)`;
  return undefined;
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
  if (s.paused) lines.push(`PAUSED${pauseNote(s.paused)}: no failover, no switchover until consul-leader resume`);
  const rows = [["MEMBER", "ROLE", "ADDRESS", "REDIS (NOW)", "OFFSET", "LAG", "ELIGIBLE", "SESSION", "HEALTH", "TAGS"]];
  for (const m of s.members) {
    const r = m.redis;
    const redis = !r ? (m.address ? "-" : "none") : r.ok ? `${r.role}${r.role === "replica" ? `, link ${r.linkUp ? "up" : "down"}` : ""}${r.loading ? ", loading" : ""}${r.syncing ? ", syncing" : ""}` : "unreachable";
    const offset = r?.ok ? String(r.offset) : `${m.offset} (published ${ago(m.updated)})`;
    const lag = m.lagBytes === null ? "-" : `${m.lagBytes} B${m.lagSeconds === null ? "" : `, ${m.lagSeconds} s`}`;
    rows.push([m.instance, m.role, m.address ?? "-", redis, offset, lag, m.eligible ? "yes" : `no: ${m.ineligible}`, m.alive ? "live" : "gone", m.passing === null ? "-" : m.passing ? "passing" : "failing", m.tags.join(",") || "-"]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) lines.push(r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
  const unreachable = s.members.filter((m) => m.redis && !m.redis.ok);
  for (const m of unreachable) lines.push(`  ${m.instance}: its Redis at ${m.address} cannot be read from here (${(m.redis as { error: string }).error}); its offset is the one its sidecar last published`);
  if (s.failovers.length) {
    lines.push("last failovers:");
    for (const f of s.failovers.slice(-5)) lines.push(`  ${f.at}  ${f.from ?? "(none)"} -> ${f.to}${f.epoch !== undefined ? ` (epoch ${f.epoch})` : ""}: ${f.why}`);
  }
  lines.push(s.healthy ? `healthy: one primary (${s.discoveredPrimaries[0]})` : `NOT healthy:\n  - ${s.problems.join("\n  - ")}`);
  if (s.healthy && s.problems.length) lines.push(`notes:\n  - ${s.problems.join("\n  - ")}`);
  return lines.join("\n");
}

/** Runs the subcommand; returns the exit code (see the module comment). Errors go to `err`. */
export async function runStatus(
  o: { key: string; service: string; primaryLabel: string; json: boolean },
  d: { consul: Consul; clock: Clock; out: (text: string) => void; err: (text: string) => void; probe?: RedisProbe },
): Promise<number> {
  let s: GroupStatus;
  try {
    s = await readGroupStatus(d.consul, o, d.probe);
  } catch (err) {
    d.err(o.json ? JSON.stringify({ error: describeError(err) }) : `status: ${describeError(err)}`);
    return 3;
  }
  d.out(o.json ? JSON.stringify(s, null, 2) : renderStatus(s, d.clock));
  return s.healthy ? 0 : 1;
}
