/**
 * Runs one simulated scenario (a seed and a mode) and reports what happened:
 * the violations, the faults injected, and the trace leading to the first
 * violation. `replayCommand` is the one line that reproduces it exactly.
 */

import { type Mode, World, type WorldOptions } from "./world.ts";

export interface SeedResult {
  seed: number;
  mode: Mode;
  ok: boolean;
  violation?: string;
  at?: number;
  faults: string[];
  events: number;
  simMs: number;
  trace: string[];
}

export async function runSeed(o: WorldOptions): Promise<SeedResult> {
  const w = new World(o);
  let violations;
  try {
    violations = await w.run();
  } catch (err) {
    violations = [{ at: w.sched.now, what: `the simulation crashed: ${err instanceof Error ? err.stack ?? err.message : String(err)}` }];
  }
  const v = violations[0];
  return {
    seed: o.seed,
    mode: o.mode,
    ok: !v,
    ...(v ? { violation: v.what, at: v.at } : {}),
    faults: w.faultLog,
    events: w.sched.fired,
    simMs: Math.round(w.sched.now),
    trace: w.trace.map((t) => `${(t.at / 1000).toFixed(3).padStart(8)}s ${t.who.padEnd(14)} ${t.text}`),
  };
}

/** The command that replays `r` with its event trace. */
export function replayCommand(r: Pick<SeedResult, "seed" | "mode">): string {
  return `npm run simulate -- --mode ${r.mode} --seed ${r.seed} --trace`;
}
