/**
 * `consul-leader pause [--reason TEXT]` and `consul-leader resume`: the
 * group-wide pause (Patroni's `pause`), for operators working on the group.
 * While the flag `<key>/pause` exists, no sidecar takes a free lock or hands
 * over, and the leader keeps leading (decide.ts has the rules); the safety
 * rules still act. Resuming deletes the flag.
 *
 * Guarantees: the flag is written or deleted, or the command says why not on
 * `err` and exits 1. Does not wait for the sidecars to see it (their watch
 * does within milliseconds, and the acquire checks it in the same Consul
 * transaction).
 */

import type { Clock } from "../clock.ts";
import type { Consul } from "../consul/client.ts";
import { parsePause, pauseKey, pauseNote, type PauseRecord } from "../election/lock-value.ts";
import { describeError } from "../errors.ts";

export interface PauseDeps {
  consul: Consul;
  clock: Clock;
  out: (line: string) => void;
  err: (line: string) => void;
}

/** Pauses the group; exit code 0 (paused, also when it already was) or 1. */
export async function runPause(o: { key: string; reason?: string; by: string }, d: PauseDeps): Promise<number> {
  try {
    const { pair } = await d.consul.kvGet(pauseKey(o.key), { consistent: true });
    const already = parsePause(pair);
    if (already) {
      d.out(`pause: ${o.key} is already paused${pauseNote(already)}`);
      return 0;
    }
    const record: PauseRecord = { since: new Date(d.clock.now()).toISOString(), by: o.by, ...(o.reason ? { reason: o.reason } : {}) };
    if (!(await d.consul.kvPut(pauseKey(o.key), JSON.stringify(record), { cas: 0 }))) {
      d.out(`pause: ${o.key} was paused by someone else just now`);
      return 0;
    }
    d.out(`pause: ${o.key} paused${pauseNote(record)}: no failover and no switchover until consul-leader resume; the leader keeps leading`);
    return 0;
  } catch (e) {
    d.err(`pause: ${describeError(e)}`);
    return 1;
  }
}

/** Ends the pause; exit code 0 (resumed, also when it was not paused) or 1. */
export async function runResume(o: { key: string }, d: PauseDeps): Promise<number> {
  try {
    const { pair } = await d.consul.kvGet(pauseKey(o.key), { consistent: true });
    if (!pair) {
      d.out(`resume: ${o.key} is not paused`);
      return 0;
    }
    await d.consul.kvDelete(pauseKey(o.key));
    d.out(`resume: ${o.key} resumed: failovers and switchovers happen again`);
    return 0;
  } catch (e) {
    d.err(`resume: ${describeError(e)}`);
    return 1;
  }
}
