/**
 * `consul-leader switchover [--to INSTANCE|ADDR] [--timeout DUR]`: asks the
 * running group's leader, through Consul, to hand the primary role over, and
 * waits until another member holds the lock.
 *
 * The request is a KV entry next to the lock (`<key>/switchover`) naming the
 * leader it is meant for, so a request that outlives that leader is ignored.
 *
 * Like `patronictl switchover`, it checks before it asks: the group must not
 * be paused, `--to` must name a member (instance ID or Redis address; the
 * valid ones are listed otherwise) that has a live session and may lead (why
 * not, otherwise), and without `--to` some member must be able to take over.
 * A refused request changes nothing.
 *
 * Guarantees: exits 0 only after Consul shows a different holder (the
 * requested one, when `--to` is given); progress goes to `out`, every
 * refusal and failure to `err`. Does not wait for replicas to follow.
 */

import type { Clock } from "../clock.ts";
import type { Consul } from "../consul/client.ts";
import { formatDuration } from "../config/duration.ts";
import { parsePause, parseValue, pauseKey, pauseNote, switchoverKey, type SwitchoverRequest } from "../election/lock-value.ts";
import { describeError, isConsulError } from "../errors.ts";
import { type MemberEntry, readMembers } from "../consul/members.ts";

export interface SwitchoverOptions {
  key: string;
  to?: string;
  timeoutMs: number;
}

export interface SwitchoverDeps {
  consul: Consul;
  clock: Clock;
  /** Prints one line of progress for the operator (stdout). */
  out: (line: string) => void;
  /** Prints why it refused or failed (stderr). */
  err: (line: string) => void;
}

/**
 * Whether `to` may take over from `leader`: null when it may, else the
 * sentence that says why not, listing the members that could. Pure.
 */
export function refuseTarget(members: readonly MemberEntry[], leader: string, to: string | undefined): string | null {
  const others = members.filter((e) => e.member.instance !== leader);
  const able = others.filter((e) => e.session && e.member.eligible);
  const list = (es: readonly MemberEntry[]) => es.map((e) => `${e.member.instance}${e.member.address ? ` (${e.member.address})` : ""}`).join(", ") || "none";
  if (to === undefined) return able.length ? null : `no member can take over from ${leader}; members: ${list(others)}`;
  const m = others.find((e) => e.member.instance === to || e.member.address === to);
  if (!m) return `${to} is not a member of this group; members that can take over: ${list(able)}`;
  if (!m.session) return `${m.member.instance} cannot take over: its sidecar is gone (no live session); members that can: ${list(able)}`;
  if (!m.member.eligible) return `${m.member.instance} cannot take over: ${m.member.ineligible ?? "not eligible"}; members that can: ${list(able)}`;
  return null;
}

/** Returns the process exit code: 0 switched over, 1 not. */
export async function runSwitchover(o: SwitchoverOptions, d: SwitchoverDeps): Promise<number> {
  const { consul, clock, out, err } = d;
  const started = clock.monotonic();
  try {
    const [{ pair, index }, members, pause] = await Promise.all([
      consul.kvGet(o.key, { consistent: true }),
      readMembers(consul, o.key),
      // A token from before pauses existed may not read the flag: then no sidecar honours it either.
      consul.kvGet(pauseKey(o.key), { consistent: true }).catch((e: unknown) => {
        if (isConsulError(e, "CONSUL_FORBIDDEN")) return { pair: null, index: 0 };
        throw e;
      }),
    ]);
    const current = parseValue(pair);
    if (!pair?.Session || !current) {
      err(`switchover: nobody holds ${o.key}; nothing to hand over`);
      return 1;
    }
    if (o.to && (o.to === current.instance || o.to === current.address)) {
      out(`switchover: ${current.instance} already leads`);
      return 0;
    }
    const paused = parsePause(pause.pair);
    if (paused) {
      err(`switchover: the group is paused${pauseNote(paused)}; run consul-leader resume first. Nothing changed`);
      return 1;
    }
    const refused = refuseTarget(members, current.instance, o.to);
    if (refused) {
      err(`switchover: ${refused}. Nothing changed`);
      return 1;
    }
    const req: SwitchoverRequest = { leader: current.instance, ...(o.to ? { to: o.to } : {}), requested: new Date(clock.now()).toISOString() };
    await consul.kvPut(switchoverKey(o.key), JSON.stringify(req));
    out(`switchover: asked ${current.instance} (epoch ${current.epoch ?? "?"}) to hand over${o.to ? ` to ${o.to}` : ""}`);

    let waitIndex = Math.max(1, index);
    for (;;) {
      const left = o.timeoutMs - (clock.monotonic() - started);
      if (left <= 0) {
        await consul.kvDelete(switchoverKey(o.key)).catch(() => false);
        err(`switchover: ${current.instance} still leads after ${formatDuration(o.timeoutMs)}; request withdrawn`);
        return 1;
      }
      const got = await consul.kvGet(o.key, { consistent: true, index: waitIndex, waitMs: Math.max(100, Math.floor(left)) });
      waitIndex = got.index < waitIndex ? 1 : Math.max(1, got.index);
      const now = parseValue(got.pair);
      if (got.pair?.Session && now && now.session === got.pair.Session && now.instance !== current.instance) {
        const ms = Math.round(clock.monotonic() - started);
        if (o.to && now.instance !== o.to && now.address !== o.to) {
          err(`switchover: ${now.instance} took over in ${ms} ms, not the requested ${o.to}`);
          return 1;
        }
        out(`switchover: ${current.instance} -> ${now.instance}${now.address ? ` (${now.address})` : ""} in ${ms} ms`);
        return 0;
      }
    }
  } catch (e) {
    err(`switchover: ${describeError(e)}`);
    return 1;
  }
}
