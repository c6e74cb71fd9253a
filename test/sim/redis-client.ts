/**
 * The client side of the simulated Redis (redis.ts): the RedisTransport the
 * production code gets, its connections, and simulated writer processes.
 * Everything here behaves towards its callers as bun-transport.ts does with
 * Bun's RedisClient: the same replies (RESP3 values), the same RedisError
 * codes and messages, the same connect diagnosis and pipeline outcomes.
 */

import { RedisError, type RedisErrorCode } from "../../src/errors.ts";
import { formatHostPort, type HostPort, parseHostPort } from "../../src/host-port.ts";
import type { PipelineOutcome, RedisAuth, RedisConnection, RedisTransport } from "../../src/redis/transport.ts";
import type { Dial, Down, Reply, SimRedis } from "./redis.ts";
import type { Scheduler } from "./scheduler.ts";

/** Bun's RESP3 value for a reply (errors are thrown by the caller). */
function toBun(r: Reply): unknown {
  if ("simple" in r) return r.simple;
  if ("int" in r) return r.int;
  if ("bulk" in r) return r.bulk;
  if ("map" in r) return Object.fromEntries(r.map);
  return undefined;
}

/** The lines bun-transport's ReplyLines splits a RESP2 reply into. */
function toLines(r: Reply): string[] {
  if ("simple" in r) return [`+${r.simple}`];
  if ("err" in r) return [`-${r.err}`];
  if ("int" in r) return [`:${r.int}`];
  if ("bulk" in r) return [r.bulk ?? "$-1"];
  return [`*${r.map.length * 2}`, ...r.map.flat()];
}

/** bun-transport's convert(): an error reply as the RedisError callers branch on. */
function replyError(where: string, name: string, msg: string): RedisError {
  let code: RedisErrorCode = "REDIS_COMMAND";
  if (/^LOADING/.test(msg)) code = "REDIS_LOADING";
  else if (/^(WRONGPASS|NOAUTH|NOPERM)/.test(msg)) code = "REDIS_AUTH";
  return new RedisError(code, `${name} to ${where}: ${msg}`);
}

/** One client connection, as BunConnection presents Bun's RedisClient. */
export class SimConnection implements RedisConnection {
  readonly #where: string;
  readonly #dial: Dial;
  #state: "connecting" | "open" | "closed" = "connecting";
  #pending: { name: string; resolve: (v: unknown) => void; reject: (e: unknown) => void }[] = [];
  #onClose: (() => void)[] = [];
  #tcp: { resolve: () => void; reject: (e: Error) => void } | undefined;
  readonly #tcpUp: Promise<void>;

  constructor(sim: SimRedis, owner: string, addr: HostPort, tls: boolean) {
    this.#where = formatHostPort(addr);
    this.#tcpUp = new Promise<void>((resolve, reject) => (this.#tcp = { resolve, reject }));
    this.#tcpUp.catch(() => {});
    this.#dial = sim.dial(owner, this.#where, { pipeline: false, tls }, (m) => this.#onDown(m));
  }

