/**
 * `consul-leader exec` under signals to exec and to its helpers: no command
 * runs past the point another holder may start. Three exec processes run a
 * child that appends "<token> <time> <pid>" lines to a shared file while a
 * sampler watches the process list. The guard (`__exec-guard`, the exec
 * process's child) leads its own process group, and the command runs in it.
 * Whatever is stopped or killed (exec's whole group, the guard alone, the
 * guard's group, exec and guard together), at most one child runs at any
 * sampled moment, the stopped holder's child is dead before the next holder's
 * first line, and fencing tokens strictly increase.
 */

import { expect } from "bun:test";
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { FaultProxy } from "../harness/fault-proxy.ts";
import { record } from "../harness/figures.ts";
import { fileScope, scenario, Scope, waitFor } from "../harness/proc.ts";
import { Sidecar } from "../harness/sidecar.ts";

let consul: ConsulAgent;
fileScope("exec-signals.test.ts", async () => {
  consul = await startDevAgent();
});
let groupNo = 0;

/** Fields of /proc/<pid>/stat after the command name: [state, ppid, pgrp, ...]; undefined when gone. */
function stat(pid: number): string[] | undefined {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ");
  } catch {
    return undefined;
  }
}
const pgidOf = (pid: number) => Number(stat(pid)?.[2]);
/** Alive: exists and not a zombie (a stopped process is alive). */
const alive = (pid: number) => !!stat(pid) && stat(pid)?.[0] !== "Z";
const cmdline = (pid: number) => {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ");
  } catch {
    return "";
  }
};
const pids = () => readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number);

/**
 * Processes whose command line contains `marker` and whose parent's does not:
 * one per running script. One read of each process; one that vanishes
 * meanwhile, or a zombie, is not running.
 */
function processesWith(marker: string): number[] {
  const snap = new Map<number, { cmd: string; state: string; ppid: number }>();
  for (const pid of pids()) {
    const cmd = cmdline(pid);
    const st = stat(pid);
    if (cmd && st) snap.set(pid, { cmd, state: st[0]!, ppid: Number(st[1]) });
  }
  const has = (pid: number) => {
    const p = snap.get(pid);
    return !!p && p.cmd.includes(marker) && !p.cmd.includes("consul-leader") && p.state !== "Z";
  };
  const found = [...snap.keys()].filter((pid) => has(pid) && !has(snap.get(pid)!.ppid));
  if (found.length > 1) process.stderr.write(`exec-signals: ${found.length} children at once: ${JSON.stringify(found.map((p) => ({ pid: p, ...snap.get(p), parent: snap.get(snap.get(p)!.ppid) ?? null })))}\n`);
  return found;
}

/** Samples the process list every 5 ms; remembers the most children seen at once. */
class Overlap {
  max = 0;
  #running = true;
  readonly #done: Promise<void>;
  constructor(readonly marker: string) {
    this.#done = (async () => {
      while (this.#running) {
        this.max = Math.max(this.max, processesWith(marker).length);
        await Bun.sleep(5);
      }
    })();
  }
  async stop(): Promise<number> {
    this.#running = false;
    await this.#done;
    return this.max;
  }
}

/** Polls one pid every 2 ms; `diedAt` is the wall time it was first seen dead (an upper bound). */
class DeathWatch {
  diedAt: number | undefined;
  constructor(readonly pid: number) {
    void (async () => {
      while (alive(pid)) await Bun.sleep(2);
      this.diedAt = Date.now();
    })();
  }
}

interface Line {
  token: number;
  t: number;
  pid: number;
}

function lines(path: string): Line[] {
  if (!existsSync(path)) return [];
  return readFileSync(path, "utf8").split("\n").filter(Boolean).map((l) => {
    const [token, t, pid] = l.split(" ").map(Number);
    return { token: token!, t: t!, pid: pid! };
  });
}

/** Children in the order they started: token, pid, time of their first and last line. */
function children(ls: Line[]): { token: number; pid: number; first: number; last: number }[] {
  const by = new Map<number, { token: number; pid: number; first: number; last: number }>();
  for (const l of ls) {
    const h = by.get(l.pid) ?? { token: l.token, pid: l.pid, first: l.t, last: l.t };
    h.last = Math.max(h.last, l.t);
    by.set(l.pid, h);
  }
  return [...by.values()].sort((a, b) => a.first - b.first);
}

