/**
 * `npm run bench -- --soak 2h`: does an idle sidecar keep growing? One group
 * of three (3 Consul servers, one client agent, default knobs, as the idle
 * rows of the failover benchmark run it) idles for the given time; every
 * `--sample-every` (default 1 min) each sidecar's resident memory (RSS),
 * resident anonymous memory, Pss, open file descriptors, threads and CPU use
 * since the previous sample are read from /proc, and its JS heap from its
 * /metrics (each sidecar's status server is on, on loopback, as the Nomad
 * jobspecs run it). Beside them runs the runtime floor (bench/floor.ts): a
 * compiled Bun program using only the runtime features every sidecar uses,
 * sampled and judged the same way but as a reference, so that what the
 * runtime does on its own is told apart from what the sidecar adds.
 *
 *   bun bench/soak.ts --soak DURATION [--sample-every DURATION] [--settle DURATION]
 *   bun bench/soak.ts --judge bench/results/<time>/samples.csv
 *
 * Prints the samples (every one up to 30, else one per 10 samples), then per
 * sidecar and metric the slope per hour over the second half and the verdict
 * of the rule in bench/growth.ts; exits 1 naming every metric that keeps
 * growing (or a sidecar that exited). Writes samples.csv and summary.txt to
 * bench/results/<time>/ (samples.csv after every sample, so `--judge` can
 * give the verdicts on a soak still running or interrupted). Every process it
 * starts is stopped before it exits.
 */

import { cpus } from "node:os";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseDuration } from "../src/config/duration.ts";
import { consulVersion } from "../test/harness/consul.ts";
import { freePort, Proc } from "../test/harness/proc.ts";
import { parseExposition } from "../test/harness/prometheus.ts";
import { buildFloor } from "./floor.ts";
import { GROWTH_RULE, judge, type Verdict } from "./growth.ts";
import { cpuSeconds, memoryStats, openFds } from "./proc-stats.ts";
import { load, provenance, startRun } from "./run.ts";
import { ConsulLeaderSystem } from "./systems.ts";

/** What is sampled, its unit, and the slope per hour above which it counts as growing (rule 1 of bench/growth.ts). */
const METRICS = [
  { key: "rssMiB", title: "RSS MiB", perHour: 2, digits: 1 },
  { key: "anonMiB", title: "anon MiB", perHour: 2, digits: 1 },
  { key: "pssMiB", title: "Pss MiB", perHour: 2, digits: 1 },
  { key: "heapMiB", title: "heap MiB", perHour: 1, digits: 2 },
  { key: "fds", title: "fds", perHour: 1, digits: 0 },
  { key: "threads", title: "threads", perHour: 1, digits: 0 },
  { key: "cpuPct", title: "CPU %", perHour: 0.25, digits: 2 },
] as const;

type MetricKey = (typeof METRICS)[number]["key"];
type Row = { at: string; minutes: number } & Record<MetricKey, number>;

function usage(message: string): never {
  process.stderr.write(`${message}\nusage: bun bench/soak.ts --soak DURATION [--sample-every DURATION] [--settle DURATION]  (durations: 2h, 30m, 90s)\n       bun bench/soak.ts --judge samples.csv\n`);
  process.exit(2);
}

function parseArgs(argv: string[]): { soakMs: number; everyMs: number; settleMs: number } {
  const o = { soakMs: NaN, everyMs: 60_000, settleMs: 60_000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const duration = () => parseDuration(argv[++i] ?? usage(`${a} needs a value`)) ?? usage(`${a}: not a duration: ${argv[i]}`);
    if (a === "--soak") o.soakMs = duration();
    else if (a === "--sample-every") o.everyMs = duration();
    else if (a === "--settle") o.settleMs = duration();
    else if (a === "--scale-bin") i++; // taken by scripts/bench.sh
    else usage(`unknown argument ${a}`);
  }
  if (!(o.soakMs > 0)) usage("--soak DURATION is required");
  if (!(o.everyMs >= 1000)) usage("--sample-every must be at least 1s");
  if (o.soakMs / o.everyMs < 6) usage("--soak must span at least 6 samples (three per half)");
  return o;
}

