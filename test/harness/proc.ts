/**
 * Test processes: spawn with captured output, signal, wait, and always clean
 * up. Output is kept in memory and printed only when a test fails (see
 * `scenario`), in the style of Consul's sdk/testutil server harness.
 */

import { afterAll, beforeAll, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { marked, record as recordInLedger } from "./ledger.ts";
import { startTime } from "./leftovers.ts";

export const ROOT = join(import.meta.dir, "..", "..");

export class Proc {
  readonly name: string;
  readonly child: ReturnType<typeof Bun.spawn>;
  /** stdout and stderr interleaved, one entry per line. */
  readonly lines: string[] = [];
  /** stdout alone. */
  readonly stdoutLines: string[] = [];
  readonly exited: Promise<number>;
  #listeners: ((line: string) => void)[] = [];
  exitCode: number | null = null;

  /**
   * `scope`: who stops it (default: the current test's). A process restarted
   * during a test belongs to whoever owned the original, not to that test.
   */
  constructor(name: string, cmd: string[], opts: { env?: Record<string, string | undefined>; cwd?: string; stdin?: "pipe" | "ignore"; scope?: Scope } = {}) {
    this.name = name;
    this.child = Bun.spawn(cmd, {
      // Marked with the run's id, which its children inherit: the end of npm test checks that none is left.
      env: marked(opts.env ?? process.env) as Record<string, string>,
      cwd: opts.cwd ?? ROOT,
      stdout: "pipe",
      stderr: "pipe",
      stdin: opts.stdin ?? "ignore",
    });
    const start = startTime(this.child.pid);
    if (start) recordInLedger("pid", `${this.child.pid} ${start}`);
    void this.#pump(this.child.stdout as ReadableStream<Uint8Array>, this.stdoutLines);
    void this.#pump(this.child.stderr as ReadableStream<Uint8Array>);
    this.exited = this.child.exited.then((code) => {
      this.exitCode = code;
      return code;
    });
    (opts.scope ?? Scope.current)?.track(this);
    this.scope = opts.scope ?? Scope.current;
  }

  readonly scope: Scope | undefined;

  get pid(): number {
    return this.child.pid;
  }

  get running(): boolean {
    return this.exitCode === null;
  }

  onLine(fn: (line: string) => void): void {
    this.#listeners.push(fn);
  }

  async #pump(stream: ReadableStream<Uint8Array>, also?: string[]): Promise<void> {
    const decoder = new TextDecoder();
    let buf = "";
    for await (const chunk of stream) {
      buf += decoder.decode(chunk, { stream: true });
      let nl: number;
      while ((nl = buf.indexOf("\n")) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        this.lines.push(line);
        also?.push(line);
        if (this.lines.length > 20_000) this.lines.splice(0, 5000);
        for (const l of this.#listeners) l(line);
      }
    }
    if (buf) this.lines.push(buf);
  }

  /** Resolves with the first line (current or future) matching `pred`. */
  waitForLine(pred: (line: string) => boolean, timeoutMs: number, what = "a matching line"): Promise<string> {
    const hit = this.lines.find(pred);
    if (hit !== undefined) return Promise.resolve(hit);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${this.name}: no ${what} within ${timeoutMs}ms`)), timeoutMs);
      this.onLine((line) => {
        if (pred(line)) {
          clearTimeout(t);
          resolve(line);
        }
      });
    });
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) {
      try {
        process.kill(this.pid, sig);
      } catch {
        // already gone
      }
    }
  }

  /** SIGTERM (or `sig`), then SIGKILL after `graceMs`. Resolves with the exit code. */
  async stop(sig: NodeJS.Signals = "SIGTERM", graceMs = 5000): Promise<number> {
    if (!this.running) return this.exitCode!;
    this.signal("SIGCONT");
    this.signal(sig);
    const timer = setTimeout(() => this.signal("SIGKILL"), graceMs);
    const code = await this.exited;
    clearTimeout(timer);
    return code;
  }

  async kill9(): Promise<void> {
    this.signal("SIGKILL");
    await this.exited;
  }

  tail(n = 60): string {
    return this.lines.slice(-n).join("\n");
  }
}

/** What a test started: stopped at the end, and dumped when the test failed. */
export class Scope {
  static current: Scope | undefined;
  readonly procs: Proc[] = [];
  readonly dirs: string[] = [];
  readonly cleanups: (() => Promise<void> | void)[] = [];
  constructor(readonly name: string) {}

  track(p: Proc): void {
    this.procs.push(p);
  }

  tmpdir(prefix = "cl-"): string {
    const d = mkdtempSync(join(tmpdir(), prefix));
    this.dirs.push(d);
    recordInLedger("dir", d);
    return d;
  }

  defer(fn: () => Promise<void> | void): void {
    this.cleanups.push(fn);
  }

  dump(): void {
    for (const p of this.procs) {
      process.stderr.write(`\n----- ${p.name} (pid ${p.pid}, exit ${p.exitCode}) last lines -----\n${p.tail(80)}\n`);
    }
  }

  async close(): Promise<void> {
    for (const fn of this.cleanups.reverse()) await Promise.resolve(fn()).catch(() => {});
    await Promise.all(this.procs.map((p) => p.stop("SIGTERM", 3000).catch(() => 0)));
    for (const d of this.dirs) rmSync(d, { recursive: true, force: true });
  }
}

/**
 * A test whose processes are tracked: output printed only on failure, every
 * process stopped and every temp dir removed afterwards.
 */
export function scenario(name: string, fn: (scope: Scope) => Promise<void>, timeoutMs = 60_000): void {
  test(name, async () => {
    const scope = new Scope(name);
    const outer = Scope.current;
    Scope.current = scope;
    try {
      await fn(scope);
    } catch (err) {
      scope.dump();
      outer?.dump();
      throw err;
    } finally {
      Scope.current = outer;
      await scope.close();
    }
  }, timeoutMs);
}

/**
 * The file-level lifecycle of a test file: `setup` runs once before its
 * first test under a Scope named `name` that owns whatever setup starts (so
 * a failing scenario also prints those processes' output), and that Scope is
 * closed after the last test.
 */
export function fileScope(name: string, setup: (scope: Scope) => Promise<void>, timeoutMs = 60_000): Scope {
  const file = new Scope(name);
  beforeAll(async () => {
    Scope.current = file;
    await setup(file);
  }, timeoutMs);
  afterAll(async () => {
    Scope.current = undefined;
    await file.close();
  });
  return file;
}

/** Polls `fn` until it returns a truthy value; throws with `what` after the timeout. */
export async function waitFor<T>(fn: () => T | Promise<T>, opts: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<NonNullable<T>> {
  const deadline = performance.now() + (opts.timeoutMs ?? 10_000);
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    if (performance.now() > deadline) {
      throw new Error(`timed out after ${opts.timeoutMs ?? 10_000}ms waiting for ${opts.what ?? "a condition"}${last ? ` (last error: ${String(last)})` : ""}`);
    }
    await Bun.sleep(opts.intervalMs ?? 50);
  }
}

/** A free TCP port on loopback (the OS picks it; released before returning). */
/** Every port freePort has handed out in this process. */
const handedOut = new Set<number>();

/**
 * A loopback TCP port nothing listens on, never one this process handed out
 * before: the kernel readily gives a just-released port again, and a Consul
 * agent given the same port for two listeners refuses to start.
 */
export function freePort(): number {
  for (;;) {
    const s = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = s.port;
    s.stop(true);
    if (handedOut.has(port)) continue;
    handedOut.add(port);
    recordInLedger("port", port);
    return port;
  }
}

export function readVersions(): Record<string, string> {
  const text = require("node:fs").readFileSync(join(ROOT, "scripts", "versions.env"), "utf8") as string;
  return Object.fromEntries(text.split("\n").filter((l) => /^[A-Z_]+=/.test(l)).map((l) => l.split("=") as [string, string]));
}