/** At most one child at a time by their own lines, and tokens strictly increase across holders. */
function assertOneAtATime(ls: Line[]): void {
  const cs = children(ls);
  for (let i = 1; i < cs.length; i++) {
    expect(cs[i]!.first, `child ${cs[i]!.pid} started before child ${cs[i - 1]!.pid} stopped writing`).toBeGreaterThan(cs[i - 1]!.last);
    if (cs[i]!.token !== cs[i - 1]!.token) expect(cs[i]!.token, "fencing tokens strictly increase across holders").toBeGreaterThan(cs[i - 1]!.token);
  }
}

/**
 * Three exec processes running a child that writes a line every 20 ms.
 * `wrap(i)`: command prefix for exec i; `consulAddr(i)`: the Consul address exec i uses.
 */
function group(opts: { wrap?: string[]; consulAddr?: (i: number) => string } = {}) {
  const n = ++groupNo;
  const dir = Scope.current!.tmpdir("exec-sig-");
  const out = join(dir, "out.txt");
  const marker = `cl-exec-sig-${process.pid}-${n}`;
  const path = join(dir, `${marker}.sh`);
  writeFileSync(path, `#!/bin/sh\nwhile true; do echo "$CONSUL_LEADER_FENCING_TOKEN $(date +%s%N | cut -c1-13) $$" >> ${out}; sleep 0.02; done\n`, { mode: 0o755 });
  const execs = [1, 2, 3].map((i) =>
    new Sidecar(`exec-sig-${n}-${i}`, {
      CONSUL_HTTP_ADDR: opts.consulAddr?.(i) ?? consul.addr,
      CONSUL_LEADER_SERVICE_NAME: `sigjob${n}`,
      CONSUL_LEADER_SERVICE_ID: `sigjob${n}-${i}`,
      CONSUL_LEADER_CHECK_TTL: "3s",
      CONSUL_LEADER_FENCE_MARGIN: "300ms",
      CONSUL_LEADER_EXEC_KILL_GRACE: "300ms",
      CONSUL_LEADER_LOG_LEVEL: "info",
    }, ["exec", "--", path], opts.wrap ?? [])
  );
  const ov = new Overlap(marker);
  Scope.current!.defer(() => void ov.stop());
  return { out, marker, execs, ov };
}
type Group = ReturnType<typeof group>;

/** The holder: the exec process whose child is writing (the newest child not in `not`), with its guard and child pids. */
async function holder(g: Group, not: number[] = []): Promise<{ exec: Sidecar; guard: number; child: number; token: number }> {
  const c = await waitFor(() => children(lines(g.out)).filter((x) => !not.includes(x.pid)).at(-1), { timeoutMs: 15_000, what: "a child writing" });
  const guard = Number(stat(c.pid)?.[1]);
  expect(cmdline(guard)).toContain("__exec-guard");
  const exec = g.execs.find((e) => e.pid === Number(stat(guard)?.[1]));
  if (!exec) throw new Error(`no exec process is the parent of guard ${guard}`);
  return { exec, guard, child: c.pid, token: c.token };
}

/**
 * The most a holder lost without a release (frozen, cut off, killed) may take
 * to be replaced: its session lapses within CHECK_TTL (3 s) of the fault, and
 * the new holder starts its command after the reaction grace (takeover.ts:
 * max(request timeout + kill grace, CHECK_TTL - FENCE_MARGIN) = 2.7 s), plus
 * 1 s for starting processes on a busy machine.
 */
const REPLACED_WITHIN_MS = 3000 + 2700 + 1000;

/**
 * Waits for the child after `old` to write; asserts the safety properties;
 * records the gap between the two. `faultAt`: when the holder was lost
 * without a release, to hold the replacement to REPLACED_WITHIN_MS.
 */
async function nextChild(g: Group, old: number, death: DeathWatch, what: string, faultAt?: number): Promise<void> {
  const after = () => {
    const cs = children(lines(g.out));
    const i = cs.findIndex((c) => c.pid === old);
    return cs[i + 1] ? { prev: cs[i]!, fresh: cs[i + 1]! } : undefined;
  };
  const { prev, fresh } = await waitFor(after, { timeoutMs: 20_000, what: "the next holder's child to write" });
  expect(death.diedAt, `child ${old} seen dead before the next holder's first line`).toBeDefined();
  expect(death.diedAt!, `child ${old} died before the next holder's first line`).toBeLessThan(fresh.first);
  // A new holder has a higher token; the same exec starting a new guard in the same tenure keeps its own.
  const startedBy = (pid: number) => g.execs.find((e) => e.logs().some((l) => l.msg === "command started" && l["pid"] === pid));
  const sameExec = startedBy(old) !== undefined && startedBy(old) === startedBy(fresh.pid);
  if (sameExec) expect(fresh.token).toBeGreaterThanOrEqual(prev.token);
  else expect(fresh.token, "the next holder's token is higher").toBeGreaterThan(prev.token);
  expect(await g.ov.stop(), "children running at once (sampled every 5 ms)").toBeLessThanOrEqual(1);
  assertOneAtATime(lines(g.out));
  record(`exec signals: ${what} -> gap between the children's lines, ms`, fresh.first - prev.last);
  record(`exec signals: ${what} -> old child dead to next child's first line, ms`, fresh.first - death.diedAt!);
  if (faultAt !== undefined) {
    record(`exec signals: ${what} -> next child's first line, ms`, fresh.first - faultAt);
    expect(fresh.first - faultAt, "the next holder's command started within CHECK_TTL + the reaction grace (+1 s)").toBeLessThan(REPLACED_WITHIN_MS);
  }
}

