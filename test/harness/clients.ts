/**
 * Stock Redis clients as applications run them (test/clients/): ioredis,
 * node-redis, go-redis's FailoverClient, redis-py's Sentinel and redis-cli,
 * each in its own process, writing numbered keys through its library's
 * Sentinel support and reporting every write's outcome. Used by the
 * integration tests and the benchmark.
 */

import { join } from "node:path";
import { Proc, ROOT } from "./proc.ts";

export const CLIENT_KINDS = ["ioredis", "node-redis", "go-redis", "redis-py", "redis-cli"] as const;
export type ClientKind = (typeof CLIENT_KINDS)[number];

let goBinary: string | undefined;

/** The go-redis client's binary: GO_FAILOVER_BIN (npm test sets it), else built and cached now. */
export function goClientBinary(): string {
  if (goBinary) return goBinary;
  if (process.env.GO_FAILOVER_BIN) return (goBinary = process.env.GO_FAILOVER_BIN);
  const r = Bun.spawnSync(["sh", join(ROOT, "scripts", "build-go-client.sh")], { stderr: "inherit" });
  if (r.exitCode !== 0) throw new Error("could not build the go-redis test client (scripts/build-go-client.sh)");
  return (goBinary = r.stdout.toString().trim());
}

/** Debian's python3, which has Debian's redis-py (a python3 earlier on PATH may lack it). */
const PYTHON = "/usr/bin/python3";

function command(kind: ClientKind): string[] {
  switch (kind) {
    case "ioredis":
      return ["node", join(ROOT, "test", "clients", "ioredis.mjs")];
    case "node-redis":
      return ["node", join(ROOT, "test", "clients", "node-redis.mjs")];
    case "go-redis":
      return [goClientBinary()];
    case "redis-py":
      return [PYTHON, "-u", join(ROOT, "test", "clients", "redis_py.py")];
    case "redis-cli":
      return ["sh", join(ROOT, "test", "clients", "redis-cli.sh")];
  }
}

export interface WriterOptions {
  /** Sentinel endpoints, host:port. */
  sentinels: string[];
  master: string;
  prefix: string;
  password?: string;
  intervalMs?: number;
  /** Extra environment (the DNS variant's DNS_SERVER and ADDR). */
  env?: Record<string, string>;
}

export interface Outcome {
  n: number;
  /** Wall-clock ms when the client reported it. */
  at: number;
  ok: boolean;
  reason?: string;
}

/** One stock client writing continuously. */
export class StockWriter {
  readonly proc: Proc;

  constructor(readonly kind: ClientKind, readonly o: WriterOptions) {
    this.proc = new Proc(`client-${kind}`, command(kind), {
      env: {
        PATH: process.env.PATH ?? "/usr/bin:/bin",
        HOME: process.env.HOME ?? "/root",
        SENTINELS: o.sentinels.join(","),
        MASTER: o.master,
        PREFIX: o.prefix,
        INTERVAL_MS: String(o.intervalMs ?? 5),
        ...(o.password ? { SENTINEL_PASSWORD: o.password } : {}),
        ...o.env,
      },
    });
  }

  outcomes(): Outcome[] {
    const out: Outcome[] = [];
    for (const line of this.proc.stdoutLines) {
      const m = /^(ack|fail) (\d+) ([\d.]+)(?: (.*))?$/.exec(line);
      if (m) out.push({ n: Number(m[2]), at: Number(m[3]), ok: m[1] === "ack", ...(m[4] ? { reason: m[4] } : {}) });
    }
    return out;
  }

  acks(): Outcome[] {
    return this.outcomes().filter((o) => o.ok);
  }

  /** Wall-clock time of the first acknowledged write reported after `t`. */
  firstAckAfter(t: number): number | undefined {
    return this.acks().find((a) => a.at > t)?.at;
  }

  /** Stops it (SIGTERM) and returns how many writes it issued, from its `done` line. */
  async stop(): Promise<number> {
    await this.proc.stop("SIGTERM", 15_000);
    const done = this.proc.stdoutLines.map((l) => /^done (\d+)$/.exec(l)).find(Boolean);
    if (!done) throw new Error(`${this.kind}: no done line; it ended with:\n${this.proc.tail(20)}`);
    return Number(done[1]);
  }

  /** The longest time between two acknowledged writes within [from, to] (wall ms), counting the edges. */
  longestGap(from: number, to: number): number {
    let last = from;
    let gap = 0;
    for (const a of this.acks()) {
      if (a.at < from) continue;
      if (a.at > to) break;
      gap = Math.max(gap, a.at - last);
      last = a.at;
    }
    return Math.max(gap, to - last);
  }
}
