import { describe, expect, test } from "bun:test";
import type { Clock } from "../clock.ts";
import { silentLogger } from "../log.ts";
import { BACKOFF_MAX_MS, DecisionLog, Pacer, RECENT_DECISIONS } from "./pacer.ts";
import { createLogger } from "../log.ts";

/** A clock whose time moves only when told; sleeps resolve at once, recording how long they asked for. */
function fakeClock() {
  let now = 1000;
  const slept: number[] = [];
  const clock: Clock = {
    now: () => now,
    monotonic: () => now,
    sleep: (ms) => {
      slept.push(ms);
      return Promise.resolve();
    },
    timer: () => ({ cancel() {} }),
  };
  return { clock, slept, advance: (ms: number) => (now += ms) };
}

describe("Pacer", () => {
  test("backs off 250 ms doubling to 5 s after failures, and the tick does not run during the backoff", () => {
    const { clock, advance } = fakeClock();
    const p = new Pacer(clock, silentLogger, 10_000);
    const delays: number[] = [];
    for (let i = 0; i < 8; i++) {
      expect(p.startTick()).toBe(true);
      p.failed("lead", new Error("x"), "x");
      let waited = 0;
      while (!p.startTick()) {
        advance(50);
        waited += 50;
      }
      delays.push(waited);
    }
    expect(delays).toEqual([250, 500, 1000, 2000, 4000, BACKOFF_MAX_MS, BACKOFF_MAX_MS, BACKOFF_MAX_MS]);
  });

  test("never spins during a backoff: a step that needs no waiting, or a kick, sleeps until the backoff ends", async () => {
    const { clock, slept } = fakeClock();
    const p = new Pacer(clock, silentLogger, 10_000);
    p.failed("new-session", new Error("x"), "x");
    p.kick();
    await p.sleep({ kind: "new-session", reason: "r" }, new AbortController().signal);
    expect(slept).toEqual([250]);
  });

  test("never spins during a backoff on a wait whose moment has passed: a defer's until, or a wake-up, sleeps until the backoff ends", async () => {
    // A 'defer' whose action failed (its tag sync, with Consul down): the until
    // passes while the backoff runs, and the tick does nothing until it ends.
    // Returning at once there spun the loop without yielding until the backoff ended.
    const { clock, slept, advance } = fakeClock();
    const p = new Pacer(clock, silentLogger, 10_000);
    p.failed("defer", new Error("x"), "x");
    advance(100);
    await p.sleep({ kind: "defer", until: 1050, reason: "r" }, new AbortController().signal);
    expect(slept).toEqual([150]);
    p.wakeBy(1000, 0);
    await p.sleep(undefined, new AbortController().signal);
    expect(slept).toEqual([150, 150]);
  });

  test("goes again at once after acquire, announce or new-session, and after a kick; otherwise sleeps the period", async () => {
    const { clock, slept } = fakeClock();
    const p = new Pacer(clock, silentLogger, 10_000);
    const signal = new AbortController().signal;
    await p.sleep({ kind: "acquire", reason: "r" }, signal);
    expect(slept).toEqual([]);
    await p.sleep({ kind: "wait", reason: "r" }, signal);
    expect(slept).toEqual([10_000]);
    p.kick();
    await p.sleep({ kind: "wait", reason: "r" }, signal);
    expect(slept).toEqual([10_000]);
  });

  test("clearBackoff lets an urgent tick run now; wakeBy caps a takeover's next look at 5 s", async () => {
    const { clock, slept } = fakeClock();
    const p = new Pacer(clock, silentLogger, 10_000);
    p.failed("lead", new Error("x"), "x");
    p.clearBackoff();
    expect(p.startTick()).toBe(true);
    p.wakeBy(1000 + 60_000, 250);
    await p.sleep({ kind: "lead", reason: "r" }, new AbortController().signal);
    expect(slept).toEqual([5000]);
  });
});

describe("DecisionLog", () => {
  test("keeps the last changes, not every repeat", () => {
    const { clock } = fakeClock();
    const d = new DecisionLog(clock, silentLogger);
    d.record({ kind: "wait", reason: "a" });
    d.record({ kind: "wait", reason: "a" });
    d.record({ kind: "lead", reason: "b" });
    expect(d.view().recent.map((r) => r.reason)).toEqual(["a", "b"]);
    for (let i = 0; i < 30; i++) d.record({ kind: "wait", reason: `r${i}` });
    expect(d.view().recent).toHaveLength(RECENT_DECISIONS);
    expect(d.view().decision?.reason).toBe("r29");
  });
});

describe("DecisionLog logging", () => {
  test("a change of decision is logged once (at info), a repeat or a new reason of the same kind once (at debug)", () => {
    const { clock } = fakeClock();
    const lines: { level: string; msg: string; reason: string }[] = [];
    const log = createLogger({ level: "debug", format: "json", clock, write: (l) => lines.push(JSON.parse(l)) });
    const d = new DecisionLog(clock, log);
    d.record({ kind: "wait", reason: "a" });
    d.record({ kind: "wait", reason: "a" });
    d.record({ kind: "wait", reason: "b" });
    d.record({ kind: "lead", reason: "c" });
    expect(lines.map((l) => [l.level, l.msg, l.reason])).toEqual([
      ["info", "decision changed", "a"],
      ["debug", "decision", "a"],
      ["debug", "decision", "b"],
      ["info", "decision changed", "c"],
    ]);
  });
});

describe("Pacer wake-ups", () => {
  test("a wake-up whose moment just passed (a timer that fired a hair early) runs at once, not after the whole period", async () => {
    let now = 1000;
    const slept: number[] = [];
    const clock: Clock = { now: () => now, monotonic: () => now, sleep: (ms) => (slept.push(ms), Promise.resolve()), timer: () => ({ cancel() {} }) };
    const p = new Pacer(clock, silentLogger, 10_000);
    p.wakeBy(1500, 250);
    now = 1500.2;
    await p.sleep({ kind: "lead", reason: "r" }, new AbortController().signal);
    expect(slept).toEqual([]);
    // Used once: the next sleep is the period again.
    await p.sleep({ kind: "lead", reason: "r" }, new AbortController().signal);
    expect(slept).toEqual([10_000]);
  });
});