scenario("SIGTSTP then SIGSTOP to the holder exec's own process group: the guard kills the child at the deadline; the resumed exec starts nothing", async () => {
  expect(Bun.which("setsid"), "setsid (util-linux) is needed to give each exec its own process group").toBeTruthy();
  const g = group({ wrap: ["setsid"] });
  const h = await holder(g);
  // setsid exec'd consul-leader in place: the exec leads its own group, apart from the test runner's.
  expect(pgidOf(h.exec.pid)).toBe(h.exec.pid);
  expect(pgidOf(h.exec.pid)).not.toBe(pgidOf(process.pid));
  expect(pgidOf(h.guard)).toBe(h.guard);
  expect(pgidOf(h.child)).toBe(h.guard);
  await Bun.sleep(300);
  const death = new DeathWatch(h.child);
  const t0 = Date.now();
  // Ctrl-Z. Linux discards a default-action SIGTSTP to an orphaned process group, which a setsid'd exec's is.
  process.kill(-h.exec.pid, "SIGTSTP");
  await Bun.sleep(200);
  const tstpStopped = stat(h.exec.pid)?.[0] === "T";
  process.stderr.write(`exec-signals: SIGTSTP to the exec group ${tstpStopped ? "stopped it" : "did not stop it (orphaned process group)"}\n`);
  const frozeAt = tstpStopped ? t0 : Date.now();
  process.kill(-h.exec.pid, "SIGSTOP");
  await waitFor(() => stat(h.exec.pid)?.[0] === "T", { what: "the exec process to be stopped" });
  // The guard, in its own session, runs on: the exec's group signal did not reach it.
  expect(stat(h.guard)?.[0]).not.toBe("T");
  await waitFor(() => death.diedAt, { timeoutMs: 5000, what: "the guard to kill the child at the deadline" });
  record("exec signals: exec group SIGSTOP -> child killed by the guard, ms", death.diedAt! - frozeAt);
  // The design: dead before the check TTL (3 s) could lapse the session.
  expect(death.diedAt! - frozeAt).toBeLessThan(3000);
  await nextChild(g, h.child, death, "exec group SIGSTOP", frozeAt);
  const next = await holder(g, [h.child]);
  expect(next.exec).not.toBe(h.exec);
  // Resume the frozen exec: it finds the lock gone and starts nothing while the other holds it.
  const started = h.exec.logs().filter((l) => l.msg === "command started").length;
  const ov = new Overlap(g.marker);
  process.kill(-h.exec.pid, "SIGCONT");
  await Bun.sleep(4000);
  expect(await ov.stop(), "children running at once after the resume").toBeLessThanOrEqual(1);
  expect(h.exec.logs().filter((l) => l.msg === "command started").length, "the resumed exec started no command").toBe(started);
  expect(processesWith(g.marker)).toEqual([next.child]);
  expect(lines(g.out).filter((l) => l.pid === h.child && l.t > death.diedAt!)).toEqual([]);
  assertOneAtATime(lines(g.out));
}, 60_000);

scenario("kill -9 of the guard alone: the exec kills the command's group at once; the lock moves on, never two children", async () => {
  const g = group();
  const h = await holder(g);
  await Bun.sleep(300);
  const death = new DeathWatch(h.child);
  const t0 = Date.now();
  process.kill(h.guard, "SIGKILL");
  await waitFor(() => death.diedAt, { timeoutMs: 1000, what: "the child to be gone within a second of the guard's kill -9" });
  record("exec signals: guard kill -9 -> child gone, ms", death.diedAt! - t0);
  await nextChild(g, h.child, death, "guard kill -9");
  const next = await holder(g, [h.child]);
  process.stderr.write(`exec-signals: after the guard's kill -9 ${next.exec === h.exec ? "the same exec started a new guard" : `the lock moved on; the old exec exited ${await h.exec.proc.exited}`}\n`);
}, 60_000);

