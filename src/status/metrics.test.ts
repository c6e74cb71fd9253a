import { describe, expect, test } from "bun:test";
import { parseExposition } from "../../test/harness/prometheus.ts";
import type { ElectorState } from "../election/types.ts";
import { escapeLabelValue, formatValue, Registry, RENEW_BUCKETS_S, ROLES, SidecarMetrics } from "./metrics.ts";
import type { ProcessStats } from "./process-stats.ts";
import { readProcessStats } from "./process-stats.ts";

describe("Registry", () => {
  test("renders HELP, TYPE and samples in the text exposition format", () => {
    const r = new Registry();
    r.counter("a_total", "Things that happened.", ["kind"]).inc({ kind: "x" }, 2);
    r.gauge("b", "A level.").set(1.5);
    expect(r.render()).toBe(
      "# HELP a_total Things that happened.\n# TYPE a_total counter\na_total{kind=\"x\"} 2\n" +
        "# HELP b A level.\n# TYPE b gauge\nb 1.5\n",
    );
  });

  test("escapes backslashes, quotes and newlines in label values, and backslashes and newlines in HELP", () => {
    const r = new Registry();
    r.counter("c_total", "line one\nback\\slash", ["v"]).inc({ v: 'a\\b"c\nd' });
    const text = r.render();
    expect(text).toContain("# HELP c_total line one\\nback\\\\slash\n");
    expect(text).toContain('c_total{v="a\\\\b\\"c\\nd"} 1\n');
    expect(parseExposition(text).samples[0]!.labels).toEqual({ v: 'a\\b"c\nd' });
    expect(escapeLabelValue("plain")).toBe("plain");
  });

  test("a counter adds up per label set, and the series come out in a stable order", () => {
    const r = new Registry();
    const c = r.counter("req_total", "Requests.", ["route", "status"]);
    c.inc({ route: "/b", status: "200" });
    c.inc({ route: "/a", status: "500" });
    c.inc({ status: "200", route: "/b" });
    expect(r.render().split("\n").filter((l) => !l.startsWith("#") && l)).toEqual(['req_total{route="/a",status="500"} 1', 'req_total{route="/b",status="200"} 2']);
  });

  test("a counter refuses to go down", () => {
    expect(() => new Registry().counter("x_total", "x").inc({}, -1)).toThrow(RangeError);
  });

  test("labels must be exactly the declared names", () => {
    const c = new Registry().counter("x_total", "x", ["a"]);
    expect(() => c.inc({})).toThrow("x_total takes labels {a}, got {}");
    expect(() => c.inc({ a: "1", b: "2" })).toThrow(TypeError);
  });

  test("names are checked, and a name registered twice is refused", () => {
    const r = new Registry();
    expect(() => r.gauge("bad-name", "x")).toThrow(TypeError);
    expect(() => r.gauge("ok", "x", ["__reserved"])).toThrow(TypeError);
    r.gauge("dup", "x");
    expect(() => r.counter("dup", "x")).toThrow("metric dup registered twice");
  });

  test("a removed gauge series is absent, while its HELP and TYPE remain", () => {
    const r = new Registry();
    const g = r.gauge("g", "x");
    g.set(3);
    g.remove();
    expect(r.render()).toBe("# HELP g x\n# TYPE g gauge\n");
  });

  test("a histogram renders cumulative buckets ending in +Inf, its sum and count", () => {
    const r = new Registry();
    const h = r.histogram("lat_seconds", "Latency.", [0.1, 0.01, 1], ["result"]);
    for (const v of [0.005, 0.05, 0.05, 0.5, 3]) h.observe(v, { result: "ok" });
    h.observe(0.1, { result: "error" });
    const lines = r.render().split("\n");
    expect(lines).toContain('lat_seconds_bucket{result="ok",le="0.01"} 1');
    expect(lines).toContain('lat_seconds_bucket{result="ok",le="0.1"} 3');
    expect(lines).toContain('lat_seconds_bucket{result="ok",le="1"} 4');
    expect(lines).toContain('lat_seconds_bucket{result="ok",le="+Inf"} 5');
    expect(lines).toContain('lat_seconds_sum{result="ok"} 3.605');
    expect(lines).toContain('lat_seconds_count{result="ok"} 5');
    // A value equal to a bound is in that bucket (le is "less than or equal").
    expect(lines).toContain('lat_seconds_bucket{result="error",le="0.1"} 1');
    expect(lines).toContain('lat_seconds_bucket{result="error",le="0.01"} 0');
    expect(parseExposition(r.render()).types.get("lat_seconds")).toBe("histogram");
  });

  test("histogram buckets must be distinct finite numbers, and le is reserved", () => {
    expect(() => new Registry().histogram("h", "x", [])).toThrow(TypeError);
    expect(() => new Registry().histogram("h", "x", [1, 1])).toThrow(TypeError);
    expect(() => new Registry().histogram("h", "x", [1, Infinity])).toThrow(TypeError);
    expect(() => new Registry().histogram("h", "x", [1], ["le"])).toThrow(TypeError);
  });

  test("formatValue writes NaN and the infinities as Prometheus reads them", () => {
    expect([NaN, Infinity, -Infinity, 0, 1.25, 1e21].map(formatValue)).toEqual(["NaN", "+Inf", "-Inf", "0", "1.25", "1e+21"]);
  });
});

