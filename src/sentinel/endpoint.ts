/**
 * The Sentinel-compatible endpoint: answers what Redis client libraries ask a
 * Sentinel (ioredis, node-redis, go-redis's FailoverClient, redis-py's
 * Sentinel, redis-cli), so that an application configured for Sentinel
 * follows the primary this group elects, with one change to its
 * configuration (the sentinels' addresses). The composition root gives it a
 * listening socket (Bun.listen) and tells it when the lock or the role
 * changed; everything else is here.
 *
 * Guarantees:
 * - It names a primary as current only while that primary's lease stands
 *   (view.ts); while a failover is in progress it answers as Sentinel does
 *   then (the old address, flagged), after first waiting up to
 *   `waitMs` for the new primary, so a client that asks during the failover
 *   gets the new address the moment it is certain instead of retrying on its
 *   own backoff.
 * - Every change of the primary is published to subscribers in Sentinel's
 *   channels and formats (view.ts), RESP2 messages or RESP3 pushes.
 * - Every request gets a reply, in order, per connection (pipelining); an
 *   unknown command gets an error naming it, never silence. Waiting is
 *   bounded by `waitMs`; nothing else waits on anything but Consul reads of
 *   the member list, which have the Consul client's request timeout.
 * - Bounded: request size (resp.ts), pending requests and unsent output per
 *   connection, connections, subscriptions. A client past a bound is
 *   disconnected (garbage gets a protocol error first, as from Redis).
 * - With a password configured, nothing but AUTH, HELLO ... AUTH, QUIT and
 *   RESET is answered before a client authenticates; the password is
 *   compared in constant time and never logged or echoed.
 * Does not support what would change the group (SENTINEL FAILOVER, MONITOR,
 * SET, ...): it answers them with an error saying so.
 */

import type { Clock } from "../clock.ts";
import type { MemberEntry } from "../consul/members.ts";
import { digestsEqual, sha1Hex, sha256 } from "../digest.ts";
import { formatHostPort, type HostPort, parseHostPort } from "../host-port.ts";
import type { Logger } from "../log.ts";
import { globMatch } from "./glob.ts";
import { DEFAULT_LIMITS, encode, R, type Reply, RequestParser } from "./resp.ts";
import { deriveView, EMPTY_VIEW, eventsBetween, type Facts, type PrimaryView, type SentinelEvent } from "./view.ts";

/** The Redis version whose Sentinel this endpoint follows (HELLO, INFO): 7.0, as installed in the tests. */
export const EMULATED_REDIS_VERSION = "7.0.0";
/** Connections at once; a group's applications each hold one or two. Redis's maxclients is 10000; one sidecar needs far fewer. */
export const MAX_CONNECTIONS = 1024;
/** Requests read but not yet answered on one connection (a pipeline waiting behind a held query). */
export const MAX_PENDING = 256;
/** Reply bytes a connection may leave unread before it is dropped (Redis's pubsub output limit is 8 MB hard; our messages are tiny). */
export const MAX_OUTPUT = 1024 * 1024;
/** Channels plus patterns one connection may subscribe to: the Sentinel events are a dozen. */
export const MAX_SUBSCRIPTIONS = 256;
/** Longest channel name or pattern accepted. */
export const MAX_CHANNEL = 256;
/** How long a member list read from Consul is reused: clients ask for it on every (re)connect. */
export const MEMBERS_TTL_MS = 1000;

export interface EndpointConfig {
  /** The master name clients ask for (CONSUL_LEADER_SENTINEL_MASTER_NAME). */
  masterName: string;
  /** CONSUL_LEADER_SENTINEL_PASSWORD; absent: no AUTH needed. */
  password?: string;
  /** CONSUL_LEADER_SENTINEL_WAIT: how long a query for the primary waits during a failover. */
  waitMs: number;
  /** This endpoint's address as others reach it (for ROLE/INFO and to leave itself out of SENTINEL sentinels). */
  announce: HostPort;
  /** Our Redis's down-after, reported as down-after-milliseconds. */
  downAfterMs: number;
  /** This sidecar's instance ID. */
  instance: string;
  /** consul-leader's version, for INFO. */
  version: string;
  pid: number;
}

