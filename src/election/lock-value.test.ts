import { describe, expect, test } from "bun:test";
import { appendFailover, failoverWhy, type Failover, HISTORY_MAX, parseHistory, parsePause, parseValue, pauseNote } from "./lock-value.ts";

const pair = (Key: string, Value: string | null) => ({ Key, Value, Flags: 0, CreateIndex: 1, ModifyIndex: 1, LockIndex: 0 });

describe("the pause flag", () => {
  test("the key's existence pauses; its record says since when, by whom and why", () => {
    expect(parsePause(null)).toBeUndefined();
    expect(parsePause(pair("k/pause", JSON.stringify({ since: "t", by: "ops@h", reason: "upgrade" })))).toEqual({ since: "t", by: "ops@h", reason: "upgrade" });
  });

  test("a flag written by hand still pauses, and says so", () => {
    expect(parsePause(pair("k/pause", "yes"))).toEqual({ since: "", reason: "(set by hand: its value is not consul-leader's)" });
    expect(parsePause(pair("k/pause", null))).toEqual({ since: "", reason: "(set by hand: its value is not consul-leader's)" });
  });

  test("pauseNote prints what the record carries", () => {
    expect(pauseNote({ since: "t", by: "b", reason: "r" })).toBe(" (since t, by b, r)");
    expect(pauseNote({ since: "" })).toBe("");
  });
});

describe("the failover history", () => {
  const f = (i: number): Failover => ({ at: `t${i}`, from: `n${i}`, to: `n${i + 1}`, why: "w", epoch: i });

  test("keeps the newest HISTORY_MAX failovers, oldest first", () => {
    let list: Failover[] = [];
    for (let i = 0; i < HISTORY_MAX + 5; i++) list = appendFailover(list, f(i));
    expect(list).toHaveLength(HISTORY_MAX);
    expect(list[0]!.epoch).toBe(5);
    expect(list.at(-1)!.epoch).toBe(HISTORY_MAX + 4);
  });

  test("parses what a leader wrote, drops entries that do not parse and says so", () => {
    const problems: string[] = [];
    const text = JSON.stringify([f(1), { at: "t", to: 5 }, { at: "t2", from: null, to: "n1", why: "no previous leader" }]);
    expect(parseHistory(pair("k/history", text), (p) => problems.push(p))).toEqual([f(1), { at: "t2", from: null, to: "n1", why: "no previous leader" }]);
    expect(problems).toHaveLength(1);
    expect(parseHistory(pair("k/history", "{}"), (p) => problems.push(p))).toEqual([]);
  });

  test("failoverWhy: the holder's own sentence, else its release marker, else that it never released", () => {
    const v = { session: "s", instance: "n1", service: "n1" };
    expect(failoverWhy({ ...v, released: "redis-down", why: "holding the lock but Redis is down" })).toBe("holding the lock but Redis is down");
    expect(failoverWhy({ ...v, released: "redis-down" })).toBe("its Redis went down");
    expect(failoverWhy(v)).toMatch(/its session ended without a release/);
    expect(failoverWhy(null)).toBe("no previous leader");
  });

  test("the lock value carries the release's why; an older sidecar simply drops the field", () => {
    const text = JSON.stringify({ session: "s", instance: "n1", service: "n1", released: "handover", why: "a switchover was requested" });
    expect(parseValue(pair("k", text))?.why).toBe("a switchover was requested");
  });
});
