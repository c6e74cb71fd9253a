import { describe, expect, test } from "bun:test";
import type { LockValue, LockView } from "../election/types.ts";
import { globMatch } from "./glob.ts";
import { deriveView, EMPTY_VIEW, eventsBetween, type Facts, type PrimaryView } from "./view.ts";

const held = (v: Partial<LockValue> & { instance: string }, epoch = 7): LockView => ({
  holder: `s-${v.instance}`,
  value: { session: `s-${v.instance}`, service: v.instance, epoch, ...v },
  modifyIndex: epoch,
  exists: true,
});
const free = (v: Partial<LockValue> & { instance: string }): LockView => ({
  holder: null,
  value: { session: `s-${v.instance}`, service: v.instance, ...v },
  modifyIndex: 99,
  exists: true,
});
const facts = (lock: LockView | undefined, o: Partial<Facts> = {}): Facts => ({ lock, self: "c", role: "follower", redisWritable: false, ...o });

/** Feeds a sequence of facts through deriveView and collects every event, as the endpoint does. */
function run(steps: Facts[]): { views: PrimaryView[]; events: string[] } {
  let v = EMPTY_VIEW;
  const views: PrimaryView[] = [];
  const events: string[] = [];
  for (const f of steps) {
    const next = deriveView(f, v);
    events.push(...eventsBetween(v, next, "mym").map((e) => `${e.channel} ${e.message}`));
    views.push(next);
    v = next;
  }
  return { views, events };
}

describe("deriveView", () => {
  test("a held lock with an address names a current primary", () => {
    const v = deriveView(facts(held({ instance: "a", address: "10.0.0.1:6379" })), EMPTY_VIEW);
    expect(v).toEqual({ current: { host: "10.0.0.1", port: 6379 }, shown: { host: "10.0.0.1", port: 6379 }, failover: false, down: false, epoch: 7, holder: "a" });
  });

  test("nothing is current before the lock was read, or while nothing was ever known", () => {
    expect(deriveView(facts(undefined), EMPTY_VIEW)).toMatchObject({ current: null, shown: null, failover: true });
  });

  test("a holder still taking over names no current primary, and shows the one it takes over from", () => {
    const v = deriveView(facts(held({ instance: "b", prevAddress: "10.0.0.1:6379", prevReleased: "redis-down" })), EMPTY_VIEW);
    expect(v).toMatchObject({ current: null, shown: { host: "10.0.0.1", port: 6379 }, failover: true, down: true, holder: "b" });
  });

  test("on the holder itself, only a leader whose Redis takes writes is current", () => {
    const lock = held({ instance: "b", address: "10.0.0.2:6379" });
    expect(deriveView(facts(lock, { self: "b", role: "leader", redisWritable: true }), EMPTY_VIEW).current).toEqual({ host: "10.0.0.2", port: 6379 });
    expect(deriveView(facts(lock, { self: "b", role: "leader", redisWritable: false }), EMPTY_VIEW).current).toBeNull();
    expect(deriveView(facts(lock, { self: "b", role: "fenced", redisWritable: false }), EMPTY_VIEW).failover).toBe(true);
  });
});