export interface EndpointDeps {
  clock: Clock;
  log: Logger;
  /** What this sidecar knows now (the elector's lock view, role, Redis). */
  facts: () => Facts;
  /** The group's member entries (Consul KV); may reject. */
  members: () => Promise<MemberEntry[]>;
}

/** The transport side of one client connection (Bun's socket in production). */
export interface Socket {
  /** Writes what it can now; returns the bytes taken (less when the kernel buffer is full). */
  write(data: Uint8Array): number;
  end(): void;
  readonly remoteAddress?: string;
}

interface Conn {
  id: number;
  sock: Socket;
  parser: RequestParser;
  proto: 2 | 3;
  authed: boolean;
  name: string | null;
  lib: { name?: string; ver?: string };
  channels: Set<string>;
  patterns: Set<string>;
  queue: Buffer[][];
  pumping: boolean;
  out: Buffer[];
  outBytes: number;
  closed: boolean;
  /** Close once the replies written so far are flushed (QUIT, a protocol error). */
  closing: boolean;
}

const NO_AUTH = new Set(["auth", "hello", "quit", "reset"]);
const SUBSCRIBED_OK = new Set(["subscribe", "psubscribe", "unsubscribe", "punsubscribe", "ping", "quit", "reset"]);
const WRONGPASS = "WRONGPASS invalid username-password pair or user is disabled.";
const UNSUPPORTED_SENTINEL: Record<string, string> = {
  failover: "consul-leader elects the primary: use `consul-leader switchover` or POST /switchover",
  monitor: "the group is configured through consul-leader's knobs, not through the endpoint",
  remove: "the group is configured through consul-leader's knobs, not through the endpoint",
  set: "the group is configured through consul-leader's knobs, not through the endpoint",
  reset: "there is no Sentinel state to reset: the state is the Consul lock",
  flushconfig: "there is no Sentinel configuration file",
  config: "there is no Sentinel configuration",
  "simulate-failure": "faults are not simulated here",
  "is-master-down-by-addr": "sidecars do not vote: the Consul lock decides",
  "info-cache": "not kept",
  debug: "not kept",
  "pending-scripts": "there are no Sentinel scripts (see CONSUL_LEADER_ON_ROLE_CHANGE)",
};

export class SentinelEndpoint {
  readonly #c: EndpointConfig;
  readonly #d: EndpointDeps;
  readonly #conns = new Map<number, Conn>();
  readonly #bySocket = new Map<Socket, Conn>();
  readonly #waiters = new Set<() => void>();
  readonly #myId: string;
  readonly #startedAt: number;
  #nextId = 1;
  #view: PrimaryView = EMPTY_VIEW;
  #members: { at: number; entries: MemberEntry[] } | undefined;
  #fetching: Promise<MemberEntry[]> | undefined;
  #authFailures = { last: -Infinity, since: 0 };
  #stopped = false;

  constructor(config: EndpointConfig, deps: EndpointDeps) {
    this.#c = config;
    this.#d = deps;
    this.#myId = sentinelId(config.instance);
    this.#startedAt = deps.clock.monotonic();
    this.refresh();
  }

  /** The view as of the last refresh. */
  get view(): PrimaryView {
    return this.#view;
  }

  get connections(): number {
    return this.#conns.size;
  }

