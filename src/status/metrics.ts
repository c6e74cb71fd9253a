/**
 * Prometheus metrics: a small registry (counters, gauges, histograms) that
 * renders the text exposition format, and the sidecar's own metrics, fed by
 * the Consul client (`observe`), the renew loop (`onRenew`), role changes
 * (`onRoleChange`) and, once per scrape, the elector's state.
 *
 * Guarantees: `render()` follows text format 0.0.4 (a HELP and a TYPE line per
 * metric, label values escaped, cumulative histogram buckets ending in +Inf).
 * Does not bound cardinality: every label value must come from a small set
 * (Consul routes are templated by `routeOf`, roles and codes are closed
 * unions), or the series grow without limit.
 */

import type { RequestEvent } from "../consul/client.ts";
import type { ElectorState, Role, RoleChange } from "../election/types.ts";
import type { ProcessStats } from "./process-stats.ts";

export type Labels = Readonly<Record<string, string>>;

type Kind = "counter" | "gauge" | "histogram";

abstract class Metric {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  abstract readonly kind: Kind;

  constructor(name: string, help: string, labelNames: readonly string[]) {
    if (!/^[a-zA-Z_:][a-zA-Z0-9_:]*$/.test(name)) throw new TypeError(`invalid metric name ${name}`);
    for (const l of labelNames) if (!/^[a-zA-Z_][a-zA-Z0-9_]*$/.test(l) || l.startsWith("__")) throw new TypeError(`invalid label name ${l} on ${name}`);
    this.name = name;
    this.help = help;
    this.labelNames = labelNames;
  }

  /** The series key of `labels`; throws when they are not exactly the declared names. */
  protected key(labels: Labels): string {
    const given = Object.keys(labels);
    if (given.length !== this.labelNames.length || this.labelNames.some((n) => labels[n] === undefined)) {
      throw new TypeError(`${this.name} takes labels {${this.labelNames.join(",")}}, got {${given.join(",")}}`);
    }
    return JSON.stringify(this.labelNames.map((n) => labels[n]));
  }

  protected labelsOf(key: string, extra?: [string, string]): string {
    const values = JSON.parse(key) as string[];
    const pairs = this.labelNames.map((n, i) => `${n}="${escapeLabelValue(values[i]!)}"`);
    if (extra) pairs.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
    return pairs.length ? `{${pairs.join(",")}}` : "";
  }

  /** Sample lines, without HELP and TYPE, series in a stable order. */
  abstract samples(): string[];
}

