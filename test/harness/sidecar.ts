/**
 * The sidecar under test, as the compiled binary (dist/consul-leader, built by
 * scripts/test.sh), with its JSON log lines parsed for assertions.
 */

import { existsSync } from "node:fs";
import { join } from "node:path";
import { Proc, ROOT, waitFor } from "./proc.ts";

export const BINARY = process.env.CONSUL_LEADER_BIN ?? join(ROOT, "dist", "consul-leader");

export type LogLine = Record<string, unknown> & { msg: string; level: string };

export class Sidecar {
  proc: Proc;
  readonly name: string;
  readonly env: Record<string, string>;
  readonly args: string[];

  readonly wrap: string[];

  constructor(name: string, env: Record<string, string>, args: string[] = [], wrap: string[] = []) {
    if (!existsSync(BINARY)) throw new Error(`${BINARY} is missing: run npm run build (npm test builds it)`);
    this.name = name;
    this.env = env;
    this.args = args;
    this.wrap = wrap;
    this.proc = this.#spawn();
  }

  #spawn(): Proc {
    return new Proc(this.name, [...this.wrap, BINARY, ...this.args], {
      ...(this.proc?.scope ? { scope: this.proc.scope } : {}),
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", CONSUL_LEADER_LOG_FORMAT: "json", CONSUL_LEADER_LOG_LEVEL: "debug", ...this.env },
    });
  }

  /** Starts the same sidecar again (a restart after a crash). */
  restart(): void {
    this.proc = this.#spawn();
  }

  get pid(): number {
    return this.proc.pid;
  }

  logs(): LogLine[] {
    return this.proc.lines.flatMap((l) => {
      try {
        const o = JSON.parse(l) as LogLine;
        return typeof o.msg === "string" ? [o] : [];
      } catch {
        return [];
      }
    });
  }

  async waitForLog(pred: (l: LogLine) => boolean, timeoutMs = 10_000, what = "matching log line"): Promise<LogLine> {
    const line = await this.proc.waitForLine((raw) => {
      try {
        return pred(JSON.parse(raw) as LogLine);
      } catch {
        return false;
      }
    }, timeoutMs, what);
    return JSON.parse(line) as LogLine;
  }

  /** The last role the sidecar logged, from its "role changed" lines. */
  role(): string {
    const changes = this.logs().filter((l) => l.msg === "role changed");
    return (changes.at(-1)?.["to"] as string | undefined) ?? "starting";
  }

  stop(sig: NodeJS.Signals = "SIGTERM", graceMs = 5000): Promise<number> {
    return this.proc.stop(sig, graceMs);
  }

  kill9(): Promise<void> {
    return this.proc.kill9();
  }

  signal(sig: NodeJS.Signals): void {
    this.proc.signal(sig);
  }
}

/**
 * A standalone-mode sidecar (its own service and TTL checks, no Redis) for
 * service `name`, instance `i`, with the short check TTL the tests use so a
 * crash costs seconds; `extra` overrides any of it.
 */
export function standaloneSidecar(consulAddr: string, name: string, i: number, extra: Record<string, string> = {}): Sidecar {
  return new Sidecar(`sidecar-${name}-${i}`, {
    CONSUL_HTTP_ADDR: consulAddr,
    CONSUL_LEADER_SERVICE_NAME: name,
    CONSUL_LEADER_SERVICE_ID: `${name}-${i}`,
    CONSUL_LEADER_SERVICE_PORT: String(7000 + i),
    CONSUL_LEADER_REPLICA_LABEL: "replica",
    CONSUL_LEADER_CHECK_TTL: "3s",
    CONSUL_LEADER_FENCE_MARGIN: "700ms",
    ...extra,
  });
}

/** Waits until exactly one running sidecar leads and every other running one follows; returns the leader. */
export async function oneLeader(sidecars: Sidecar[], timeoutMs = 10_000): Promise<Sidecar> {
  return await waitFor(() => {
    const running = sidecars.filter((s) => s.proc.running);
    const leaders = running.filter((s) => s.role() === "leader");
    const followers = running.filter((s) => s.role() === "follower");
    return leaders.length === 1 && followers.length === running.length - 1 ? leaders[0] : undefined;
  }, { timeoutMs, what: "exactly one sidecar leading, the others following" });
}
