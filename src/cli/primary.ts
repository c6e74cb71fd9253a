/**
 * `consul-leader primary`: prints the primary's Redis address, host:port, for
 * scripts (`redis-cli -h ... -p ...`), like Sentinel's
 * `SENTINEL get-master-addr-by-name`.
 *
 * The address printed is the one the lock holder published: a holder puts it
 * in the lock value only once its Redis is the writable primary, after
 * proving its lease. So while the lock is free or its holder is still taking
 * over, there is no primary to print.
 *
 * Exit codes: 0 printed; 1 no primary now (the reason on stderr); 3 Consul
 * could not be read. Reads only (one consistent read of the lock key).
 */

import type { Consul } from "../consul/client.ts";
import { parseValue } from "../election/lock-value.ts";
import { describeError } from "../errors.ts";

export async function runPrimary(o: { key: string }, d: { consul: Consul; out: (line: string) => void; err: (line: string) => void }): Promise<number> {
  let pair;
  try {
    ({ pair } = await d.consul.kvGet(o.key, { consistent: true }));
  } catch (err) {
    d.err(`primary: ${describeError(err)}`);
    return 3;
  }
  if (!pair) {
    d.err(`primary: none (${o.key} does not exist)`);
    return 1;
  }
  if (!pair.Session) {
    d.err(`primary: none (nobody holds ${o.key}: a failover is in progress or the group is down)`);
    return 1;
  }
  const value = parseValue(pair, (problem) => d.err(`primary: ${problem}`));
  if (!value?.address) {
    d.err(`primary: none (${value ? `${value.instance} holds ${o.key} and is still taking over` : `${o.key} holds a value this program does not write`})`);
    return 1;
  }
  d.out(value.address);
  return 0;
}
