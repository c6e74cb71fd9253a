/**
 * `npm run bench -- --scale N`: what N groups of three cost a Consul cluster.
 * Starts 3 Consul servers and AGENTS client agents on loopback, measures the
 * idle cluster (the baseline), starts N groups (3N sidecars at their default
 * knobs, 3N redis-server) in batches, lets them settle, and measures a
 * window: CPU of the Consul servers (each, and their sum, in % of one core),
 * RPCs the client agents send to the servers, RPCs the servers handle, Raft
 * commits (and what they were), HTTP requests the agents answer by endpoint,
 * and the CPU and memory of the sidecars, Redis and agents; then counts the
 * sessions, keys, services, checks and blocking queries the servers hold.
 * Per-group shares are (window - baseline) / N. Then kills one group's
 * primary Redis (-9, restarted empty) `--trials` times while the others idle
 * and measures failover as the failover benchmark does (bench/trial.ts).
 *
 *   bun bench/scale.ts --scale N [--batch G] [--window-seconds S] [--settle-seconds S] [--trials T]
 *
 * Topology: every group's three members sit on three different client agents
 * (as three Redis nodes would), AGENTS agents in all, shared by all groups.
 * Production runs one agent per node; here 3N agents would cost the machine
 * more than the sidecars and measure the agents, not what the sidecars ask
 * of the servers. What reaches the servers on a sidecar's behalf (KV,
 * session, catalog and health reads, blocking queries) is the same RPC
 * whichever agent forwards it; what depends on the number of agents (their
 * own anti-entropy, coordinate updates, gossip) is measured per agent in the
 * baseline and projected per node separately (docs/benchmark.md).
 *
 * Prints the tables and writes summary.txt, scale.json and one log per
 * failover trial to bench/results/<time>/. Every process it starts is
 * stopped before it exits, also on Ctrl-C.
 */

import { cpus, freemem } from "node:os";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ConsulAgent, consulVersion, startCluster } from "../test/harness/consul.ts";
import { RedisGroup } from "../test/harness/group.ts";
import type { Proc } from "../test/harness/proc.ts";
import { delta, httpByPath, scrape, type Snapshot, TELEMETRY, value } from "./consul-telemetry.ts";
import { cpuMeter, memoryStats } from "./proc-stats.ts";
import { median } from "./report.ts";
import { load, provenance, startRun } from "./run.ts";
import { BOOT_AS_REPLICA, ConsulLeaderSystem } from "./systems.ts";
import { runTrial, TrialError, type TrialResult } from "./trial.ts";

/** Client agents shared by the groups; a multiple of 3 (member i of a group goes to an agent of "zone" i). */
const AGENTS = 6;
/** Rough resident memory one group takes (3 sidecars ~50 MiB, 3 Redis ~10 MiB, with margin), for the fit check. */
const GROUP_MIB = 200;

interface Options {
  groups: number;
  batch: number;
  windowS: number;
  settleS: number;
  trials: number;
}

function usage(message: string): never {
  process.stderr.write(`${message}\nusage: bun bench/scale.ts --scale N [--batch G] [--window-seconds S] [--settle-seconds S] [--trials T]\n`);
  process.exit(2);
}

/** MemAvailable, MiB (free memory when /proc/meminfo says nothing). */
function availableMiB(): number {
  const m = /^MemAvailable:\s+(\d+) kB$/m.exec(readFileSync("/proc/meminfo", "utf8"));
  return m ? Number(m[1]) / 1024 : freemem() / 2 ** 20;
}

/** How many groups fit in 80 % of the available memory. */
function fit(): number {
  return Math.floor((availableMiB() * 0.8) / GROUP_MIB);
}

