/**
 * `npm run bench`: the failover benchmark. Runs consul-leader and Redis
 * Sentinel side by side on this machine through the same faults, with the
 * same writing clients (test/harness/checker.ts), and reports failover time,
 * lost writes and split-brain windows per trial, next to the issue's
 * targets; also what an idle sidecar costs.
 *
 *   bun bench/failover.ts [--trials N] [--quick] [--idle-seconds N] [--faults a,b,...]
 *                         [--client-trials N] [--clients-only]
 *
 * --quick is 2 trials and a 10 s idle window, for development. The
 * client-observed rows (bench/clients.ts: ioredis and go-redis through
 * Sentinel, consul-leader's Sentinel endpoint and Consul DNS) run after the
 * failover rows, --client-trials times per fault (default: --trials);
 * --clients-only runs only them. Prints the
 * tables to stdout (progress goes to stderr) and writes trials.csv,
 * failover.svg, summary.txt and one log per trial to bench/results/<time>/.
 * Every process it starts is stopped before it exits.
 */

import { cpus } from "node:os";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { consulVersion } from "../test/harness/consul.ts";
import { Proc, ROOT, Scope } from "../test/harness/proc.ts";
import { renderChart } from "./chart.ts";
import { load, provenance, stamp } from "./run.ts";
import { measureIdle } from "./idle.ts";
import { buildFloor } from "./floor.ts";
import { csv, environmentNotes, idleTable, idleTargetsTable, type Row, summaryTable, targetsTable } from "./report.ts";
import { type BenchSystem, ConsulLeaderSystem, FAULTS, type FaultId, SentinelSystem } from "./systems.ts";
import { runTrial, TrialError, type TrialResult } from "./trial.ts";
import { clientSetups, clientTables, runClientTrials } from "./clients.ts";

interface Options {
  trials: number;
  clientTrials: number;
  clientsOnly: boolean;
  idleSeconds: number;
  faults: FaultId[];
}

