/**
 * One connection to one Redis with a hard timeout on every command, on the
 * injected clock; it reconnects lazily on the next command after a failure.
 *
 * Guarantees: every `cmd` settles within its timeout (plus the connect
 * timeout when it had to connect), rejecting with a RedisError; a timeout or
 * a dropped connection closes the connection, so the next command starts
 * fresh instead of queueing behind an answer that may never come. Does not
 * retry anything.
 */

import type { Clock } from "../clock.ts";
import { RedisError } from "../errors.ts";
import { formatHostPort, type HostPort } from "../host-port.ts";
import type { Logger } from "../log.ts";
import type { RedisAuth, RedisConnection, RedisTransport } from "./transport.ts";

export interface RedisLinkDeps {
  transport: RedisTransport;
  clock: Clock;
  log: Logger;
}

export class RedisLink {
  readonly addr: HostPort;
  readonly auth: RedisAuth;
  readonly #timeoutMs: number;
  readonly #d: RedisLinkDeps;
  #conn: RedisConnection | undefined;
  #connecting: Promise<RedisConnection> | undefined;
  #closeListeners: (() => void)[] = [];

  constructor(addr: HostPort, auth: RedisAuth, timeoutMs: number, deps: RedisLinkDeps) {
    this.addr = addr;
    this.auth = auth;
    this.#timeoutMs = timeoutMs;
    this.#d = deps;
  }

  get transport(): RedisTransport {
    return this.#d.transport;
  }

  /** Sends one command; rejects with a RedisError after the timeout and drops the connection. */
  async cmd(name: string, args: string[] = [], timeoutMs = this.#timeoutMs): Promise<unknown> {
    const conn = await this.#connect(timeoutMs);
    try {
      return await this.#withTimeout(conn.send(name, args), timeoutMs, () => `${name} to ${formatHostPort(this.addr)}: no answer within ${timeoutMs}ms`);
    } catch (err) {
      const e = err instanceof RedisError ? err : new RedisError("REDIS_COMMAND", `${name} to ${formatHostPort(this.addr)}: ${String(err)}`, { cause: err });
      if (e.code === "REDIS_TIMEOUT" || e.code === "REDIS_UNREACHABLE" || e.code === "REDIS_DROPPED") this.close();
      else this.#d.log.debug("redis command failed", { command: name, addr: formatHostPort(this.addr), code: e.code, message: e.message });
      throw e;
    }
  }

  /** Closes the connection (commands in flight reject); the next command reconnects. */
  close(): void {
    const c = this.#conn;
    this.#conn = undefined;
    this.#connecting = undefined;
    c?.close();
  }

  get connected(): boolean {
    return !!this.#conn?.connected;
  }

  /** `fn` runs whenever an open connection is closed by the far side (Redis died or dropped us). */
  onDrop(fn: () => void): void {
    this.#closeListeners.push(fn);
  }

  #connect(timeoutMs: number): Promise<RedisConnection> {
    if (this.#conn?.connected) return Promise.resolve(this.#conn);
    if (this.#connecting) return this.#connecting;
    this.close();
    const opening = this.#d.transport.connect(this.addr, this.auth, timeoutMs);
    const attempt = this.#withTimeout(opening, timeoutMs, () => `cannot connect to Redis at ${formatHostPort(this.addr)} within ${timeoutMs}ms`).then(
      (conn) => {
        if (this.#connecting !== attempt) {
          conn.close(); // closed or superseded while connecting
          throw new RedisError("REDIS_DROPPED", `connection to ${formatHostPort(this.addr)} closed while connecting`);
        }
        this.#connecting = undefined;
        this.#conn = conn;
        conn.onClose(() => {
          if (this.#conn !== conn) return;
          this.#conn = undefined;
          for (const fn of this.#closeListeners) fn();
        });
        return conn;
      },
      (err: unknown) => {
        if (this.#connecting === attempt) this.#connecting = undefined;
        // A connect that answers after our timeout must not leak.
        void opening.then((c) => c.close(), () => {});
        throw err;
      },
    );
    this.#connecting = attempt;
    return attempt;
  }

  #withTimeout<T>(p: Promise<T>, ms: number, what: () => string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = this.#d.clock.timer(ms, () => reject(new RedisError("REDIS_TIMEOUT", what())));
      p.then((v) => {
        timer.cancel();
        resolve(v);
      }, (e: unknown) => {
        timer.cancel();
        reject(e);
      });
    });
  }
}