function parseArgs(argv: string[]): Options {
  const o: Options = { groups: NaN, batch: 5, windowS: 120, settleS: 60, trials: 5 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const num = () => Number(argv[++i] ?? usage(`${a} needs a value`));
    if (a === "--scale") {
      if (argv[i + 1] !== undefined && !argv[i + 1]!.startsWith("--")) o.groups = num();
      else {
        o.groups = Math.min(50, fit());
        if (o.groups < 50) process.stderr.write(`--scale: ${Math.round(availableMiB())} MiB available holds ${o.groups} groups, not 50\n`);
      }
    }
    else if (a === "--batch") o.batch = num();
    else if (a === "--window-seconds") o.windowS = num();
    else if (a === "--settle-seconds") o.settleS = num();
    else if (a === "--trials") o.trials = num();
    else if (a === "--scale-bin") i++; // taken by scripts/bench.sh
    else usage(`unknown argument ${a}`);
  }
  for (const [k, v] of Object.entries(o)) if (!Number.isInteger(v) || v < (k === "trials" ? 0 : 1)) usage(`--${k === "groups" ? "scale" : k} must be a whole number${k === "trials" ? " >= 0" : " >= 1"}`);
  if (o.groups > fit()) usage(`--scale ${o.groups}: ${o.groups} groups need ~${o.groups * GROUP_MIB} MiB; ${Math.round(availableMiB())} MiB available fits ${fit()}`);
  return o;
}

