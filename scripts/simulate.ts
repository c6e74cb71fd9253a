/**
 * `npm run simulate -- [options]`: runs the deterministic simulation of a
 * whole group (test/sim/) for many seeds and reports seeds per second and
 * every seed that broke an invariant, each with the one line that replays it.
 *
 *   --mode redis|exec|both   which group to simulate (default both)
 *   --seeds N                how many seeds per mode (default 200)
 *   --from S                 the first seed (default 1)
 *   --seed S                 run just this seed (with --trace, print its events)
 *   --trace                  print the event trace of each failing seed
 *   --colocated              always add a fourth member on the first host (default: one seed in three)
 *   --mutant NAME            run against a copy of src/ with one known hole put back (see test/sim/mutants.ts)
 *   --teeth                  for every mutant: how many seeds until the simulator catches it
 *
 * SIM_DEBUG=1 in the environment puts the sidecars' debug lines (every
 * decision, not only changes) into the trace.
 *
 * Exits 1 when any seed failed (0 with --teeth: finding the holes is the point).
 */

import { spawnSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MUTANTS } from "../test/sim/mutants.ts";
import { replayCommand, runSeed, type SeedResult } from "../test/sim/run.ts";
import type { Mode } from "../test/sim/world.ts";

const ROOT = join(import.meta.dir, "..");

interface Args {
  modes: Mode[];
  seeds: number;
  from: number;
  trace: boolean;
  mutant?: string;
  teeth: boolean;
  json: boolean;
  colocated?: boolean;
}

function parse(argv: string[]): Args {
  const a: Args = { modes: ["redis", "exec"], seeds: 200, from: 1, trace: false, teeth: false, json: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i]!;
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    if (k === "--mode") {
      const m = v();
      a.modes = m === "both" ? ["redis", "exec"] : [m as Mode];
      if (!["redis", "exec", "both"].includes(m)) throw new Error(`--mode must be redis, exec or both, got ${m}`);
    } else if (k === "--seeds") a.seeds = Number(v());
    else if (k === "--from") a.from = Number(v());
    else if (k === "--seed") {
      a.from = Number(v());
      a.seeds = 1;
    } else if (k === "--trace") a.trace = true;
    else if (k === "--mutant") a.mutant = v();
    else if (k === "--teeth") a.teeth = true;
    else if (k === "--json") a.json = true;
    else if (k === "--colocated") a.colocated = true;
    else throw new Error(`unknown option ${k}; see the header of scripts/simulate.ts`);
  }
  if (!Number.isInteger(a.seeds) || a.seeds < 1) throw new Error(`--seeds must be a whole number above 0`);
  return a;
}

async function runMany(a: Args): Promise<{ failed: SeedResult[]; ran: number; ms: number }> {
  const failed: SeedResult[] = [];
  let ran = 0;
  const t0 = performance.now();
  for (const mode of a.modes) {
    for (let seed = a.from; seed < a.from + a.seeds; seed++) {
      const r = await runSeed({ seed, mode, trace: a.trace, ...(a.colocated ? { colocated: true } : {}) });
      ran++;
      if (!r.ok) {
        failed.push(r);
        if (!a.json) {
          console.log(`FAIL ${mode} seed ${seed} at ${(r.at! / 1000).toFixed(3)}s: ${r.violation}`);
          console.log(`  faults: ${r.faults.join(" | ") || "none"}`);
          console.log(`  replay: ${replayCommand(r)}${a.colocated ? " --colocated" : ""}${a.mutant ? ` --mutant ${a.mutant}` : ""}`);
          if (a.trace) console.log(r.trace.join("\n"));
        }
      } else if (a.trace && a.seeds === 1) {
        console.log(r.trace.join("\n"));
      }
    }
  }
  return { failed, ran, ms: performance.now() - t0 };
}

/** Copies src/ and test/sim/ to a temporary tree with `name`'s hole put back, and runs this script there. */
function inMutant(name: string, rest: string[]): number {
  const m = MUTANTS.find((x) => x.name === name);
  if (!m) throw new Error(`no mutant ${name}; known: ${MUTANTS.map((x) => x.name).join(", ")}`);
  const dir = mkdtempSync(join(tmpdir(), `cl-mutant-${name}-`));
  try {
    for (const d of ["src", "test/sim", "scripts", "package.json", "tsconfig.json"]) cpSync(join(ROOT, d), join(dir, d), { recursive: true });
    symlinkSync(join(ROOT, "node_modules"), join(dir, "node_modules"));
    for (const e of m.edits) {
      const path = join(dir, e.file);
      const text = require("node:fs").readFileSync(path, "utf8") as string;
      if (!text.includes(e.find)) throw new Error(`mutant ${name} no longer applies: ${e.file} does not contain ${JSON.stringify(e.find.slice(0, 80))}`);
      writeFileSync(path, text.replace(e.find, e.replace));
    }
    const r = spawnSync(process.execPath, [join(dir, "scripts", "simulate.ts"), ...rest, ...(m.world?.colocated ? ["--colocated"] : [])], { stdio: "inherit", cwd: dir });
    return r.status ?? 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function teeth(a: Args): Promise<void> {
  console.log(`how many seeds each re-introduced hole takes to be caught (at most ${a.seeds} per mode):`);
  for (const m of MUTANTS) {
    const modes = m.modes.join(",");
    const r = spawnSync(process.execPath, [join(ROOT, "scripts", "simulate.ts"), "--mutant", m.name, "--mode", m.modes.length > 1 ? "both" : m.modes[0]!, "--seeds", String(a.seeds), "--from", String(a.from), "--json"], { encoding: "utf8", cwd: ROOT });
    const out = r.stdout.trim().split("\n").at(-1) ?? "";
    let summary = out;
    try {
      const j = JSON.parse(out) as { firstFail: Record<string, number | null>; failed: number; ran: number; secs: number; example?: string };
      summary = Object.entries(j.firstFail).map(([mode, s]) => `${mode}: ${s === null ? `not caught in ${a.seeds} seeds` : `caught at seed #${s - a.from + 1}`}`).join("; ") +
        ` (${j.failed}/${j.ran} seeds fail, ${j.secs.toFixed(1)} s)${j.example ? `; e.g. ${j.example}` : ""}`;
    } catch {
      summary = `could not run: ${r.stderr.trim().split("\n").slice(-3).join(" ")}`;
    }
    console.log(`- ${m.name} [${modes}] (${m.hole}): ${summary}`);
  }
}

const argv = process.argv.slice(2);
const a = parse(argv);
if (a.mutant) {
  const rest = argv.filter((x, i) => x !== "--mutant" && argv[i - 1] !== "--mutant");
  process.exit(inMutant(a.mutant, rest));
}
if (a.teeth) {
  await teeth(a);
  process.exit(0);
}
const { failed, ran, ms } = await runMany(a);
if (a.json) {
  const firstFail: Record<string, number | null> = {};
  for (const mode of a.modes) firstFail[mode] = failed.find((f) => f.mode === mode)?.seed ?? null;
  const ex = failed[0];
  console.log(JSON.stringify({ firstFail, failed: failed.length, ran, secs: ms / 1000, ...(ex ? { example: `${ex.mode} seed ${ex.seed}: ${ex.violation}` } : {}) }));
} else {
  console.log(`${ran} seeds (${a.modes.join(", ")}) in ${(ms / 1000).toFixed(1)} s: ${(ran / (ms / 1000)).toFixed(1)} seeds/s, ${failed.length} failed`);
}
process.exit(failed.length ? 1 : 0);