function state(over: Partial<ElectorState> = {}): ElectorState {
  return {
    role: "leader", instance: "n1", service: "svc-n1", session: "s1",
    lock: { holder: "s1", instance: "n1", address: "10.0.0.1:6379", epoch: 57, modifyIndex: 57 },
    epoch: 57, fenceInMs: 3500, decision: null,
    redis: { up: true, role: "master", loading: false, syncing: false, linkUp: false, masterAddr: null, offset: 123456, replid: "r", replid2: "", runId: "run1", writable: true, stale: false },
    consul: { ok: true, error: null }, transitions: 3, lastRenewMs: 1, announce: "10.0.0.1:6379", loopAgeMs: 250,
    fenceAt: null, recent: [], lagBytes: null, maintenance: false, waiting: null, switchoverPending: false, incarnation: "i1", fenced: null, leaseFailingSince: null, paused: null,
    ...over,
  };
}

function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  return parseExposition(text).samples.find((s) => s.name === name && JSON.stringify(s.labels) === JSON.stringify(labels))?.value;
}

const PROCESS: ProcessStats = { cpuSeconds: 12.5, residentBytes: 50 * 2 ** 20, heapUsedBytes: 3 * 2 ** 20, heapTotalBytes: 4 * 2 ** 20, openFds: 17, startTimeSeconds: 1_700_000_000 };