/** One measured window: CPU of every process class, and Consul's counters on every agent. */
interface Window {
  seconds: number;
  load: string;
  serverCpu: number[];
  agentsCpu: number;
  sidecarsCpu: number;
  redisCpu: number;
  /** RPCs the client agents sent to the servers (consul.client.rpc), per second. */
  agentRpcPerS: number;
  /** RPCs the servers handled (consul.rpc.request, summed; a forwarded one counts on both servers), per second. */
  serverRpcPerS: number;
  /** Read queries the servers started (consul.rpc.query), per second. */
  serverQueriesPerS: number;
  /** Raft commits on the leader (consul.raft.commitTime count), per second. */
  raftCommitsPerS: number;
  /** Raft log entries applied, by type (consul.fsm.* counts on one server), per second. */
  fsmPerS: Record<string, number>;
  /** Session renewals the leader handled (consul.session.renew count), per second. */
  renewPerS: number;
  /** HTTP requests the client agents answered, by "METHOD path", per second. */
  httpPerS: Record<string, number>;
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

function fsmCounts(before: Snapshot, after: Snapshot, seconds: number): Record<string, number> {
  const out: Record<string, number> = {};
  for (const k of after.keys()) {
    const m = /^consul_fsm_(.+)_count(\{.*\})?$/.exec(k);
    if (!m) continue;
    const d = delta(before, after, k);
    if (d > 0) out[m[1]! + (m[2] ?? "")] = d / seconds;
  }
  return out;
}

async function measureWindow(servers: ConsulAgent[], agents: ConsulAgent[], sidecars: Proc[], redis: Proc[], seconds: number): Promise<Window> {
  const all = [...servers, ...agents];
  const before = await Promise.all(all.map(scrape));
  const meters = {
    servers: cpuMeter(servers.map((s) => s.proc.pid)),
    agents: cpuMeter(agents.map((a) => a.proc.pid)),
    sidecars: cpuMeter(sidecars.map((p) => p.pid)),
    redis: cpuMeter(redis.map((p) => p.pid)),
  };
  const t0 = performance.now();
  await Bun.sleep(seconds * 1000);
  const cpu = { servers: meters.servers(), agents: meters.agents(), sidecars: meters.sidecars(), redis: meters.redis() };
  const after = await Promise.all(all.map(scrape));
  const wall = (performance.now() - t0) / 1000;
  const s = servers.length;
  const over = (idx: number[], key: string) => sum(idx.map((i) => delta(before[i]!, after[i]!, key))) / wall;
  const serverIdx = servers.map((_, i) => i);
  const agentIdx = agents.map((_, i) => s + i);
  const http: Record<string, number> = {};
  for (const i of agentIdx) for (const [k, v] of httpByPath(before[i]!, after[i]!)) http[k] = (http[k] ?? 0) + v / wall;
  return {
    seconds: wall,
    load: load(),
    serverCpu: cpu.servers.map((c) => c.pct),
    agentsCpu: sum(cpu.agents.map((c) => c.pct)),
    sidecarsCpu: sum(cpu.sidecars.map((c) => c.pct)),
    redisCpu: sum(cpu.redis.map((c) => c.pct)),
    agentRpcPerS: over(agentIdx, "consul_client_rpc"),
    serverRpcPerS: over(serverIdx, "consul_rpc_request"),
    serverQueriesPerS: over(serverIdx, "consul_rpc_query"),
    raftCommitsPerS: over(serverIdx, "consul_raft_commitTime_count"),
    fsmPerS: fsmCounts(before[0]!, after[0]!, wall),
    renewPerS: over(serverIdx, "consul_session_renew_count"),
    httpPerS: http,
  };
}

/** What the servers hold once the groups run. */
async function inventory(servers: ConsulAgent[]): Promise<Record<string, number>> {
  const a = servers[0]!;
  const snaps = await Promise.all(servers.map(scrape));
  const keys = await a.api<string[]>("GET", "/v1/kv/?keys").catch(() => [] as string[]);
  const sessions = await a.api<unknown[]>("GET", "/v1/session/list");
  const services = await a.api<Record<string, unknown>>("GET", "/v1/catalog/services");
  const checks = await a.api<unknown[]>("GET", "/v1/health/state/any");
  const nodes = await a.api<unknown[]>("GET", "/v1/catalog/nodes");
  return {
    "KV keys": keys.length,
    sessions: sessions.length,
    "service names": Object.keys(services).length,
    "health checks": checks.length,
    nodes: nodes.length,
    "session TTL timers (consul.session_ttl.active, leader)": Math.max(...snaps.map((x) => value(x, "consul_session_ttl_active"))),
    "blocking queries held (consul.rpc.queries_blocking, all servers)": sum(snaps.map((x) => value(x, "consul_rpc_queries_blocking"))),
  };
}

function table(head: string[], body: string[][]): string {
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd();
  return [line(head), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}

const f1 = (v: number) => v.toFixed(1);
const f2 = (v: number) => v.toFixed(2);
const f3 = (v: number) => v.toFixed(3);

const o = parseArgs(process.argv.slice(2));
const run = startRun("scale");
const { progress } = run;
let exitCode = 0;
try {
  const header = [
    `consul-leader scale benchmark, ${new Date().toISOString()}: ${o.groups} groups of three (${3 * o.groups} sidecars, ${3 * o.groups} redis-server) on 3 Consul servers and ${AGENTS} client agents`,
    `machine: ${cpus().length} x ${cpus()[0]?.model ?? "?"}, ${Math.round(availableMiB())} MiB available, load average ${load()} at start; ${await consulVersion()}; Bun ${Bun.version}`,
    provenance(),
    `sidecars at their default timing knobs; groups started ${o.batch} at a time; ${o.settleS} s settle, ${o.windowS} s measured window`,
  ].join("\n");
  progress(`starting 3 Consul servers and ${AGENTS} client agents`);
  // Consul allows 200 HTTP connections per client address by default; here each shared agent
  // serves ~25 sidecars from one loopback address, each holding its blocking queries open (in
  // production an agent serves the one sidecar of its node), so that limit is raised.
  const cluster = await startCluster(3, AGENTS, { ...TELEMETRY, limits: { http_max_conns_per_client: 10_000 } });
  const servers = cluster.servers;
  const agents = cluster.clients;
  await Bun.sleep(Math.min(o.settleS, 20) * 1000);
  const baselineS = Math.min(o.windowS, 60);
  progress(`baseline: the idle cluster for ${baselineS} s`);
  const baseline = await measureWindow(servers, agents, [], [], baselineS);
  const heldBefore = await inventory(servers);

  const groups: RedisGroup[] = [];
  /** Member i of group g: zone i's agents are 2i and 2i+1 (for AGENTS = 6), alternating by group. */
  const agentOf = (g: number, i: number) => agents[i * (AGENTS / 3) + (g % (AGENTS / 3))]!;
  const startT = performance.now();
  for (let b = 0; b < o.groups; b += o.batch) {
    const batch = Array.from({ length: Math.min(o.batch, o.groups - b) }, (_, k) => b + k);
    const started = await Promise.all(batch.map((g) => RedisGroup.start(agentOf(g, 0), {
      name: `scale${g + 1}`,
      redis: { conf: BOOT_AS_REPLICA },
      env: (i) => ConsulLeaderSystem.env({ CONSUL_HTTP_ADDR: agentOf(g, i).addr }),
    })));
    groups.push(...started);
    await Promise.all(started.map((g) => g.converged(180_000)));
    progress(`${groups.length}/${o.groups} groups converged, load ${load()}`);
  }
  const startupS = (performance.now() - startT) / 1000;
  progress(`all converged in ${startupS.toFixed(0)} s; settling ${o.settleS} s`);
  await Bun.sleep(o.settleS * 1000);
  const sidecars = groups.flatMap((g) => g.members.map((m) => m.sidecar.proc));
  const redis = groups.flatMap((g) => g.members.map((m) => m.redis.proc));
  progress(`measuring ${o.windowS} s`);
  const loaded = await measureWindow(servers, agents, sidecars, redis, o.windowS);
  const held = await inventory(servers);
  const mem = {
    sidecarsRssMiB: sum(sidecars.map((p) => memoryStats(p.pid).rssMiB)),
    redisRssMiB: sum(redis.map((p) => memoryStats(p.pid).rssMiB)),
    serversRssMiB: servers.map((s) => memoryStats(s.proc.pid).rssMiB),
    agentsRssMiB: sum(agents.map((a) => memoryStats(a.proc.pid).rssMiB)),
  };

  const trials: TrialResult[] = [];
  if (o.trials > 0) {
    const sys = ConsulLeaderSystem.around(servers, agentOf(0, 0), groups[0]!);
    for (let n = 1; n <= o.trials; n++) {
      try {
        const r = await runTrial(sys, "redis-kill", n, run.logDir);
        trials.push(r);
        progress(`group scale1, primary Redis kill -9 ${n}/${o.trials}: failover ${r.failoverMs === null ? "-" : Math.round(r.failoverMs)} ms, lost ${r.lost}, split-brain ${r.splitBrainMs === null ? "-" : Math.round(r.splitBrainMs)} ms, load ${load()}${r.note ? ` (${r.note})` : ""}`);
      } catch (err) {
        if (!(err instanceof TrialError)) throw err;
        trials.push(err.trial);
        progress(`group scale1, trial ${n}: ${err.message}`);
      }
    }
  }

  const N = o.groups;
  const per = (x: number, base: number) => (x - base) / N;
  const sCpu = sum(loaded.serverCpu);
  const bCpu = sum(baseline.serverCpu);
  const fo = trials.filter((t) => !t.note.startsWith("error") && t.failoverMs !== null).map((t) => t.failoverMs!);
  const main = table(
    ["", "baseline (no groups)", `${N} groups`, "per group (minus baseline)"],
    [
      ["groups / sidecars / redis-server", "0 / 0 / 0", `${N} / ${3 * N} / ${3 * N}`, ""],
      ["Consul server CPU, sum of 3, % of one core", f1(bCpu), f1(sCpu), f3(per(sCpu, bCpu))],
      ["Consul server CPU, each, %", baseline.serverCpu.map(f1).join(" / "), loaded.serverCpu.map(f1).join(" / "), ""],
      ["RPCs client agents -> servers /s (consul.client.rpc)", f1(baseline.agentRpcPerS), f1(loaded.agentRpcPerS), f3(per(loaded.agentRpcPerS, baseline.agentRpcPerS))],
      ["RPCs handled by servers /s (consul.rpc.request, sum)", f1(baseline.serverRpcPerS), f1(loaded.serverRpcPerS), f3(per(loaded.serverRpcPerS, baseline.serverRpcPerS))],
      ["read queries started by servers /s (consul.rpc.query)", f1(baseline.serverQueriesPerS), f1(loaded.serverQueriesPerS), f3(per(loaded.serverQueriesPerS, baseline.serverQueriesPerS))],
      ["Raft commits /s (leader, consul.raft.commitTime count)", f2(baseline.raftCommitsPerS), f2(loaded.raftCommitsPerS), f3(per(loaded.raftCommitsPerS, baseline.raftCommitsPerS))],
      ["session renewals /s (consul.session.renew)", f2(baseline.renewPerS), f2(loaded.renewPerS), f3(per(loaded.renewPerS, baseline.renewPerS))],
      ["HTTP requests to client agents /s", f1(sum(Object.values(baseline.httpPerS))), f1(sum(Object.values(loaded.httpPerS))), f3(per(sum(Object.values(loaded.httpPerS)), sum(Object.values(baseline.httpPerS))))],
      [`client agents CPU, sum of ${AGENTS}, %`, f1(baseline.agentsCpu), f1(loaded.agentsCpu), f3(per(loaded.agentsCpu, baseline.agentsCpu))],
      [`sidecars CPU, sum of ${3 * N}, %`, "", f1(loaded.sidecarsCpu), f3(loaded.sidecarsCpu / N)],
      [`redis-server CPU, sum of ${3 * N}, %`, "", f1(loaded.redisCpu), f3(loaded.redisCpu / N)],
      ["sidecars RSS, sum, MiB", "", f1(mem.sidecarsRssMiB), f1(mem.sidecarsRssMiB / N)],
      ["Consul servers RSS, each, MiB", "", mem.serversRssMiB.map(f1).join(" / "), ""],
      ["window, s / load average at its end", `${f1(baseline.seconds)} / ${baseline.load}`, `${f1(loaded.seconds)} / ${loaded.load}`, ""],
    ],
  );
  const keysOf = (w: Window, b: Window, rec: (x: Window) => Record<string, number>) =>
    [...new Set([...Object.keys(rec(w)), ...Object.keys(rec(b))])].sort((x, y) => (rec(w)[y] ?? 0) - (rec(w)[x] ?? 0));
  const http = table(
    ["HTTP requests to client agents, by endpoint", "baseline /s", `${N} groups /s`, "per group /min"],
    keysOf(loaded, baseline, (x) => x.httpPerS).map((k) => [k, f2(baseline.httpPerS[k] ?? 0), f2(loaded.httpPerS[k] ?? 0), f2((((loaded.httpPerS[k] ?? 0) - (baseline.httpPerS[k] ?? 0)) * 60) / N)]),
  );
  const fsm = table(
    ["Raft log entries applied, by type (consul.fsm.*)", "baseline /s", `${N} groups /s`, "per group /min"],
    keysOf(loaded, baseline, (x) => x.fsmPerS).map((k) => [k, f3(baseline.fsmPerS[k] ?? 0), f3(loaded.fsmPerS[k] ?? 0), f3((((loaded.fsmPerS[k] ?? 0) - (baseline.fsmPerS[k] ?? 0)) * 60) / N)]),
  );
  const inv = table(
    ["held by the servers", "baseline", `${N} groups`, "per group"],
    Object.entries(held).map(([k, v]) => [k, String(heldBefore[k] ?? 0), String(v), f2((v - (heldBefore[k] ?? 0)) / N)]),
  );
  const foText = trials.length
    ? table(
        [`failover of one group (scale1), primary Redis kill -9, the other ${N - 1} idle`, "trials", "median ms", "max ms", "lost writes", "max split-brain ms"],
        [["consul-leader", `${fo.length}/${trials.length}`, fo.length ? String(Math.round(median(fo))) : "-", fo.length ? String(Math.round(Math.max(...fo))) : "-", String(sum(trials.map((t) => t.lost ?? 0))), String(Math.round(Math.max(0, ...trials.map((t) => t.splitBrainMs ?? 0))))]],
      ) + `\nper trial ms: ${trials.map((t) => (t.failoverMs === null ? "-" : Math.round(t.failoverMs))).join(", ")}; benchmark timer late by up to ${Math.round(Math.max(0, ...trials.map((t) => t.benchStallMs ?? 0)))} ms`
    : "";
  const text = [
    header,
    `start-up: ${N} groups converged in ${startupS.toFixed(0)} s`,
    "",
    main,
    "",
    http,
    "",
    fsm,
    "",
    inv,
    ...(foText ? ["", foText] : []),
    `load average ${load()} at the end; ${run.minutes()} min`,
  ].join("\n") + "\n";
  writeFileSync(join(run.outDir, "summary.txt"), text);
  writeFileSync(join(run.outDir, "scale.json"), JSON.stringify({ options: o, agents: AGENTS, startupS, baseline, heldBefore, loaded, held, mem, trials }, null, 2));
  process.stdout.write(`\n${text}\nsummary:    ${join(run.outDir, "summary.txt")}\ntrial logs: ${run.logDir}/\n`);
} catch (err) {
  process.stderr.write(`scale benchmark failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  exitCode = 1;
} finally {
  progress("stopping every process");
  await run.scope.close();
}
process.exit(exitCode);
