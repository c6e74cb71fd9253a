/**
 * The soak's verdict on one series of samples: does it keep growing? Pure
 * arithmetic, no I/O.
 *
 * The rule (GROWTH_RULE says it in words, for the output and the docs): over
 * a run of length T, a metric keeps growing when BOTH
 *   1. the least-squares slope of its samples taken at t >= T/2 is above the
 *      metric's threshold (per hour), and
 *   2. the mean of its last three samples is above the largest sample taken
 *      at t < T/2.
 * (1) alone would fire on start-up growth that has stopped or on noise with
 * a tilt; (2) alone on a single late spike. Needs at least three samples in
 * each half; with fewer the verdict is "too short".
 */

export interface Sample {
  /** Hours since the first sample. */
  hours: number;
  value: number;
}

export interface Verdict {
  /** Slope over the second half, units per hour; NaN when too short. */
  slopePerHour: number;
  firstHalfMax: number;
  lastMean: number;
  threshold: number;
  verdict: "growing" | "flat" | "too short";
}

export const GROWTH_RULE =
  "a metric keeps growing when its least-squares slope over the second half of the run is above its threshold " +
  "AND the mean of its last 3 samples is above the largest sample of the first half";

/** Least-squares slope of value over hours; NaN with fewer than two distinct times. */
export function slope(samples: Sample[]): number {
  const n = samples.length;
  if (n < 2) return NaN;
  const mx = samples.reduce((a, s) => a + s.hours, 0) / n;
  const my = samples.reduce((a, s) => a + s.value, 0) / n;
  let num = 0;
  let den = 0;
  for (const s of samples) {
    num += (s.hours - mx) * (s.value - my);
    den += (s.hours - mx) ** 2;
  }
  return den === 0 ? NaN : num / den;
}

/** Applies the rule to `samples` (in time order) with `threshold` units per hour. */
export function judge(samples: Sample[], threshold: number): Verdict {
  const end = samples.at(-1)?.hours ?? 0;
  const first = samples.filter((s) => s.hours < end / 2);
  const second = samples.filter((s) => s.hours >= end / 2);
  const last = samples.slice(-3);
  const firstHalfMax = first.length ? Math.max(...first.map((s) => s.value)) : NaN;
  const lastMean = last.length ? last.reduce((a, s) => a + s.value, 0) / last.length : NaN;
  const slopePerHour = second.length >= 3 ? slope(second) : NaN;
  if (first.length < 3 || second.length < 3) return { slopePerHour, firstHalfMax, lastMean, threshold, verdict: "too short" };
  return { slopePerHour, firstHalfMax, lastMean, threshold, verdict: slopePerHour > threshold && lastMean > firstHalfMax ? "growing" : "flat" };
}
