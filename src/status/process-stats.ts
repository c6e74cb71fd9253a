/**
 * What the sidecar's own process uses, read at each /metrics scrape: CPU
 * time, resident memory, the JS heap and open file descriptors. The one
 * place that asks the runtime and /proc about this process.
 *
 * Guarantees: never throws; a figure the platform cannot give (open fds off
 * Linux) is null, and its series is left out.
 */

import { readdirSync, readFileSync } from "node:fs";

export interface ProcessStats {
  /** User + system CPU time since start, seconds. */
  cpuSeconds: number;
  /** Resident set size, bytes: the runtime's mapped code included (shared with every copy of the binary on the host). */
  residentBytes: number;
  /** JS heap in use and reserved, bytes. */
  heapUsedBytes: number;
  heapTotalBytes: number;
  /** Open file descriptors (Linux /proc/self/fd), or null. */
  openFds: number | null;
  /** Wall-clock start, seconds since the epoch. */
  startTimeSeconds: number;
}

const startedAt = Date.now() / 1000 - process.uptime();

/** Reads the figures now (two small /proc reads on Linux); see the file header for what may be null. */
export function readProcessStats(): ProcessStats {
  const cpu = process.cpuUsage();
  const mem = process.memoryUsage();
  // One entry is the directory handle readdir itself holds open.
  const openFds = orNull(() => readdirSync("/proc/self/fd").length - 1);
  // VmRSS, what ps and the OOM killer see; process.memoryUsage().rss reads a few MiB lower in Bun.
  const vmRssKiB = orNull(() => Number(/^VmRSS:\s+(\d+) kB$/m.exec(readFileSync("/proc/self/status", "utf8"))?.[1] ?? NaN));
  const residentBytes = vmRssKiB !== null && Number.isFinite(vmRssKiB) ? vmRssKiB * 1024 : mem.rss;
  return {
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    residentBytes,
    heapUsedBytes: mem.heapUsed,
    heapTotalBytes: mem.heapTotal,
    openFds,
    startTimeSeconds: startedAt,
  };
}

function orNull(read: () => number): number | null {
  try {
    return read();
  } catch {
    return null;
  }
}
