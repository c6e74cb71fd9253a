/**
 * The check that ends `npm test`: nothing the run created is left. Run by
 * scripts/test.sh after `bun test`, with the run's id and ledger (ledger.ts):
 *
 *   bun test/harness/leftovers.ts
 *
 * Looks for processes of the run: those whose environment carries the run's
 * id (its own ancestors excepted: test.sh and this checker carry it too),
 * those the harness started (by pid and start time, since a process that
 * sets its title, as redis-server does, overwrites the environment /proc
 * shows), and those working in one of the run's temp dirs (what Nomad started
 * for a test, wherever it was reparented). Then listening sockets on the
 * ports the run handed out that such a process holds, temp dirs it made that
 * still exist, and network namespaces it made that still exist. Prints each one, then removes it (kills the process, deletes the
 * dir, the namespace) so the machine is clean either way, and exits 1 when
 * there was any, 0 when none.
 */

import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync } from "node:fs";
import { TEST_RUN, TEST_RUN_VAR } from "./ledger.ts";

interface Found {
  what: string;
  clean: () => void;
}

/** The pids of this process and its ancestors. */
function ancestors(): Set<number> {
  const out = new Set<number>();
  let pid = process.pid;
  while (pid > 1 && !out.has(pid)) {
    out.add(pid);
    try {
      pid = Number(readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ")[1]);
    } catch {
      break;
    }
  }
  return out;
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").replace(/\0/g, " ").trim().slice(0, 160);
  } catch {
    return "?";
  }
}

/** Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot; tells a pid from its reuse. */
export function startTime(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").replace(/^.*\) /, "").split(" ")[19];
  } catch {
    return undefined;
  }
}

/**
 * The run's processes, this process's ancestors excepted: carrying `run` in
 * their environment, started by the harness (`started`: pid and start
 * time), or working in one of `dirs`.
 */
export function runProcesses(run: string, started: readonly { pid: number; start: string }[] = [], dirs: readonly string[] = []): number[] {
  const needle = `${TEST_RUN_VAR}=${run}\0`;
  const mine = ancestors();
  const ours = new Set(started.filter((s) => startTime(s.pid) === s.start).map((s) => s.pid));
  return readdirSync("/proc").filter((d) => /^\d+$/.test(d)).map(Number).filter((pid) => {
    if (mine.has(pid)) return false;
    if (ours.has(pid)) return true;
    try {
      const cwd = readlinkSync(`/proc/${pid}/cwd`);
      if (dirs.some((d) => cwd === d || cwd.startsWith(`${d}/`))) return true;
    } catch {
      // gone, or a kernel thread
    }
    try {
      return readFileSync(`/proc/${pid}/environ`, "latin1").includes(needle);
    } catch {
      return false;
    }
  });
}

/** Listening TCP ports (this network namespace) and the socket inode of each. */
function listening(): Map<number, string> {
  const out = new Map<number, string>();
  for (const f of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(f, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[3] !== "0A") continue; // LISTEN
      out.set(parseInt(cols[1]!.split(":")[1]!, 16), cols[9]!);
    }
  }
  return out;
}

/** The pid holding socket `inode`, if any process we can see does. */
function socketOwner(inode: string): number | undefined {
  const target = `socket:[${inode}]`;
  for (const d of readdirSync("/proc").filter((x) => /^\d+$/.test(x))) {
    try {
      for (const fd of readdirSync(`/proc/${d}/fd`)) if (readlinkSync(`/proc/${d}/fd/${fd}`) === target) return Number(d);
    } catch {
      // gone, or not readable
    }
  }
  return undefined;
}

export function leftovers(run: string, ledgerText: string): Found[] {
  const entries = ledgerText.split("\n").filter(Boolean).map((l) => [l.slice(0, l.indexOf(" ")), l.slice(l.indexOf(" ") + 1)] as const);
  const found: Found[] = [];
  const started = entries.filter(([k]) => k === "pid").map(([, v]) => ({ pid: Number(v.split(" ")[0]), start: v.split(" ")[1] ?? "" }));
  const procs = runProcesses(run, started, entries.filter(([k]) => k === "dir").map(([, v]) => v));
  const kill = (pid: number) => () => {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // gone meanwhile
    }
  };
  for (const pid of procs) found.push({ what: `process ${pid}: ${cmdline(pid)}`, clean: kill(pid) });
  const ports = new Set(entries.filter(([k]) => k === "port").map(([, v]) => Number(v)));
  for (const [port, inode] of listening()) {
    if (!ports.has(port)) continue;
    const owner = socketOwner(inode);
    // A port handed out to this run may have been taken since by someone else's process: only ours count.
    if (owner !== undefined && procs.includes(owner)) found.push({ what: `port ${port} still listened on by process ${owner}`, clean: kill(owner) });
  }
  for (const [, dir] of entries.filter(([k]) => k === "dir")) {
    if (existsSync(dir)) found.push({ what: `temp dir ${dir}`, clean: () => rmSync(dir, { recursive: true, force: true }) });
  }
  const namespaces = new Set(Bun.spawnSync(["ip", "netns", "list"]).stdout.toString().split("\n").map((l) => l.split(" ")[0]));
  for (const [, ns] of entries.filter(([k]) => k === "netns")) {
    if (namespaces.has(ns)) found.push({ what: `network namespace ${ns}`, clean: () => void Bun.spawnSync(["ip", "netns", "del", ns]) });
  }
  return found;
}

if (import.meta.main) {
  const ledger = process.env["CL_TEST_LEDGER"];
  if (!TEST_RUN || !ledger) {
    console.error("leftovers: run by scripts/test.sh (CL_TEST_RUN and CL_TEST_LEDGER unset)");
    process.exit(2);
  }
  const found = leftovers(TEST_RUN, existsSync(ledger) ? readFileSync(ledger, "utf8") : "");
  if (found.length === 0) {
    console.log("leftovers: none (every process, port, temp dir and network namespace the run created is gone)");
    process.exit(0);
  }
  console.log(`leftovers: ${found.length} thing(s) the run created are still there; removing them:`);
  for (const f of found) {
    console.log(`  - ${f.what}`);
    f.clean();
  }
  process.exit(1);
}