function usage(message: string): never {
  process.stderr.write(`${message}\nusage: bun bench/failover.ts [--trials N] [--quick] [--idle-seconds N] [--faults ${FAULTS.map((f) => f.id).join(",")}] [--client-trials N] [--clients-only] [--scale-bin PATH]\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): Options {
  const quick = argv.includes("--quick");
  const o: Options = { trials: quick ? 2 : 10, clientTrials: 0, clientsOnly: false, idleSeconds: quick ? 10 : 60, faults: FAULTS.map((f) => f.id) };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => argv[++i] ?? usage(`${a} needs a value`);
    if (a === "--quick") continue;
    else if (a === "--scale-bin") value(); // scripts/bench.sh copies that binary; nothing to do here
    else if (a === "--clients-only") o.clientsOnly = true;
    else if (a === "--client-trials") o.clientTrials = Number(value());
    else if (a === "--trials") o.trials = Number(value());
    else if (a === "--idle-seconds") o.idleSeconds = Number(value());
    else if (a === "--faults") o.faults = value().split(",") as FaultId[];
    else usage(`unknown argument ${a}`);
  }
  if (!Number.isInteger(o.trials) || o.trials < 1) usage("--trials must be a whole number >= 1");
  if (o.clientTrials === 0) o.clientTrials = o.trials;
  if (!Number.isInteger(o.clientTrials) || o.clientTrials < 1) usage("--client-trials must be a whole number >= 1");
  if (!Number.isFinite(o.idleSeconds) || o.idleSeconds < 0) usage("--idle-seconds must be >= 0");
  const unknown = o.faults.filter((f) => !FAULTS.some((x) => x.id === f));
  if (unknown.length) usage(`unknown fault ${unknown.join(", ")}`);
  return o;
}

const startedAt = performance.now();
const elapsed = () => `${((performance.now() - startedAt) / 1000).toFixed(0).padStart(5)}s`;
const progress = (msg: string) => process.stderr.write(`[${elapsed()}] ${msg}\n`);

/**
 * Runs every fault's trials, alternating systems trial by trial so that both
 * see the machine in the same state. A trial the group does not come back
 * from is kept with its error; if the group has not converged two minutes
 * later it is replaced by a fresh one (and the trial's note says so), and if
 * that fails too the system's remaining trials are skipped. `saved` gets every
 * row after each trial, so an interrupted run keeps what it measured.
 */
async function runFaults(systems: BenchSystem[], o: Options, logDir: string, saved: (rows: Row[]) => void): Promise<Row[]> {
  const rows: Row[] = [];
  const broken = new Set<BenchSystem>();
  for (const fault of FAULTS.filter((f) => o.faults.includes(f.id))) {
    const mine = systems.filter((s) => s.faults.has(fault.id));
    const rowOf = new Map(mine.map((s) => [s, { system: s.key, label: s.label, fault: fault.id, trials: [] as TrialResult[], moves: fault.moves, skipped: 0 } satisfies Row]));
    rows.push(...rowOf.values());
    for (let n = 1; n <= o.trials; n++) {
      for (const sys of mine) {
        const row = rowOf.get(sys)!;
        if (broken.has(sys)) {
          row.skipped++;
          continue;
        }
        try {
          const r = await runTrial(sys, fault.id, n, logDir);
          row.trials.push(r);
          progress(`${sys.label}, ${fault.title} ${n}/${o.trials}: ${r.primaryChanged ? `failover ${ms(r.failoverMs)} ms` : "primary kept"}, gap ${ms(r.writeGapMs)} ms, split-brain ${ms(r.splitBrainMs)} ms, lost ${r.lost}${r.note ? ` (${r.note})` : ""}`);
        } catch (err) {
          if (!(err instanceof TrialError)) throw err;
          row.trials.push(err.trial);
          progress(`${sys.label}, ${fault.title} ${n}/${o.trials}: ${err.message}`);
          await sys.converged(120_000).catch(async () => {
            progress(`${sys.label} did not converge again; replacing its group with a fresh one`);
            err.trial.note += "; the group did not converge again and was replaced";
            await sys.replace().catch((e: unknown) => {
              progress(`${sys.label}: could not start a fresh group (${e instanceof Error ? e.message : String(e)}); skipping its remaining trials`);
              broken.add(sys);
            });
          });
        }
        saved(rows);
      }
    }
  }
  return rows;
}

function ms(v: number | null): string {
  return v === null ? "-" : String(Math.round(v));
}

const o = parseArgs(process.argv.slice(2));
const outDir = join(ROOT, "bench", "results", stamp());
const logDir = join(outDir, "logs");
mkdirSync(logDir, { recursive: true });

const scope = new Scope("bench");
Scope.current = scope;
for (const sig of ["SIGINT", "SIGTERM"] as const) {
  process.once(sig, () => {
    progress(`${sig}: stopping every process this benchmark started`);
    void scope.close().finally(() => process.exit(130));
  });
}

let exitCode = 0;
try {
  const redisVersion = Bun.spawnSync(["redis-server", "--version"]).stdout.toString().trim().split(" ")[2] ?? "?";
  const header = [
    `consul-leader failover benchmark, ${new Date().toISOString()}`,
    `machine: ${cpus().length} x ${cpus()[0]?.model ?? "?"}, load average ${load()} at start; ${await consulVersion()}; Redis ${redisVersion.replace("v=", "")}; Bun ${Bun.version}`,
    provenance(),
    `${o.trials} trials per system and fault; sidecars at their default timing knobs; every Redis boots as "replicaof 127.0.0.1 1"`,
  ].join("\n");
  progress("starting consul-leader (3 Consul servers, 1 client agent, 3 Redis + sidecars) and Sentinel (down-after 1000 and 5000 ms)");
  const cl = await ConsulLeaderSystem.start();
  const s1000 = await SentinelSystem.start(1000);
  const s5000 = await SentinelSystem.start(5000);

  let idle = "";
  if (o.idleSeconds > 0 && !o.clientsOnly) {
    progress(`idle cost: measuring for ${o.idleSeconds} s`);
    const floor = new Proc("runtime-floor", [buildFloor(outDir)], { env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", CONSUL_HTTP_ADDR: cl.agent.url, REDIS_URL: `redis://${cl.servers[0]}` } });
    const others = [{ who: "runtime floor (reference: Bun with fetch, RedisClient, Bun.serve)", proc: floor }, ...s1000.group.sentinels.map((s, i) => ({ who: `redis-sentinel ${i + 1} (reference)`, proc: s.proc }))];
    const rows = await measureIdle(cl.agent, others, o.idleSeconds);
    await floor.stop();
    idle = [idleTable(rows, o.idleSeconds), "", idleTargetsTable(rows, o.idleSeconds)].join("\n");
  }

  const files = { csv: join(outDir, "trials.csv"), svg: join(outDir, "failover.svg"), summary: join(outDir, "summary.txt") };
  const rows = o.clientsOnly ? [] : await runFaults([cl, s1000, s5000], o, logDir, (sofar) => writeFileSync(files.csv, csv(sofar.flatMap((r) => r.trials))));
  progress(`client-observed rows: ioredis and go-redis, ${o.clientTrials} trials per fault`);
  const clientRows = await runClientTrials(await clientSetups(cl, [s1000, s5000]), o.clientTrials, progress);
  writeFileSync(join(outDir, "clients.json"), JSON.stringify(clientRows, null, 2));
  const footer = `load average ${load()} at the end; ${((performance.now() - startedAt) / 60_000).toFixed(1)} min`;
  const clientText = [
    `client-observed failover (${o.clientTrials} trials; "median ms": fault to the client's first acknowledged write on the new primary; "after server-side": from the moment the harness first saw the new primary take a write)`,
    clientTables(clientRows),
  ].join("\n");
  const text = [header, ...(rows.length ? ["", summaryTable(rows), "", targetsTable(rows)] : []), ...(idle ? ["", idle] : []), "", clientText, "", ...(rows.length ? [environmentNotes(rows)] : []), footer].join("\n") + "\n";
  if (rows.length) writeFileSync(files.svg, renderChart(rows, `consul-leader vs Redis Sentinel: failover per trial (${o.trials} trials each)`));
  writeFileSync(files.summary, text);
  process.stdout.write(`\n${text}\n`);
  process.stdout.write(`per-trial CSV: ${files.csv}\nchart:         ${files.svg}\nsummary:       ${files.summary}\ntrial logs:    ${logDir}/\n`);
} catch (err) {
  process.stderr.write(`benchmark failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  scope.dump();
  exitCode = 1;
} finally {
  await scope.close();
}
process.stdout.write(`run time: ${((performance.now() - startedAt) / 60_000).toFixed(1)} min\n`);
process.exit(exitCode);