describe("SidecarMetrics", () => {
  const NAMES = [
    "consul_leader_role", "consul_leader_transitions_total", "consul_leader_is_leader", "consul_leader_epoch",
    "consul_leader_fence_remaining_seconds", "consul_leader_renew_seconds", "consul_leader_consul_requests_total",
    "consul_leader_consul_errors_total", "consul_leader_redis_offset_bytes", "consul_leader_redis_lag_bytes", "consul_leader_redis_up",
  ];

  test("declares every metric with HELP and TYPE, and the output parses", () => {
    const { types, help } = parseExposition(new SidecarMetrics("1.2.3").render(state()));
    for (const n of NAMES) {
      expect(types.has(n)).toBe(true);
      expect(help.get(n)!.length).toBeGreaterThan(10);
    }
    expect(types.get("consul_leader_renew_seconds")).toBe("histogram");
    expect(types.get("consul_leader_transitions_total")).toBe("counter");
  });

  test("a leader: role leader at 1 and the others at 0, is_leader 1, epoch, seconds to the fence, Redis up and offset", () => {
    const text = new SidecarMetrics("1.2.3").render(state());
    for (const r of ROLES) expect(sample(text, "consul_leader_role", { role: r })).toBe(r === "leader" ? 1 : 0);
    expect(sample(text, "consul_leader_is_leader")).toBe(1);
    expect(sample(text, "consul_leader_epoch")).toBe(57);
    expect(sample(text, "consul_leader_fence_remaining_seconds")).toBe(3.5);
    expect(sample(text, "consul_leader_redis_up")).toBe(1);
    expect(sample(text, "consul_leader_redis_offset_bytes")).toBe(123456);
    expect(sample(text, "consul_leader_redis_lag_bytes")).toBeUndefined();
    expect(sample(text, "consul_leader_loop_age_seconds")).toBe(0.25);
    expect(sample(text, "consul_leader_build_info", { version: "1.2.3" })).toBe(1);
  });

  test("a follower: fence seconds absent, the holder's epoch, its lag; and a later scrape drops what no longer applies", () => {
    const m = new SidecarMetrics("1");
    m.render(state());
    const text = m.render(state({
      role: "follower", epoch: null, fenceInMs: null, lagBytes: 512,
      lock: { holder: "s2", instance: "n2", address: "10.0.0.2:6379", epoch: 60, modifyIndex: 60 },
      redis: { up: false, role: "replica", loading: false, syncing: false, linkUp: true, masterAddr: "10.0.0.2:6379", offset: 99, replid: "r", replid2: "", runId: "run1", writable: false, stale: false },
    }));
    expect(sample(text, "consul_leader_role", { role: "follower" })).toBe(1);
    expect(sample(text, "consul_leader_role", { role: "leader" })).toBe(0);
    expect(sample(text, "consul_leader_is_leader")).toBe(0);
    expect(sample(text, "consul_leader_fence_remaining_seconds")).toBeUndefined();
    expect(sample(text, "consul_leader_epoch")).toBe(60);
    expect(sample(text, "consul_leader_redis_lag_bytes")).toBe(512);
    expect(sample(text, "consul_leader_redis_up")).toBe(0);
  });

  test("a leader fenced because its lease cannot be renewed: fenced 1, and for how long the renews have failed", () => {
    const now = Date.parse("2025-01-01T00:00:10.000Z");
    const m = new SidecarMetrics("1", () => now);
    const text = m.render(state({ role: "fenced", fenced: { reason: "cannot renew the lease", since: "2025-01-01T00:00:04.000Z" }, leaseFailingSince: "2025-01-01T00:00:04.000Z" }));
    expect(sample(text, "consul_leader_fenced")).toBe(1);
    expect(sample(text, "consul_leader_lease_failing_seconds")).toBe(6);
    const fine = m.render(state());
    expect(sample(fine, "consul_leader_fenced")).toBe(0);
    expect(sample(fine, "consul_leader_lease_failing_seconds")).toBeUndefined();
  });

  test("every metric with a unit ends in it (_seconds, _bytes; before _total on a counter), and counters in _total", () => {
    const { types } = parseExposition(new SidecarMetrics("1").render(state({ lagBytes: 1 }), PROCESS));
    for (const [name, type] of types) {
      if (type === "counter") expect(name).toEndWith("_total");
      if (/seconds|bytes|offset|lag|age|latency/.test(name)) expect(name.replace(/_total$/, "")).toMatch(/_(seconds|bytes)$/);
    }
  });

  test("the process's own use under the usual names, when given: CPU, resident memory, fds, start time, JS heap", () => {
    const m = new SidecarMetrics("1");
    expect(parseExposition(m.render(state())).samples.filter((s) => s.name.startsWith("process_"))).toEqual([]);
    const text = m.render(state(), PROCESS);
    expect(parseExposition(text).types.get("process_cpu_seconds_total")).toBe("counter");
    expect(sample(text, "process_cpu_seconds_total")).toBe(12.5);
    expect(sample(text, "process_resident_memory_bytes")).toBe(50 * 2 ** 20);
    expect(sample(text, "process_open_fds")).toBe(17);
    expect(sample(text, "process_start_time_seconds")).toBe(1_700_000_000);
    expect(sample(text, "consul_leader_heap_used_bytes")).toBe(3 * 2 ** 20);
    expect(sample(text, "consul_leader_heap_total_bytes")).toBe(4 * 2 ** 20);
    // Off Linux no fd count: the series is absent. A CPU total read lower than before (it cannot be) does not count down.
    const later = m.render(state(), { ...PROCESS, openFds: null, cpuSeconds: 12 });
    expect(sample(later, "process_open_fds")).toBeUndefined();
    expect(sample(later, "process_cpu_seconds_total")).toBe(12.5);
  });

  test("tags-only mode and no known holder: no Redis series and no epoch", () => {
    const text = new SidecarMetrics("1").render(state({ role: "candidate", redis: null, epoch: null, fenceInMs: null, lock: null }));
    for (const n of ["consul_leader_redis_up", "consul_leader_redis_offset_bytes", "consul_leader_redis_lag_bytes", "consul_leader_epoch"]) {
      expect(parseExposition(text).samples.filter((s) => s.name === n)).toEqual([]);
    }
  });

  test("Consul requests are counted by method, route and status; failures by route and code", () => {
    const m = new SidecarMetrics("1");
    m.consulRequest({ method: "PUT", route: "/v1/session/renew/:id", status: 200, ms: 2 });
    m.consulRequest({ method: "PUT", route: "/v1/session/renew/:id", status: 200, ms: 3 });
    m.consulRequest({ method: "PUT", route: "/v1/session/renew/:id", status: 0, ms: 750, code: "CONSUL_TIMEOUT" });
    m.consulRequest({ method: "GET", route: "/v1/kv/:key", status: 0, ms: 5 });
    const text = m.render(state());
    expect(sample(text, "consul_leader_consul_requests_total", { method: "PUT", route: "/v1/session/renew/:id", status: "200" })).toBe(2);
    expect(sample(text, "consul_leader_consul_requests_total", { method: "PUT", route: "/v1/session/renew/:id", status: "0" })).toBe(1);
    expect(sample(text, "consul_leader_consul_requests_total", { method: "GET", route: "/v1/kv/:key", status: "0" })).toBe(1);
    expect(sample(text, "consul_leader_consul_errors_total", { route: "/v1/session/renew/:id", code: "CONSUL_TIMEOUT" })).toBe(1);
    // A cancelled blocking query carries no code: not an error.
    expect(parseExposition(text).samples.filter((s) => s.name === "consul_leader_consul_errors_total").length).toBe(1);
  });

  test("renew latency goes into the histogram in seconds, by result", () => {
    const m = new SidecarMetrics("1");
    m.renew(2, true);
    m.renew(40, true);
    m.renew(750, false);
    const text = m.render(state());
    expect(sample(text, "consul_leader_renew_seconds_count", { result: "ok" })).toBe(2);
    expect(sample(text, "consul_leader_renew_seconds_sum", { result: "ok" })).toBe(0.042);
    expect(sample(text, "consul_leader_renew_seconds_bucket", { result: "ok", le: "0.0025" })).toBe(1);
    expect(sample(text, "consul_leader_renew_seconds_bucket", { result: "ok", le: "0.05" })).toBe(2);
    expect(sample(text, "consul_leader_renew_seconds_bucket", { result: "error", le: "0.5" })).toBe(0);
    expect(sample(text, "consul_leader_renew_seconds_bucket", { result: "error", le: "1" })).toBe(1);
    expect(RENEW_BUCKETS_S.at(-1)).toBe(5);
  });

  test("role changes are counted by from and to", () => {
    const m = new SidecarMetrics("1");
    m.roleChanged({ from: "starting", to: "candidate" });
    m.roleChanged({ from: "candidate", to: "leader" });
    m.roleChanged({ from: "leader", to: "candidate" });
    m.roleChanged({ from: "candidate", to: "leader" });
    const text = m.render(state());
    expect(sample(text, "consul_leader_transitions_total", { from: "candidate", to: "leader" })).toBe(2);
    expect(parseExposition(text).samples.filter((s) => s.name === "consul_leader_transitions_total").reduce((a, s) => a + s.value, 0)).toBe(4);
  });
});

test("readProcessStats reads this process: CPU and memory above zero, fds counted on Linux, a start time in the past", () => {
  const p = readProcessStats();
  expect(p.cpuSeconds).toBeGreaterThan(0);
  expect(p.residentBytes).toBeGreaterThan(10 * 2 ** 20);
  expect(p.heapUsedBytes).toBeGreaterThan(0);
  expect(p.heapTotalBytes).toBeGreaterThanOrEqual(p.heapUsedBytes);
  const fds = require("node:fs").readdirSync("/proc/self/fd").length - 1;
  expect(Math.abs(p.openFds! - fds)).toBeLessThanOrEqual(1);
  expect(p.startTimeSeconds).toBeLessThan(Date.now() / 1000);
  expect(p.startTimeSeconds).toBeGreaterThan(Date.now() / 1000 - 3600);
});

test("readProcessStats's resident memory is VmRSS, as ps shows it", () => {
  const vmRss = Number(/^VmRSS:\s+(\d+) kB$/m.exec(require("node:fs").readFileSync("/proc/self/status", "utf8"))![1]) * 1024;
  expect(Math.abs(readProcessStats().residentBytes - vmRss)).toBeLessThan(2 ** 20);
});
