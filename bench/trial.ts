/**
 * One trial: one fault against one system while the checker writes, from a
 * converged group back to a converged group, and what the clients saw:
 * failover time, whether the primary moved, acknowledged writes lost, the
 * split-brain window and the longest gap between acknowledged writes. Also
 * writes the trial's process output to a log file.
 */

import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Checker } from "../test/harness/checker.ts";
import { type Proc, waitFor } from "../test/harness/proc.ts";
import { type BenchSystem, FAULTS, type FaultId } from "./systems.ts";

export interface TrialResult {
  system: string;
  fault: FaultId;
  trial: number;
  /** Wall-clock time of the fault, to find it in the logs. */
  faultAt: string;
  oldPrimary: string;
  newPrimary: string | null;
  finalPrimary: string | null;
  primaryChanged: boolean;
  /** Fault to the first write a discovery client had acknowledged by the new primary; null when none. */
  failoverMs: number | null;
  /** Longest time without an acknowledged discovery write, across the fault. */
  writeGapMs: number | null;
  splitBrainMs: number | null;
  lost: number | null;
  /** Lost writes by the Redis that acknowledged them, "host:port=n ...". */
  lostBy: string;
  acks: number;
  /** Failed writes by first word of the error, "READONLY=n ...". */
  writeErrors: string;
  /** Longest a 50 ms timer in the benchmark process fired late during the trial: how loaded the machine was. */
  benchStallMs: number | null;
  /** What went wrong or was unusual, "; "-separated; "error: ..." when the trial did not complete. */
  note: string;
}

/** Writes before the fault, so every writer has found its target. */
const WARMUP_MS = 1000;
/** After reconverging, before counting lost writes: replication catches up. */
const SETTLE_MS = 1000;
const CONVERGE_MS = 90_000;
const PROBE_MS = 50;

/**
 * Events in a trial's process output that the fault did not cause and that
 * change what the trial measured: the machine stalled long enough for
 * Sentinel's TILT protection or for a Consul raft election.
 */
const ENVIRONMENT: { pattern: string; note: string; unless?: FaultId }[] = [
  { pattern: "+tilt", note: "Sentinel entered TILT mode (a sentinel saw its timer late by more than 2 s)" },
  { pattern: "heartbeat timeout reached", note: "Consul raft election the fault did not cause", unless: "server-election" },
];

/**
 * A client keeps the address it has while discovery itself fails (Consul
 * agent down, no raft leader, no sentinel answering); an answer naming no
 * primary still clears it.
 */
function keepLastOnError(discover: () => Promise<string | undefined>): () => Promise<string | undefined> {
  let last: string | undefined;
  return async () => {
    try {
      last = await discover();
    } catch {
      // discovery unreachable: keep writing where we were
    }
    return last;
  };
}

/**
 * Empties the group before a trial: every checker numbers its keys from 1, so
 * a key left by an earlier trial would hide a lost write of this one.
 */
async function flushAll(addr: string): Promise<void> {
  const c = new Bun.RedisClient(`redis://${addr}`, { autoReconnect: false, connectionTimeout: 2000 });
  try {
    await c.connect();
    await c.send("FLUSHALL", []);
  } finally {
    c.close();
  }
}

/** Longest time between consecutive acknowledged discovery writes, counting only gaps that end after `t0`. */
function writeGap(checker: Checker, t0: number): number | null {
  const times = checker.acks.filter((a) => a.writer.startsWith("d")).map((a) => a.ackAt).sort((a, b) => a - b);
  let gap: number | null = null;
  for (let i = 1; i < times.length; i++) if (times[i]! > t0) gap = Math.max(gap ?? 0, times[i]! - times[i - 1]!);
  return gap;
}

function tally(items: Iterable<[string, number]>): string {
  return [...items].map(([k, n]) => `${k}=${n}`).join(" ");
}

/**
 * Runs `fault` once against `sys`, which must have it in `faults`. Throws when
 * the group does not come back to one writable primary (after writing the log).
 */
