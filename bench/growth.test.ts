/** The soak's growth rule (bench/growth.ts) on made-up series: `bun test bench`. */

import { describe, expect, test } from "bun:test";
import { judge, slope } from "./growth.ts";

const series = (f: (h: number) => number, n = 21, hours = 2) => Array.from({ length: n }, (_, i) => ({ hours: (i * hours) / (n - 1), value: f((i * hours) / (n - 1)) }));

describe("the growth rule", () => {
  test("slope is exact on a line", () => {
    expect(slope(series((h) => 50 + 3 * h))).toBeCloseTo(3, 9);
  });
  test("a steady climb above the threshold is growing", () => {
    expect(judge(series((h) => 50 + 3 * h), 2).verdict).toBe("growing");
  });
  test("start-up growth that stops is flat", () => {
    expect(judge(series((h) => 50 + 10 * Math.min(h, 0.5)), 2).verdict).toBe("flat");
  });
  test("a tilt that stays below the first half's peak is flat", () => {
    expect(judge(series((h) => (h < 0.2 ? 60 : 50 + 3 * h)), 2).verdict).toBe("flat");
  });
  test("a climb below the threshold is flat", () => {
    expect(judge(series((h) => 50 + h), 2).verdict).toBe("flat");
  });
  test("fewer than three samples in a half is too short", () => {
    expect(judge(series((h) => 50 + 3 * h, 4), 2).verdict).toBe("too short");
  });
});
