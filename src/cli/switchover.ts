/**
 * `consul-leader switchover [--to INSTANCE|ADDR] [--timeout DUR]`: asks the
 * running group's leader, through Consul, to hand the primary role over, and
 * waits until another member holds the lock.
 *
 * The request is a KV entry next to the lock (`<key>/switchover`) naming the
 * leader it is meant for, so a request that outlives that leader is ignored.
 * Guarantees: exits 0 only after Consul shows a different holder (the
 * requested one, when `--to` is given). Does not wait for replicas to follow.
 */

import type { Clock } from "../clock.ts";
import type { Consul } from "../consul/client.ts";
import { formatDuration } from "../config/duration.ts";
import { parseValue, switchoverKey, type SwitchoverRequest } from "../election/lock-value.ts";
import { describeError } from "../errors.ts";

export interface SwitchoverOptions {
  key: string;
  to?: string;
  timeoutMs: number;
}

export interface SwitchoverDeps {
  consul: Consul;
  clock: Clock;
  /** Prints one line for the operator. */
  out: (line: string) => void;
}

/** Returns the process exit code: 0 switched over, 1 not. */
export async function runSwitchover(o: SwitchoverOptions, d: SwitchoverDeps): Promise<number> {
  const { consul, clock, out } = d;
  const started = clock.monotonic();
  try {
    const { pair, index } = await consul.kvGet(o.key, { consistent: true });
    const current = parseValue(pair);
    if (!pair?.Session || !current) {
      out(`switchover: nobody holds ${o.key}; nothing to hand over`);
      return 1;
    }
    if (o.to && (o.to === current.instance || o.to === current.address)) {
      out(`switchover: ${current.instance} already leads`);
      return 0;
    }
    const req: SwitchoverRequest = { leader: current.instance, ...(o.to ? { to: o.to } : {}), requested: new Date(clock.now()).toISOString() };
    await consul.kvPut(switchoverKey(o.key), JSON.stringify(req));
    out(`switchover: asked ${current.instance} (epoch ${current.epoch ?? "?"}) to hand over${o.to ? ` to ${o.to}` : ""}`);

    let waitIndex = Math.max(1, index);
    for (;;) {
      const left = o.timeoutMs - (clock.monotonic() - started);
      if (left <= 0) {
        await consul.kvDelete(switchoverKey(o.key)).catch(() => false);
        out(`switchover: ${current.instance} still leads after ${formatDuration(o.timeoutMs)}; request withdrawn`);
        return 1;
      }
      const got = await consul.kvGet(o.key, { consistent: true, index: waitIndex, waitMs: Math.max(100, Math.floor(left)) });
      waitIndex = got.index < waitIndex ? 1 : Math.max(1, got.index);
      const now = parseValue(got.pair);
      if (got.pair?.Session && now && now.session === got.pair.Session && now.instance !== current.instance) {
        const ms = Math.round(clock.monotonic() - started);
        if (o.to && now.instance !== o.to && now.address !== o.to) {
          out(`switchover: ${now.instance} took over in ${ms} ms, not the requested ${o.to}`);
          return 1;
        }
        out(`switchover: ${current.instance} -> ${now.instance}${now.address ? ` (${now.address})` : ""} in ${ms} ms`);
        return 0;
      }
    }
  } catch (err) {
    out(`switchover: ${describeError(err)}`);
    return 1;
  }
}