export async function runTrial(sys: BenchSystem, fault: FaultId, trial: number, logDir: string): Promise<TrialResult> {
  const old = await sys.converged(CONVERGE_MS);
  const plan = sys.plan(fault, old);
  await flushAll(old);
  const marks = new Map(sys.procs().map((p) => [p, p.lines.length]));
  const checker = new Checker({ discover: keepLastOnError(sys.discovery()), servers: sys.servers });
  const started = performance.now();
  const r: TrialResult = {
    system: sys.key, fault, trial, faultAt: "", oldPrimary: old, newPrimary: null, finalPrimary: null, primaryChanged: false,
    failoverMs: null, writeGapMs: null, splitBrainMs: null, lost: null, lostBy: "", acks: 0, writeErrors: "", benchStallMs: null, note: "",
  };
  let stall = 0;
  let tick = performance.now();
  const probe = setInterval(() => {
    const now = performance.now();
    stall = Math.max(stall, now - tick - PROBE_MS);
    tick = now;
  }, PROBE_MS);
  let t0 = 0;
  let next: string | undefined;
  let final: string;
  try {
    await waitFor(() => performance.now() - started >= WARMUP_MS && checker.acks.some((a) => a.writer.startsWith("d")), { timeoutMs: 15_000, what: "the checker's first acknowledged writes" });
    r.faultAt = new Date().toISOString();
    t0 = performance.now();
    await plan.inject();
    next = await sys.newWritablePrimary(old, Math.max(0, t0 + plan.waitMs - performance.now())).catch(() => undefined);
    if (plan.holdMs !== undefined) await Bun.sleep(Math.max(0, t0 + plan.holdMs - performance.now()));
    await plan.recover();
    final = await sys.converged(CONVERGE_MS);
    await Bun.sleep(SETTLE_MS);
  } catch (err) {
    clearInterval(probe);
    await checker.stop();
    r.benchStallMs = stall;
    r.note = `error: ${err instanceof Error ? err.message : String(err)}`;
    finish(r, checker, logDir, sys, marks);
    throw new TrialError(r.note, r);
  }
  clearInterval(probe);
  r.benchStallMs = stall;
  await checker.stop();
  r.newPrimary = next ?? null;
  r.finalPrimary = final;
  r.primaryChanged = next !== undefined || final !== old;
  const moved = next ?? (final !== old ? final : undefined);
  const resumed = moved ? checker.resumedAt(t0, moved) : undefined;
  r.failoverMs = resumed === undefined ? null : resumed - t0;
  if (moved && resumed === undefined) r.note = "the new primary never acknowledged a discovery write";
  if (FAULTS.find((f) => f.id === fault)!.moves && !r.primaryChanged) r.note = `no new primary within ${plan.waitMs} ms`;
  r.writeGapMs = writeGap(checker, t0);
  r.splitBrainMs = checker.splitBrainMs();
  const lost = await checker.lost(final);
  r.lost = lost.length;
  r.lostBy = tally(Object.entries(Object.groupBy(lost, (a) => a.server)).map(([s, l]) => [s, l?.length ?? 0]));
  finish(r, checker, logDir, sys, marks);
  return r;
}

/** A trial the group did not come back from; carries what was measured so far. */
export class TrialError extends Error {
  override name = "TrialError";
  constructor(message: string, readonly trial: TrialResult) {
    super(message);
  }
}

/**
 * Fills in the checker's totals and writes the trial's log: the result, then
 * every line each process printed during the trial.
 */
function finish(r: TrialResult, checker: Checker, logDir: string, sys: BenchSystem, marks: Map<Proc, number>): void {
  r.acks = checker.acks.length;
  r.writeErrors = tally(checker.errors);
  const lines = sys.procs().map((p) => ({ p, lines: p.lines.slice(marks.get(p) ?? 0) }));
  const seen = ENVIRONMENT.filter((e) => e.unless !== r.fault && lines.some((x) => x.lines.some((l) => l.includes(e.pattern))));
  r.note = [r.note, ...seen.map((e) => e.note)].filter(Boolean).join("; ");
  const out = [JSON.stringify(r), ...lines.flatMap((x) => [`----- ${x.p.name} (pid ${x.p.pid}) -----`, ...x.lines])];
  writeFileSync(join(logDir, `${sys.key}-${r.fault}-${r.trial}.log`), out.join("\n") + "\n");
}
