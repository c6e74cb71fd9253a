/**
 * Simulated Redis servers, and the RedisTransport that reaches them
 * (redis-client.ts), on the scheduler's time. The production RedisLink /
 * RedisNode / RedisRole run unchanged on top: replies, error texts and
 * RedisError codes are what bun-transport.ts produces against Redis 7.0.15.
 *
 * Modelled (faithful where safety lives):
 * - Per server: alive/dead, run_id (new per start), role, replid/replid2,
 *   master_repl_offset/second_repl_offset, a backlog, the data as a log of
 *   writes (a replica holds a prefix of its master's history), loading after a
 *   restart with data, runtime CONFIG (reset by a restart), requirepass and ACL
 *   users with denied commands (NOPERM), maxclients, busy stalls.
 * - Connections: refused at once when nothing listens (dead server, no
 *   server: REDIS_UNREACHABLE); accepted by the kernel even when the server
 *   is frozen, so the handshake (HELLO) waits and times out on the caller's
 *   clock; wrong or missing password -> REDIS_AUTH (Bun fails the connect,
 *   the transport re-asks with AUTH/PING, exactly as bun-transport's
 *   diagnose); an accepted connection that closes -> REDIS_DROPPED.
 * - One thread per server. Each turn of its event loop serves every accepted
 *   client with buffered input, in epoll's order (when each became
 *   readable), then accepts the connections waiting in the kernel backlog,
 *   whose input is served on the next turn, in accept order. So, for the
 *   queued fence (checked on 7.0.15 with SIGSTOP/SIGCONT and the fence's own
 *   CONFIG SET / CLIENT KILL / INFO): on resume, input on connections accepted
 *   before the freeze runs first, INCLUDING commands sent during the freeze
 *   after the fence's connection was made (not drawn: Redis has no choice
 *   here); then the connections made during the freeze in the order they
 *   connected, so the fence runs before, and its CLIENT KILL closes, any
 *   client that connected after it.
 * - Loading (7.0.15, checked): HELLO, AUTH, INFO, CONFIG and CLIENT answer;
 *   PING, GET, SET and REPLICAOF get -LOADING. So connect succeeds and a
 *   snapshot reads loading:1; commands are REDIS_LOADING.
 * - Replies are what Bun hands back over RESP3: CONFIG GET is an object
 *   ({name: value}), CLIENT KILL a number, INFO a string.
 * - A client that closes or is killed: its commands the server has not run are
 *   dropped (opts.closedClientCommands "drop", the default; real Redis runs
 *   what reached its socket before the FIN: "run"). A pipeline connection's
 *   commands always run once they reached the server: bytes in the kernel
 *   cannot be taken back (the premise of RedisNode.queueFence).
 * - Replication: PSYNC with 7.0's rules (replid, or replid2 up to
 *   second_repl_offset, and the offset inside the backlog), else a full sync
 *   (snapshot at PSYNC time, link down and master_sync_in_progress:1 for a
 *   drawn time, then data and offset replaced). Chained replicas, REPLICAOF NO
 *   ONE shifting the replid, restarts restoring replid/offset from the RDB
 *   (master: new replid, replid2 = old, as 7.0.15 does), acks every second
 *   counting for min-replicas-to-write, repl-timeout (60 s) for a silent
 *   master or replica, NOMASTERLINK from a replica whose own link is down
 *   (a parked replica serves no sync), masterauth/masteruser.
 *
 * Deliberately not modelled: network partitions and packet loss (every
 * message arrives, in order per connection); TLS beyond "the handshake waits
 * for the server"; master PINGs advancing the offset (every 10 s in Redis);
 * the SELECT a replication stream starts with; replica-side loading of a
 * synced RDB; client output buffer limits; WAIT, MULTI, scripts, pub/sub;
 * persistence beyond "a restart with data keeps every write" (appendfsync
 * always); the 1-second lag of Redis's good-replica count (computed on demand
 * here); a server killed through sched.kill (not crash()) is noticed only when
 * next reached, as the scheduler has no kill hook.
 */

import { formatHostPort, parseHostPort } from "../../src/host-port.ts";
import { encodeCommand, type RedisTransport } from "../../src/redis/transport.ts";
import { SimTransport, SimWriter, type WriterOptions } from "./redis-client.ts";
import type { Scheduler } from "./scheduler.ts";

export { SimWriter, type WriteRecord, type WriterOptions } from "./redis-client.ts";

/** Owner of bytes in flight between hosts (never frozen): the network and the receiving kernel. */
export const NET = "net";
/** min-replicas-to-write at or above this is the sidecar's fence (FENCE_MIN_REPLICAS). */
export const FENCED_AT = 2147483647;
const ZERO_ID = "0".repeat(40);
const PARK = "127.0.0.1:1";
const REDIS_VERSION = "7.0.15";

type Range = readonly [number, number];

export interface SimRedisOptions {
  /** One-way network latency between processes, ms. */
  netMs?: Range;
  /** Master -> replica stream lag, ms; with probability replLagSpikeP it is drawn from replLagSpikeMs. */
  replLagMs?: Range;
  replLagSpikeMs?: Range;
  replLagSpikeP?: number;
  /** REPLICAOF to a linked replica: the handshake round trips (PING, AUTH, REPLCONF, PSYNC). */
  linkMs?: Range;
  /** A full sync: snapshot, transfer and load. */
  fullSyncMs?: Range;
  /** Loading the dataset after a restart with data. */
  loadMs?: Range;
  /** repl-timeout. */
  replTimeoutMs?: number;
  /** What happens to commands of a closed or killed client that the server has not run yet. */
  closedClientCommands?: "drop" | "run";
}

const DEFAULTS: Required<SimRedisOptions> = {
  netMs: [0.1, 1],
  replLagMs: [0.5, 5],
  replLagSpikeMs: [10, 60],
  replLagSpikeP: 0.05,
  linkMs: [2, 20],
  fullSyncMs: [50, 500],
  loadMs: [500, 3000],
  replTimeoutMs: 60_000,
  closedClientCommands: "drop",
};

