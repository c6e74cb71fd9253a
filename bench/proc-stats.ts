/**
 * What the benchmark reads about a running process from /proc (Linux only):
 * CPU time, resident memory and its anonymous part, proportional set size,
 * open file descriptors and threads. Nothing here changes the process; a
 * read of a process that has exited throws.
 */

import { readdirSync, readFileSync } from "node:fs";

const CLK_TCK = Number(Bun.spawnSync(["getconf", "CLK_TCK"]).stdout.toString().trim()) || 100;

/** utime + stime of `pid`, in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // Fields after the command name start at field 3 (state); utime and stime are fields 14 and 15.
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

function kB(text: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(text);
  return m ? Number(m[1]) : NaN;
}

/** VmRSS of `pid`, in MiB. */
export function rssMiB(pid: number): number {
  return kB(readFileSync(`/proc/${pid}/status`, "utf8"), "VmRSS") / 1024;
}

export interface MemoryStats {
  /** Resident set (VmRSS), MiB: what `ps` and the OOM killer see. */
  rssMiB: number;
  /** Resident anonymous memory (RssAnon), MiB: the heap and stacks, without the mapped binary; where a leak shows. */
  anonMiB: number;
  /** Proportional set size (smaps_rollup Pss), MiB: shared pages split among the processes that map them. */
  pssMiB: number;
  threads: number;
}

/** Memory and thread count of `pid` from /proc/<pid>/status and smaps_rollup. */
export function memoryStats(pid: number): MemoryStats {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8");
  const threads = /^Threads:\s+(\d+)$/m.exec(status);
  return {
    rssMiB: kB(status, "VmRSS") / 1024,
    anonMiB: kB(status, "RssAnon") / 1024,
    pssMiB: kB(rollup, "Pss") / 1024,
    threads: threads ? Number(threads[1]) : NaN,
  };
}

/** How many file descriptors `pid` has open (entries of /proc/<pid>/fd). */
export function openFds(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/**
 * CPU use over a window as a percentage of one core, per process: call this
 * at the beginning of the window and the function it returns at the end.
 */
export function cpuMeter(pids: number[]): () => { pid: number; pct: number }[] {
  const t0 = performance.now();
  const before = pids.map((pid) => cpuSeconds(pid));
  return () => {
    const wall = (performance.now() - t0) / 1000;
    return pids.map((pid, i) => ({ pid, pct: ((cpuSeconds(pid) - before[i]!) / wall) * 100 }));
  };
}