function table(head: string[], body: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

/** The rule of bench/growth.ts on every sidecar's every metric: the verdict table and one line per metric that keeps growing. */
function judgeAll(watched: { who: string; rows: Row[] }[]): { verdicts: string; failures: string[]; reference: string[] } {
  const failures: string[] = [];
  const reference: string[] = [];
  const body: string[][] = [];
  for (const w of watched) {
    for (const m of METRICS) {
      const series = w.rows.filter((r) => !Number.isNaN(r[m.key])).map((r) => ({ hours: r.minutes / 60, value: r[m.key] }));
      const v: Verdict = judge(series, m.perHour);
      const f = (x: number) => (Number.isNaN(x) ? "-" : x.toFixed(m.digits === 0 ? 2 : m.digits));
      body.push([w.who, m.title, f(v.firstHalfMax), f(v.lastMean), f(v.slopePerHour), `> ${m.perHour}`, v.verdict === "growing" ? "GROWING" : v.verdict]);
      if (v.verdict !== "growing") continue;
      const what = `${m.title} of the ${w.who}${isReference(w.who) ? "" : " sidecar"} keeps growing: ${f(v.slopePerHour)}/h over the second half, last samples ${f(v.lastMean)} above the first half's max ${f(v.firstHalfMax)}`;
      (isReference(w.who) ? reference : failures).push(what);
    }
  }
  return { verdicts: table(["process", "metric", "1st-half max", "last-3 mean", "slope/h (2nd half)", "threshold/h", "verdict"], body), failures, reference };
}

/** The name the runtime floor is watched under; its growth is reported, never a failure of the sidecar. */
const FLOOR = "runtime floor (reference)";

function isReference(who: string): boolean {
  return who === FLOOR;
}

/** Issue target: RSS at most this after 10 minutes idle. */
const RSS_TARGET_MIB = 32;

/** The RSS target, judged on the sample nearest minute 10 of each process (the floor as a reference). */
function rssTarget(watched: { who: string; rows: Row[] }[]): string {
  const body = watched.flatMap((w) => {
    const at10 = w.rows.filter((r) => r.minutes <= 10.5).at(-1);
    if (!at10 || at10.minutes < 9.5) return [];
    const rss = at10.rssMiB;
    return [[w.who, at10.minutes.toFixed(1), rss.toFixed(1), at10.anonMiB.toFixed(1), isReference(w.who) ? "reference" : rss <= RSS_TARGET_MIB ? "PASS" : "FAIL"]];
  });
  if (!body.length) return `RSS target (<= ${RSS_TARGET_MIB} MiB after 10 min idle): not judged, the soak ended before minute 10`;
  return `RSS target: <= ${RSS_TARGET_MIB} MiB after 10 min idle\n` + table(["process", "min", "RSS MiB", "anon MiB", "result"], body);
}

/**
 * `--judge samples.csv`: the verdicts on the samples a soak wrote so far (one
 * still running, or one interrupted), without starting anything.
 */
function judgeFile(file: string): never {
  if (!existsSync(file)) usage(`--judge ${file}: no such file (a soak writes samples.csv after its first sample)`);
  const [head, ...lines] = readFileSync(file, "utf8").trim().split("\n");
  const cols = head!.split(",");
  const bySidecar = new Map<string, Row[]>();
  for (const line of lines) {
    const cells = line.split(",");
    const get = (c: string) => cells[cols.indexOf(c)] ?? "";
    const row = { at: get("at"), minutes: Number(get("minutes")) } as Row;
    for (const m of METRICS) row[m.key] = get(m.key) === "" ? NaN : Number(get(m.key));
    const who = get("sidecar");
    bySidecar.set(who, [...(bySidecar.get(who) ?? []), row]);
  }
  const watched = [...bySidecar].map(([who, rows]) => ({ who, rows }));
  const verdict = verdictLines(watched);
  const minutes = Math.max(...watched.map((w) => w.rows.at(-1)?.minutes ?? 0));
  process.stdout.write([`${file}: ${watched[0]?.rows.length ?? 0} samples per sidecar over ${minutes.toFixed(0)} min`, ...verdict.lines].join("\n") + "\n");
  process.exit(verdict.failures.length ? 1 : 0);
}

/** The rule, the verdict table, the reference's growth, PASS or FAIL naming each failure (`exited` ones too), and the RSS target. */
function verdictLines(watched: { who: string; rows: Row[] }[], exited: string[] = []): { lines: string[]; failures: string[] } {
  const { verdicts, failures, reference } = judgeAll(watched);
  for (const who of exited) failures.push(`the ${who} ${isReference(who) ? "" : "sidecar "}exited during the soak`);
  const lines = [
    `rule: ${GROWTH_RULE}.`,
    verdicts,
    "",
    ...reference.map((r) => `reference: ${r}`),
    failures.length ? `FAIL:\n${failures.map((f) => `  ${f}`).join("\n")}` : "PASS: no metric of any sidecar keeps growing",
    "",
    rssTarget(watched),
  ];
  return { lines, failures };
}

/** consul_leader_heap_used_bytes from a sidecar's /metrics; NaN when it does not answer. */
async function heapUsed(url: string): Promise<number> {
  try {
    const text = await (await fetch(url, { signal: AbortSignal.timeout(2000) })).text();
    return parseExposition(text).samples.find((x) => x.name === "consul_leader_heap_used_bytes")?.value ?? NaN;
  } catch {
    return NaN;
  }
}

const judged = process.argv.indexOf("--judge");
if (judged >= 0) judgeFile(process.argv[judged + 1] ?? usage("--judge needs a samples.csv"));
const o = parseArgs(process.argv.slice(2));
const run = startRun("soak");
const { progress } = run;
let exitCode = 0;
try {
  const header = [
    `consul-leader soak, ${new Date().toISOString()}: one idle group of three for ${o.soakMs / 60_000} min, a sample every ${o.everyMs / 1000} s`,
    `machine: ${cpus().length} x ${cpus()[0]?.model ?? "?"}, load average ${load()} at start; ${await consulVersion()}; Bun ${Bun.version}`,
    provenance(),
    "3 Consul servers, 1 client agent, sidecars at their default timing knobs with the status server on loopback (its /metrics gives the JS heap, scraped once a sample)",
    `${FLOOR}: bench/floor.ts compiled, one Consul request and one Redis INFO a second and a Bun.serve listener, nothing else`,
  ].join("\n");
  progress("starting 3 Consul servers, 1 client agent, 3 Redis + sidecars, and the runtime floor");
  const statusPorts = [freePort(), freePort(), freePort()];
  const sys = await ConsulLeaderSystem.start((i) => ({ CONSUL_LEADER_HTTP_ADDR: `127.0.0.1:${statusPorts[i]}` }));
  const primary = await sys.converged(60_000);
  let follower = 0;
  const watched: { who: string; proc: Proc; rows: Row[]; metrics?: string }[] = sys.group.members.map((m, i) => ({
    who: m.redis.addr === primary ? "leader" : `follower ${++follower}`,
    proc: m.sidecar.proc,
    rows: [] as Row[],
    metrics: `http://127.0.0.1:${statusPorts[i]}/metrics`,
  }));
  const floor = new Proc("runtime-floor", [buildFloor(run.outDir)], { env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", CONSUL_HTTP_ADDR: sys.agent.url, REDIS_URL: `redis://${sys.servers[0]}` } });
  watched.push({ who: FLOOR, proc: floor, rows: [] });
  progress(`converged; settling ${o.settleMs / 1000} s before the first sample`);
  await Bun.sleep(o.settleMs);

  const t0 = performance.now();
  const lastCpu = watched.map((w) => ({ cpu: cpuSeconds(w.proc.pid), at: performance.now() }));
  const exited: string[] = [];
  const samples = Math.floor(o.soakMs / o.everyMs);
  const csvLines = ["at,minutes,sidecar,pid," + METRICS.map((m) => m.key).join(",")];
  for (let n = 0; n <= samples; n++) {
    // Sample n is taken at t0 + n * every, whatever the time the sampling itself took.
    await Bun.sleep(Math.max(0, t0 + n * o.everyMs - performance.now()));
    const minutes = (performance.now() - t0) / 60_000;
    for (const [i, w] of watched.entries()) {
      if (!w.proc.running) {
        if (!exited.includes(w.who)) exited.push(w.who);
        continue;
      }
      try {
        const now = performance.now();
        const cpu = cpuSeconds(w.proc.pid);
        const mem = memoryStats(w.proc.pid);
        const heapBytes = w.metrics ? await heapUsed(w.metrics) : NaN;
        const row: Row = {
          at: new Date().toISOString(),
          minutes,
          ...mem,
          heapMiB: heapBytes / 2 ** 20,
          fds: openFds(w.proc.pid),
          // No CPU figure at the first sample: there is no previous one to measure from.
          cpuPct: n === 0 ? NaN : ((cpu - lastCpu[i]!.cpu) / ((now - lastCpu[i]!.at) / 1000)) * 100,
        };
        lastCpu[i] = { cpu, at: now };
        w.rows.push(row);
        csvLines.push([row.at, minutes.toFixed(2), w.who, w.proc.pid, ...METRICS.map((m) => (Number.isNaN(row[m.key]) ? "" : row[m.key].toFixed(m.digits === 0 ? 0 : 3)))].join(","));
      } catch {
        if (!exited.includes(w.who)) exited.push(w.who);
      }
    }
    writeFileSync(join(run.outDir, "samples.csv"), csvLines.join("\n") + "\n");
    if (n % 10 === 0 || n === samples) {
      progress(`sample ${n}/${samples} (${minutes.toFixed(0)} min), load ${load()}: ` + watched.map((w) => { const r = w.rows.at(-1); return r ? `${w.who} RSS ${r.rssMiB.toFixed(1)} anon ${r.anonMiB.toFixed(1)} fds ${r.fds}` : `${w.who} gone`; }).join("; "));
    }
  }

  const every = watched[0]!.rows.length > 30 ? 10 : 1;
  const sampleTables = watched.map((w) => {
    const shown = w.rows.filter((_, k) => k % every === 0 || k === w.rows.length - 1);
    return `sidecar ${w.who} (pid ${w.proc.pid})${every > 1 ? `, every ${every}th sample` : ""}, CPU % since the previous sample:\n` +
      table(["min", ...METRICS.map((m) => m.title)], shown.map((r) => [r.minutes.toFixed(1), ...METRICS.map((m) => (Number.isNaN(r[m.key]) ? "-" : r[m.key].toFixed(m.digits)))]));
  });

  const { lines, failures } = verdictLines(watched, exited);
  const text = [
    header,
    "",
    ...sampleTables.flatMap((t) => [t, ""]),
    ...lines,
    `load average ${load()} at the end; ${run.minutes()} min`,
  ].join("\n") + "\n";
  writeFileSync(join(run.outDir, "summary.txt"), text);
  process.stdout.write(`\n${text}\nsamples: ${join(run.outDir, "samples.csv")}\nsummary: ${join(run.outDir, "summary.txt")}\n`);
  if (failures.length) exitCode = 1;
} catch (err) {
  process.stderr.write(`soak failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  run.scope.dump();
  exitCode = 1;
} finally {
  await run.scope.close();
}
process.exit(exitCode);