  /** Bun's connect(): TCP, then HELLO 3 [AUTH user pass]; fails on refusal, an error reply or its connectionTimeout. */
  async open(auth: RedisAuth, timeoutMs: number, sched: Scheduler, owner: string): Promise<void> {
    let timer: { cancel(): void } | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = sched.at(timeoutMs, owner, () => reject(new Error("Connection timeout")))));
    try {
      await Promise.race([this.#tcpUp, timeout]);
      const creds = auth.password !== undefined ? ["AUTH", auth.username ?? "default", auth.password] : [];
      await Promise.race([this.send("HELLO", ["3", ...creds]), timeout]);
      if (this.#state === "connecting") this.#state = "open";
    } finally {
      timer?.cancel();
    }
  }

  /** A closed connection rejects with REDIS_DROPPED: it had been accepted (BunConnection.send). */
  send(name: string, args: string[]): Promise<unknown> {
    if (this.#state === "closed") return Promise.reject(new RedisError("REDIS_DROPPED", `${name} to ${this.#where}: Connection closed`));
    return new Promise((resolve, reject) => {
      this.#pending.push({ name, resolve, reject });
      this.#dial.write([name, ...args]);
    });
  }

  close(): void {
    if (this.#teardown(false)) this.#dial.fin();
  }

  get connected(): boolean {
    return this.#state === "open";
  }

  onClose(fn: () => void): void {
    this.#onClose.push(fn);
  }

  #onDown(m: Down): void {
    if (this.#state === "closed") return;
    if (m.t === "established") return this.#tcp?.resolve();
    if (m.t === "reply") {
      const p = this.#pending.shift();
      if (!p) return;
      if ("err" in m.r) p.reject(replyError(this.#where, p.name, m.r.err));
      else p.resolve(toBun(m.r));
      return;
    }
    this.#teardown(true); // refused, or closed by the server
  }

  /** Returns false when already closed. */
  #teardown(far: boolean): boolean {
    if (this.#state === "closed") return false;
    const wasOpen = this.#state === "open";
    this.#state = "closed";
    this.#tcp?.reject(new Error("Connection closed"));
    for (const p of this.#pending.splice(0)) p.reject(new RedisError("REDIS_DROPPED", `${p.name} to ${this.#where}: Connection closed`));
    if (far && wasOpen) for (const fn of this.#onClose) fn();
    return true;
  }
}

/** The RedisTransport of one simulated process. */
export class SimTransport implements RedisTransport {
  readonly #sim: SimRedis;
  readonly #owner: string;

  constructor(sim: SimRedis, owner: string) {
    this.#sim = sim;
    this.#owner = owner;
  }

  async connect(addr: HostPort, auth: RedisAuth, timeoutMs: number): Promise<RedisConnection> {
    const sched = this.#sim.sched;
    const started = sched.now;
    const conn = new SimConnection(this.#sim, this.#owner, addr, auth.tls);
    try {
      await conn.open(auth, timeoutMs, sched, this.#owner);
    } catch (err) {
      conn.close();
      const answered = sched.now - started < timeoutMs * 0.8;
      throw answered ? await this.#diagnose(addr, auth, timeoutMs, err) : new RedisError("REDIS_TIMEOUT", `cannot connect to Redis at ${formatHostPort(addr)} within ${timeoutMs}ms`, { cause: err });
    }
    return conn;
  }

  /** bun-transport's diagnose(): Bun says only "Connection closed", so ask with AUTH (or PING) on a raw connection. */
  async #diagnose(addr: HostPort, auth: RedisAuth, timeoutMs: number, err: unknown): Promise<RedisError> {
    const where = formatHostPort(addr);
    const args = auth.password !== undefined ? ["AUTH", ...(auth.username ? [auth.username] : []), auth.password] : ["PING"];
    const r = await Promise.race([
      this.#pipeline(addr, auth, [args], false),
      new Promise<undefined>((resolve) => this.#sim.sched.at(timeoutMs, this.#owner, () => resolve(undefined))),
    ]);
    const reply = r?.replies?.[0];
    if (reply === undefined) return new RedisError("REDIS_UNREACHABLE", `cannot connect to Redis at ${where}`, { cause: err });
    if (reply.startsWith("-LOADING")) return new RedisError("REDIS_LOADING", `Redis at ${where} is loading its dataset`, { cause: err });
    if (/^-(WRONGPASS|NOAUTH|NOPERM|ERR invalid password|ERR AUTH)/.test(reply)) {
      return new RedisError(
        "REDIS_AUTH",
        `Redis at ${where} refused the credentials (${reply.slice(1).split(" ")[0]}); check CONSUL_LEADER_REDIS_PASSWORD, CONSUL_LEADER_REDIS_PASSWORD_FILE and CONSUL_LEADER_REDIS_USERNAME`,
        { cause: err },
      );
    }
    // It answered, then closed: alive (a CLIENT KILL, a full client table), not refused.
    return new RedisError("REDIS_DROPPED", `Redis at ${where} closed the connection while it was opened (it answered ${reply.slice(0, 60)})`, { cause: err });
  }

  /** See RedisTransport.pipeline: a raw RESP2 connection, every command written once TCP is up. */
  pipeline(addr: HostPort, auth: RedisAuth, commands: string[][], onConnected?: () => void): Promise<PipelineOutcome> {
    return this.#pipeline(addr, auth, commands, true, onConnected);
  }

  #pipeline(addr: HostPort, auth: RedisAuth, commands: string[][], withAuth: boolean, onConnected?: () => void): Promise<PipelineOutcome> {
    const all = withAuth && auth.password !== undefined ? [["AUTH", ...(auth.username ? [auth.username] : []), auth.password], ...commands] : commands;
    const skip = all.length - commands.length;
    return new Promise((resolve) => {
      const lines: string[] = [];
      let settled = false;
      const done = (v: PipelineOutcome) => {
        if (!settled) resolve(v);
        settled = true;
      };
      const dial: Dial = this.#sim.dial(this.#owner, formatHostPort(addr), { pipeline: true, tls: auth.tls }, (m) => {
        if (settled) return;
        if (m.t === "established") {
          for (const c of all) dial.write(c);
          onConnected?.();
        } else if (m.t === "reply") {
          lines.push(...toLines(m.r));
          if (lines.length < all.length) return;
          const mine = lines.slice(skip);
          const refused = lines.find((l) => l.startsWith("-"));
          done(refused === undefined ? { outcome: "done", replies: mine } : { outcome: "refused", detail: refused.slice(1), replies: mine });
          dial.fin();
        } else if (m.t === "refused") {
          done({ outcome: "unreachable" });
        } else {
          done({ outcome: "unreachable", replies: lines.slice(skip) });
        }
      });
    });
  }
}

// ---------------------------------------------------------------- writers

export interface WriterOptions {
  /** The writer's process name; its events, sleeps and replies are this owner's. */
  owner: string;
  /** Where to write now (e.g. what discovery says); undefined: wait. */
  target: () => string | undefined;
  everyMs?: number;
  timeoutMs?: number;
  auth?: RedisAuth;
}

export interface WriteRecord {
  /** Global write number; the key is `w:<n>`. */
  n: number;
  writer: string;
  key: string;
  target: string;
  sentAt: number;
  outcome: "pending" | "acked" | "refused" | "unknown";
  /** When the outcome was known. */
  at?: number;
  error?: string;
}

/**
 * A client that keeps writing numbered keys (SET w:<n> <n>) to whatever
 * `target()` says, one at a time on one connection, and records each write as
 * acked (+OK), refused (an error reply) or unknown (timed out, or the
 * connection closed first: it may or may not have run).
 */
export class SimWriter {
  readonly records: WriteRecord[] = [];
  readonly owner: string;
  #stopped = false;

  constructor(sim: SimRedis, opts: WriterOptions) {
    this.owner = opts.owner;
    void this.#run(sim, opts);
  }

  stop(): void {
    this.#stopped = true;
  }

  async #run(sim: SimRedis, o: WriterOptions): Promise<void> {
    const clock = sim.sched.clock(o.owner);
    const transport = sim.transportFor(o.owner);
    const everyMs = o.everyMs ?? 10;
    const timeoutMs = o.timeoutMs ?? 200;
    const auth = o.auth ?? { tls: false };
    const within = <T>(p: Promise<T>): Promise<T> =>
      new Promise<T>((resolve, reject) => {
        const t = clock.timer(timeoutMs, () => reject(new RedisError("REDIS_TIMEOUT", "no answer")));
        p.then((v) => (t.cancel(), resolve(v)), (e: unknown) => (t.cancel(), reject(e)));
      });
    let conn: RedisConnection | undefined;
    let connectedTo: string | undefined;
    while (!this.#stopped) {
      const target = o.target();
      const hp = target ? parseHostPort(target) : undefined;
      if (conn && (connectedTo !== target || !conn.connected)) conn = void conn.close();
      if (target && hp && !conn) {
        const opening = transport.connect(hp, auth, timeoutMs);
        try {
          [conn, connectedTo] = [await within(opening), target];
        } catch {
          void opening.then((c) => c.close(), () => {});
        }
      }
      if (target && conn) {
        const n = sim.nextWriteNumber();
        const rec: WriteRecord = { n, writer: o.owner, key: `w:${n}`, target, sentAt: clock.monotonic(), outcome: "pending" };
        this.records.push(rec);
        try {
          await within(conn.send("SET", [rec.key, String(n)]));
          [rec.outcome, rec.at] = ["acked", clock.monotonic()];
          sim.noteAck(rec.key, { at: rec.at, writer: o.owner, server: target });
        } catch (e) {
          const code = e instanceof RedisError ? e.code : "REDIS_COMMAND";
          const refused = code === "REDIS_COMMAND" || code === "REDIS_LOADING" || code === "REDIS_AUTH";
          [rec.outcome, rec.at, rec.error] = [refused ? "refused" : "unknown", clock.monotonic(), e instanceof Error ? e.message : String(e)];
          if (!refused) conn = void conn.close();
        }
      }
      await clock.sleep(everyMs);
    }
    conn?.close();
  }
}
