import { describe, expect, test } from "bun:test";
import { formatDuration, parseDuration } from "./duration.ts";

describe("parseDuration", () => {
  const valid: [text: string, ms: number][] = [
    ["15s", 15_000],
    ["250ms", 250],
    ["1m30s", 90_000],
    ["1h2m3.5s", 3_723_500],
    ["24h", 86_400_000],
    ["0s", 0],
    ["0", 0],
    ["1.5s", 1500],
    ["1.5h", 5_400_000],
    ["1000us", 1],
    ["1000µs", 1],
    ["1000000ns", 1],
    ["1ms500us", 1.5],
    // The same unit twice is summed, as Go does.
    ["1s1s", 2000],
    // Bare numbers are seconds (the shell tool's CONSUL_LEADER_SLEEP="10").
    ["10", 10_000],
    ["1.5", 1500],
    ["  15s  ", 15_000],
  ];
  for (const [text, ms] of valid) {
    test(`parseDuration reads ${JSON.stringify(text)} as ${ms}ms`, () => {
      expect(parseDuration(text)).toBe(ms);
    });
  }

  const invalid: [text: string, why: string][] = [
    ["", "empty"],
    ["   ", "blank"],
    ["-1s", "negative"],
    ["-5", "negative bare number"],
    ["1d", "days are not a Go unit"],
    ["1w", "weeks are not a Go unit"],
    ["s", "unit without a number"],
    ["15S", "units are case-sensitive"],
    ["15 s", "space between number and unit"],
    ["1m 30s", "space between parts"],
    ["15sec", "unknown unit"],
    ["1e3", "exponent notation"],
    ["0x10", "hex"],
    ["15s5", "trailing number without unit"],
    ["1.2.3s", "two decimal points"],
    ["Infinity", "not a number"],
    ["NaN", "not a number"],
    ["abc", "words"],
  ];
  for (const [text, why] of invalid) {
    test(`parseDuration rejects ${JSON.stringify(text)} (${why})`, () => {
      expect(parseDuration(text)).toBeUndefined();
    });
  }

  // Decimal seconds are how operators write sub-second values; they must land on
  // the whole millisecond written, or comparisons against other knobs misfire.
  test("parseDuration reads decimal seconds as the exact whole milliseconds written", () => {
    for (const [text, ms] of [["1.001s", 1001], ["1.005s", 1005], ["0.07s", 70], ["1m1.001s", 61_001], ["2.675", 2675]] as const) {
      expect({ text, ms: parseDuration(text) }).toEqual({ text, ms });
    }
  });
});

describe("formatDuration", () => {
  const cases: [ms: number, text: string][] = [
    [0, "0s"],
    [250, "250ms"],
    [1.5, "1.5ms"],
    [1000, "1s"],
    [1500, "1.5s"],
    [15_000, "15s"],
    [90_000, "1m30s"],
    [3_723_500, "1h2m3.5s"],
    [86_400_000, "24h"],
  ];
  for (const [ms, text] of cases) {
    test(`formatDuration prints ${ms}ms as ${text}`, () => {
      expect(formatDuration(ms)).toBe(text);
    });
  }

  test("formatDuration output parses back to the same value", () => {
    for (const ms of [0, 1, 10, 250, 999, 1000, 1250, 4250, 10_000, 59_999, 60_000, 61_500, 3_600_000, 3_661_250, 86_400_000]) {
      expect({ ms, back: parseDuration(formatDuration(ms)) }).toEqual({ ms, back: ms });
    }
  });

  test("formatDuration of a parsed Go duration prints the same duration", () => {
    for (const text of ["15s", "250ms", "1m30s", "1h2m3.5s", "10m", "2h"]) {
      expect(formatDuration(parseDuration(text)!)).toBe(text);
    }
  });
});
