import { describe, expect, test } from "bun:test";
import { type TakeoverContext, takeoverVerdict } from "./takeover.ts";
import type { LockValue, PreviousPrimary } from "./types.ts";

const OURS = { replid: "aaaa", replid2: "", offset: 1000 };

function ctx(over: Partial<TakeoverContext> = {}, previous: Partial<LockValue> | null = {}): TakeoverContext {
  return {
    previous: previous === null ? null : { session: "s-old", instance: "old", service: "svc-old", address: "10.0.0.1:6379", ...previous },
    acquiredAt: 10_000,
    now: 10_100,
    reactionGraceMs: 1750,
    frozenWaitMs: null,
    ours: OURS,
    ...over,
  };
}

const silent = (accepted: boolean, since = 10_050): PreviousPrimary => ({ kind: "silent", detail: "no answer within 500ms", since, accepted });

describe("takeoverVerdict: promote only over a confirmed fence or a primary that is gone", () => {
  test("with no previous primary, promote", () => {
    expect(takeoverVerdict({ kind: "none" }, ctx()).kind).toBe("promote");
  });

  test("a previous primary that confirmed our fence: promote after catching up to the offset it had then", () => {
    expect(takeoverVerdict({ kind: "fenced", offset: 1200, replid: "aaaa" }, ctx())).toMatchObject({ kind: "promote", catchUpTo: 1200, mustCatchUp: false });
  });

  test("a previous primary that is a replica, loading or already fenced: promote, catching up where it can", () => {
    for (const why of ["replica", "loading", "fenced"] as const) {
      expect(takeoverVerdict({ kind: "not-writable", offset: 900, replid: "aaaa", why }, ctx())).toMatchObject({ kind: "promote", catchUpTo: 900 });
    }
  });

  test("a refused connection means no Redis runs there: promote", () => {
    expect(takeoverVerdict({ kind: "dead", detail: "ECONNREFUSED" }, ctx()).kind).toBe("promote");
  });

  test("an error reply (NOPERM, WRONGPASS, max clients) is not death: wait, however long", () => {
    const v = takeoverVerdict({ kind: "refused", detail: "NOPERM this user has no permissions to run the 'config|set' command" }, ctx({ now: 10_000_000 }));
    expect(v.kind).toBe("wait");
    expect(v.reason).toMatch(/answered our fence with an error \(NOPERM/);
  });

  test("a silent primary whose host accepts the connection is frozen or busy: wait for the queued fence (default: forever)", () => {
    const v = takeoverVerdict(silent(true), ctx({ now: 10_000_000 }));
    expect(v).toMatchObject({ kind: "wait" });
    expect(v.reason).toMatch(/accepts connections but does not answer/);
    expect((v as { until?: number }).until).toBeUndefined();
  });

  test("a silent primary whose own sidecar released it as redis-down: wait, even when no connection is accepted", () => {
    expect(takeoverVerdict(silent(false), ctx({ now: 10_000_000 }, { released: "redis-down" })).kind).toBe("wait");
  });

  test("CONSUL_LEADER_FROZEN_PRIMARY_WAIT bounds the wait for a frozen primary, and the promotion says what it risks", () => {
    const c = ctx({ frozenWaitMs: 1000 });
    expect(takeoverVerdict(silent(true, 10_000), { ...c, now: 10_500 })).toMatchObject({ kind: "wait", until: 11_000 });
    const v = takeoverVerdict(silent(true, 10_000), { ...c, now: 11_000 });
    expect(v.kind).toBe("promote");
    expect(v.reason).toMatch(/CONSUL_LEADER_FROZEN_PRIMARY_WAIT.*may be lost/);
  });

  test("a host that accepts no connection after a lapse: the old leader's own timer fenced it; promote once it had time to act", () => {
    expect(takeoverVerdict(silent(false, 10_050), ctx({ now: 11_000 }))).toMatchObject({ kind: "wait", until: 10_050 + 1750 });
    expect(takeoverVerdict(silent(false, 10_050), ctx({ now: 11_800 })).kind).toBe("promote");
  });

  test("a planned handover whose leader confirmed its fence: promote over a silent old primary, never short of the fenced offset", () => {
    const v = takeoverVerdict(silent(true), ctx({}, { released: "handover", fencedOffset: 5000 }));
    expect(v).toMatchObject({ kind: "promote", catchUpTo: 5000, mustCatchUp: true });
    expect(takeoverVerdict({ kind: "not-writable", offset: 5000, replid: "aaaa", why: "fenced" }, ctx({}, { released: "shutdown", fencedOffset: 5000 }))).toMatchObject({ mustCatchUp: true, catchUpTo: 5000 });
  });

  test("a planned handover without a confirmed fence (an older version): a silent old primary is waited for", () => {
    expect(takeoverVerdict(silent(false), ctx({ now: 1e9 }, { released: "handover" })).kind).toBe("wait");
  });

  test("our Redis lacks the fenced primary's history (it restarted empty): hand the lock back instead of wiping the group", () => {
    const v = takeoverVerdict({ kind: "fenced", offset: 9000, replid: "bbbb" }, ctx());
    expect(v).toMatchObject({ kind: "yield", to: "old" });
    // The same history through replid2 (we were promoted before): no yield.
    expect(takeoverVerdict({ kind: "fenced", offset: 9000, replid: "bbbb" }, ctx({ ours: { replid: "cccc", replid2: "bbbb", offset: 1000 } })).kind).toBe("promote");
    // A fenced primary with less data than ours: nothing to lose.
    expect(takeoverVerdict({ kind: "fenced", offset: 10, replid: "bbbb" }, ctx()).kind).toBe("promote");
  });

  test("every verdict over every state carries a reason, and only dead, fenced, not-writable or timed-model states promote", () => {
    const states: PreviousPrimary[] = [
      { kind: "none" },
      { kind: "fenced", offset: 1, replid: "aaaa" },
      { kind: "not-writable", offset: 1, replid: "aaaa", why: "replica" },
      { kind: "dead", detail: "x" },
      silent(true),
      silent(false),
      { kind: "refused", detail: "NOPERM" },
    ];
    for (const p of states) {
      for (const released of [undefined, "redis-down", "handover", "shutdown"] as const) {
        for (const now of [10_100, 20_000]) {
          const v = takeoverVerdict(p, ctx({ now }, released ? { released } : {}));
          expect(v.reason.length).toBeGreaterThan(10);
          if (p.kind === "refused") expect(v.kind).toBe("wait");
          if (p.kind === "silent" && p.accepted) expect(v.kind).toBe("wait");
        }
      }
    }
  });
});
