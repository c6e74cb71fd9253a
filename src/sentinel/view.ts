/**
 * What the Sentinel-compatible endpoint says about the primary, derived from
 * what this sidecar knows (the lock as its watch last saw it, its own role
 * and Redis), and the Sentinel events each change publishes. Pure.
 *
 * Guarantees:
 * - A primary is named as *current* only while its holder's lease stands: the
 *   lock is held and its value carries a Redis address, which a holder
 *   publishes only after proving its lease and promoting (election/elector.ts).
 *   On the holder itself, only while it leads and its Redis takes writes (a
 *   leader fencing itself or handing over is not current any more, although
 *   the others cannot know yet).
 * - Otherwise a failover is in progress, and the endpoint answers as Sentinel
 *   does then: the last current primary's address (Sentinel keeps answering
 *   the old master's address until the promoted replica is confirmed), with
 *   `failover_in_progress` in its flags, and `s_down,o_down` when that Redis
 *   is known to be down.
 * - Events, in Sentinel's order and formats: `+sdown`/`+odown` when the
 *   primary's Redis goes down, `+try-failover` when a planned handover
 *   starts, `-odown`/`-sdown` when the same primary comes back, and
 *   `+failover-end` then `+switch-master <name> <old ip> <old port> <new ip>
 *   <new port>` when another primary becomes current.
 * Does not check anything itself: a stale lock view is believed.
 */

import type { LockView, ReleaseReason, Role } from "../election/types.ts";
import { formatHostPort, type HostPort, parseHostPort } from "../host-port.ts";

/** What this sidecar knows, as of now. */
export interface Facts {
  /** The lock as the watch last saw it; undefined before the first read. */
  lock: LockView | undefined;
  /** This sidecar's instance ID. */
  self: string;
  role: Role;
  /** Our Redis is a master taking writes (not fenced, not loading). */
  redisWritable: boolean;
}

export interface PrimaryView {
  /** The primary whose lease is certain; null while a failover is in progress or nothing is known. */
  current: HostPort | null;
  /** What a query for the primary's address answers: `current`, else the last current one, else the one being taken over from. */
  shown: HostPort | null;
  /** True while there is no current primary. */
  failover: boolean;
  /** The primary shown is known to be down (its Redis died or restarted). */
  down: boolean;
  /** The lock's epoch for the current primary (Sentinel's config-epoch); the last one known otherwise. */
  epoch: number;
  /** The lock holder's instance ID, when the lock is held. */
  holder: string | null;
}

export const EMPTY_VIEW: PrimaryView = { current: null, shown: null, failover: true, down: false, epoch: 0, holder: null };

const DOWN: ReadonlySet<ReleaseReason> = new Set(["redis-down", "redis-restarted"]);

/** The view `facts` give, after `prev` (which supplies the last current primary during a failover). */
export function deriveView(facts: Facts, prev: PrimaryView): PrimaryView {
  const lock = facts.lock;
  if (!lock) return { ...prev, current: null, failover: true, holder: null };
  const v = lock.holder ? lock.value : null;
  const address = v?.address ? parseHostPort(v.address) ?? null : null;
  const epoch = v?.epoch ?? prev.epoch;
  if (v && address) {
    const mine = v.instance === facts.self;
    if (!mine || (facts.role === "leader" && facts.redisWritable)) {
      return { current: address, shown: address, failover: false, down: false, epoch, holder: v.instance };
    }
    // We hold it but do not lead: not yet (promoted, the role not yet taken; the others see it current
    // already) or not any more (fenced, handing over; the others see the release shortly). Either way the
    // address shown stays the last current one, so that the switch to ours is published as one.
    return { current: null, shown: prev.current ?? prev.shown ?? address, failover: true, down: prev.down && !prev.current, epoch, holder: v.instance };
  }
  // A holder taking over (no address yet) names the primary it takes over from; a released lock names the last holder.
  const value = lock.value;
  const from = v ? v.prevAddress : value?.address;
  const fromAddr = from ? parseHostPort(from) ?? null : null;
  const shown = prev.current ?? prev.shown ?? fromAddr;
  const released = v ? v.prevReleased : value?.released;
  const down = (released !== undefined && DOWN.has(released) && (fromAddr === null || same(fromAddr, shown))) || (prev.down && !prev.current);
  return { current: null, shown, failover: true, down, epoch, holder: v?.instance ?? null };
}

/** One Sentinel event: a channel and its message. */
export interface SentinelEvent {
  channel: string;
  message: string;
}

/** The events going from `prev` to `next` publishes, in order. */
export function eventsBetween(prev: PrimaryView, next: PrimaryView, master: string): SentinelEvent[] {
  const out: SentinelEvent[] = [];
  const at = (a: HostPort) => `${a.host} ${a.port}`;
  const inst = (a: HostPort) => `master ${master} ${at(a)}`;
  const old = prev.current ?? prev.shown;
  if (prev.current && !next.current) {
    if (next.down) out.push({ channel: "+sdown", message: inst(prev.current) }, { channel: "+odown", message: `${inst(prev.current)} #quorum 1/1` });
    else out.push({ channel: "+try-failover", message: inst(prev.current) });
  } else if (!prev.current && !next.current && next.down && !prev.down && next.shown) {
    out.push({ channel: "+sdown", message: inst(next.shown) }, { channel: "+odown", message: `${inst(next.shown)} #quorum 1/1` });
  }
  if (next.current && !same(prev.current, next.current)) {
    if (old && same(old, next.current)) {
      // The same primary is current again (its Redis came back, the same leader re-took the lock).
      if (prev.down) out.push({ channel: "-odown", message: inst(old) }, { channel: "-sdown", message: inst(old) });
    } else if (old) {
      out.push({ channel: "+failover-end", message: inst(old) }, { channel: "+switch-master", message: `${master} ${at(old)} ${at(next.current)}` });
    }
  }
  return out;
}

function same(a: HostPort | null, b: HostPort | null): boolean {
  return !!a && !!b && formatHostPort(a) === formatHostPort(b);
}