/** Three execs, each reaching Consul through its own proxy, so the holder alone can be cut off. */
function proxiedGroup() {
  const proxies = [0, 1, 2].map(() => new FaultProxy(consul.url));
  Scope.current!.defer(() => proxies.forEach((x) => x.stop()));
  return { g: group({ consulAddr: (i) => proxies[i - 1]!.addr }), proxies };
}

scenario("kill -STOP of the guard alone: the exec's own timer kills the group by the deadline once the lease lapses", async () => {
  const { g, proxies } = proxiedGroup();
  const h = await holder(g);
  const death = new DeathWatch(h.child);
  process.kill(h.guard, "SIGSTOP");
  await waitFor(() => stat(h.guard)?.[0] === "T", { what: "the guard to be stopped" });
  // The exec still holds the lock and renews it: its child runs on, and nothing else starts.
  await Bun.sleep(2 * 3000);
  expect(alive(h.child)).toBe(true);
  expect(children(lines(g.out)).map((c) => c.pid)).toEqual([h.child]);
  // Cut the holder off from Consul: the lease is no longer renewed; the frozen guard cannot act, the exec must.
  const t0 = Date.now();
  proxies[g.execs.indexOf(h.exec)]!.fault = { kind: "stall" };
  await waitFor(() => death.diedAt, { timeoutMs: 5000, what: "the exec to kill the group by the deadline" });
  record("exec signals: guard SIGSTOP + exec cut off -> child killed by exec, ms", death.diedAt! - t0);
  // The deadline is at most CHECK_TTL minus the margin after the last heartbeat sent before the cut.
  expect(death.diedAt! - t0).toBeLessThan(3000);
  await nextChild(g, h.child, death, "guard SIGSTOP + exec cut off", t0);
  // SIGKILL to the group ended the stopped guard too.
  await waitFor(() => !alive(h.guard), { timeoutMs: 2000, what: "the stopped guard to be gone" });
}, 60_000);

scenario("kill -STOP of the guard's whole group: the stopped child is killed before another holder starts and never runs again", async () => {
  const { g, proxies } = proxiedGroup();
  const h = await holder(g);
  const death = new DeathWatch(h.child);
  process.kill(-h.guard, "SIGSTOP");
  await waitFor(() => stat(h.guard)?.[0] === "T" && stat(h.child)?.[0] === "T", { what: "the guard and the child to be stopped" });
  const frozenAt = Date.now();
  // The exec holds the lock on: a frozen command is not a second writer, and nothing else starts.
  await Bun.sleep(2 * 3000);
  expect(children(lines(g.out)).map((c) => c.pid)).toEqual([h.child]);
  expect(lines(g.out).filter((l) => l.t > frozenAt + 100)).toEqual([]);
  const t0 = Date.now();
  proxies[g.execs.indexOf(h.exec)]!.fault = { kind: "stall" };
  await waitFor(() => death.diedAt, { timeoutMs: 5000, what: "the stopped child to be killed" });
  record("exec signals: guard group SIGSTOP + exec cut off -> stopped child killed, ms", death.diedAt! - t0);
  expect(death.diedAt! - t0).toBeLessThan(3000);
  await nextChild(g, h.child, death, "guard group SIGSTOP + exec cut off", t0);
  // Resume the group later: nothing of it is left to run.
  await Bun.sleep(500);
  try {
    process.kill(-h.guard, "SIGCONT");
  } catch (err) {
    expect((err as { code?: string }).code, "the group is empty").toBe("ESRCH");
  }
  await Bun.sleep(1000);
  expect(alive(h.guard) || alive(h.child)).toBe(false);
  expect(pids().filter((p) => pgidOf(p) === h.guard && alive(p))).toEqual([]);
  expect(lines(g.out).filter((l) => l.pid === h.child && l.t > frozenAt + 100)).toEqual([]);
}, 60_000);

scenario("kill -9 of the exec and its guard at once: the command dies anyway (parent-death signal)", async () => {
  const g = group();
  const h = await holder(g);
  await Bun.sleep(300);
  const death = new DeathWatch(h.child);
  const t0 = Date.now();
  process.kill(h.exec.pid, "SIGKILL");
  process.kill(h.guard, "SIGKILL");
  await waitFor(() => death.diedAt, { timeoutMs: 2000, intervalMs: 5, what: "the child to be gone within 2 s" });
  record("exec signals: exec + guard kill -9 -> child gone, ms", death.diedAt! - t0);
  await nextChild(g, h.child, death, "exec + guard kill -9", t0);
}, 60_000);
