import { describe, expect, test } from "bun:test";
import type { Clock } from "../clock.ts";
import { FenceTimer } from "./fence-timer.ts";

/**
 * A clock moved by hand whose timers fire `earlyMs` (under 1 ms) before they
 * are due, as real ones can; like real ones they wait at least 1 ms.
 */
function skewedClock(earlyMs: number) {
  let now = 0;
  let timers: { at: number; fn: () => void; live: boolean }[] = [];
  const clock: Clock = {
    now: () => now,
    monotonic: () => now,
    sleep: () => Promise.resolve(),
    timer(ms, fn) {
      const t = { at: now + Math.max(1, ms) - earlyMs, fn, live: true };
      timers.push(t);
      return { cancel: () => void (t.live = false) };
    },
  };
  const advance = (to: number) => {
    for (;;) {
      const next = timers.filter((t) => t.live && t.at <= to).sort((a, b) => a.at - b.at)[0];
      if (!next) break;
      now = Math.max(now, next.at);
      next.live = false;
      next.fn();
    }
    timers = timers.filter((t) => t.live);
    now = to;
  };
  return { clock, advance, pending: () => timers.filter((t) => t.live).length };
}

describe("FenceTimer", () => {
  test("fires at the deadline even when the timer wakes early", () => {
    const c = skewedClock(0.4);
    const fired: number[] = [];
    new FenceTimer(c.clock, () => 1000).arm(() => true, () => fired.push(c.clock.monotonic()));
    c.advance(999.9);
    expect(fired).toEqual([]);
    c.advance(1001);
    expect(fired.length).toBe(1);
    expect(fired[0]).toBeGreaterThanOrEqual(1000);
  });

  test("honours a deadline moved later by a renew while it was armed", () => {
    const c = skewedClock(0);
    let deadline = 1000;
    const fired: number[] = [];
    new FenceTimer(c.clock, () => deadline).arm(() => true, () => fired.push(c.clock.monotonic()));
    c.advance(500);
    deadline = 2500;
    c.advance(2000);
    expect(fired).toEqual([]);
    c.advance(3000);
    expect(fired).toEqual([2500]);
  });

  test("does not fire when no longer active, when the lease is gone, or once cancelled", () => {
    const c = skewedClock(0);
    let fired = 0;
    new FenceTimer(c.clock, () => 1000).arm(() => false, () => fired++);
    new FenceTimer(c.clock, () => undefined).arm(() => true, () => fired++);
    const t = new FenceTimer(c.clock, () => 1000);
    t.arm(() => true, () => fired++);
    t.cancel();
    c.advance(5000);
    expect(fired).toBe(0);
    expect(c.pending()).toBe(0);
  });

  test("arming again replaces the previous timer: one fence per deadline", () => {
    const c = skewedClock(0);
    let fired = 0;
    const t = new FenceTimer(c.clock, () => 1000);
    for (let i = 0; i < 5; i++) t.arm(() => true, () => fired++);
    c.advance(5000);
    expect(fired).toBe(1);
  });

  test("a deadline already past fires on the next timer tick", () => {
    const c = skewedClock(0);
    let fired = 0;
    c.advance(2000);
    new FenceTimer(c.clock, () => 1000).arm(() => true, () => fired++);
    c.advance(2001);
    expect(fired).toBe(1);
  });
});
