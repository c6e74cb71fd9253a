/**
 * `consul-leader exec` against real Consul: three exec processes, each
 * running a child that appends "<token> <time> <pid>" lines to a shared file
 * while a poller watches the process list. At every moment at most one child
 * runs, and fencing tokens strictly increase across holders, through a kill -9
 * of the holder, a SIGSTOP of the holder, a child exiting 3, and a shell child
 * whose grandchild must not survive the handover.
 */

import { expect } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { record } from "../harness/figures.ts";
import { fileScope, scenario, Scope, waitFor } from "../harness/proc.ts";
import { Sidecar } from "../harness/sidecar.ts";

let consul: ConsulAgent;
fileScope("exec.test.ts", async () => {
  consul = await startDevAgent();
});
let groupNo = 0;


/**
 * Processes whose command line contains `marker` and whose parent's does not:
 * one per running instance of a script, however many subshells it forks.
 */
function processesWith(marker: string): number[] {
  const cmd = new Map<number, string>();
  const parent = new Map<number, number>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      cmd.set(Number(d), readFileSync(`/proc/${d}/cmdline`, "utf8").replace(/\0/g, " "));
      parent.set(Number(d), Number(readFileSync(`/proc/${d}/stat`, "utf8").replace(/^.*\) /, "").split(" ")[1]));
    } catch {
      // gone meanwhile
    }
  }
  const has = (pid: number) => !!cmd.get(pid)?.includes(marker) && !cmd.get(pid)!.includes("consul-leader");
  return [...cmd.keys()].filter((pid) => has(pid) && !has(parent.get(pid) ?? 0));
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

interface Line {
  token: number;
  t: number;
  pid: number;
}

function lines(path: string): Line[] {
  let text = "";
  try {
    text = readFileSync(path, "utf8");
  } catch {
    return [];
  }
  return text.split("\n").filter(Boolean).map((l) => {
    const [token, t, pid] = l.split(" ").map(Number);
    return { token: token!, t: t!, pid: pid! };
  });
}

/** Tokens in the order holders started, each with the time of its first and last line. */
function holders(ls: Line[]): { token: number; first: number; last: number }[] {
  const by = new Map<number, { token: number; first: number; last: number }>();
  for (const l of ls) {
    const h = by.get(l.token) ?? { token: l.token, first: l.t, last: l.t };
    h.first = Math.min(h.first, l.t);
    h.last = Math.max(h.last, l.t);
    by.set(l.token, h);
  }
  return [...by.values()].sort((a, b) => a.first - b.first);
}

/**
 * Three exec processes running `script` (a shell script that sees $OUT and
 * $MARKER). The marker is in every child's command line, for the process list.
 */
function group(script: (out: string, marker: string) => string, extra: Record<string, string> = {}) {
  const n = ++groupNo;
  const dir = Scope.current!.tmpdir("exec-");
  const out = join(dir, "out.txt");
  const marker = `cl-exec-child-${process.pid}-${n}`;
  const path = join(dir, `${marker}.sh`);
  writeFileSync(path, `#!/bin/sh\n${script(out, marker)}\n`, { mode: 0o755 });
  const execs = [1, 2, 3].map((i) =>
    new Sidecar(`exec-${n}-${i}`, {
      CONSUL_HTTP_ADDR: consul.addr,
      CONSUL_LEADER_SERVICE_NAME: `mailer${n}`,
      CONSUL_LEADER_SERVICE_ID: `mailer${n}-${i}`,
      CONSUL_LEADER_CHECK_TTL: "3s",
      CONSUL_LEADER_FENCE_MARGIN: "300ms",
      CONSUL_LEADER_EXEC_KILL_GRACE: "300ms",
      CONSUL_LEADER_LOG_LEVEL: "info",
      ...extra,
    }, ["exec", "--", path])
  );
  return { out, marker, execs };
}

/** A child that writes a line every 20 ms, forever. */
const WRITER = (out: string) => `while true; do echo "$CONSUL_LEADER_FENCING_TOKEN $(date +%s%N | cut -c1-13) $$" >> ${out}; sleep 0.02; done`;

function leaderOf(execs: Sidecar[]): Sidecar | undefined {
  return execs.find((e) => e.proc.running && e.logs().some((l) => l.msg === "command started") && e.role() === "leader");
}

/** The leading exec's child, once it has written a line. */
async function running(g: ReturnType<typeof group>): Promise<Sidecar> {
  return await waitFor(() => (lines(g.out).length > 0 ? leaderOf(g.execs) : undefined), { timeoutMs: 15_000, what: "a running child" });
}

function assertOneAtATime(ls: Line[]): void {
  const hs = holders(ls);
  for (let i = 1; i < hs.length; i++) {
    expect(hs[i]!.token, "fencing tokens strictly increase across holders").toBeGreaterThan(hs[i - 1]!.token);
    expect(hs[i]!.first, `holder ${hs[i]!.token} started before holder ${hs[i - 1]!.token} stopped writing`).toBeGreaterThan(hs[i - 1]!.last);
  }
}

scenario("kill -9 of the holder: its child is gone before the next one starts; tokens increase", async () => {
  const g = group((out) => WRITER(out));
  const ov = new Overlap(g.marker);
  const holder = await running(g);
  await Bun.sleep(300);
  const t0 = performance.now();
  await holder.kill9();
  // The guard sees its parent die and kills the child at once.
  await waitFor(() => holders(lines(g.out)).length >= 2, { timeoutMs: 15_000, what: "the next holder's child to write" });
  const next = holders(lines(g.out)).at(-1)!;
  record("exec: kill -9 of the holder -> next child writes, ms", next.first - (Date.now() - (performance.now() - t0)));
  expect(await ov.stop()).toBeLessThanOrEqual(1);
  assertOneAtATime(lines(g.out));
}, 60_000);