/** One SET a server took from a client. The same object is shared by every log that holds it. */
export interface LoggedWrite {
  readonly key: string;
  readonly value: string;
  /** master_repl_offset right after it, in the history it belongs to. */
  readonly offset: number;
  /** The server that took it from a client, and when. */
  readonly origin: string;
  readonly at: number;
  /** Set when a simulated writer got +OK for it. */
  acked?: { at: number; writer: string; server: string };
}

export interface UserSpec {
  /** Absent: nopass (any password is accepted). */
  password?: string;
  /** Denied commands, lower case: "config" (all subcommands), "config|set", "replicaof". */
  deny?: string[];
}

export interface ServerOptions {
  /** Boots as a replica of this address (the config file's `replicaof`). */
  replicaOf?: string;
  /** requirepass: the default user's password. */
  password?: string;
  users?: Record<string, UserSpec>;
  maxClients?: number;
  /** Other boot-time config (CONFIG names). */
  config?: Record<string, string>;
}

/** A read-only picture of one server, for the invariant checker. */
export interface ServerState {
  addr: string;
  owner: string;
  alive: boolean;
  frozen: boolean;
  role: "master" | "replica";
  masterAddr: string | null;
  linkUp: boolean;
  syncing: boolean;
  fenced: boolean;
  loading: boolean;
  /** Would take a write now: alive, master, not loading, min-replicas satisfied. */
  writable: boolean;
  offset: number;
  replid: string;
  replid2: string;
  runId: string;
  /** Number of writes it holds. */
  writes: number;
  /** The acknowledged writes it holds (computed on call). */
  acknowledged(): LoggedWrite[];
}

// ---------------------------------------------------------------- wire

/**
 * One direction of one TCP connection: messages arrive in the order sent,
 * each after its latency, as events of `owner`. Every event delivers the
 * current head, so the order holds even when a thaw releases the events in a
 * drawn order. `waitMs` > 0 postpones delivery (the receiver is busy).
 */
class Wire<T> {
  readonly #queue: T[] = [];
  #lastAt = -Infinity;
  constructor(
    readonly sched: Scheduler,
    readonly owner: string,
    readonly deliver: (m: T) => void,
    readonly waitMs: () => number = () => 0,
  ) {}