  /**
   * Looks at the facts again (the lock or the role changed): publishes the
   * events of any change and answers the queries waiting for a primary.
   */
  refresh(): void {
    const prev = this.#view;
    const next = deriveView(this.#d.facts(), prev);
    this.#view = next;
    const events = eventsBetween(prev, next, this.#c.masterName);
    if (events.length) {
      this.#d.log.info("sentinel events", { events: events.map((e) => `${e.channel} ${e.message}`) });
      for (const e of events) this.#publish(e);
    }
    if (!next.failover && this.#waiters.size) {
      const ws = [...this.#waiters];
      this.#waiters.clear();
      for (const w of ws) w();
    }
  }

  // ---------------------------------------------------------------- sockets

  open(sock: Socket): void {
    if (this.#stopped || this.#conns.size >= MAX_CONNECTIONS) {
      sock.write(Buffer.from("-ERR max number of clients reached\r\n"));
      sock.end();
      return;
    }
    const c: Conn = {
      id: this.#nextId++,
      sock,
      parser: new RequestParser(DEFAULT_LIMITS),
      proto: 2,
      authed: this.#c.password === undefined,
      name: null,
      lib: {},
      channels: new Set(),
      patterns: new Set(),
      queue: [],
      pumping: false,
      out: [],
      outBytes: 0,
      closed: false,
      closing: false,
    };
    this.#conns.set(c.id, c);
    this.#bySocket.set(sock, c);
  }

  data(sock: Socket, bytes: Uint8Array): void {
    const c = this.#bySocket.get(sock);
    if (!c || c.closed || c.closing) return;
    for (const p of c.parser.push(bytes)) {
      if (p.kind === "protocol") {
        // Answer what came before it, then the error, then close: as Redis does.
        c.queue.push([Buffer.from("\0protocol"), Buffer.from(p.message)]);
        break;
      }
      if (c.queue.length >= MAX_PENDING) {
        this.#d.log.debug("sentinel client dropped: too many pipelined requests", { client: c.id });
        this.#drop(c);
        return;
      }
      c.queue.push(p.args);
    }
    void this.#pump(c);
  }

  drain(sock: Socket): void {
    const c = this.#bySocket.get(sock);
    if (c) this.#flush(c);
  }

  close(sock: Socket): void {
    const c = this.#bySocket.get(sock);
    if (!c) return;
    c.closed = true;
    c.queue.length = 0;
    c.out.length = 0;
    this.#conns.delete(c.id);
    this.#bySocket.delete(sock);
  }

  /** Closes every connection and refuses new ones; waiting queries end now. */
  stop(): void {
    this.#stopped = true;
    for (const c of [...this.#conns.values()]) this.#drop(c);
    const ws = [...this.#waiters];
    this.#waiters.clear();
    for (const w of ws) w();
  }

  // ---------------------------------------------------------------- requests

  async #pump(c: Conn): Promise<void> {
    if (c.pumping) return;
    c.pumping = true;
    try {
      while (c.queue.length && !c.closed) {
        const args = c.queue.shift()!;
        if (args[0]!.toString("latin1") === "\0protocol") {
          this.#send(c, R.error(`ERR ${args[1]!.toString()}`));
          c.closing = true;
          this.#flush(c);
          return;
        }
        let replies: Reply[];
        try {
          replies = await this.#handle(c, args);
        } catch (err) {
          this.#d.log.debug("sentinel request failed", { client: c.id, err });
          replies = [R.error("ERR internal error; see the sidecar's log")];
        }
        if (c.closed) return;
        const err = replies.find((r) => r.t === "error");
        // The command and its subcommand only: arguments may hold a password.
        this.#d.log.debug("sentinel request", { client: c.id, lib: c.lib.name ?? null, command: requestLabel(args), reply: err?.t === "error" ? err.v.split(" ")[0] : "ok" });
        for (const r of replies) this.#send(c, r);
        if (c.closing) {
          this.#flush(c);
          return;
        }
      }
    } finally {
      c.pumping = false;
    }
  }

  async #handle(c: Conn, args: Buffer[]): Promise<Reply[]> {
    const cmd = args[0]!.toString("latin1").toLowerCase();
    const a = args.slice(1);
    if (!c.authed && !NO_AUTH.has(cmd)) return [R.error("NOAUTH Authentication required.")];
    if (c.proto === 2 && (c.channels.size || c.patterns.size) && !SUBSCRIBED_OK.has(cmd)) {
      const sub = cmd === "sentinel" || cmd === "client" ? `|${(a[0]?.toString("latin1") ?? "").toLowerCase()}` : "";
      return [R.error(`ERR Can't execute '${cmd}${sub}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET are allowed in this context`)];
    }
    switch (cmd) {
      case "ping":
        if (a.length > 1) return [arity("ping")];
        if (c.proto === 2 && (c.channels.size || c.patterns.size)) return [R.array([R.bulk("pong"), R.bulk(a[0] ?? "")])];
        return [a[0] ? R.bulk(a[0]) : R.simple("PONG")];
      case "auth":
        return [this.#auth(c, a)];
      case "hello":
        return [this.#hello(c, a)];
      case "client":
        return [this.#client(c, a)];
      case "role":
        return [R.array([R.bulk("sentinel"), R.strings([this.#c.masterName])])];
      case "info":
        return [R.bulk(await this.#info(a.map((x) => x.toString("latin1").toLowerCase())))];
      case "sentinel":
        return [await this.#sentinel(a)];
      case "subscribe":
      case "psubscribe":
        return this.#subscribe(c, cmd === "psubscribe", a);
      case "unsubscribe":
      case "punsubscribe":
        return this.#unsubscribe(c, cmd === "punsubscribe", a);
      case "quit":
        c.closing = true;
        return [R.ok];
      case "reset":
        c.channels.clear();
        c.patterns.clear();
        c.proto = 2;
        c.name = null;
        c.authed = this.#c.password === undefined;
        return [R.simple("RESET")];
      default:
        return [unknownCommand(args)];
    }
  }

  #auth(c: Conn, a: Buffer[]): Reply {
    if (a.length < 1 || a.length > 2) return arity("auth");
    const user = a.length === 2 ? a[0]!.toString() : undefined;
    const pass = a[a.length - 1]!;
    if (this.#c.password === undefined) {
      if (user === undefined) return R.error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
      if (user !== "default") return R.error(WRONGPASS);
      return R.ok;
    }
    if (!this.#passwordMatches(user, pass)) {
      c.authed = false;
      return R.error(WRONGPASS);
    }
    c.authed = true;
    return R.ok;
  }

  #hello(c: Conn, a: Buffer[]): Reply {
    let proto = c.proto;
    let i = 0;
    if (a.length > 0) {
      const v = a[0]!.toString("latin1");
      if (!/^\d+$/.test(v)) return R.error("ERR Protocol version is not an integer or out of range");
      const n = Number(v);
      if (n !== 2 && n !== 3) return R.error("NOPROTO unsupported protocol version");
      proto = n;
      i = 1;
    }
    let name: string | undefined;
    let authed = c.authed;
    for (; i < a.length; i++) {
      const opt = a[i]!.toString("latin1").toLowerCase();
      if (opt === "auth" && i + 2 < a.length) {
        const user = a[i + 1]!.toString();
        const pass = a[i + 2]!;
        if (this.#c.password === undefined ? user !== "default" : !this.#passwordMatches(user, pass)) return R.error(WRONGPASS);
        authed = true;
        i += 2;
      } else if (opt === "setname" && i + 1 < a.length) {
        name = a[i + 1]!.toString();
        if (!validName(name)) return R.error("ERR Client names cannot contain spaces, newlines or special characters.");
        i += 1;
      } else {
        return R.error(`ERR Syntax error in HELLO option '${a[i]!.toString("latin1").slice(0, 64)}'`);
      }
    }
    if (!authed) {
      return R.error("NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
    }
    c.authed = true;
    c.proto = proto;
    if (name !== undefined) c.name = name || null;
    return R.map([
      ["server", R.bulk("redis")],
      ["version", R.bulk(EMULATED_REDIS_VERSION)],
      ["proto", R.int(proto)],
      ["id", R.int(c.id)],
      ["mode", R.bulk("sentinel")],
      ["modules", R.array([])],
    ]);
  }

  #client(c: Conn, a: Buffer[]): Reply {
    const sub = (a[0]?.toString("latin1") ?? "").toLowerCase();
    switch (sub) {
      case "setname": {
        if (a.length !== 2) return arity("client|setname");
        const name = a[1]!.toString();
        if (!validName(name)) return R.error("ERR Client names cannot contain spaces, newlines or special characters.");
        c.name = name || null;
        return R.ok;
      }
      case "getname":
        return c.name === null ? R.null : R.bulk(c.name);
      case "id":
        return R.int(c.id);
      case "setinfo": {
        if (a.length !== 3) return arity("client|setinfo");
        const attr = a[1]!.toString("latin1").toLowerCase();
        const value = a[2]!.toString();
        if (attr !== "lib-name" && attr !== "lib-ver") return R.error(`ERR Unrecognized option '${a[1]!.toString("latin1").slice(0, 64)}'`);
        if (!validName(value)) return R.error(`ERR ${attr} cannot contain spaces, newlines or special characters.`);
        if (attr === "lib-name") c.lib.name = value;
        else c.lib.ver = value;
        return R.ok;
      }
      case "info":
        return R.bulk(clientLine(c) + "\n");
      case "list":
        return R.bulk([...this.#conns.values()].map((x) => clientLine(x) + "\n").join(""));
      case "":
        return arity("client");
      default:
        return R.error(`ERR unknown subcommand '${a[0]!.toString("latin1").slice(0, 128)}'. Try CLIENT HELP.`);
    }
  }

  async #sentinel(a: Buffer[]): Promise<Reply> {
    if (a.length === 0) return arity("sentinel");
    const sub = a[0]!.toString("latin1").toLowerCase();
    const name = a[1]?.toString();
    const needsName = (n: number) => (a.length !== n ? arity(`sentinel|${sub}`) : undefined);
    switch (sub) {
      case "get-master-addr-by-name": {
        const bad = needsName(2);
        if (bad) return bad;
        if (name !== this.#c.masterName) return R.nullArray;
        const v = await this.#primary();
        return v.shown ? R.strings([v.shown.host, String(v.shown.port)]) : R.nullArray;
      }
      case "master": {
        const bad = needsName(2);
        if (bad) return bad;
        if (name !== this.#c.masterName) return noSuchMaster();
        const v = await this.#primary();
        if (!v.shown) return noSuchMaster();
        return this.#masterFields(v, await this.#memberList());
      }
      case "masters": {
        if (a.length !== 1) return arity("sentinel|masters");
        const v = await this.#primary();
        return R.array(v.shown ? [this.#masterFields(v, await this.#memberList())] : []);
      }
      case "replicas":
      case "slaves": {
        const bad = needsName(2);
        if (bad) return bad;
        if (name !== this.#c.masterName) return noSuchMaster();
        return R.array(this.#replicas(this.#view, await this.#memberList()).map(([, f]) => R.fields(f)));
      }
      case "sentinels": {
        const bad = needsName(2);
        if (bad) return bad;
        if (name !== this.#c.masterName) return noSuchMaster();
        return R.array(this.#sentinels(await this.#memberList()).map((f) => R.fields(f)));
      }
      case "myid":
        return a.length === 1 ? R.bulk(this.#myId) : arity("sentinel|myid");
      case "ckquorum": {
        const bad = needsName(2);
        if (bad) return bad;
        if (name !== this.#c.masterName) return noSuchMaster();
        const usable = this.#sentinels(await this.#memberList()).length + 1;
        return R.simple(`OK ${usable} usable Sentinels. Quorum and failover authorization can be reached`);
      }
      case "help":
        return R.strings([
          "SENTINEL <subcommand> [<arg> ...]. consul-leader answers:",
          "GET-MASTER-ADDR-BY-NAME <name>", "MASTER <name>", "MASTERS", "REPLICAS <name>", "SLAVES <name>",
          "SENTINELS <name>", "MYID", "CKQUORUM <name>", "HELP",
        ]);
      default: {
        const why = UNSUPPORTED_SENTINEL[sub];
        if (why) return R.error(`ERR SENTINEL ${sub.toUpperCase()} is not supported by consul-leader: ${why}`);
        return R.error(`ERR unknown subcommand '${a[0]!.toString("latin1").slice(0, 128)}'. Try SENTINEL HELP.`);
      }
    }
  }

  /**
   * The view for a query naming the primary: at once when a primary is
   * current; during a failover, as soon as one is, or after `waitMs`.
   */
  async #primary(): Promise<PrimaryView> {
    if (!this.#view.failover || this.#c.waitMs <= 0 || this.#stopped) return this.#view;
    await new Promise<void>((resolve) => {
      let t: { cancel(): void } | undefined;
      const done = () => {
        t?.cancel();
        this.#waiters.delete(done);
        resolve();
      };
      this.#waiters.add(done);
      t = this.#d.clock.timer(this.#c.waitMs, done);
    });
    return this.#view;
  }

  async #memberList(): Promise<MemberEntry[]> {
    const now = this.#d.clock.monotonic();
    if (this.#members && now - this.#members.at < MEMBERS_TTL_MS) return this.#members.entries;
    this.#fetching ??= this.#d.members()
      .then((entries) => {
        this.#members = { at: this.#d.clock.monotonic(), entries };
        return entries;
      })
      .catch((err: unknown) => {
        this.#d.log.debug("sentinel endpoint could not read the members; using the last list", { err });
        return this.#members?.entries ?? [];
      })
      .finally(() => (this.#fetching = undefined));
    return await this.#fetching;
  }

  #masterFields(v: PrimaryView, members: MemberEntry[]): Reply {
    const shown = v.shown!;
    const flags = ["master", ...(v.down ? ["s_down", "o_down"] : []), ...(v.failover ? ["failover_in_progress"] : [])].join(",");
    const others = this.#sentinels(members).length;
    const f: [string, string][] = [
      ["name", this.#c.masterName],
      ["ip", shown.host],
      ["port", String(shown.port)],
      ["runid", this.#primaryRunId(v)],
      ["flags", flags],
      ...LINK_FIELDS,
      ...(v.down ? [["s-down-time", "0"], ["o-down-time", "0"]] as [string, string][] : []),
      ["down-after-milliseconds", String(this.#c.downAfterMs)],
      ["info-refresh", "0"],
      ["role-reported", "master"],
      ["role-reported-time", "0"],
      ["config-epoch", String(v.epoch)],
      ["num-slaves", String(this.#replicas(v, members).length)],
      ["num-other-sentinels", String(others)],
      ["quorum", String(Math.floor((others + 1) / 2) + 1)],
      ["failover-timeout", "0"],
      ["parallel-syncs", "1"],
    ];
    return R.fields(f);
  }

  #primaryRunId(v: PrimaryView): string {
    const value = this.#d.facts().lock?.value;
    return value?.address && v.shown && value.address === formatHostPort(v.shown) ? value.runId ?? "" : "";
  }

  /** Every member's Redis but the primary shown, as Sentinel describes replicas. */
  #replicas(v: PrimaryView, members: MemberEntry[]): [string, [string, string][]][] {
    const primary = v.shown ? formatHostPort(v.shown) : null;
    const out: [string, [string, string][]][] = [];
    for (const e of members) {
      const m = e.member;
      const addr = m.address ? parseHostPort(m.address) : undefined;
      if (!addr || m.address === primary) continue;
      const down = !e.session || !m.redisUp;
      const following = m.role === "follower" && !down;
      out.push([m.address!, [
        ["name", formatHostPort(addr)],
        ["ip", addr.host],
        ["port", String(addr.port)],
        ["runid", ""],
        ["flags", down ? "slave,s_down,disconnected" : "slave"],
        ...LINK_FIELDS,
        ["down-after-milliseconds", String(this.#c.downAfterMs)],
        ["info-refresh", "0"],
        ["role-reported", "slave"],
        ["role-reported-time", "0"],
        ["master-link-down-time", "0"],
        ["master-link-status", following ? "ok" : "err"],
        ["master-host", v.shown?.host ?? "?"],
        ["master-port", String(v.shown?.port ?? 0)],
        ["slave-priority", String(m.priority)],
        ["slave-repl-offset", String(m.offset)],
        ["replica-announced", "1"],
      ]]);
    }
    return out;
  }

  /** The other live members' endpoints, as Sentinel describes its peers. */
  #sentinels(members: MemberEntry[]): [string, string][][] {
    const self = formatHostPort(this.#c.announce);
    const out: [string, string][][] = [];
    for (const e of members) {
      const m = e.member;
      const addr = m.sentinel ? parseHostPort(m.sentinel) : undefined;
      if (!addr || !e.session || m.instance === this.#c.instance || m.sentinel === self) continue;
      const id = sentinelId(m.instance);
      out.push([
        ["name", id],
        ["ip", addr.host],
        ["port", String(addr.port)],
        ["runid", id],
        ["flags", "sentinel"],
        ...LINK_FIELDS,
        ["down-after-milliseconds", String(this.#c.downAfterMs)],
        ["last-hello-message", "0"],
        ["voted-leader", "?"],
        ["voted-leader-epoch", "0"],
      ]);
    }
    return out;
  }

  async #info(sections: string[]): Promise<string> {
    const all = sections.length === 0 || sections.some((s) => s === "all" || s === "default" || s === "everything");
    const want = (s: string) => all || sections.includes(s);
    const parts: string[] = [];
    const v = this.#view;
    if (want("server")) {
      parts.push([
        "# Server",
        `redis_version:${EMULATED_REDIS_VERSION}`,
        "redis_mode:sentinel",
        `consul_leader_version:${this.#c.version}`,
        `process_id:${this.#c.pid}`,
        `run_id:${this.#myId}`,
        `tcp_port:${this.#c.announce.port}`,
        `uptime_in_seconds:${Math.floor((this.#d.clock.monotonic() - this.#startedAt) / 1000)}`,
      ].join("\r\n"));
    }
    if (want("clients")) parts.push(`# Clients\r\nconnected_clients:${this.#conns.size}`);
    if (want("sentinel")) {
      const members = await this.#memberList();
      const status = v.down ? "odown" : "ok";
      const master = v.shown
        ? `master0:name=${this.#c.masterName},status=${status},address=${formatHostPort(v.shown)},slaves=${this.#replicas(v, members).length},sentinels=${this.#sentinels(members).length + 1}`
        : undefined;
      parts.push([
        "# Sentinel",
        `sentinel_masters:${master ? 1 : 0}`,
        "sentinel_tilt:0",
        "sentinel_tilt_since_seconds:-1",
        "sentinel_running_scripts:0",
        "sentinel_scripts_queue_length:0",
        "sentinel_simulate_failure_flags:0",
        ...(master ? [master] : []),
      ].join("\r\n"));
    }
    return parts.join("\r\n\r\n") + "\r\n";
  }

  // ---------------------------------------------------------------- pub/sub

  #subscribe(c: Conn, pattern: boolean, a: Buffer[]): Reply[] {
    if (a.length === 0) return [arity(pattern ? "psubscribe" : "subscribe")];
    const set = pattern ? c.patterns : c.channels;
    const out: Reply[] = [];
    for (const x of a) {
      const ch = x.toString();
      if (ch.length > MAX_CHANNEL) return [...out, R.error(`ERR channel or pattern longer than ${MAX_CHANNEL} bytes`)];
      if (!set.has(ch) && c.channels.size + c.patterns.size >= MAX_SUBSCRIPTIONS) {
        return [...out, R.error(`ERR more than ${MAX_SUBSCRIPTIONS} subscriptions on one connection`)];
      }
      set.add(ch);
      out.push(R.push([R.bulk(pattern ? "psubscribe" : "subscribe"), R.bulk(ch), R.int(c.channels.size + c.patterns.size)]));
    }
    return out;
  }

  #unsubscribe(c: Conn, pattern: boolean, a: Buffer[]): Reply[] {
    const set = pattern ? c.patterns : c.channels;
    const kind = pattern ? "punsubscribe" : "unsubscribe";
    const names = a.length ? a.map((x) => x.toString()) : [...set];
    if (names.length === 0) return [R.push([R.bulk(kind), R.null, R.int(c.channels.size + c.patterns.size)])];
    return names.map((ch) => {
      set.delete(ch);
      return R.push([R.bulk(kind), R.bulk(ch), R.int(c.channels.size + c.patterns.size)]);
    });
  }

  #publish(e: SentinelEvent): void {
    for (const c of this.#conns.values()) {
      if (c.closed) continue;
      if (c.channels.has(e.channel)) this.#send(c, R.push([R.bulk("message"), R.bulk(e.channel), R.bulk(e.message)]));
      for (const p of c.patterns) {
        if (globMatch(p, e.channel)) this.#send(c, R.push([R.bulk("pmessage"), R.bulk(p), R.bulk(e.channel), R.bulk(e.message)]));
      }
    }
  }

  // ---------------------------------------------------------------- output

  #send(c: Conn, r: Reply): void {
    if (c.closed) return;
    const bytes = encode(r, c.proto);
    if (c.out.length === 0) {
      const n = writeSome(c.sock, bytes);
      if (n < 0) return this.#drop(c);
      if (n === bytes.length) return;
      c.out.push(bytes.subarray(n));
      c.outBytes += bytes.length - n;
    } else {
      c.out.push(bytes);
      c.outBytes += bytes.length;
    }
    if (c.outBytes > MAX_OUTPUT) {
      this.#d.log.debug("sentinel client dropped: it does not read its replies", { client: c.id, unsent: c.outBytes });
      this.#drop(c);
    }
  }

  #flush(c: Conn): void {
    while (c.out.length && !c.closed) {
      const head = c.out[0]!;
      const n = writeSome(c.sock, head);
      if (n < 0) return this.#drop(c);
      c.outBytes -= n;
      if (n < head.length) {
        c.out[0] = head.subarray(n);
        return;
      }
      c.out.shift();
    }
    if (c.closing && c.out.length === 0 && !c.closed) this.#drop(c);
  }

  #drop(c: Conn): void {
    if (c.closed) return;
    c.closed = true;
    c.queue.length = 0;
    try {
      c.sock.end();
    } catch {
      // already gone
    }
    this.close(c.sock);
  }

  #passwordMatches(user: string | undefined, pass: Buffer): boolean {
    const ok = digestsEqual(sha256(pass), sha256(this.#c.password ?? "")) && (user === undefined || user === "default");
    if (!ok) {
      const now = this.#d.clock.monotonic();
      this.#authFailures.since++;
      if (now - this.#authFailures.last >= 10_000) {
        this.#d.log.warn("refused a sentinel client: wrong password", { failuresSinceLastLine: this.#authFailures.since });
        this.#authFailures = { last: now, since: 0 };
      }
    }
    return ok;
  }
}

/**
 * The link fields Sentinel reports for every instance it watches. Constant here: the sidecars, not
 * the endpoint, watch Redis; clients parse these as integers (redis-py) but decide nothing on them.
 */
const LINK_FIELDS: readonly [string, string][] = [
  ["link-pending-commands", "0"],
  ["link-refcount", "1"],
  ["last-ping-sent", "0"],
  ["last-ok-ping-reply", "0"],
  ["last-ping-reply", "0"],
];

function writeSome(sock: Socket, bytes: Uint8Array): number {
  try {
    return sock.write(bytes);
  } catch {
    return -1;
  }
}

/** What a request was, for the log: the command, its subcommand or HELLO's version and option names; never other arguments. */
export function requestLabel(args: Buffer[]): string {
  const word = (b: Buffer | undefined) => (b ? b.toString("latin1").toLowerCase().replace(/[^a-z0-9_|.-]/g, "?").slice(0, 32) : "");
  const cmd = word(args[0]);
  if (cmd === "sentinel" || cmd === "client") return `${cmd} ${word(args[1])}`.trim();
  if (cmd === "hello") {
    const opts = args.slice(2).map(word).filter((w) => w === "auth" || w === "setname");
    return ["hello", /^\d$/.test(word(args[1])) ? word(args[1]) : "", ...opts].filter(Boolean).join(" ");
  }
  return cmd;
}

function arity(cmd: string): Reply {
  return R.error(`ERR wrong number of arguments for '${cmd}' command`);
}

function noSuchMaster(): Reply {
  return R.error("ERR No such master with that name");
}

/** Redis's wording, with the arguments quoted and the whole cut at 128 characters. */
function unknownCommand(args: Buffer[]): Reply {
  const name = args[0]!.toString("latin1").slice(0, 128);
  let rest = "";
  for (const a of args.slice(1)) {
    const s = `'${a.toString("latin1").slice(0, 128)}' `;
    if (rest.length + s.length > 128) break;
    rest += s;
  }
  return R.error(`ERR unknown command '${name}', with args beginning with: ${rest}`);
}

/** Client names and library names: printable ASCII without spaces, as Redis requires. */
function validName(s: string): boolean {
  return /^[!-~]*$/.test(s) && s.length <= 256;
}

function clientLine(c: Conn): string {
  const sub = c.channels.size;
  const psub = c.patterns.size;
  return `id=${c.id} addr=${c.sock.remoteAddress ?? "?"} name=${c.name ?? ""} resp=${c.proto} sub=${sub} psub=${psub} lib-name=${c.lib.name ?? ""} lib-ver=${c.lib.ver ?? ""}`;
}

/** A Sentinel-style 40-hex id, stable for an instance ID. */
export function sentinelId(instance: string): string {
  return sha1Hex(`consul-leader-sentinel\0${instance}`);
}