scenario("SIGSTOP of the holder: the guard kills its child at the deadline, before the next one starts", async () => {
  const g = group((out) => WRITER(out));
  const ov = new Overlap(g.marker);
  const holder = await running(g);
  await Bun.sleep(300);
  const before = holders(lines(g.out)).length;
  holder.signal("SIGSTOP");
  await waitFor(() => holders(lines(g.out)).length > before, { timeoutMs: 20_000, what: "the next holder's child to write" });
  const hs = holders(lines(g.out));
  const old = hs[before - 1]!;
  const fresh = hs[before]!;
  record("exec: SIGSTOP of the holder -> gap between the children, ms", fresh.first - old.last);
  expect(await ov.stop()).toBeLessThanOrEqual(1);
  assertOneAtATime(lines(g.out));
  holder.signal("SIGCONT");
}, 60_000);

scenario("the child exits 3: its exec process exits 3, releases, and another holder starts", async () => {
  const g = group((out) => `echo "$CONSUL_LEADER_FENCING_TOKEN $(date +%s%N | cut -c1-13) $$" >> ${out}; [ "$CONSUL_LOCK_HELD" = true ] || exit 9; sleep 0.3; exit 3`);
  const ov = new Overlap(g.marker);
  const first = await running(g);
  const t0 = performance.now();
  expect(await first.proc.exited).toBe(3);
  await waitFor(() => holders(lines(g.out)).length >= 2, { timeoutMs: 10_000, what: "another holder to start" });
  record("exec: child exit -> next child starts, ms", performance.now() - t0);
  expect(await ov.stop()).toBeLessThanOrEqual(1);
  assertOneAtATime(lines(g.out));
}, 60_000);

scenario("a shell child with a grandchild: nothing of it survives the handover (SIGTERM to the holder)", async () => {
  // The grandchild is a shell running sleep, with its own marker as $0 ("; :" keeps sh from exec'ing sleep).
  const gc = `cl-exec-gc-${process.pid}-${groupNo + 1}`;
  const g = group((out) => `sh -c 'sleep 9999; :' ${gc} &\n${WRITER(out)}`);
  const holder = await running(g);
  await waitFor(() => processesWith(gc).length === 1, { what: "the grandchild to start" });
  const ov = new Overlap(gc);
  holder.signal("SIGTERM");
  expect(await holder.proc.exited).toBeGreaterThanOrEqual(0);
  await waitFor(() => holders(lines(g.out)).length >= 2, { timeoutMs: 10_000, what: "the next holder" });
  // One grandchild at a time: the old one died before the new holder's started.
  expect(await ov.stop()).toBeLessThanOrEqual(1);
  assertOneAtATime(lines(g.out));
  await waitFor(() => processesWith(gc).length === 1, { what: "exactly the new holder's grandchild" });
}, 60_000);

scenario("a waiting exec process stops at once on SIGTERM (consul#4439); stdout is the command's alone", async () => {
  const g = group((out) => `echo "hello from $CONSUL_LEADER_FENCING_TOKEN"
${WRITER(out)}`);
  const holder = await running(g);
  // The holder can be running before the others have logged that they follow.
  const waiting = await waitFor(() => g.execs.find((e) => e !== holder && e.role() === "follower"), { what: "an exec process that follows" });
  const t0 = performance.now();
  waiting.signal("SIGTERM");
  expect(await waiting.proc.exited).toBe(0);
  expect(performance.now() - t0).toBeLessThan(2000);
  // The command's output passes through on stdout; our log lines go to stderr.
  await waitFor(() => holder.proc.stdoutLines.some((l) => /^hello from \d+$/.test(l)), { what: "the command's stdout" });
  expect(holder.proc.stdoutLines.filter((l) => l.includes('"msg"'))).toEqual([]);
});

scenario("exec --try gives up with 75 when another holds the lock, without running its command; with the lock free it runs it", async () => {
  const g = group(WRITER);
  const holder = await running(g);
  const dir = Scope.current!.tmpdir("exec-try-");
  const ran = join(dir, "ran");
  const env = { ...holder.env, CONSUL_LEADER_SERVICE_ID: `${holder.env["CONSUL_LEADER_SERVICE_ID"]}-try` };
  const t0 = performance.now();
  const tried = new Sidecar("exec-try", env, ["exec", "--try", "1500ms", "--", "sh", "-c", `touch ${ran}`]);
  expect(await tried.proc.exited).toBe(75);
  const took = performance.now() - t0;
  expect(took).toBeGreaterThanOrEqual(1500);
  expect(took).toBeLessThan(1500 + 5000);
  expect(tried.proc.lines.join("\n")).toContain("the lock was not held within 1.5s");
  expect(require("node:fs").existsSync(ran)).toBe(false);
  // consul lock's own name for it, --timeout, with the lock free: the command runs and its code is exec's.
  await Promise.all(g.execs.map((e) => e.stop()));
  const free = new Sidecar("exec-timeout", env, ["exec", "--timeout=10s", "sh", "-c", `touch ${ran}; exit 4`]);
  expect(await free.proc.exited).toBe(4);
  expect(require("node:fs").existsSync(ran)).toBe(true);
});