/** A value that only goes up (resets to 0 when the process restarts). */
export class Counter extends Metric {
  readonly kind = "counter";
  readonly #values = new Map<string, number>();

  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0)) throw new RangeError(`${this.name}: a counter cannot go down (inc by ${by})`);
    const k = this.key(labels);
    this.#values.set(k, (this.#values.get(k) ?? 0) + by);
  }

  /** Copies a total kept elsewhere (the OS's CPU time); a smaller value than the last is ignored. */
  mirror(total: number, labels: Labels = {}): void {
    const k = this.key(labels);
    if (total >= (this.#values.get(k) ?? 0)) this.#values.set(k, total);
  }

  samples(): string[] {
    return [...this.#values].sort(byKey).map(([k, v]) => `${this.name}${this.labelsOf(k)} ${formatValue(v)}`);
  }
}

/** A value that goes up and down; a series that is not set is absent from the output. */
export class Gauge extends Metric {
  readonly kind = "gauge";
  readonly #values = new Map<string, number>();

  set(value: number, labels: Labels = {}): void {
    this.#values.set(this.key(labels), value);
  }

  /** Removes the series, so a scrape shows no value rather than a stale one. */
  remove(labels: Labels = {}): void {
    this.#values.delete(this.key(labels));
  }

  samples(): string[] {
    return [...this.#values].sort(byKey).map(([k, v]) => `${this.name}${this.labelsOf(k)} ${formatValue(v)}`);
  }
}

/** Observations counted into fixed buckets, with their sum and count. */
export class Histogram extends Metric {
  readonly kind = "histogram";
  readonly buckets: readonly number[];
  readonly #series = new Map<string, { counts: number[]; sum: number; count: number }>();

  constructor(name: string, help: string, buckets: readonly number[], labelNames: readonly string[]) {
    super(name, help, labelNames);
    if (labelNames.includes("le")) throw new TypeError(`${name}: "le" is reserved for histogram buckets`);
    const sorted = [...buckets].sort((a, b) => a - b);
    if (sorted.length === 0 || sorted.some((b, i) => !Number.isFinite(b) || (i > 0 && b === sorted[i - 1]))) {
      throw new TypeError(`${name}: buckets must be distinct finite numbers`);
    }
    this.buckets = sorted;
  }

  observe(value: number, labels: Labels = {}): void {
    const k = this.key(labels);
    let s = this.#series.get(k);
    if (!s) this.#series.set(k, (s = { counts: this.buckets.map(() => 0), sum: 0, count: 0 }));
    const i = this.buckets.findIndex((b) => value <= b);
    if (i >= 0) s.counts[i]!++;
    s.sum += value;
    s.count++;
  }

  samples(): string[] {
    const out: string[] = [];
    for (const [k, s] of [...this.#series].sort(byKey)) {
      let cumulative = 0;
      this.buckets.forEach((b, i) => {
        cumulative += s.counts[i]!;
        out.push(`${this.name}_bucket${this.labelsOf(k, ["le", formatValue(b)])} ${cumulative}`);
      });
      out.push(`${this.name}_bucket${this.labelsOf(k, ["le", "+Inf"])} ${s.count}`);
      out.push(`${this.name}_sum${this.labelsOf(k)} ${formatValue(s.sum)}`);
      out.push(`${this.name}_count${this.labelsOf(k)} ${s.count}`);
    }
    return out;
  }
}

/** Holds metrics and renders them all; names must be unique. */
export class Registry {
  readonly #metrics: Metric[] = [];

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.#add(new Counter(name, help, labelNames));
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return this.#add(new Gauge(name, help, labelNames));
  }

  histogram(name: string, help: string, buckets: readonly number[], labelNames: readonly string[] = []): Histogram {
    return this.#add(new Histogram(name, help, buckets, labelNames));
  }

  /** Every metric in registration order: HELP, TYPE, then its samples (none for an unset gauge). */
  render(): string {
    return this.#metrics.map((m) => [`# HELP ${m.name} ${escapeHelp(m.help)}`, `# TYPE ${m.name} ${m.kind}`, ...m.samples()].join("\n")).join("\n") + "\n";
  }

  #add<M extends Metric>(m: M): M {
    if (this.#metrics.some((x) => x.name === m.name)) throw new TypeError(`metric ${m.name} registered twice`);
    this.#metrics.push(m);
    return m;
  }
}

/** The content type of `Registry.render()`. */
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

export function escapeLabelValue(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

/** Go's float syntax as Prometheus parses it: NaN, +Inf, -Inf, or a plain number. */
export function formatValue(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function byKey(a: [string, unknown], b: [string, unknown]): number {
  return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0;
}

// ---------------------------------------------------------------- the sidecar's metrics

/** Every role, so each scrape shows the current one at 1 and the others at 0 (a Record so a new Role fails to compile here). */
const ROLE_NAMES: Record<Role, true> = { starting: true, leader: true, follower: true, candidate: true, fenced: true };
export const ROLES = Object.keys(ROLE_NAMES) as Role[];

/**
 * Buckets of the renew latency, in seconds. A renew on loopback takes about
 * 1 ms and a few ms across a LAN; the top bucket is the longest request
 * timeout (5 s, the clamp in `deriveTiming`), so every renew that can succeed
 * lands in a finite bucket.
 */
export const RENEW_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5] as const;

/**
 * The metrics the sidecar exports. Counters and the histogram are fed as
 * things happen; the gauges are sampled from `Elector.state()` at each scrape,
 * so they cannot go stale between role changes.
 *
 * Absent rather than NaN: `consul_leader_fence_remaining_seconds` while this
 * sidecar holds no lease, `consul_leader_epoch` while no holder is known,
 * `consul_leader_lease_failing_seconds` while renews and heartbeats work,
 * `consul_leader_redis_lag_bytes` while the lag is unknown (not a replica, or
 * the leader's Redis did not answer), and every `consul_leader_redis_*` in
 * tags-only mode. An absent series makes comparisons in alerts false, as NaN
 * would, and does not draw a misleading line.
 */
export class SidecarMetrics {
  readonly registry = new Registry();
  readonly #info = this.registry.gauge("consul_leader_build_info", "Always 1; the version label says which build runs.", ["version"]);
  readonly #role = this.registry.gauge("consul_leader_role", "1 for this sidecar's current role, 0 for the others.", ["role"]);
  readonly #isLeader = this.registry.gauge("consul_leader_is_leader", "1 while this sidecar holds the lock and leads, else 0.");
  readonly #transitions = this.registry.counter("consul_leader_transitions_total", "Role changes since the sidecar started.", ["from", "to"]);
  readonly #epoch = this.registry.gauge("consul_leader_epoch", "Fencing epoch of the lock holder as this sidecar last read it (the key's ModifyIndex at acquisition). Absent while no holder is known.");
  readonly #fenceLeft = this.registry.gauge("consul_leader_fence_remaining_seconds", "Seconds before this leader's fencing deadline. Absent while it holds no lease.");
  readonly #paused = this.registry.gauge("consul_leader_paused", "1 while the group is paused (consul-leader pause: no failover, no switchover), else 0.");
  readonly #fenced = this.registry.gauge("consul_leader_fenced", "1 while this sidecar has fenced its Redis (writes blocked: /readiness and /state say why), else 0.");
  readonly #leaseFailing = this.registry.gauge("consul_leader_lease_failing_seconds", "Seconds since session renews or liveness heartbeats started failing (the local Consul agent unreachable, most often); past CHECK_TTL - FENCE_MARGIN the leader fences. Absent while they work.");
  readonly #loopAge = this.registry.gauge("consul_leader_loop_age_seconds", "Seconds since the election loop last finished a tick; /liveness fails past its limit.");
  readonly #renew = this.registry.histogram("consul_leader_renew_seconds", "Latency of session renewals, by result (ok or error).", RENEW_BUCKETS_S, ["result"]);
  readonly #requests = this.registry.counter("consul_leader_consul_requests_total", "Consul HTTP requests by method, route and status (0: no answer, e.g. a timeout or a blocking query cancelled on purpose).", ["method", "route", "status"]);
  readonly #errors = this.registry.counter("consul_leader_consul_errors_total", "Failed Consul HTTP requests by route and error code.", ["route", "code"]);
  readonly #redisUp = this.registry.gauge("consul_leader_redis_up", "1 when this sidecar's Redis answers, else 0. Absent in tags-only mode.");
  readonly #redisOffset = this.registry.gauge("consul_leader_redis_offset_bytes", "Replication offset of this sidecar's Redis at its last poll, in bytes. Absent in tags-only mode.");
  readonly #redisLag = this.registry.gauge("consul_leader_redis_lag_bytes", "Bytes this replica is behind the leader's Redis. Absent when unknown or not a replica.");
  // The process metrics every Prometheus client library exports, under their usual names, plus the JS heap.
  readonly #cpu = this.registry.counter("process_cpu_seconds_total", "User and system CPU time of the sidecar process, seconds.");
  readonly #resident = this.registry.gauge("process_resident_memory_bytes", "Resident memory of the sidecar process (its mapped runtime code included), bytes.");
  readonly #openFds = this.registry.gauge("process_open_fds", "Open file descriptors of the sidecar process. Absent off Linux.");
  readonly #startTime = this.registry.gauge("process_start_time_seconds", "When the sidecar process started, seconds since the Unix epoch.");
  readonly #heapUsed = this.registry.gauge("consul_leader_heap_used_bytes", "JS heap in use, bytes.");
  readonly #heapTotal = this.registry.gauge("consul_leader_heap_total_bytes", "JS heap reserved, bytes.");

  readonly #now: () => number;

  /** `now`: wall clock ms, for ages computed from the state's ISO times. */
  constructor(version: string, now: () => number = Date.now) {
    this.#info.set(1, { version });
    this.#now = now;
  }

  /** For `ConsulDeps.observe`. */
  consulRequest(e: RequestEvent): void {
    this.#requests.inc({ method: e.method, route: e.route, status: String(e.status) });
    if (e.code) this.#errors.inc({ route: e.route, code: e.code });
  }

  /** For `ElectorDeps.onRenew`. */
  renew(ms: number, ok: boolean): void {
    this.#renew.observe(ms / 1000, { result: ok ? "ok" : "error" });
  }

  /** For `ElectorDeps.onRoleChange`. */
  roleChanged(c: Pick<RoleChange, "from" | "to">): void {
    this.#transitions.inc({ from: c.from, to: c.to });
  }

  /** Samples `s` (and `p`, the process's own use) into the gauges and renders every metric; call once per scrape. */
  render(s: ElectorState, p?: ProcessStats): string {
    if (p) {
      this.#cpu.mirror(p.cpuSeconds);
      this.#resident.set(p.residentBytes);
      setOrRemove(this.#openFds, p.openFds);
      this.#startTime.set(p.startTimeSeconds);
      this.#heapUsed.set(p.heapUsedBytes);
      this.#heapTotal.set(p.heapTotalBytes);
    }
    for (const r of ROLES) this.#role.set(r === s.role ? 1 : 0, { role: r });
    this.#isLeader.set(s.role === "leader" ? 1 : 0);
    setOrRemove(this.#epoch, s.epoch ?? s.lock?.epoch ?? null);
    setOrRemove(this.#fenceLeft, s.fenceInMs === null ? null : s.fenceInMs / 1000);
    this.#loopAge.set(s.loopAgeMs / 1000);
    this.#fenced.set(s.role === "fenced" ? 1 : 0);
    this.#paused.set(s.paused ? 1 : 0);
    setOrRemove(this.#leaseFailing, s.leaseFailingSince === null ? null : Math.max(0, (this.#now() - Date.parse(s.leaseFailingSince)) / 1000));
    setOrRemove(this.#redisUp, s.redis ? (s.redis.up ? 1 : 0) : null);
    setOrRemove(this.#redisOffset, s.redis ? s.redis.offset : null);
    setOrRemove(this.#redisLag, s.redis ? s.lagBytes : null);
    return this.registry.render();
  }
}

function setOrRemove(g: Gauge, v: number | null): void {
  if (v === null) g.remove();
  else g.set(v);
}
