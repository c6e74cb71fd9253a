/**
 * Consul's own counters, as the scale mode reads them: the agents run with
 * `telemetry.prometheus_retention_time` set (TELEMETRY), so
 * `/v1/agent/metrics?format=prometheus` carries cumulative counters and
 * summary counts; two snapshots a window apart give rates. Owns scraping and
 * differencing only; what the counters mean is said where they are used.
 */

import type { ConsulAgent } from "../test/harness/consul.ts";

/** Agent configuration that makes Prometheus-format counters available (merged into every agent's config). */
export const TELEMETRY = { telemetry: { prometheus_retention_time: "2h", disable_hostname: true } };

/** One scrape: value of every sample line, keyed by the line's name and labels as printed. */
export type Snapshot = Map<string, number>;

/**
 * Scrapes `agent`. Lenient on purpose (Consul's output is the Go client's
 * and is not re-validated here): comment lines are skipped, a line that is
 * not `name{labels} value` is ignored.
 */
export async function scrape(agent: ConsulAgent): Promise<Snapshot> {
  const res = await fetch(`${agent.url}/v1/agent/metrics?format=prometheus`);
  if (!res.ok) throw new Error(`${agent.name}: /v1/agent/metrics: ${res.status}`);
  const out: Snapshot = new Map();
  for (const line of (await res.text()).split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const sp = line.lastIndexOf(" ");
    const v = Number(line.slice(sp + 1));
    if (sp > 0 && Number.isFinite(v)) out.set(line.slice(0, sp), v);
  }
  return out;
}

/** The value of series `key` (name with its labels as printed, e.g. `consul_api_http_count{method="GET",path="v1_kv_"}`), 0 when absent. */
export function value(s: Snapshot, key: string): number {
  return s.get(key) ?? 0;
}

/** Sum of every series whose printed key starts with `prefix` and satisfies `filter`. */
export function total(s: Snapshot, prefix: string, filter: (key: string) => boolean = () => true): number {
  let sum = 0;
  for (const [k, v] of s) if (k.startsWith(prefix) && filter(k)) sum += v;
  return sum;
}

/** after - before for one series (a counter; agents are not restarted inside a window). */
export function delta(before: Snapshot, after: Snapshot, key: string): number {
  return value(after, key) - value(before, key);
}

/**
 * HTTP requests an agent answered in a window, by path as Consul templates it
 * (`v1_kv_`, `v1_session_renew_`, `v1_agent_check_update_`, ...), from the
 * count of the `consul_api_http` summary.
 */
export function httpByPath(before: Snapshot, after: Snapshot): Map<string, number> {
  const out = new Map<string, number>();
  for (const [k, v] of after) {
    const m = /^consul_api_http_count\{method="([A-Z]+)",path="([^"]*)"\}$/.exec(k);
    if (!m) continue;
    const d = v - (before.get(k) ?? 0);
    if (d > 0) out.set(`${m[1]} ${m[2]}`, (out.get(`${m[1]} ${m[2]}`) ?? 0) + d);
  }
  return out;
}
