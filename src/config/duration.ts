/**
 * Durations as operators write them: Go duration strings ("15s", "1m30s",
 * "250ms") because that is what Consul and the shell consul-leader accept,
 * and bare numbers as seconds because the shell tool's CONSUL_LEADER_SLEEP
 * default is "10".
 *
 * Owns parsing and printing only; knows nothing about which knob a value is for.
 */

const UNIT_MS: Record<string, number> = {
  ns: 1e-6,
  us: 1e-3,
  "µs": 1e-3,
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
};

/**
 * Parses "1h2m3.5s", "250ms", "0", or a bare number of seconds ("10", "1.5").
 * Returns milliseconds (to the nanosecond, without float noise), or
 * `undefined` when the text is not a duration. Unlike Go's
 * time.ParseDuration it rejects negative values (no knob can be negative),
 * and like it, it has no days ("1d").
 */
export function parseDuration(text: string): number | undefined {
  const s = text.trim();
  if (s === "") return undefined;
  if (/^\d+(\.\d+)?$/.test(s)) return round(Number(s) * 1000);
  const part = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  while (pos < s.length) {
    part.lastIndex = pos;
    const m = part.exec(s);
    if (!m) return undefined;
    total += Number(m[1]) * (UNIT_MS[m[2]!] ?? NaN);
    pos = part.lastIndex;
  }
  return Number.isFinite(total) ? round(total) : undefined;
}

/** Rounds to the nanosecond so "1.001s" is 1001ms, not 1000.9999999999999. */
function round(ms: number): number {
  return Math.round(ms * 1e6) / 1e6;
}

/** Prints milliseconds in Go duration syntax that Consul accepts ("1m30s", "1m", "250ms", "0s"). */
export function formatDuration(ms: number): string {
  if (ms === 0) return "0s";
  if (ms < 1000) return `${trim(ms)}ms`;
  let rest = ms;
  let out = "";
  const h = Math.floor(rest / 3_600_000);
  if (h) { out += `${h}h`; rest -= h * 3_600_000; }
  const m = Math.floor(rest / 60_000);
  if (m) { out += `${m}m`; rest -= m * 60_000; }
  if (rest) out += `${trim(rest / 1000)}s`;
  return out;
}

function trim(n: number): string {
  return String(Math.round(n * 1000) / 1000);
}