describe("events", () => {
  const a = held({ instance: "a", address: "10.0.0.1:6379" }, 7);
  const b = held({ instance: "b", address: "10.0.0.2:6379" }, 12);

  test("a crashed primary: +sdown/+odown, then +failover-end and +switch-master once the new one is current", () => {
    const { views, events } = run([
      facts(a),
      facts(free({ instance: "a", address: "10.0.0.1:6379", released: "redis-down" })),
      facts(held({ instance: "b", prevAddress: "10.0.0.1:6379", prevReleased: "redis-down" }, 12)),
      facts(b),
    ]);
    expect(events).toEqual([
      "+sdown master mym 10.0.0.1 6379",
      "+odown master mym 10.0.0.1 6379 #quorum 1/1",
      "+failover-end master mym 10.0.0.1 6379",
      "+switch-master mym 10.0.0.1 6379 10.0.0.2 6379",
    ]);
    // Throughout the failover the old address is what a query answers.
    expect(views[1]!.shown).toEqual({ host: "10.0.0.1", port: 6379 });
    expect(views[2]!.shown).toEqual({ host: "10.0.0.1", port: 6379 });
    expect(views[3]).toMatchObject({ current: { host: "10.0.0.2", port: 6379 }, down: false, epoch: 12 });
  });

  test("a planned handover: +try-failover, then the switch; nothing says down", () => {
    const { events, views } = run([facts(a), facts(free({ instance: "a", address: "10.0.0.1:6379", released: "handover", handoverTo: "b" })), facts(b)]);
    expect(events).toEqual(["+try-failover master mym 10.0.0.1 6379", "+failover-end master mym 10.0.0.1 6379", "+switch-master mym 10.0.0.1 6379 10.0.0.2 6379"]);
    expect(views[1]).toMatchObject({ failover: true, down: false });
  });

  test("the same primary current again after a scare: -odown/-sdown, no switch", () => {
    const { events } = run([facts(a), facts(free({ instance: "a", address: "10.0.0.1:6379", released: "redis-down" })), facts(held({ instance: "a", address: "10.0.0.1:6379" }, 14))]);
    expect(events).toEqual([
      "+sdown master mym 10.0.0.1 6379",
      "+odown master mym 10.0.0.1 6379 #quorum 1/1",
      "-odown master mym 10.0.0.1 6379",
      "-sdown master mym 10.0.0.1 6379",
    ]);
  });

  test("on the new leader itself, the switch is published once it leads with a writable Redis", () => {
    const mine = held({ instance: "b", address: "10.0.0.2:6379" }, 12);
    const { events } = run([
      facts(a, { self: "b" }),
      facts(free({ instance: "a", address: "10.0.0.1:6379", released: "redis-down" }), { self: "b", role: "candidate" }),
      facts(mine, { self: "b", role: "candidate", redisWritable: true }),
      facts(mine, { self: "b", role: "leader", redisWritable: true }),
    ]);
    expect(events.slice(-2)).toEqual(["+failover-end master mym 10.0.0.1 6379", "+switch-master mym 10.0.0.1 6379 10.0.0.2 6379"]);
  });

  test("a leader handing over is no longer current on its own endpoint; the switch follows", () => {
    const mine = held({ instance: "a", address: "10.0.0.1:6379" }, 7);
    const { events, views } = run([facts(mine, { self: "a", role: "leader", redisWritable: true }), facts(mine, { self: "a", role: "leader", redisWritable: false }), facts(b, { self: "a" })]);
    expect(views[1]).toMatchObject({ current: null, shown: { host: "10.0.0.1", port: 6379 }, failover: true });
    expect(events).toEqual(["+try-failover master mym 10.0.0.1 6379", "+failover-end master mym 10.0.0.1 6379", "+switch-master mym 10.0.0.1 6379 10.0.0.2 6379"]);
  });

  test("the first primary ever seen is configuration, not a switch", () => {
    expect(run([facts(undefined), facts(a)]).events).toEqual([]);
  });

  test("nothing changes, nothing is published", () => {
    expect(run([facts(a), facts(a), facts(held({ instance: "a", address: "10.0.0.1:6379" }, 7))]).events).toEqual([]);
  });
});

describe("globMatch", () => {
  for (const [p, s, want] of [
    ["*", "+switch-master", true],
    ["[-+]sdown", "+sdown", true],
    ["[-+]sdown", "-sdown", true],
    ["[-+]sdown", "+odown", false],
    ["+switch-*", "+switch-master", true],
    ["switch-master", "+switch-master", false],
    ["+s?own", "+sdown", true],
    ["[^a]b", "ab", false],
    ["\\*", "*", true],
    ["a*b*c", "aXbYc", true],
    ["a*b*c", "aXbY", false],
    ["[a-c]", "b", true],
  ] as const) {
    test(`${p} ${want ? "matches" : "does not match"} ${s}`, () => expect(globMatch(p, s)).toBe(want));
  }

  test("a pathological pattern finishes quickly", () => {
    const t = performance.now();
    expect(globMatch("*a".repeat(100) + "b", "a".repeat(256))).toBe(false);
    expect(performance.now() - t).toBeLessThan(200);
  });
});