  send(m: T, latencyMs: number): void {
    this.#queue.push(m);
    const at = Math.max(this.sched.now + latencyMs, this.#lastAt);
    this.#lastAt = at;
    this.sched.at(at - this.sched.now, this.owner, () => this.#pop());
  }

  #pop(): void {
    const wait = this.waitMs();
    if (wait > 0) {
      this.sched.at(wait, this.owner, () => this.#pop());
      return;
    }
    const m = this.#queue.shift();
    if (m !== undefined) this.deliver(m);
  }
}

/** A reply, before it is rendered for Bun (RESP3 values) or for a raw pipeline (lines). */
export type Reply = { simple: string } | { err: string } | { int: number } | { bulk: string | null } | { map: [string, string][] };
type Up = { t: "open" } | { t: "cmd"; args: string[] } | { t: "fin" };
export type Down = { t: "established" } | { t: "refused" } | { t: "reply"; r: Reply } | { t: "closed" };
/** Master -> replica, on the replication connection. */
type Stream =
  | { t: "continue"; replid: string }
  | { t: "fullresync" }
  | { t: "rdb"; log: LoggedWrite[]; offset: number; replid: string }
  | { t: "write"; w: LoggedWrite }
  | { t: "ping" }
  | { t: "error"; msg: string }
  | { t: "close" };

const ok = (s = "OK"): Reply => ({ simple: s });
const err = (s: string): Reply => ({ err: s });

/** The server's end of one client connection. */
class ServerConn {
  state: "syn" | "backlog" | "open" | "closed" = "syn";
  inbox: string[][] = [];
  /** When it joined epoll's ready list: its oldest unread input arrived, or it was accepted with input. */
  readySince = 0;
  fin = false;
  authed = false;
  user = "default";
  constructor(readonly owner: string, readonly pipeline: boolean, readonly tls: boolean, readonly down: Wire<Down>) {}
}

export interface Dial {
  write(args: string[]): void;
  fin(): void;
}

/** Replica side: our connection to our master. */
interface UpLink {
  gen: number;
  master: string;
  state: "connecting" | "sync" | "up";
  lastIoAt: number;
}

/** Master side: one replica of ours. */
interface Downstream {
  gen: number;
  replica: SimServer;
  state: "send_bulk" | "online";
  ackOffset: number;
  ackAt: number;
  /** Writes taken while its snapshot was being sent. */
  held: LoggedWrite[];
  wire: Wire<Stream>;
}

interface User {
  pass: string | null;
  deny: Set<string>;
}

const COMMANDS: Record<string, { min: number; max: number; noAuth?: boolean; okLoading?: boolean; write?: boolean }> = {
  PING: { min: 0, max: 1 },
  AUTH: { min: 1, max: 2, noAuth: true, okLoading: true },
  HELLO: { min: 0, max: 7, noAuth: true, okLoading: true },
  INFO: { min: 0, max: Infinity, okLoading: true },
  CONFIG: { min: 1, max: Infinity, okLoading: true },
  CLIENT: { min: 1, max: Infinity, okLoading: true },
  ACL: { min: 1, max: Infinity, okLoading: true },
  REPLICAOF: { min: 2, max: 2 },
  SLAVEOF: { min: 2, max: 2 },
  SET: { min: 2, max: 2, write: true },
  GET: { min: 1, max: 1 },
};
const CONTAINERS = new Set(["config", "client", "acl"]);
const INT_CONFIG = new Set(["min-replicas-to-write", "min-replicas-max-lag", "maxclients", "repl-backlog-size", "repl-timeout"]);
const ALIASES: Record<string, string> = { "min-slaves-to-write": "min-replicas-to-write", "min-slaves-max-lag": "min-replicas-max-lag" };
const CONFIG_DEFAULTS: Record<string, string> = {
  "min-replicas-to-write": "0",
  "min-replicas-max-lag": "10",
  masterauth: "",
  masteruser: "",
  requirepass: "",
  maxclients: "10000",
  "repl-backlog-size": "1048576",
  "repl-timeout": "60",
};

// ---------------------------------------------------------------- server

/** One redis-server process at one address, across its restarts. */
export class SimServer {
  readonly addr: string;
  readonly owner: string;
  readonly #sim: SimRedis;
  readonly #boot: ServerOptions;
  #alive = true;
  #runId = "";
  #pid = 0;
  #startedAt = 0;
  #loadingUntil = 0;
  #busyUntil = 0;
  #config = new Map<string, string>();
  #users = new Map<string, User>();
  #clients = new Set<ServerConn>();
  #backlog: ServerConn[] = [];
  #tickQueued = false;
  // replication
  #masterAddr: string | undefined;
  #link: UpLink | undefined;
  #linkGen = 0;
  #linkDownSince: number | undefined;
  #downstream = new Map<string, Downstream>();
  #replid = ZERO_ID;
  #replid2 = ZERO_ID;
  #offset = 0;
  #secondOffset = -1;
  /** First offset the backlog holds; undefined: no backlog (never had a replica). */
  #backlogStart: number | undefined;
  #noReplicasSince: number | undefined;
  #cronCount = 0;
  #log: LoggedWrite[] = [];
  /** Counters for tests: syncs this server served as a master. */
  fullSyncs = 0;
  partialSyncs = 0;

  constructor(sim: SimRedis, addr: string, owner: string, boot: ServerOptions) {
    this.#sim = sim;
    this.addr = addr;
    this.owner = owner;
    this.#boot = { ...boot, users: { ...boot.users } };
    this.#start(boot.replicaOf, false);
  }

  get #now(): number {
    return this.#sim.sched.now;
  }

  get alive(): boolean {
    return this.#alive && !this.#sim.sched.isDead(this.owner);
  }

  get loading(): boolean {
    return this.#now < this.#loadingUntil;
  }

  get log(): readonly LoggedWrite[] {
    return this.#log;
  }

  get(key: string): string | undefined {
    for (let i = this.#log.length - 1; i >= 0; i--) if (this.#log[i]!.key === key) return this.#log[i]!.value;
    return undefined;
  }

  state(): ServerState {
    const link = this.#link;
    const log = this.#log;
    return {
      addr: this.addr,
      owner: this.owner,
      alive: this.alive,
      frozen: this.#sim.sched.isFrozen(this.owner),
      role: this.#masterAddr ? "replica" : "master",
      masterAddr: this.#masterAddr ?? null,
      linkUp: link?.state === "up",
      syncing: link?.state === "sync",
      fenced: this.#int("min-replicas-to-write") >= FENCED_AT,
      loading: this.loading,
      writable: this.alive && !this.#masterAddr && !this.loading && this.#enoughReplicas(),
      offset: this.#offset,
      replid: this.#replid,
      replid2: this.#replid2,
      runId: this.#runId,
      writes: log.length,
      acknowledged: () => log.filter((w) => w.acked),
    };
  }

  // ---- faults

  /** kill -9: dead; every connection and replication link closes. */
  crash(): void {
    if (!this.#alive) return;
    this.#alive = false;
    this.#sim.sched.kill(this.owner);
    for (const c of [...this.#clients, ...this.#backlog]) this.#close(c, true);
    this.#backlog = [];
    this.#disconnectReplicas();
    this.#dropLink();
    this.#tickQueued = false;
  }

  /** Starts it again (after a crash, or kills it first). */
  restart(opts: { empty?: boolean; bootAsReplicaOfNowhere?: boolean; replicaOf?: string } = {}): void {
    this.crash();
    this.#sim.sched.revive(this.owner);
    this.#alive = true;
    this.#start(opts.bootAsReplicaOfNowhere ? PARK : opts.replicaOf, !opts.empty);
  }

  /** Processes nothing for `ms` (a slow script, a fork stall), then goes on in order. */
  busy(ms: number): void {
    this.#busyUntil = Math.max(this.#busyUntil, this.#now + ms);
  }

  /** requirepass (undefined: none); also for later restarts, as in the config file. */
  setPassword(password: string | undefined): void {
    this.#boot.password = password;
    this.#users.get("default")!.pass = password ?? null;
    this.#config.set("requirepass", password ?? "");
  }

  /** ACL SETUSER (undefined: ACL DELUSER, which closes its connections); kept for later restarts. */
  setUser(name: string, spec: UserSpec | undefined): void {
    const users = this.#boot.users!;
    if (spec) {
      users[name] = spec;
      this.#users.set(name, { pass: spec.password ?? null, deny: new Set(spec.deny ?? []) });
      return;
    }
    delete users[name];
    this.#users.delete(name);
    for (const c of [...this.#clients]) if (c.user === name) this.#close(c, true);
  }

  #start(masterAddr: string | undefined, withData: boolean): void {
    const rng = this.#sim.rng;
    this.#runId = rng.hex(40);
    this.#pid = rng.int(100, 99999);
    this.#startedAt = this.#now;
    this.#busyUntil = 0;
    this.#config = new Map(Object.entries({ ...CONFIG_DEFAULTS, ...this.#boot.config, requirepass: this.#boot.password ?? "" }));
    if (this.#boot.maxClients !== undefined) this.#config.set("maxclients", String(this.#boot.maxClients));
    this.#users = new Map([["default", { pass: this.#boot.password ?? null, deny: new Set() }]]);
    for (const [name, u] of Object.entries(this.#boot.users ?? {})) this.#users.set(name, { pass: u.password ?? null, deny: new Set(u.deny ?? []) });
    this.#clients = new Set();
    this.#backlog = [];
    this.#downstream = new Map();
    this.#link = undefined;
    this.#linkDownSince = undefined;
    this.#masterAddr = masterAddr;
    this.#noReplicasSince = undefined;
    if (withData) {
      // The RDB carries replid and offset. A master takes a new replid and keeps
      // the old one as replid2 (7.0.15, checked); a replica keeps it to PSYNC with.
      if (!masterAddr) this.#shiftReplid(rng.hex(40));
      else [this.#replid2, this.#secondOffset] = [ZERO_ID, -1];
      this.#backlogStart = this.#offset + 1;
      this.#loadingUntil = this.#now + this.#sim.draw(this.#sim.opts.loadMs);
    } else {
      this.#log = [];
      this.#offset = 0;
      this.#replid = rng.hex(40);
      this.#replid2 = ZERO_ID;
      this.#secondOffset = -1;
      this.#backlogStart = undefined;
      this.#loadingUntil = 0;
    }
    this.#later(rng.between(0, 1000), () => this.#cron());
  }

  // ---- the event loop

  /** Runs `fn` as this process after `ms`, and not while it is busy. */
  #later(ms: number, fn: () => void): void {
    this.#sim.sched.at(ms, this.owner, () => this.#whenFree(fn));
  }

  #whenFree(fn: () => void): void {
    if (!this.#alive) return;
    const wait = this.#busyUntil - this.#now;
    if (wait > 0) this.#sim.sched.at(wait, this.owner, () => this.#whenFree(fn));
    else fn();
  }

  #busyLeft(): number {
    return Math.max(0, this.#busyUntil - this.#now);
  }

  /** Bytes for one of our client connections reached this host's kernel. */
  receive(c: ServerConn, m: Up): void {
    if (this.#alive && this.#sim.sched.isDead(this.owner)) this.crash(); // killed behind our back
    if (m.t === "open") {
      if (!this.#alive) return c.down.send({ t: "refused" }, this.#sim.net());
      c.state = "backlog";
      this.#backlog.push(c);
      // The kernel completes the TCP handshake even when redis is stopped; TLS needs redis.
      if (!c.tls) c.down.send({ t: "established" }, this.#sim.net());
    } else if (c.state === "syn" || c.state === "closed") {
      return;
    } else {
      if (c.inbox.length === 0 && !c.fin) c.readySince = this.#now;
      if (m.t === "cmd") c.inbox.push(m.args);
      else c.fin = true;
    }
    this.#kick();
  }

  #kick(): void {
    if (this.#tickQueued || !this.#alive) return;
    this.#tickQueued = true;
    this.#later(0, () => {
      this.#tickQueued = false;
      this.#tick();
    });
  }

  /**
   * One turn of the event loop: serve the clients with input in the order
   * epoll reports them (when each became readable; ties in accept order),
   * then accept the backlog.
   */
  #tick(): void {
    const sched = this.#sim.sched;
    const ready = [...this.#clients].filter((c) => c.inbox.length > 0 || c.fin || sched.isDead(c.owner));
    ready.sort((a, b) => a.readySince - b.readySince);
    for (const c of ready) this.#serve(c);
    const accepted = this.#backlog.splice(0);
    for (const c of accepted) this.#accept(c);
    if (accepted.some((c) => c.state === "open" && (c.inbox.length > 0 || c.fin))) this.#kick();
  }

  #serve(c: ServerConn): void {
    const gone = c.fin || this.#sim.sched.isDead(c.owner);
    if (gone && !c.pipeline && this.#sim.opts.closedClientCommands === "drop") return this.#close(c, false);
    while (c.state === "open" && c.inbox.length > 0) {
      const r = this.#execute(c, c.inbox.shift()!);
      if (c.state === "open") c.down.send({ t: "reply", r }, this.#sim.net());
    }
    if (gone) this.#close(c, false);
  }

  #accept(c: ServerConn): void {
    if (c.state !== "backlog") return;
    if (this.#clients.size >= this.#int("maxclients")) {
      c.down.send({ t: "reply", r: err("ERR max number of clients reached") }, this.#sim.net());
      return this.#close(c, true);
    }
    c.state = "open";
    c.readySince = Math.max(c.readySince, this.#now);
    c.authed = this.#users.get("default")?.pass === null;
    this.#clients.add(c);
    if (c.tls) c.down.send({ t: "established" }, this.#sim.net());
  }

  /** Closes a client connection; its unprocessed input is discarded. */
  #close(c: ServerConn, tellClient: boolean): void {
    if (c.state === "closed") return;
    c.state = "closed";
    c.inbox = [];
    this.#clients.delete(c);
    if (tellClient) c.down.send({ t: "closed" }, this.#sim.net());
  }

  // ---- commands

  #execute(c: ServerConn, args: string[]): Reply {
    const name = (args[0] ?? "").toUpperCase();
    const a = args.slice(1);
    const spec = COMMANDS[name];
    if (!spec) return err(`ERR unknown command '${args[0] ?? ""}', with args beginning with: ${a.map((x) => `'${x}' `).join("")}`);
    if (a.length < spec.min || a.length > spec.max) return err(`ERR wrong number of arguments for '${name.toLowerCase()}' command`);
    if (!c.authed && !spec.noAuth) return err("NOAUTH Authentication required.");
    const denied = spec.noAuth ? undefined : this.#denied(c.user, args);
    if (denied) return err(`NOPERM this user has no permissions to run the '${denied}' command`);
    if (spec.write && !this.#masterAddr && !this.#enoughReplicas()) return err("NOREPLICAS Not enough good replicas to write.");
    if (spec.write && this.#masterAddr) return err("READONLY You can't write against a read only replica.");
    if (this.loading && !spec.okLoading) return err("LOADING Redis is loading the dataset in memory");
    switch (name) {
      case "PING":
        return a[0] !== undefined ? { bulk: a[0] } : ok("PONG");
      case "AUTH":
        return this.#auth(c, a.length === 2 ? a[0] : undefined, a.at(-1)!);
      case "HELLO":
        return this.#hello(c, a);
      case "INFO":
        return { bulk: this.#info(a) };
      case "CONFIG":
        return this.#configCmd(a);
      case "CLIENT":
        return this.#clientCmd(c, a);
      case "ACL":
        return this.#aclCmd(c, a);
      case "REPLICAOF":
      case "SLAVEOF":
        return this.#replicaofCmd(a[0]!, a[1]!);
      case "SET":
        this.#write(a[0]!, a[1]!);
        return ok();
      default: // GET
        return { bulk: this.get(a[0]!) ?? null };
    }
  }

  /** The command name NOPERM reports when `user` may not run `args`, else undefined. */
  #denied(user: string, args: string[]): string | undefined {
    const u = this.#users.get(user);
    const cmd = (args[0] ?? "").toLowerCase();
    const full = CONTAINERS.has(cmd) && args[1] ? `${cmd}|${args[1].toLowerCase()}` : cmd;
    if (!u) return full;
    return u.deny.has(cmd) || u.deny.has(full) ? full : undefined;
  }

  #checkPassword(user: string | undefined, pass: string): Reply {
    if (user === undefined && this.#users.get("default")?.pass === null) {
      return err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
    }
    const u = this.#users.get(user ?? "default");
    if (!u || (u.pass !== null && u.pass !== pass)) return err("WRONGPASS invalid username-password pair or user is disabled.");
    return ok();
  }

  #auth(c: ServerConn, user: string | undefined, pass: string): Reply {
    const r = this.#checkPassword(user, pass);
    if ("simple" in r) [c.authed, c.user] = [true, user ?? "default"];
    return r;
  }

  #hello(c: ServerConn, a: string[]): Reply {
    const i = a.findIndex((x) => x.toUpperCase() === "AUTH");
    if (i >= 0) {
      const r = this.#auth(c, a[i + 1], a[i + 2] ?? "");
      if (!("simple" in r)) return r;
    } else if (!c.authed) {
      return err("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    const role = this.#masterAddr ? "replica" : "master";
    return { map: [["server", "redis"], ["version", REDIS_VERSION], ["proto", a[0] ?? "2"], ["mode", "standalone"], ["role", role]] };
  }

  #int(name: string): number {
    return Number(this.#config.get(name) ?? 0);
  }

  #configCmd(a: string[]): Reply {
    const sub = a[0]!.toUpperCase();
    if (sub === "GET") {
      if (a.length !== 2) return err("ERR wrong number of arguments for 'config|get' command");
      const pattern = ALIASES[a[1]!.toLowerCase()] ?? a[1]!.toLowerCase();
      const re = new RegExp(`^${pattern.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".")}$`);
      return { map: [...this.#config].filter(([k]) => re.test(k)) };
    }
    if (sub === "SET") {
      if (a.length < 3 || a.length % 2 === 0) return err("ERR wrong number of arguments for 'config|set' command");
      const pairs: [string, string][] = [];
      for (let i = 1; i < a.length; i += 2) {
        const name = ALIASES[a[i]!.toLowerCase()] ?? a[i]!.toLowerCase();
        const value = a[i + 1]!;
        if (!this.#config.has(name)) return err(`ERR Unknown option or number of arguments for CONFIG SET - '${a[i]}'`);
        if (INT_CONFIG.has(name) && !/^-?\d+$/.test(value)) {
          return err(`ERR CONFIG SET failed (possibly related to argument '${a[i]}') - argument couldn't be parsed into an integer`);
        }
        pairs.push([name, value]);
      }
      for (const [name, value] of pairs) {
        this.#config.set(name, value);
        if (name === "requirepass") this.#users.get("default")!.pass = value === "" ? null : value;
      }
      return ok();
    }
    return err(`ERR unknown subcommand '${a[0]}'. Try CONFIG HELP.`);
  }

  #clientCmd(c: ServerConn, a: string[]): Reply {
    const sub = a[0]!.toUpperCase();
    if (sub === "SETNAME") return ok();
    if (sub !== "KILL") return err(`ERR unknown subcommand '${a[0]}'. Try CLIENT HELP.`);
    if (a.length === 2) return err("ERR No such client");
    let type: string | undefined;
    let user: string | undefined;
    let skipme = true;
    for (let i = 1; i < a.length; i += 2) {
      const k = a[i]!.toUpperCase();
      const v = a[i + 1];
      if (v === undefined) return err("ERR syntax error");
      if (k === "TYPE") type = v.toLowerCase();
      else if (k === "USER") user = v;
      else if (k === "SKIPME") skipme = v.toLowerCase() === "yes";
      else return err("ERR syntax error");
    }
    let killed = 0;
    for (const o of [...this.#clients]) {
      if ((skipme && o === c) || (type !== undefined && type !== "normal") || (user !== undefined && o.user !== user)) continue;
      this.#close(o, true);
      killed++;
    }
    return { int: killed };
  }

  #aclCmd(c: ServerConn, a: string[]): Reply {
    if (a[0]!.toUpperCase() === "WHOAMI") return { bulk: c.user };
    if (a[0]!.toUpperCase() !== "DRYRUN") return err(`ERR unknown subcommand '${a[0]}'. Try ACL HELP.`);
    if (a.length < 3) return err("ERR wrong number of arguments for 'acl|dryrun' command");
    if (!this.#users.has(a[1]!)) return err(`ERR User '${a[1]}' not found`);
    const denied = this.#denied(a[1]!, a.slice(2));
    return denied ? { bulk: `This user has no permissions to run the '${denied}' command` } : ok();
  }

  #info(sections: string[]): string {
    const want = sections.map((s) => s.toLowerCase());
    const all = want.length === 0 || want.some((s) => s === "all" || s === "default" || s === "everything");
    const now = this.#now;
    const secs = (ms: number) => Math.floor(ms / 1000);
    const out: string[][] = [];
    if (all || want.includes("server")) {
      out.push([
        "# Server", `redis_version:${REDIS_VERSION}`, "redis_git_sha1:00000000", "redis_git_dirty:0", "redis_mode:standalone",
        "os:Linux sim x86_64", "arch_bits:64", `process_id:${this.#pid}`, `run_id:${this.#runId}`,
        `tcp_port:${parseHostPort(this.addr)?.port ?? 0}`, `uptime_in_seconds:${secs(now - this.#startedAt)}`,
        `uptime_in_days:${Math.floor((now - this.#startedAt) / 86_400_000)}`, "hz:10", "executable:/usr/bin/redis-server", "config_file:",
      ]);
    }
    if (all || want.includes("persistence")) {
      const loading = this.loading ? ["loading_start_time:0", `loading_eta_seconds:${secs(this.#loadingUntil - now)}`] : [];
      out.push(["# Persistence", `loading:${this.loading ? 1 : 0}`, "async_loading:0", ...loading, "rdb_changes_since_last_save:0", "rdb_bgsave_in_progress:0", "aof_enabled:0"]);
    }
    if (all || want.includes("replication")) {
      const lines = ["# Replication"];
      const link = this.#link;
      if (this.#masterAddr) {
        const m = parseHostPort(this.#masterAddr);
        const up = link?.state === "up";
        lines.push(
          "role:slave", `master_host:${m?.host ?? ""}`, `master_port:${m?.port ?? 0}`, `master_link_status:${up ? "up" : "down"}`,
          `master_last_io_seconds_ago:${up ? secs(now - link.lastIoAt) : -1}`, `master_sync_in_progress:${link?.state === "sync" ? 1 : 0}`,
          `slave_read_repl_offset:${this.#offset}`, `slave_repl_offset:${this.#offset}`,
        );
        if (link?.state === "sync") lines.push("master_sync_total_bytes:-1", "master_sync_read_bytes:0", "master_sync_left_bytes:-1", "master_sync_perc:0.00", "master_sync_last_io_seconds_ago:0");
        if (!up) lines.push(`master_link_down_since_seconds:${this.#linkDownSince === undefined ? -1 : secs(now - this.#linkDownSince)}`);
        lines.push("slave_priority:100", "slave_read_only:1", "replica_announced:1");
      } else {
        lines.push("role:master");
      }
      const live = this.#live();
      lines.push(`connected_slaves:${live.length}`, `min_slaves_good_slaves:${this.#goodReplicas()}`);
      live.forEach((d, i) => {
        const hp = parseHostPort(d.replica.addr);
        lines.push(`slave${i}:ip=${hp?.host},port=${hp?.port},state=${d.state},offset=${d.ackOffset},lag=${secs(now - d.ackAt)}`);
      });
      const start = this.#backlogStart;
      lines.push(
        "master_failover_state:no-failover", `master_replid:${this.#replid}`, `master_replid2:${this.#replid2}`,
        `master_repl_offset:${this.#offset}`, `second_repl_offset:${this.#secondOffset}`, `repl_backlog_active:${start === undefined ? 0 : 1}`,
        `repl_backlog_size:${this.#int("repl-backlog-size")}`, `repl_backlog_first_byte_offset:${start ?? 0}`,
        `repl_backlog_histlen:${start === undefined ? 0 : this.#offset - start + 1}`,
      );
      out.push(lines);
    }
    return out.map((s) => s.join("\r\n") + "\r\n").join("\r\n");
  }

  // ---- writes and replication

  #write(key: string, value: string): void {
    // Without a backlog (no replica yet) Redis does not count the offset.
    if (this.#backlogStart !== undefined) this.#offset += Buffer.byteLength(encodeCommand(["SET", key, value]));
    const w: LoggedWrite = { key, value, offset: this.#offset, origin: this.addr, at: this.#now };
    this.#sim.recordWrite(w);
    this.#append(w);
  }

  /** Adds a write to our history (ours, or our master's) and passes it on to our replicas. */
  #append(w: LoggedWrite): void {
    this.#log.push(w);
    this.#offset = w.offset;
    if (this.#backlogStart !== undefined) this.#backlogStart = Math.max(this.#backlogStart, this.#offset - this.#int("repl-backlog-size") + 1);
    for (const d of this.#live()) {
      if (d.state === "online") d.wire.send({ t: "write", w }, this.#sim.replLag());
      else d.held.push(w);
    }
  }

  #live(): Downstream[] {
    return [...this.#downstream.values()].filter((d) => d.replica.alive && d.replica.#link?.gen === d.gen);
  }

  #goodReplicas(): number {
    const maxLag = this.#int("min-replicas-max-lag");
    return this.#live().filter((d) => d.state === "online" && Math.floor((this.#now - d.ackAt) / 1000) <= maxLag).length;
  }

  #enoughReplicas(): boolean {
    const need = this.#int("min-replicas-to-write");
    return need <= 0 || this.#int("min-replicas-max-lag") <= 0 || this.#goodReplicas() >= need;
  }

  #shiftReplid(newId: string): void {
    this.#replid2 = this.#replid;
    this.#secondOffset = this.#offset + 1;
    this.#replid = newId;
  }

  #replicaofCmd(host: string, portText: string): Reply {
    if (host.toUpperCase() === "NO" && portText.toUpperCase() === "ONE") {
      if (this.#masterAddr) {
        // replicationUnsetMaster: a new history that still answers to the old replid up to here.
        this.#masterAddr = undefined;
        this.#dropLink();
        this.#linkDownSince = undefined;
        this.#shiftReplid(this.#sim.rng.hex(40));
        this.#backlogStart ??= this.#offset + 1;
        this.#disconnectReplicas();
      }
      return ok();
    }
    const port = Number(portText);
    if (!Number.isInteger(port) || port < 0 || port > 65535) return err("ERR Invalid master port");
    const target = formatHostPort({ host, port });
    if (this.#masterAddr === target) return ok("OK Already connected to specified master");
    // master_link_down_since_seconds: -1 for a master turned replica, counted from now for a linked replica.
    if (!this.#masterAddr) this.#linkDownSince = undefined;
    else if (this.#link?.state === "up") this.#linkDownSince = this.#now;
    // A master keeps its replicas (they may PSYNC on); they are dropped when our history changes.
    this.#masterAddr = target;
    this.#dropLink();
    this.#startLink();
    return ok();
  }

  #dropLink(): void {
    this.#link = undefined;
    this.#linkGen++;
  }

  #disconnectReplicas(): void {
    for (const d of this.#downstream.values()) d.wire.send({ t: "close" }, this.#sim.net());
    this.#downstream.clear();
  }

  /** Connects to our master and asks for PSYNC; a refused connection is retried by the cron. */
  #startLink(): void {
    const sim = this.#sim;
    const gen = ++this.#linkGen;
    const target = this.#masterAddr!;
    this.#link = { gen, master: target, state: "connecting", lastIoAt: this.#now };
    sim.sched.at(sim.draw(sim.opts.linkMs), NET, () => {
      const m = sim.serverAt(target);
      if (!m || !m.alive || m === this) this.#later(sim.net(), () => this.#onStream(gen, { t: "error", msg: "Connection refused" }));
      else sim.sched.at(0, m.owner, () => m.#whenFree(() => m.#onPsync(this, gen)));
    });
  }

  /** As a master: replica `r` asks to PSYNC with its replid and offset. */
  #onPsync(r: SimServer, gen: number): void {
    if (!r.alive || r.#link?.gen !== gen) return; // it hung up already
    const fail = (msg: string) => r.#later(this.#sim.net(), () => r.#onStream(gen, { t: "error", msg }));
    if (this.loading) return fail("LOADING Redis is loading the dataset in memory");
    const pass = r.#config.get("masterauth") ?? "";
    const user = r.#config.get("masteruser") || undefined;
    const needAuth = this.#users.get("default")?.pass !== null;
    if (pass !== "") {
      const auth = this.#checkPassword(user, pass);
      if ("err" in auth) return fail(auth.err);
    } else if (needAuth) {
      return fail("NOAUTH Authentication required.");
    }
    if (this.#masterAddr && this.#link?.state !== "up") return fail("NOMASTERLINK Can't SYNC while not connected with my master");
    const psyncOffset = r.#offset + 1;
    const known = r.#replid === this.#replid || (r.#replid === this.#replid2 && psyncOffset <= this.#secondOffset);
    const start = this.#backlogStart;
    const inBacklog = start !== undefined && psyncOffset >= start && psyncOffset <= this.#offset + 1;
    const d: Downstream = {
      gen, replica: r, state: "online", ackOffset: r.#offset, ackAt: this.#now, held: [],
      wire: new Wire<Stream>(this.#sim.sched, r.owner, (m) => r.#onStream(gen, m), () => r.#busyLeft()),
    };
    this.#downstream.set(r.addr, d);
    if (known && inBacklog) {
      this.partialSyncs++;
      d.wire.send({ t: "continue", replid: this.#replid }, this.#sim.net());
      const from = this.#log.findLastIndex((w) => w.offset <= r.#offset) + 1;
      for (const w of this.#log.slice(from)) d.wire.send({ t: "write", w }, this.#sim.net());
      return;
    }
    this.fullSyncs++;
    this.#backlogStart ??= this.#offset + 1;
    d.state = "send_bulk";
    d.ackOffset = 0;
    const snapshot = { log: this.#log.slice(), offset: this.#offset, replid: this.#replid };
    d.wire.send({ t: "fullresync" }, this.#sim.net());
    this.#later(this.#sim.draw(this.#sim.opts.fullSyncMs), () => {
      if (this.#downstream.get(r.addr) !== d) return;
      d.wire.send({ t: "rdb", ...snapshot }, this.#sim.net());
      for (const w of d.held.splice(0)) d.wire.send({ t: "write", w }, this.#sim.replLag());
      d.state = "online";
      d.ackAt = this.#now;
    });
  }

  /** As a replica: what our master sent on link `gen`. */
  #onStream(gen: number, m: Stream): void {
    const link = this.#link;
    if (!this.#alive || !link || link.gen !== gen) return;
    link.lastIoAt = this.#now;
    switch (m.t) {
      case "error":
        this.#dropLink(); // retried by the cron
        return;
      case "fullresync":
        link.state = "sync";
        return;
      case "continue":
        if (m.replid !== this.#replid) {
          this.#shiftReplid(m.replid);
          this.#disconnectReplicas();
        }
        this.#backlogStart ??= this.#offset + 1;
        break;
      case "rdb":
        this.#log = m.log;
        this.#offset = m.offset;
        this.#replid = m.replid;
        this.#replid2 = ZERO_ID;
        this.#secondOffset = -1;
        this.#backlogStart = m.offset + 1;
        this.#disconnectReplicas();
        break;
      case "write":
        this.#append(m.w);
        return;
      case "ping":
        return;
      case "close":
        if (link.state === "up") this.#linkDownSince = this.#now;
        this.#dropLink();
        return;
    }
    link.state = "up";
    this.#linkDownSince = undefined;
    this.#ack();
  }

  /** REPLCONF ACK <offset> to our master. */
  #ack(): void {
    const link = this.#link;
    const m = link && this.#sim.serverAt(link.master);
    if (!link || link.state !== "up" || !m) return;
    const offset = this.#offset;
    this.#sim.sched.at(this.#sim.net(), m.owner, () => m.#whenFree(() => {
      const d = m.#downstream.get(this.addr);
      if (d && d.gen === link.gen) [d.ackOffset, d.ackAt] = [offset, m.#now];
    }));
  }

  /** replicationCron, once a second: reconnect, ack, time out, ping replicas, expire the backlog. */
  #cron(): void {
    this.#later(1000, () => this.#cron());
    if (this.loading) return;
    const now = this.#now;
    const timeout = this.#int("repl-timeout") * 1000 || this.#sim.opts.replTimeoutMs;
    const link = this.#link;
    if (this.#masterAddr && !link) this.#startLink();
    else if (link && now - link.lastIoAt > timeout) {
      if (link.state === "up") this.#linkDownSince = now;
      this.#dropLink();
    } else if (link) this.#ack();
    const pingNow = ++this.#cronCount % 10 === 0; // repl-ping-replica-period 10 s
    const live = this.#live();
    for (const [addr, d] of this.#downstream) {
      if (!live.includes(d)) this.#downstream.delete(addr);
      else if (d.state === "online" && now - d.ackAt > timeout) {
        d.wire.send({ t: "close" }, this.#sim.net());
        this.#downstream.delete(addr);
      } else if (pingNow && d.state === "online") d.wire.send({ t: "ping" }, this.#sim.net());
    }
    // repl-backlog-ttl: a master without replicas for an hour frees its backlog and starts a new history.
    if (this.#masterAddr || this.#downstream.size > 0) this.#noReplicasSince = undefined;
    else if ((this.#noReplicasSince ??= now) < now - 3_600_000 && this.#backlogStart !== undefined) {
      this.#backlogStart = undefined;
      [this.#replid, this.#replid2, this.#secondOffset] = [this.#sim.rng.hex(40), ZERO_ID, -1];
    }
  }
}

// ---------------------------------------------------------------- the cluster

/** Every simulated Redis, the network between them and their clients, and the faults. */
export class SimRedis {
  readonly sched: Scheduler;
  readonly opts: Required<SimRedisOptions>;
  readonly #servers = new Map<string, SimServer>();
  readonly #transports = new Map<string, SimTransport>();
  readonly #writes = new Map<string, LoggedWrite>();
  #writeSeq = 0;

  constructor(sched: Scheduler, opts: SimRedisOptions = {}) {
    this.sched = sched;
    this.opts = { ...DEFAULTS, ...opts };
  }

  get rng() {
    return this.sched.rng;
  }

  draw(r: Range): number {
    return this.sched.rng.between(r[0], r[1]);
  }

  net(): number {
    return this.draw(this.opts.netMs);
  }

  replLag(): number {
    return this.draw(this.sched.rng.chance(this.opts.replLagSpikeP) ? this.opts.replLagSpikeMs : this.opts.replLagMs);
  }

  /** Starts a Redis at `addr` ("host:port") as process `owner` (e.g. "n1/redis"), empty. */
  addServer(addr: string, owner: string, opts: ServerOptions = {}): SimServer {
    if (this.#servers.has(addr)) throw new Error(`a server already listens at ${addr}`);
    const s = new SimServer(this, addr, owner, opts);
    this.#servers.set(addr, s);
    return s;
  }

  serverAt(addr: string): SimServer | undefined {
    return this.#servers.get(addr);
  }

  server(addr: string): SimServer {
    const s = this.#servers.get(addr);
    if (!s) throw new Error(`no server at ${addr}`);
    return s;
  }

  /** The transport for the production code of process `owner`. */
  transportFor(owner: string): RedisTransport {
    let t = this.#transports.get(owner);
    if (!t) this.#transports.set(owner, (t = new SimTransport(this, owner)));
    return t;
  }

  crash(addr: string): void {
    this.server(addr).crash();
  }

  restart(addr: string, opts?: { empty?: boolean; bootAsReplicaOfNowhere?: boolean; replicaOf?: string }): void {
    this.server(addr).restart(opts);
  }

  busy(addr: string, ms: number): void {
    this.server(addr).busy(ms);
  }

  setPassword(addr: string, password: string | undefined): void {
    this.server(addr).setPassword(password);
  }

  setUser(addr: string, name: string, spec: UserSpec | undefined): void {
    this.server(addr).setUser(name, spec);
  }

  /** Every server's state, for the invariant checker. Reads only. */
  states(): ServerState[] {
    return [...this.#servers.values()].map((s) => s.state());
  }

  /** Every write some writer got +OK for. */
  ackedWrites(): LoggedWrite[] {
    return [...this.#writes.values()].filter((w) => w.acked);
  }

  /** Acknowledged writes `addr` does not hold. */
  lostWrites(addr: string): LoggedWrite[] {
    const held = new Set(this.server(addr).log);
    return this.ackedWrites().filter((w) => !held.has(w));
  }

  /** Starts a simulated writer process (see SimWriter). */
  writer(opts: WriterOptions): SimWriter {
    return new SimWriter(this, opts);
  }

  nextWriteNumber(): number {
    return ++this.#writeSeq;
  }

  recordWrite(w: LoggedWrite): void {
    this.#writes.set(w.key, w);
  }

  noteAck(key: string, ack: { at: number; writer: string; server: string }): void {
    const w = this.#writes.get(key);
    if (w && !w.acked) w.acked = ack;
  }

  /**
   * Opens a TCP connection from process `owner` to `addr`. Bytes towards the
   * server travel as NET events (the kernel takes them even when redis is
   * stopped); everything back is an event of `owner`.
   */
  dial(owner: string, addr: string, opts: { pipeline: boolean; tls: boolean }, onDown: (m: Down) => void): Dial {
    const down = new Wire<Down>(this.sched, owner, onDown);
    const conn = new ServerConn(owner, opts.pipeline, opts.tls, down);
    const up = new Wire<Up>(this.sched, NET, (m) => {
      const s = this.#servers.get(addr);
      if (s) s.receive(conn, m);
      else if (m.t === "open") down.send({ t: "refused" }, this.net()); // nothing listens
    });
    up.send({ t: "open" }, this.net());
    return { write: (args) => up.send({ t: "cmd", args }, this.net()), fin: () => up.send({ t: "fin" }, this.net()) };
  }
}

