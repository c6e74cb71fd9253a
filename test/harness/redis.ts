/**
 * Real redis-server processes for tests (Debian's package), on free loopback
 * ports, each with its own directory. Persistence is off unless asked for.
 */

import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, Proc, Scope, waitFor } from "./proc.ts";

export interface RedisOptions {
  port?: number;
  /** Address to bind and reach it at (default 127.0.0.1; a netns host's IP in the chaos suite). */
  host?: string;
  /** Command prefix, e.g. ["ip", "netns", "exec", ns]. */
  wrap?: string[];
  password?: string;
  /** Extra redis.conf lines. */
  conf?: string[];
  /** Bind `host` only, not 127.0.0.1 too (several servers on one port, each on its own loopback address). */
  bindOnly?: boolean;
  name?: string;
}

export class RedisServer {
  proc: Proc;
  readonly port: number;
  readonly dir: string;
  readonly opts: RedisOptions;

  private constructor(opts: RedisOptions, dir: string, port: number) {
    this.opts = opts;
    this.dir = dir;
    this.port = port;
    this.proc = this.#spawn();
  }

  static async start(opts: RedisOptions = {}): Promise<RedisServer> {
    const bin = Bun.which("redis-server");
    if (!bin) throw new Error("redis-server not found: install Debian's redis-server (npm test does it when run as root)");
    const scope = Scope.current ?? new Scope("redis");
    const r = new RedisServer(opts, scope.tmpdir("redis-"), opts.port ?? freePort());
    await r.waitReady();
    return r;
  }

  get host(): string {
    return this.opts.host ?? "127.0.0.1";
  }

  get addr(): string {
    return `${this.host}:${this.port}`;
  }

  #spawn(): Proc {
    const conf = [
      `port ${this.port}`,
      `bind ${this.host === "127.0.0.1" || this.opts.bindOnly ? this.host : `${this.host} 127.0.0.1`}`,
      `dir ${this.dir}`,
      'save ""',
      "appendonly no",
      "protected-mode no",
      "repl-diskless-sync no",
      ...(this.opts.password ? [`requirepass ${this.opts.password}`, `masterauth ${this.opts.password}`] : []),
      ...(this.opts.conf ?? []),
    ];
    writeFileSync(join(this.dir, "redis.conf"), conf.join("\n") + "\n");
    return new Proc(this.opts.name ?? `redis:${this.port}`, [...(this.opts.wrap ?? []), "redis-server", join(this.dir, "redis.conf")], this.proc?.scope ? { scope: this.proc.scope } : {});
  }

  client(): Bun.RedisClient {
    const cred = this.opts.password ? `default:${encodeURIComponent(this.opts.password)}@` : "";
    return new Bun.RedisClient(`redis://${cred}${this.addr}`, { autoReconnect: false, connectionTimeout: 1000, enableOfflineQueue: false });
  }

  /** Runs one command on a fresh connection. */
  async cmd(name: string, args: string[] = []): Promise<unknown> {
    const c = this.client();
    try {
      await c.connect();
      return await c.send(name, args);
    } finally {
      c.close();
    }
  }

  async info(): Promise<Record<string, string>> {
    const text = String(await this.cmd("INFO", ["replication", "persistence"]));
    return Object.fromEntries(text.split(/\r?\n/).filter((l) => l.includes(":") && !l.startsWith("#")).map((l) => {
      const i = l.indexOf(":");
      return [l.slice(0, i), l.slice(i + 1)];
    }));
  }

  async role(): Promise<string> {
    return (await this.info())["role"] ?? "unknown";
  }

  async waitReady(): Promise<void> {
    await waitFor(async () => {
      if (!this.proc.running) throw new Error(`redis exited ${this.proc.exitCode}: ${this.proc.tail(10)}`);
      const info = await this.info();
      return info["loading"] === "0";
    }, { timeoutMs: 15_000, what: `redis on ${this.port} to answer` });
  }

  async kill9(): Promise<void> {
    await this.proc.kill9();
  }

  /** True while frozen with SIGSTOP; harness reads skip it instead of timing out. */
  paused = false;

  pause(): void {
    this.proc.signal("SIGSTOP");
    this.paused = true;
  }

  resume(): void {
    this.proc.signal("SIGCONT");
    this.paused = false;
  }

  /**
   * Starts the server again on the same port and directory. Even with
   * persistence off a replica keeps the dump.rdb of its last full sync and
   * loads it; `empty` deletes it first, for a Redis that comes back with nothing.
   */
  async restart(opts: { empty?: boolean } = {}): Promise<void> {
    if (this.proc.running) await this.proc.stop("SIGKILL");
    if (opts.empty) rmSync(join(this.dir, "dump.rdb"), { force: true });
    this.proc = this.#spawn();
    await this.waitReady();
  }

  async stop(): Promise<void> {
    await this.proc.stop("SIGKILL");
  }
}
