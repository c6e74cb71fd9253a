/**
 * What every benchmark mode (bench/failover.ts, bench/soak.ts,
 * bench/scale.ts) says about its run: which sidecar binary it measured and
 * what it was built from, the machine's load, a results directory named by
 * the time, and progress lines on stderr. `startRun` (the soak and scale
 * modes; failover.ts keeps its own) also makes the run's Scope: every process
 * the mode starts belongs to it and is stopped on exit, SIGINT or SIGTERM.
 */

import { mkdirSync, readFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { ROOT, Scope } from "../test/harness/proc.ts";
import { BINARY } from "../test/harness/sidecar.ts";

/** Which sidecar binary ran, and the source it was built from (the work tree may hold uncommitted changes). */
export function provenance(): string {
  const git = (args: string[]) => Bun.spawnSync(["git", ...args], { cwd: ROOT }).stdout.toString().trim();
  const dirty = [git(["diff", "--name-only", "HEAD", "--", "src"]), git(["ls-files", "--others", "--exclude-standard", "--", "src"])].join("\n").split("\n").filter(Boolean);
  const sha = new Bun.CryptoHasher("sha256").update(readFileSync(BINARY)).digest("hex").slice(0, 12);
  const given = process.env["CONSUL_LEADER_BIN_SOURCE"];
  if (given) return `sidecar binary sha256 ${sha}, a copy of ${given}`;
  return `sidecar binary sha256 ${sha}, built from ${git(["rev-parse", "--short", "HEAD"])}${dirty.length ? ` + uncommitted changes to ${dirty.join(", ")}` : ""}`;
}

/** The 1, 5 and 15 minute load averages, as "0.52 0.61 0.70". */
export function load(): string {
  return loadavg().map((l) => l.toFixed(2)).join(" ");
}

/** The current time as a directory name, "2026-11-23T10-00-00". */
export function stamp(): string {
  return new Date().toISOString().replace(/:/g, "-").replace(/\..*/, "");
}

/**
 * Starts a run: bench/results/<time>/ (created, with logs/ inside), a Scope
 * made current, and SIGINT/SIGTERM handlers that stop every process in it
 * and exit 130. `progress` prints a line to stderr with the seconds since the
 * start.
 */
export function startRun(name: string): { outDir: string; logDir: string; scope: Scope; progress: (msg: string) => void; minutes: () => string } {
  const startedAt = performance.now();
  const outDir = join(ROOT, "bench", "results", stamp());
  const logDir = join(outDir, "logs");
  mkdirSync(logDir, { recursive: true });
  const progress = (msg: string) => process.stderr.write(`[${((performance.now() - startedAt) / 1000).toFixed(0).padStart(5)}s] ${msg}\n`);
  const scope = new Scope(name);
  Scope.current = scope;
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      progress(`${sig}: stopping every process this benchmark started`);
      void scope.close().finally(() => process.exit(130));
    });
  }
  return { outDir, logDir, scope, progress, minutes: () => ((performance.now() - startedAt) / 60_000).toFixed(1) };
}
