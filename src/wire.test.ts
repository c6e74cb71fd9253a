import { describe, expect, test } from "bun:test";
import { parseEntry, staleEntries } from "./consul/members.ts";
import { judgeOwnEntry } from "./consul/identity.ts";
import type { KVPair } from "./consul/client.ts";
import { parseSwitchover, parseValue } from "./election/lock-value.ts";
import { MAX_RECORD, parseRecord } from "./wire.ts";

const pair = (Value: string | null, over: Partial<KVPair> = {}): KVPair => ({ Key: "k/members/x", CreateIndex: 1, ModifyIndex: 5, LockIndex: 1, Flags: 0, Value, ...over });

const MEMBER = {
  instance: "redis-a-6379",
  service: "redis-a-6379",
  role: "follower",
  eligible: true,
  redisUp: true,
  priority: 1,
  offset: 123,
  replid: "r",
  replid2: "",
  updated: "2026-01-01T00:00:00.000Z",
};

describe("parseRecord", () => {
  test("keeps declared fields of the right type, drops unknown ones (a newer version may add fields)", () => {
    const r = parseRecord<{ a: string }>(JSON.stringify({ a: "x", later: 1 }), { a: { type: "string" } }, "the thing");
    expect(r).toEqual({ ok: true, value: { a: "x" } });
  });

  test("names the field, the rule and what was found", () => {
    const r = parseRecord(JSON.stringify({ a: 5 }), { a: { type: "string" } }, "the thing");
    expect(r).toEqual({ ok: false, problem: "the thing: a must be a string, got 5" });
  });

  test("rejects garbage, arrays, huge texts and huge strings, and never throws", () => {
    for (const text of ["not json", "[]", "null", "42", JSON.stringify({ a: "x".repeat(600) }), "x".repeat(MAX_RECORD + 1), "{\"a\":", "\u0000"]) {
      const r = parseRecord(text, { a: { type: "string" } }, "it");
      expect(r.ok).toBe(false);
    }
  });

  test("numbers must be finite, whole where declared, and within bounds", () => {
    const spec = { n: { type: "number" as const, integer: true, min: 0 } };
    expect(parseRecord("{\"n\":1.5}", spec, "x").ok).toBe(false);
    expect(parseRecord("{\"n\":-1}", spec, "x").ok).toBe(false);
    expect(parseRecord("{\"n\":1e400}", spec, "x").ok).toBe(false);
    expect(parseRecord("{\"n\":7}", spec, "x")).toEqual({ ok: true, value: { n: 7 } });
  });
});

describe("foreign data in KV is checked before use", () => {
  test("a member entry with a wrong-typed field is left out with the reason, not crashed on", () => {
    expect(parseEntry(pair(JSON.stringify({ ...MEMBER, offset: "9", eligible: "yes" })))).toMatch(/eligible must be true or false, got "yes"/);
    expect(parseEntry(pair(JSON.stringify(MEMBER), { Session: "s1" }))).toMatchObject({ session: "s1", member: { instance: "redis-a-6379" } });
    expect(parseEntry(pair(null))).toBeUndefined();
  });

  test("a lock value that is not ours (the shell consul-leader, an operator) parses as null and is reported", () => {
    const problems: string[] = [];
    expect(parseValue(pair("leader-host-1"), (p) => problems.push(p))).toBeNull();
    expect(parseValue(pair(JSON.stringify({ session: "s", instance: 7, service: "x" })), (p) => problems.push(p))).toBeNull();
    expect(parseValue(pair(JSON.stringify({ session: "s", instance: "i", service: "x", released: "because" })), (p) => problems.push(p))).toBeNull();
    expect(problems).toHaveLength(3);
    expect(parseValue(pair(JSON.stringify({ session: "s", instance: "i", service: "x", epoch: 12, fencedOffset: 99 })))).toMatchObject({ epoch: 12, fencedOffset: 99 });
  });

  test("a switchover request must name its leader as a string", () => {
    expect(parseSwitchover(pair("{\"leader\":11111111111111111111}"))).toBeUndefined();
    expect(parseSwitchover(pair(JSON.stringify({ leader: "a", requested: "t" })))).toEqual({ leader: "a", requested: "t" });
  });
});

describe("member entries left behind", () => {
  const now = Date.parse("2026-01-01T01:00:00.000Z");
  test("are the ones without a session and unpublished for longer than the limit, or unreadable", () => {
    const fresh = pair(JSON.stringify({ ...MEMBER, updated: "2026-01-01T00:59:00.000Z" }), { Key: "fresh" });
    const old = pair(JSON.stringify(MEMBER), { Key: "old" });
    const live = pair(JSON.stringify(MEMBER), { Key: "live", Session: "s1" });
    const junk = pair("junk", { Key: "junk" });
    expect(staleEntries([fresh, old, live, junk], now, 30 * 60_000).map((p) => p.Key)).toEqual(["old", "junk"]);
  });
});

describe("judgeOwnEntry: what a running sidecar makes of its own member entry", () => {
  const mine = { session: "s1", incarnation: "me" };
  const entry = (m: Record<string, unknown>, session = "s1") => ({ session, member: { ...MEMBER, ...m } as never });
  test("ours: ok; a newcomer's claim: answer it; another incarnation: superseded; gone or another session: publish again", () => {
    expect(judgeOwnEntry(entry({ incarnation: "me" }), mine)).toBe("ok");
    expect(judgeOwnEntry(entry({ incarnation: "me", claim: "new" }), mine)).toBe("claimed");
    expect(judgeOwnEntry(entry({ incarnation: "other" }), mine)).toBe("superseded");
    expect(judgeOwnEntry(undefined, mine)).toBe("gone");
    expect(judgeOwnEntry("malformed", mine)).toBe("gone");
    expect(judgeOwnEntry(entry({ incarnation: "me" }, "s2"), mine)).toBe("gone");
  });
});
