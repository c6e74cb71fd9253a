import { describe, expect, test } from "bun:test";
import { lockedElsewhere, replicaLag, renderStatus, type GroupStatus } from "./status.ts";
import { refuseTarget } from "./switchover.ts";
import type { MemberEntry } from "../consul/members.ts";

describe("replicaLag", () => {
  const primary = { offset: 5000, replicas: [{ host: "10.0.0.2", port: 6379, state: "online", offset: 4900, lag: 1 }, { host: "10.0.0.3", port: 6380, state: "online", offset: 5000, lag: 0 }] };

  test("bytes: the primary's offset minus the replica's own; seconds: the primary's lag for it", () => {
    expect(replicaLag(primary, "10.0.0.2:6379", 4800)).toEqual({ bytes: 200, seconds: 1 });
  });

  test("a replica the primary sees from another address is found by its port alone when only one has it", () => {
    expect(replicaLag(primary, "redis-c.example:6380", 5000)).toEqual({ bytes: 0, seconds: 0 });
  });

  test("a replica the primary does not list has bytes but no seconds; a replica ahead of a stale read shows 0", () => {
    expect(replicaLag(primary, "10.0.0.9:7000", 4000)).toEqual({ bytes: 1000, seconds: null });
    expect(replicaLag(primary, "10.0.0.2:6379", 5100)).toEqual({ bytes: 0, seconds: 1 });
  });
});

describe("lockedElsewhere", () => {
  const entry = (meta: Record<string, string>) => ({ Service: { ID: "redis-1", Service: "redis", Tags: ["primary"], Address: "", Port: 6379, Meta: meta } }) as never;

  test("names the key the primary's sidecar locks, from its service Meta", () => {
    expect(lockedElsewhere(entry({ session: "s1", lock_key: "test/demo/lock" }), "consul-leader/demo/lock")).toBe(
      "redis-1 is tagged primary by a consul-leader that locks test/demo/lock, not consul-leader/demo/lock: run status with CONSUL_LEADER_KEY=test/demo/lock",
    );
  });

  test("an older sidecar without lock_key is named by its session; a service without either says nothing", () => {
    expect(lockedElsewhere(entry({ session: "s1" }), "k")).toMatch(/^redis-1 is tagged primary by the consul-leader session s1, which does not hold k/);
    expect(lockedElsewhere(entry({}), "k")).toBeUndefined();
    expect(lockedElsewhere(entry({ session: "s1", lock_key: "k" }), "k")).toBeUndefined();
  });
});

function member(instance: string, over: Partial<MemberEntry["member"]> = {}, session = `s-${instance}`): MemberEntry {
  return {
    member: { instance, service: instance, address: `10.0.0.${instance.slice(-1)}:6379`, role: "follower", eligible: true, redisUp: true, priority: 1, offset: 1, replid: "r", replid2: "", updated: "2025-01-01T00:00:00.000Z", ...over },
    session,
    modifyIndex: 1,
  };
}

describe("refuseTarget (switchover's check before it asks)", () => {
  const members = [member("n1", { role: "leader" }), member("n2"), member("n3", { eligible: false, ineligible: "Redis is down" }), member("n4", {}, "")];

  test("an eligible member with a live session, by instance or by address, is accepted", () => {
    expect(refuseTarget(members, "n1", "n2")).toBeNull();
    expect(refuseTarget(members, "n1", "10.0.0.2:6379")).toBeNull();
    expect(refuseTarget(members, "n1", undefined)).toBeNull();
  });

  test("an unknown name lists the members that can take over", () => {
    expect(refuseTarget(members, "n1", "nosuch")).toBe("nosuch is not a member of this group; members that can take over: n2 (10.0.0.2:6379)");
  });

  test("an ineligible member says why; a member whose sidecar is gone says so", () => {
    expect(refuseTarget(members, "n1", "n3")).toBe("n3 cannot take over: Redis is down; members that can: n2 (10.0.0.2:6379)");
    expect(refuseTarget(members, "n1", "n4")).toBe("n4 cannot take over: its sidecar is gone (no live session); members that can: n2 (10.0.0.2:6379)");
  });

  test("without a target, some member must be able to take over", () => {
    expect(refuseTarget([member("n1", { role: "leader" }), member("n3", { eligible: false })], "n1", undefined)).toBe("no member can take over from n1; members: n3 (10.0.0.3:6379)");
  });
});

describe("renderStatus", () => {
  const s: GroupStatus = {
    key: "k",
    service: "redis",
    leader: { instance: "n1", address: "10.0.0.1:6379", epoch: 9, since: "2025-01-01T00:00:00.000Z", session: "s" },
    members: [
      { instance: "n1", service: "n1", role: "leader", address: "10.0.0.1:6379", eligible: true, ineligible: null, redisUp: true, offset: 10, redis: { ok: true, role: "master", offset: 500, linkUp: false, loading: false, syncing: false }, lagBytes: null, lagSeconds: null, alive: true, tags: ["primary"], passing: true, updated: "2025-01-01T00:00:00.000Z" },
      { instance: "n2", service: "n2", role: "follower", address: "10.0.0.2:6379", eligible: true, ineligible: null, redisUp: true, offset: 10, redis: { ok: true, role: "replica", offset: 480, linkUp: true, loading: false, syncing: false }, lagBytes: 20, lagSeconds: 1, alive: true, tags: ["replica"], passing: true, updated: "2025-01-01T00:00:00.000Z" },
      { instance: "n3", service: "n3", role: "follower", address: "10.0.0.3:6379", eligible: false, ineligible: "Redis is down", redisUp: false, offset: 300, redis: { ok: false, error: "connection refused" }, lagBytes: null, lagSeconds: null, alive: true, tags: [], passing: false, updated: "2025-01-01T00:00:00.000Z" },
    ],
    discoveredPrimaries: ["n1"],
    paused: { since: "2025-01-01T00:00:05.000Z", by: "ops@host", reason: "upgrade" },
    failovers: [{ at: "2025-01-01T00:00:00.000Z", from: "n3", to: "n1", why: "its Redis went down", epoch: 9 }],
    healthy: true,
    problems: [],
  };
  const text = renderStatus(s, { now: () => Date.parse("2025-01-01T00:01:00.000Z"), monotonic: () => 0, sleep: async () => {}, timer: () => ({ cancel() {} }) });

  test("shows the live offset and lag of each replica, and why a member cannot lead", () => {
    expect(text).toMatch(/^n2 +follower +10\.0\.0\.2:6379 +replica, link up +480 +20 B, 1 s +yes /m);
    expect(text).toMatch(/^n3 .*unreachable +300 \(published 60s ago\) +- +no: Redis is down /m);
    expect(text).toContain("n3: its Redis at 10.0.0.3:6379 cannot be read from here (connection refused)");
  });

  test("says the group is paused, by whom and why, and lists the last failovers", () => {
    expect(text).toContain("PAUSED (since 2025-01-01T00:00:05.000Z, by ops@host, upgrade): no failover, no switchover until consul-leader resume");
    expect(text).toContain("last failovers:\n  2025-01-01T00:00:00.000Z  n3 -> n1 (epoch 9): its Redis went down");
  });
});
