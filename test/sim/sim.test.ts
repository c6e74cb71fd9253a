/**
 * The deterministic simulation in `npm test`: a fixed set of seeds for each
 * kind of group, every invariant checked after every event (test/sim/world.ts).
 * A failure prints the one line that replays it exactly, with its trace.
 * `npm run simulate -- --seeds N` runs as many fresh seeds as you like.
 */

import { expect, test } from "bun:test";
import { replayCommand, runSeed } from "./run.ts";
import type { Mode } from "./world.ts";

/** Seeds per mode: the Redis group costs ~0.2 s a seed here, the exec group ~0.02 s. */
const SEEDS: Record<Mode, number> = { redis: 150, exec: 400 };

for (const mode of ["redis", "exec"] as const) {
  test(`simulation: ${SEEDS[mode]} seeded ${mode} groups under faults keep every invariant, then settle on one primary`, async () => {
    const t0 = performance.now();
    const failures: string[] = [];
    let events = 0;
    for (let seed = 1; seed <= SEEDS[mode]; seed++) {
      const r = await runSeed({ seed, mode });
      events += r.events;
      if (!r.ok) {
        failures.push(`${mode} seed ${seed} at ${(r.at! / 1000).toFixed(3)}s: ${r.violation}\n  faults: ${r.faults.join(" | ")}\n  replay: ${replayCommand(r)}\n${r.trace.slice(-40).join("\n")}`);
        if (failures.length >= 3) break;
      }
    }
    const secs = (performance.now() - t0) / 1000;
    console.log(`simulation (${mode}): ${SEEDS[mode]} seeds, ${events} events in ${secs.toFixed(1)} s: ${(SEEDS[mode] / secs).toFixed(1)} seeds/s`);
    expect(failures).toEqual([]);
  }, 600_000);
}
