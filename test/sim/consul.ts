/**
 * A simulated Consul datacenter: the servers (one state store with one Raft
 * index: KV, sessions, catalog, prepared queries) and one client agent per
 * simulated node. It answers the production client (src/consul/client.ts)
 * through its injected `fetch`, unchanged, on the scheduler's time.
 *
 * A request travels process -> agent ("consul/<node>" event) -> servers
 * ("consul" event) -> agent -> process (an event of the requesting process),
 * each hop after a latency drawn from the seed. A caller that gives up (its
 * signal aborts) is forgotten, but a write it already sent is still applied.
 * Agents are client agents, so a server-side error reaches the caller as
 * Consul relays it: 500 "rpc error making call: <error>".
 *
 * Modelled, as Consul 1.22.6 answers (shapes and messages checked against the
 * real binary: a dev server and a client agent joined to it):
 * - KV: get (404 + KV table index when missing), ?recurse, blocking
 *   ?index&wait (held while the result's index <= index, also when the given
 *   index is ahead; wait defaults to 5m, clamped to 10m, plus up to wait/16 of
 *   jitter; a missing key wakes only when it is created); put keeps the
 *   Session but resets LockIndex to 0, no body stores a null Value; ?cas;
 *   ?acquire (lock-delay checked first, then "invalid session"); ?release
 *   (the body replaces the value, no body wipes it); delete (?cas, ?recurse).
 * - Sessions: create/renew/destroy/info; a TTL lapse drawn in [TTL, 2xTTL]
 *   after every create, renew and leader election; invalidation by TTL,
 *   destroy, a bound check (NodeChecks, ServiceChecks; checked in the catalog)
 *   going critical or leaving the catalog; Behavior release/delete; lock-delay
 *   (clamped to 60s) armed on invalidation only, never by release or delete.
 * - Agents: services, TTL checks (re-registering keeps a check's status and
 *   output), hash-blocking GET of a service (at the wait it answers what it
 *   computed before waiting, as LocalBlockingQuery does), the filters the
 *   sidecar sends, maintenance checks, DeregisterCriticalServiceAfter (reaped
 *   every 30s), and anti-entropy: a change is synced right away, a check's
 *   status change pushes its service along (consul#2174: stale tags come
 *   back), output-only changes wait for the full sync, and the full sync
 *   (every 1-2 min) copies catalog tags into EnableTagOverride services
 *   without waking blocking GETs.
 * - Catalog and health reads with a serfHealth check per node (a service's
 *   instances, blocking on that service; a node's checks with a filter,
 *   blocking on that node's checks); catalog register.
 * - Faults: agent down/up (connections refused or reset; serf marks the node
 *   failed after 3-10s), partition/heal (the node is cut off from the servers
 *   and the other nodes: agent endpoints still answer; server calls hang or
 *   fail fast until the agent's serf marks the servers failed after 3-10s,
 *   then "No known Consul servers"; the servers mark the node failed then too),
 *   leader election (requests held up to rpc_hold_timeout, then "No cluster
 *   leader"; session timers restart afterwards), random server errors (maybe
 *   after applying the write), extra latency, operator writes.
 *
 * Deliberately not modelled: ACLs, namespaces/partitions, other datacenters,
 * stale reads and replication lag (every read sees the leader's state),
 * non-TTL checks, /v1/txn beyond the two KV verbs the sidecar sends
 * (check-not-exists, lock), session list/node endpoints, prepared query
 * execution and DNS, gossip beyond each node's serfHealth, blocking on
 * endpoints the sidecar never blocks on, and Consul's per-service watch
 * granularity (a health watch may wake on an unrelated catalog change; Consul
 * allows spurious returns).
 */

import type { FetchLike } from "../../src/consul/client.ts";
import type { Handle, Scheduler } from "./scheduler.ts";

const VERSION = "1.22.6";
const TTL_MIN_MS = 10_000; // session_ttl_min
const TTL_MAX_MS = 86_400_000;
const MAX_LOCK_DELAY_MS = 60_000;
const DEFAULT_LOCK_DELAY_MS = 15_000;
const DEFAULT_WAIT_MS = 300_000; // default_query_time
const MAX_WAIT_MS = 600_000; // max_query_time
const RPC_CLIENT_TIMEOUT_MS = 60_000; // rpc_client_timeout
const MAX_VALUE_BYTES = 512 * 1024; // kv_max_value_size
const DCSA_MIN_MS = 60_000; // check_deregister_interval_min
const REAP_EVERY_MS = 30_000; // check_reap_interval
const SERVER_ADDR = "10.0.0.250:8300";

interface Reply { status: number; body: string; headers?: Record<string, string> }

/** One HTTP request from a process to its node's agent. */
interface Req {
  owner: string;
  method: string;
  path: string;
  q: URLSearchParams;
  body: string | undefined;
  done: boolean;
  /** Forgets a parked request (blocking query, hung RPC) when the caller gives up. */
  cancel?: () => void;
  /** Drops it from its agent's in-flight set once settled. */
  release?: () => void;
  resolve(r: Reply): void;
  reject(err: unknown): void;
}

/** As Consul answers it; Value is base64 or null. */
interface KvEntry { LockIndex: number; Key: string; Flags: number; Value: string | null; Session?: string; CreateIndex: number; ModifyIndex: number }

interface Session {
  ID: string; Name: string; Node: string; Behavior: "release" | "delete"; TTL: string;
  /** Nanoseconds, as given (clamped to 60s only when applied). */
  LockDelay: number;
  NodeChecks: string[]; ServiceChecks: { ID: string; Namespace: string }[] | null; CreateIndex: number; ModifyIndex: number;
  ttlMs: number; expiresAt?: number; timer?: Handle;
}

interface ServiceDef {
  ID: string; Service: string; Tags: string[]; Meta: Record<string, string>; Port: number; Address: string;
  TaggedAddresses?: Record<string, unknown>; Weights: { Passing: number; Warning: number }; EnableTagOverride: boolean; Kind?: string;
}

interface Check { CheckID: string; Name: string; Status: string; Notes: string; Output: string; ServiceID: string; Type: string }
interface LocalCheck extends Check { ttlMs: number; dcsaMs: number; criticalSince?: number; deadline?: number; timer?: Handle }
interface CatCheck extends Check { ServiceName: string; CreateIndex: number; ModifyIndex: number }

interface CatNode {
  node: string; address: string; id: string; CreateIndex: number;
  services: Map<string, { def: ServiceDef; CreateIndex: number; ModifyIndex: number }>;
  checks: Map<string, CatCheck>;
}

interface Agent {
  node: string; address: string; id: string; up: boolean;
  /** Bumped on every restart: answers for an older incarnation's connections are lost. */
  epoch: number;
  partitioned: boolean;
  /** When a partitioned agent's serf marks the servers failed ("No known Consul servers"). */
  detectAt: number;
  extraMs: number;
  services: Map<string, ServiceDef>;
  checks: Map<string, LocalCheck>;
  /** "svc:<id>" / "chk:<id>" changed since the last sync. */
  dirty: Set<string>;
  syncQueued: boolean;
  aeTimer?: Handle;
  reapTimer?: Handle;
  /** Requests this incarnation accepted and has not answered: reset when it dies. */
  inflight: Set<Req>;
}

/** A parked blocking query. */
interface Waiter {
  wants(topic: string): boolean;
  /** Re-runs the query; an answer when it changed. */
  check(): Reply | undefined;
  answer(r: Reply): void;
  timer: Handle;
}

interface Query { ID: string; Name: string; Service: Record<string, unknown>; DNS: { TTL: string }; CreateIndex: number; ModifyIndex: number }

export interface FailureOptions {
  /** Fraction of server requests that fail. */
  rate: number;
  statuses?: number[];
  /** Probability that a failing write is applied before the error is returned. */
  applyWritesFirst?: number;
}

export interface ServiceView {
  node: string;
  id: string;
  tags: string[];
  meta: Record<string, string>;
  passing: boolean;
  checks: { id: string; status: string }[];
}

export class SimConsul {
  readonly datacenter: string;
  /** rpc_hold_timeout: how long a request waits for a leader before "No cluster leader". */
  rpcHoldMs = 7000;
  /** Anti-entropy full sync period of every agent (plus up to as much again of stagger). */
  aeIntervalMs = 60_000;

  readonly #s: Scheduler;
  #index = 0;
  #kvIndex = 0;
  #sessionsIndex = 0;
  #servicesIndex = 0;
  #queriesIndex = 0;
  readonly #kv = new Map<string, KvEntry>();
  readonly #tombstones = new Map<string, number>();
  readonly #lockDelay = new Map<string, number>();
  readonly #sessions = new Map<string, Session>();
  readonly #catalog = new Map<string, CatNode>();
  readonly #svcIndex = new Map<string, number>();
  /** Per node: the index of the last change to its checks (GET /v1/health/node/<node> blocks on it). */
  readonly #nodeIndex = new Map<string, number>();
  readonly #queries: Query[] = [];
  readonly #agents = new Map<string, Agent>();
  readonly #waiters = new Set<Waiter>();
  #touched: string[] = [];
  #electionUntil = -1;
  #failure: Required<FailureOptions> | undefined;

  constructor(sched: Scheduler, opts: { nodes: string[]; datacenter?: string }) {
    this.#s = sched;
    this.datacenter = opts.datacenter ?? "dc1";
    for (const n of opts.nodes) this.addNode(n);
  }

  /** Adds a node with a running agent, registered in the catalog with serfHealth passing. */
  addNode(node: string): void {
    if (this.#agents.has(node)) return;
    const address = `10.0.0.${this.#agents.size + 1}`;
    const a: Agent = { node, address, id: this.#s.rng.uuid(), up: true, epoch: 0, partitioned: false, detectAt: 0, extraMs: 0, services: new Map(), checks: new Map(), dirty: new Set(), syncQueued: false, inflight: new Set() };
    this.#agents.set(node, a);
    const idx = this.#bump();
    this.#catalog.set(node, { node, address, id: a.id, services: new Map(), checks: new Map(), CreateIndex: idx });
    this.#serf(node, "passing");
    this.#startAgentTimers(a);
  }

  /** The `fetch` a process on `node` uses to reach its local agent; answers are events of `owner`. */
  fetchFor(owner: string, node: string): FetchLike {
    return (url, init) => this.#fetch(owner, node, url, init) as Promise<Response>;
  }

  // ---- faults (each takes effect when called)

  agentDown(node: string): void {
    const a = this.#agent(node);
    if (!a.up) return;
    a.up = false;
    a.epoch++;
    a.aeTimer?.cancel();
    a.reapTimer?.cancel();
    for (const c of a.checks.values()) c.timer?.cancel();
    // The process died: every connection to it is reset.
    for (const r of a.inflight) {
      r.cancel?.();
      this.#s.at(this.#agentHop(a), r.owner, () => r.reject(reset()));
    }
    a.inflight.clear();
    this.#s.at(this.#s.rng.between(3000, 10_000), "consul", () => this.#run(() => !a.up && this.#serf(node, "critical")));
    this.#flush();
  }

  agentUp(node: string, opts: { keepState: boolean }): void {
    const a = this.#agent(node);
    if (a.up) return;
    a.up = true;
    a.epoch++;
    if (!opts.keepState) {
      a.services.clear();
      a.checks.clear();
    }
    // Persisted TTL checks come back as they were unless their TTL ran out
    // meanwhile (then critical, no output); either way with a full TTL.
    for (const c of a.checks.values()) {
      if (c.Type !== "ttl") continue;
      if ((c.deadline ?? 0) <= this.#s.now) this.#setCheck(a, c, "critical", "");
      this.#armCheck(a, c, c.ttlMs);
    }
    this.#startAgentTimers(a);
    if (!a.partitioned) this.#serf(node, "passing");
    this.#syncAgent(a, true);
    this.#flush();
  }

  partition(node: string): void {
    const a = this.#agent(node);
    if (a.partitioned) return;
    a.partitioned = true;
    a.detectAt = this.#s.now + this.#s.rng.between(3000, 10_000);
    this.#s.at(a.detectAt - this.#s.now, "consul", () => this.#run(() => a.partitioned && this.#serf(node, "critical")));
  }

  heal(node: string): void {
    const a = this.#agent(node);
    if (!a.partitioned) return;
    a.partitioned = false;
    if (a.up) this.#serf(node, "passing");
    this.#s.at(this.#s.rng.between(0, 2000), `consul/${node}`, () => this.#run(() => this.#syncAgent(a, true)));
    this.#flush();
  }

  /** No leader for `durationMs`: requests are held (then fail); session timers restart afterwards. */
  serverElection(durationMs: number): void {
    const until = this.#s.now + durationMs;
    this.#electionUntil = Math.max(this.#electionUntil, until);
    for (const s of this.#sessions.values()) {
      s.timer?.cancel();
      delete s.expiresAt;
    }
    this.#s.at(durationMs, "consul", () =>
      this.#run(() => {
        if (this.#s.now < this.#electionUntil) return;
        for (const s of this.#sessions.values()) this.#armTtl(s);
        for (const a of this.#agents.values()) if (a.up && a.dirty.size > 0) this.#syncAgent(a, false);
      }));
  }

  failRandomly(opts: FailureOptions | undefined): void {
    this.#failure = opts ? { rate: opts.rate, statuses: opts.statuses ?? [500], applyWritesFirst: opts.applyWritesFirst ?? 0 } : undefined;
  }

  slow(node: string, extraMs: number): void {
    this.#agent(node).extraMs = extraMs;
  }

  // ---- operator actions

  destroySession(id: string): void {
    const s = this.#sessions.get(id);
    if (s) this.#invalidate(s);
    this.#flush();
  }

  deleteKey(key: string): void {
    this.#kvDelete(key, false, undefined);
    this.#flush();
  }

  /** A plain PUT, as `consul kv put` does: keeps the Session, resets LockIndex. */
  putKey(key: string, text: string): void {
    this.#kvSet(key, b64(text), 0, undefined);
    this.#flush();
  }

  /** `consul maint`: node maintenance, or a service's with `serviceId`. */
  maintenance(node: string, enable: boolean, opts: { serviceId?: string; reason?: string } = {}): void {
    const a = this.#agent(node);
    const id = opts.serviceId ? `_service_maintenance:${opts.serviceId}` : "_node_maintenance";
    if (enable) {
      const name = opts.serviceId ? "Service Maintenance Mode" : "Node Maintenance Mode";
      a.checks.set(id, { CheckID: id, Name: name, Status: "critical", Notes: opts.reason ?? "", Output: "", ServiceID: opts.serviceId ?? "", Type: "maintenance", ttlMs: 0, dcsaMs: 0 });
    } else a.checks.delete(id);
    a.dirty.add(`chk:${id}`);
    this.#queueSync(a);
    this.#flush();
  }

  // ---- read-only views for the invariant checker (no latency)

  get raftIndex(): number {
    return this.#index;
  }

  kvGet(key: string): { Key: string; Value: string | null; Flags: number; Session?: string; CreateIndex: number; ModifyIndex: number; LockIndex: number } | null {
    const e = this.#kv.get(key);
    return e ? { ...e, Value: e.Value === null ? null : Buffer.from(e.Value, "base64").toString("utf8") } : null;
  }

  /** When acquires of `key` start succeeding again, if a lock-delay is armed. */
  lockDelayUntil(key: string): number | undefined {
    const t = this.#lockDelay.get(key);
    return t !== undefined && t > this.#s.now ? t : undefined;
  }

  sessions(): { ID: string; Name: string; Node: string; TTL: string; ttlMs: number; lockDelayMs: number; Behavior: string; expiresAt?: number }[] {
    return [...this.#sessions.values()].map((s) => ({ ID: s.ID, Name: s.Name, Node: s.Node, TTL: s.TTL, ttlMs: s.ttlMs, lockDelayMs: s.LockDelay / 1e6, Behavior: s.Behavior, ...(s.expiresAt !== undefined ? { expiresAt: s.expiresAt } : {}) }));
  }

  /** Catalog view of every instance of `name`, with its checks (node checks included). */
  servicesNamed(name: string): ServiceView[] {
    return this.#instances(name, undefined).map(({ cn, def, checks }) => ({
      node: cn.node,
      id: def.ID,
      tags: [...def.Tags],
      meta: { ...def.Meta },
      passing: checks.every((c) => c.Status === "passing"),
      checks: checks.map((c) => ({ id: c.CheckID, status: c.Status })),
    }));
  }

  /** What GET /v1/health/service/<name>?passing&tag=<tag> answers now. */
  discoveredPrimaries(name: string, tag: string): { node: string; id: string; address: string; port: number }[] {
    return this.#instances(name, tag)
      .filter((i) => i.checks.every((c) => c.Status === "passing"))
      .map(({ cn, def }) => ({ node: cn.node, id: def.ID, address: def.Address || cn.address, port: def.Port }));
  }

  /** The agent's own view of a service (what GET /v1/agent/service/<id> answers), or null. */
  agentService(node: string, id: string): ServiceDef | null {
    const d = this.#agent(node).services.get(id);
    return d ? structuredClone(d) : null;
  }

  // ---- transport

  #fetch(owner: string, node: string, url: string, init: RequestInit): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const signal = init.signal ?? undefined;
      if (signal?.aborted) return reject(signal.reason);
      const u = new URL(url);
      const onAbort = () => {
        if (req.done) return;
        req.done = true;
        req.cancel?.();
        req.release?.();
        reject(signal!.reason);
      };
      const settle = () => {
        req.done = true;
        req.release?.();
        signal?.removeEventListener("abort", onAbort);
      };
      const req: Req = {
        owner,
        method: init.method ?? "GET",
        path: u.pathname,
        q: u.searchParams,
        body: typeof init.body === "string" ? init.body : undefined,
        done: false,
        resolve: (r) => {
          if (req.done) return;
          settle();
          resolve(response(r));
        },
        reject: (err) => {
          if (req.done) return;
          settle();
          reject(err);
        },
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      const a = this.#agents.get(node);
      if (!a) return void this.#s.at(this.#s.rng.between(0.1, 1), owner, () => req.reject(refused(url)));
      const epoch = a.epoch;
      this.#s.at(this.#agentHop(a), `consul/${node}`, () => this.#run(() => this.#atAgent(req, a, epoch, url)));
    });
  }

  /** A caller that gave up is forgotten for reads; a write it sent is still applied. */
  #atAgent(req: Req, a: Agent, epoch: number, url: string): void {
    if (req.done && req.method === "GET") return;
    if (!a.up || a.epoch !== epoch) return void this.#s.at(this.#agentHop(a), req.owner, () => req.reject(refused(url)));
    a.inflight.add(req);
    req.release = () => a.inflight.delete(req);
    if (req.path.startsWith("/v1/agent/")) {
      const r = this.#agentEndpoint(req, a);
      if (r) this.#agentReply(req, a, r);
      return;
    }
    this.#forward(req, a);
  }

  #agentReply(req: Req, a: Agent, r: Reply): void {
    if (!a.inflight.delete(req)) return;
    this.#s.at(this.#agentHop(a), req.owner, () => req.resolve(r));
  }

  /** An agent that cannot reach the servers: hangs until its RPC deadline, fails fast once serf gave up. */
  #forward(req: Req, a: Agent): void {
    const rng = this.#s.rng;
    if (a.partitioned) {
      if (this.#s.now >= a.detectAt) return this.#agentReply(req, a, rpcErr("No known Consul servers", false));
      if (rng.chance(0.3)) {
        const msg = rng.pick(["rpc error making call: EOF", `rpc error getting client: failed to get conn: dial tcp ${SERVER_ADDR}: i/o timeout`]);
        const h = this.#s.at(rng.between(1, 50), `consul/${a.node}`, () => this.#agentReply(req, a, rpcErr(msg, false)));
        req.cancel = () => h.cancel();
        return;
      }
      return this.#hang(req, a);
    }
    const epoch = a.epoch;
    this.#s.at(this.#serverHop(), "consul", () => this.#run(() => this.#atServer(req, a, epoch)));
  }

  #hang(req: Req, a: Agent): void {
    const blocking = req.q.has("index") || req.q.has("hash");
    const h = this.#s.at(RPC_CLIENT_TIMEOUT_MS + (blocking ? waitOf(req.q) : 0), `consul/${a.node}`, () => this.#agentReply(req, a, rpcErr("rpc error making call: i/o deadline reached", false)));
    req.cancel = () => h.cancel();
  }

  /** The answer travels back through the agent; lost if the agent died or was cut off meanwhile. */
  #serverReply(req: Req, a: Agent, epoch: number, r: Reply): void {
    this.#s.at(this.#serverHop(), `consul/${a.node}`, () => {
      if (req.done || !a.up || a.epoch !== epoch) return;
      if (a.partitioned) return this.#hang(req, a);
      this.#agentReply(req, a, r);
    });
  }

  #atServer(req: Req, a: Agent, epoch: number, arrived = this.#s.now): void {
    if (req.done && req.method === "GET") return;
    if (this.#s.now < this.#electionUntil) {
      const giveUp = arrived + this.rpcHoldMs;
      if (this.#s.now >= giveUp) return this.#serverReply(req, a, epoch, rpcErr("No cluster leader"));
      const h = this.#s.at(Math.min(this.#electionUntil, giveUp) - this.#s.now, "consul", () => this.#run(() => this.#atServer(req, a, epoch, arrived)));
      if (req.method === "GET") req.cancel = () => h.cancel();
      return;
    }
    const f = this.#failure;
    if (f && this.#s.rng.chance(f.rate)) {
      const applied = req.method !== "GET" && this.#s.rng.chance(f.applyWritesFirst);
      if (applied) this.#serverEndpoint(req, a, () => {});
      const status = this.#s.rng.pick(f.statuses);
      const msg = status !== 500 ? `injected ${status}` : applied ? "leadership lost while committing log" : "EOF";
      return this.#serverReply(req, a, epoch, { status, body: status === 500 ? `rpc error making call: ${msg}` : msg });
    }
    const r = this.#serverEndpoint(req, a, (late) => this.#serverReply(req, a, epoch, late));
    if (r) this.#serverReply(req, a, epoch, r);
  }

  #agentHop(a: Agent): number {
    return this.#s.rng.between(0.3, 3) + a.extraMs;
  }

  #serverHop(): number {
    return this.#s.rng.between(0.5, 5);
  }

  /** Runs a state change, then wakes the blocking queries it concerns. */
  #run(fn: () => unknown): void {
    fn();
    this.#flush();
  }

  #touch(topic: string): void {
    this.#touched.push(topic);
  }

  #flush(): void {
    while (this.#touched.length > 0) {
      const topics = this.#touched;
      this.#touched = [];
      for (const w of [...this.#waiters]) {
        if (!topics.some((t) => w.wants(t))) continue;
        const r = w.check();
        if (!r) continue;
        this.#waiters.delete(w);
        w.timer.cancel();
        w.answer(r);
      }
    }
  }

  /**
   * A blocking query: answers at once when `changed(read())`, else holds until
   * a wanted topic changes and the query, re-run, has changed, or until the
   * wait (plus up to wait/16 of jitter) passes. At the wait, a server answers
   * its current state; an agent answers the result of the query's last run
   * (LocalBlockingQuery returns what it computed before it started waiting).
   */
  #park(req: Req, owner: string, wants: (t: string) => boolean, read: () => Reply, changed: (r: Reply) => boolean, answer: (r: Reply) => void, lastOnTimeout = false): Reply | undefined {
    let last = read();
    if (changed(last)) return last;
    const wait = waitOf(req.q);
    const w: Waiter = {
      wants,
      check: () => {
        last = read();
        return changed(last) ? last : undefined;
      },
      answer,
      timer: this.#s.at(wait + this.#s.rng.between(0, wait / 16), owner, () => {
        this.#waiters.delete(w);
        answer(lastOnTimeout ? last : read());
      }),
    };
    this.#waiters.add(w);
    req.cancel = () => {
      this.#waiters.delete(w);
      w.timer.cancel();
    };
    return undefined;
  }

  /** Index-based blocking: held while the answer's X-Consul-Index <= ?index. */
  #blockOnIndex(req: Req, wants: (t: string) => boolean, read: () => Reply, answer: (r: Reply) => void): Reply | undefined {
    const min = Number(req.q.get("index") ?? 0);
    if (!(min > 0)) return read();
    return this.#park(req, "consul", wants, read, (r) => Number(r.headers?.["X-Consul-Index"] ?? 0) > min, answer);
  }

  // ---- server endpoints

  #serverEndpoint(req: Req, a: Agent, late: (r: Reply) => void): Reply | undefined {
    const { method: m, path: p } = req;
    if (p.startsWith("/v1/kv/")) {
      const key = decodeURIComponent(p.slice("/v1/kv/".length));
      if (m === "GET") {
        const recurse = req.q.has("recurse");
        const wants = (t: string) => t.startsWith("kv:") && (recurse ? t.slice(3).startsWith(key) : t.slice(3) === key);
        return this.#blockOnIndex(req, wants, () => this.#kvRead(key, recurse), late);
      }
      if (m === "PUT") return this.#kvPutEndpoint(req, key);
      if (m === "DELETE") {
        const cas = req.q.get("cas");
        return bool(this.#kvDelete(key, req.q.has("recurse"), cas === null ? undefined : Number(cas)));
      }
    }
    if (m === "PUT" && p === "/v1/txn") return this.#txn(req);
    if (m === "PUT" && p === "/v1/session/create") return this.#sessionCreate(req, a);
    if (m === "PUT" && p.startsWith("/v1/session/renew/")) return this.#sessionRenew(p.slice("/v1/session/renew/".length));
    if (m === "PUT" && p.startsWith("/v1/session/destroy/")) {
      const s = this.#sessions.get(p.slice("/v1/session/destroy/".length));
      this.#bump();
      if (s) this.#invalidate(s);
      return json(true);
    }
    if (m === "GET" && p.startsWith("/v1/session/info/")) {
      const s = this.#sessions.get(p.slice("/v1/session/info/".length));
      return json(s ? [sessionJson(s)] : [], { "X-Consul-Index": String(Math.max(1, this.#sessionsIndex)) });
    }
    if (m === "GET" && p.startsWith("/v1/health/service/")) {
      const name = decodeURIComponent(p.slice("/v1/health/service/".length));
      const tag = req.q.get("tag") ?? undefined;
      const passing = req.q.has("passing");
      return this.#blockOnIndex(req, (t) => t === `health:${name}`, () => this.#healthRead(name, tag, passing), late);
    }
    if (m === "GET" && p.startsWith("/v1/catalog/service/")) {
      const name = decodeURIComponent(p.slice("/v1/catalog/service/".length));
      return this.#blockOnIndex(req, (t) => t === `health:${name}`, () => this.#catalogRead(name, req.q.get("tag") ?? undefined), late);
    }
    if (m === "GET" && p.startsWith("/v1/health/node/")) {
      const node = decodeURIComponent(p.slice("/v1/health/node/".length));
      const f = compileFilter(req.q.get("filter"));
      if (typeof f === "string") return { status: 400, body: f };
      const read = (): Reply => {
        const cn = this.#catalog.get(node);
        const rows = cn ? [...cn.checks.values()].map((c) => ({ Node: node, ...c })).filter(f) : [];
        return json(rows, { "X-Consul-Index": String(Math.max(1, this.#nodeIndex.get(node) ?? cn?.CreateIndex ?? 1)) });
      };
      return this.#blockOnIndex(req, (t) => t === `node:${node}`, read, late);
    }
    if (m === "PUT" && p === "/v1/catalog/register") return this.#catalogRegister(req);
    if (p === "/v1/query" && m === "GET") return json(this.#queries.map(queryJson), { "X-Consul-Index": String(Math.max(1, this.#queriesIndex)) });
    if (p === "/v1/query" && m === "POST") return this.#queryWrite(req, undefined);
    if (p.startsWith("/v1/query/") && m === "PUT") return this.#queryWrite(req, decodeURIComponent(p.slice("/v1/query/".length)));
    return { status: 404, body: "404 page not found\n" };
  }

  // ---- KV

  #kvRead(key: string, recurse: boolean): Reply {
    const missing = { status: 404, body: "", headers: { "X-Consul-Index": String(Math.max(1, this.#kvIndex)) } };
    if (!recurse) {
      const e = this.#kv.get(key);
      return e ? json([e], { "X-Consul-Index": String(e.ModifyIndex) }) : missing;
    }
    const es = [...this.#kv.values()].filter((e) => e.Key.startsWith(key)).sort((x, y) => (x.Key < y.Key ? -1 : 1));
    if (es.length === 0) return missing;
    let idx = Math.max(...es.map((e) => e.ModifyIndex));
    for (const [k, i] of this.#tombstones) if (k.startsWith(key)) idx = Math.max(idx, i);
    return json(es, { "X-Consul-Index": String(idx) });
  }

  #kvPutEndpoint(req: Req, key: string): Reply {
    if (key === "") return { status: 400, body: "Missing key name" };
    const size = Buffer.byteLength(req.body ?? "");
    if (size > MAX_VALUE_BYTES) return { status: 413, body: `Request body(${size} bytes) too large, max size: ${MAX_VALUE_BYTES} bytes. See https://developer.hashicorp.com/docs/agent/config/config-files#kv_max_value_size.` };
    const value = req.body ? b64(req.body) : null;
    const flags = Number(req.q.get("flags") ?? 0) || 0;
    const q = req.q;
    if (q.has("release")) return bool(this.#kvRelease(key, value, flags, q.get("release") ?? ""));
    if (q.has("acquire")) {
      const r = this.#kvAcquire(key, value, flags, q.get("acquire") ?? "");
      return typeof r === "string" ? rpcErr(r) : bool(r);
    }
    const cas = q.get("cas");
    return bool(this.#kvSet(key, value, flags, cas === null ? undefined : Number(cas)));
  }

  /** Lock-delay is checked before the Raft apply (kvsPreApply), the session inside it. */
  #kvAcquire(key: string, value: string | null, flags: number, sid: string): boolean | string {
    if (this.lockDelayUntil(key) !== undefined) return false;
    if (!sid) return "raft apply failed: missing session";
    if (!this.#sessions.has(sid)) return `raft apply failed: invalid session "${sid}"`;
    const idx = this.#bump();
    const e = this.#kv.get(key);
    if (e?.Session && e.Session !== sid) return false;
    if (e) {
      if (e.Session !== sid) e.LockIndex++;
      Object.assign(e, { Value: value, Flags: flags, Session: sid, ModifyIndex: idx });
    } else this.#kv.set(key, { LockIndex: 1, Key: key, Flags: flags, Value: value, Session: sid, CreateIndex: idx, ModifyIndex: idx });
    this.#kvChanged(key, idx);
    return true;
  }

  /**
   * PUT /v1/txn with the KV verbs the sidecar sends: every operation is
   * checked first and, if one fails, none is applied (409 with the errors by
   * index); "lock" honours lock-delay and needs a live session, as ?acquire.
   */
  #txn(req: Req): Reply {
    let ops: unknown;
    try {
      ops = JSON.parse(req.body ?? "");
    } catch (err) {
      return { status: 400, body: `Failed to parse body: ${(err as Error).message}` };
    }
    if (!Array.isArray(ops)) return { status: 400, body: "Failed to parse body: not a list of operations" };
    const kvs = ops.map((op) => ((op as { KV?: Record<string, unknown> } | null)?.KV ?? {}) as Record<string, unknown>);
    const errors: { OpIndex: number; What: string }[] = [];
    kvs.forEach((kv, i) => {
      const key = String(kv["Key"] ?? "");
      const sid = String(kv["Session"] ?? "");
      if (kv["Verb"] === "check-not-exists") {
        if (this.#kv.has(key)) errors.push({ OpIndex: i, What: `key "${key}" exists` });
      } else if (kv["Verb"] === "lock") {
        if (this.lockDelayUntil(key) !== undefined) errors.push({ OpIndex: i, What: `failed to lock key "${key}" due to lock delay` });
        else if (!this.#sessions.has(sid)) errors.push({ OpIndex: i, What: `invalid session "${sid}"` });
        else if (this.#kv.get(key)?.Session && this.#kv.get(key)?.Session !== sid) errors.push({ OpIndex: i, What: `failed to lock key "${key}", lock is already held` });
      } else {
        errors.push({ OpIndex: i, What: `the simulator does not model the verb ${String(kv["Verb"])}` });
      }
    });
    if (errors.length) return { status: 409, body: JSON.stringify({ Results: null, Errors: errors }) };
    const results: unknown[] = [];
    for (const kv of kvs) {
      if (kv["Verb"] !== "lock") continue;
      const key = String(kv["Key"]);
      this.#kvAcquire(key, typeof kv["Value"] === "string" ? kv["Value"] : null, Number(kv["Flags"] ?? 0) || 0, String(kv["Session"]));
      results.push({ KV: { ...this.#kv.get(key), Value: null } });
    }
    return json({ Results: results, Errors: null });
  }

  /** Only the holder releases; the body replaces the value (no body: null). No lock-delay. */
  #kvRelease(key: string, value: string | null, flags: number, sid: string): boolean {
    const idx = this.#bump();
    const e = this.#kv.get(key);
    if (!e || !sid || e.Session !== sid) return false;
    delete e.Session;
    Object.assign(e, { Value: value, Flags: flags, ModifyIndex: idx });
    this.#kvChanged(key, idx);
    return true;
  }

  /** A plain or check-and-set PUT: keeps the Session, resets LockIndex to 0 (as 1.22.6 does). */
  #kvSet(key: string, value: string | null, flags: number, cas: number | undefined): boolean {
    const idx = this.#bump();
    const e = this.#kv.get(key);
    if (cas !== undefined && (cas === 0 ? e !== undefined : e?.ModifyIndex !== cas)) return false;
    if (e) Object.assign(e, { Value: value, Flags: flags, LockIndex: 0, ModifyIndex: idx });
    else this.#kv.set(key, { LockIndex: 0, Key: key, Flags: flags, Value: value, CreateIndex: idx, ModifyIndex: idx });
    this.#kvChanged(key, idx);
    return true;
  }

  /** Deleting a missing key is true, with or without ?cas; never arms lock-delay. */
  #kvDelete(key: string, recurse: boolean, cas: number | undefined): boolean {
    const idx = this.#bump();
    const e = this.#kv.get(key);
    if (!recurse && cas !== undefined && e && e.ModifyIndex !== cas) return false;
    const keys = recurse ? [...this.#kv.keys()].filter((k) => k.startsWith(key)) : e ? [key] : [];
    for (const k of keys) {
      this.#kv.delete(k);
      this.#tombstones.set(k, idx);
      this.#kvChanged(k, idx);
    }
    return true;
  }

  #kvChanged(key: string, idx: number): void {
    this.#kvIndex = idx;
    this.#touch(`kv:${key}`);
  }

  // ---- sessions

  #sessionCreate(req: Req, a: Agent): Reply {
    const b = parseBody(req.body);
    if (typeof b === "string") return { status: 400, body: `Request decode failed: ${b}` };
    const behavior = (b["Behavior"] as string | undefined) || "release";
    if (behavior !== "release" && behavior !== "delete") return rpcErr(`Invalid Behavior setting '${behavior}'`);
    const ttl = typeof b["TTL"] === "string" ? b["TTL"] : "";
    const ttlMs = ttl ? parseGoDuration(ttl) : 0;
    if (ttlMs === undefined) return rpcErr(`Session TTL '${ttl}' invalid: time: invalid duration "${ttl}"`);
    if (ttlMs !== 0 && (ttlMs < TTL_MIN_MS || ttlMs > TTL_MAX_MS)) return rpcErr(`Invalid Session TTL '${ttlMs * 1e6}', must be between [10s=24h0m0s]`);
    let lockDelayNs = DEFAULT_LOCK_DELAY_MS * 1e6;
    const ld = b["LockDelay"];
    if (typeof ld === "number") lockDelayNs = ld < 1000 ? ld * 1e9 : ld;
    else if (typeof ld === "string") {
      const ms = parseGoDuration(ld);
      if (ms === undefined) return { status: 400, body: `Request decode failed: time: invalid duration "${ld}"` };
      const ns = ms * 1e6;
      lockDelayNs = ns < 1000 ? ns * 1e9 : ns;
    }
    const node = (b["Node"] as string | undefined) || a.node;
    const nodeChecks = (Array.isArray(b["NodeChecks"]) ? b["NodeChecks"] : Array.isArray(b["Checks"]) ? b["Checks"] : ["serfHealth"]) as string[];
    const svcChecks = Array.isArray(b["ServiceChecks"]) ? (b["ServiceChecks"] as { ID: string }[]).map((c) => ({ ID: c.ID, Namespace: "" })) : null;
    const cn = this.#catalog.get(node);
    if (!cn) return rpcErr("apply failed: Missing node registration");
    for (const id of [...nodeChecks, ...(svcChecks ?? []).map((c) => c.ID)]) {
      const c = cn.checks.get(id);
      if (!c) return rpcErr(`apply failed: Missing check '${id}' registration`);
      if (c.Status === "critical") return rpcErr(`apply failed: Check '${id}' is in critical state`);
    }
    const idx = this.#bump();
    const s: Session = { ID: this.#s.rng.uuid(), Name: String(b["Name"] ?? ""), Node: node, LockDelay: lockDelayNs, Behavior: behavior, TTL: ttl, NodeChecks: nodeChecks, ServiceChecks: svcChecks, CreateIndex: idx, ModifyIndex: idx, ttlMs };
    this.#sessions.set(s.ID, s);
    this.#sessionsIndex = idx;
    this.#armTtl(s);
    return json({ ID: s.ID });
  }

  #sessionRenew(id: string): Reply {
    const s = this.#sessions.get(id);
    if (!s) return { status: 404, body: `Session id '${id}' not found` };
    this.#armTtl(s);
    return json([sessionJson(s)]);
  }

  /** Consul promises only that a session does not lapse before its TTL; the leader's timer fires at 2xTTL. */
  #armTtl(s: Session): void {
    s.timer?.cancel();
    if (!s.ttlMs) return;
    const d = this.#s.rng.between(s.ttlMs, 2 * s.ttlMs);
    s.expiresAt = this.#s.now + d;
    s.timer = this.#s.at(d, "consul", () => this.#run(() => this.#sessions.get(s.ID) === s && this.#invalidate(s)));
  }

  /** Destroy, TTL lapse or a bound check: release or delete what it holds, arm lock-delay on each. */
  #invalidate(s: Session): void {
    s.timer?.cancel();
    this.#sessions.delete(s.ID);
    const idx = this.#bump();
    this.#sessionsIndex = idx;
    const delay = Math.min(s.LockDelay / 1e6, MAX_LOCK_DELAY_MS);
    for (const e of [...this.#kv.values()]) {
      if (e.Session !== s.ID) continue;
      if (delay > 0) this.#lockDelay.set(e.Key, this.#s.now + delay);
      if (s.Behavior === "delete") {
        this.#kv.delete(e.Key);
        this.#tombstones.set(e.Key, idx);
      } else {
        delete e.Session;
        e.ModifyIndex = idx;
      }
      this.#kvChanged(e.Key, idx);
    }
    this.#touch(`session:${s.ID}`);
  }

  #invalidateBound(node: string, checkId: string): void {
    for (const s of [...this.#sessions.values()]) {
      if (s.Node === node && (s.NodeChecks.includes(checkId) || (s.ServiceChecks ?? []).some((c) => c.ID === checkId))) this.#invalidate(s);
    }
  }

  // ---- catalog and health

  #instances(name: string, tag: string | undefined): { cn: CatNode; def: ServiceDef; si: { CreateIndex: number; ModifyIndex: number }; checks: CatCheck[] }[] {
    const out = [];
    for (const cn of [...this.#catalog.values()].sort((x, y) => (x.node < y.node ? -1 : 1))) {
      for (const si of [...cn.services.values()].sort((x, y) => (x.def.ID < y.def.ID ? -1 : 1))) {
        if (si.def.Service !== name) continue;
        if (tag !== undefined && !si.def.Tags.some((t) => t.toLowerCase() === tag.toLowerCase())) continue;
        const checks = [...cn.checks.values()].filter((c) => c.ServiceID === "" || c.ServiceID === si.def.ID);
        out.push({ cn, def: si.def, si, checks });
      }
    }
    return out;
  }

  #healthRead(name: string, tag: string | undefined, passing: boolean): Reply {
    const entries = this.#instances(name, tag)
      .filter((i) => !passing || i.checks.every((c) => c.Status === "passing"))
      .map(({ cn, def, si, checks }) => ({
        Node: { ID: cn.id, Node: cn.node, Address: cn.address, Datacenter: this.datacenter, TaggedAddresses: { lan: cn.address, lan_ipv4: cn.address, wan: cn.address, wan_ipv4: cn.address }, Meta: { "consul-network-segment": "", "consul-version": VERSION }, CreateIndex: cn.CreateIndex, ModifyIndex: cn.CreateIndex },
        Service: { ...serviceJson(def), CreateIndex: si.CreateIndex, ModifyIndex: si.ModifyIndex },
        Checks: checks.map((c) => ({ Node: cn.node, ...c, ServiceTags: c.ServiceID ? [...def.Tags] : [], Interval: "", Timeout: "", ExposedPort: 0, Definition: {} })),
      }));
    return json(entries, { "X-Consul-Index": String(this.#svcIdx(name)) });
  }

  #catalogRead(name: string, tag: string | undefined): Reply {
    const rows = this.#instances(name, tag).map(({ cn, def, si }) => ({
      ID: cn.id,
      Node: cn.node,
      Address: cn.address,
      Datacenter: this.datacenter,
      TaggedAddresses: { lan: cn.address, lan_ipv4: cn.address, wan: cn.address, wan_ipv4: cn.address },
      NodeMeta: { "consul-network-segment": "", "consul-version": VERSION },
      ServiceKind: def.Kind ?? "",
      ServiceID: def.ID,
      ServiceName: def.Service,
      ServiceTags: [...def.Tags],
      ServiceAddress: def.Address,
      ServiceTaggedAddresses: def.TaggedAddresses ?? null,
      ServiceWeights: def.Weights,
      ServiceMeta: { ...def.Meta },
      ServicePort: def.Port,
      ServiceEnableTagOverride: def.EnableTagOverride,
      CreateIndex: si.CreateIndex,
      ModifyIndex: si.ModifyIndex,
    }));
    return json(rows, { "X-Consul-Index": String(this.#svcIdx(name)) });
  }

  /** PUT /v1/catalog/register: a catalog-only write; the owning agent's next sync may undo it. */
  #catalogRegister(req: Req): Reply {
    const b = parseBody(req.body);
    if (typeof b === "string") return { status: 400, body: `Request decode failed: ${b}` };
    const node = b["Node"] as string | undefined;
    if (!node) return { status: 400, body: "Must provide node" };
    if (!b["Address"] && !b["SkipNodeUpdate"]) return { status: 400, body: "Must provide address if SkipNodeUpdate is not set" };
    let cn = this.#catalog.get(node);
    if (!cn) {
      cn = { node, address: String(b["Address"] ?? ""), id: this.#s.rng.uuid(), services: new Map(), checks: new Map(), CreateIndex: this.#bump() };
      this.#catalog.set(node, cn);
    }
    const svc = b["Service"] as Record<string, unknown> | undefined;
    if (svc) {
      if (!svc["Service"]) return { status: 400, body: "Must provide service name (Service.Service) with ID" };
      this.#catPutService(cn, toDef(svc, String(svc["Service"])));
    } else this.#bump();
    return json(true);
  }

  #svcIdx(name: string): number {
    return Math.max(1, this.#svcIndex.get(name) ?? this.#servicesIndex);
  }

  /** Bumps the index of every service name on `cn` a change concerns (all of them for a node check). */
  #catChanged(cn: CatNode, idx: number, serviceId: string, name?: string): void {
    this.#nodeIndex.set(cn.node, idx);
    this.#touch(`node:${cn.node}`);
    const names = new Set<string>(name ? [name] : []);
    for (const si of cn.services.values()) if (serviceId === "" || si.def.ID === serviceId) names.add(si.def.Service);
    for (const n of names) {
      this.#svcIndex.set(n, idx);
      this.#touch(`health:${n}`);
    }
  }

  #catPutService(cn: CatNode, def: ServiceDef): void {
    const prev = cn.services.get(def.ID);
    if (prev && JSON.stringify(prev.def) === JSON.stringify(def)) return;
    const idx = this.#bump();
    cn.services.set(def.ID, { def: structuredClone(def), CreateIndex: prev?.CreateIndex ?? idx, ModifyIndex: idx });
    this.#servicesIndex = idx;
    this.#catChanged(cn, idx, def.ID, prev?.def.Service);
  }

  #catDeleteService(cn: CatNode, id: string): void {
    const si = cn.services.get(id);
    if (!si) return;
    const idx = this.#bump();
    this.#servicesIndex = idx;
    this.#catChanged(cn, idx, id);
    cn.services.delete(id);
    for (const c of [...cn.checks.values()]) if (c.ServiceID === id) this.#catDeleteCheck(cn, c.CheckID);
  }

  #catPutCheck(cn: CatNode, c: Check): void {
    const prev = cn.checks.get(c.CheckID);
    if (prev && prev.Status === c.Status && prev.Output === c.Output && prev.Name === c.Name && prev.ServiceID === c.ServiceID && prev.Notes === c.Notes) return;
    const idx = this.#bump();
    const name = cn.services.get(c.ServiceID)?.def.Service ?? "";
    cn.checks.set(c.CheckID, { CheckID: c.CheckID, Name: c.Name, Status: c.Status, Notes: c.Notes, Output: c.Output, ServiceID: c.ServiceID, ServiceName: name, Type: c.Type, CreateIndex: prev?.CreateIndex ?? idx, ModifyIndex: idx });
    this.#catChanged(cn, idx, c.ServiceID);
    if (c.Status === "critical") this.#invalidateBound(cn.node, c.CheckID);
  }

  #catDeleteCheck(cn: CatNode, id: string): void {
    const c = cn.checks.get(id);
    if (!c) return;
    const idx = this.#bump();
    cn.checks.delete(id);
    this.#catChanged(cn, idx, c.ServiceID, c.ServiceName || undefined);
    this.#invalidateBound(cn.node, id);
  }

  /** The leader's view of a node's gossip health. */
  #serf(node: string, status: "passing" | "critical"): void {
    const cn = this.#catalog.get(node);
    if (!cn) return;
    const output = status === "passing" ? "Agent alive and reachable" : "Agent not live or unreachable";
    this.#catPutCheck(cn, { CheckID: "serfHealth", Name: "Serf Health Status", Status: status, Notes: "", Output: output, ServiceID: "", Type: "" });
  }

  // ---- prepared queries

  #queryWrite(req: Req, id: string | undefined): Reply {
    const b = parseBody(req.body);
    if (typeof b === "string") return { status: 400, body: `Request decode failed: ${b}` };
    const name = String(b["Name"] ?? "");
    const svc = (b["Service"] ?? {}) as Record<string, unknown>;
    if (!svc["Service"]) return rpcErr("Must provide a Service name to query");
    const existing = id === undefined ? undefined : this.#queries.find((q) => q.ID === id);
    if (id !== undefined && !existing) return rpcErr(`Cannot modify non-existent prepared query: '${id}'`);
    if (name && this.#queries.some((q) => q.Name === name && q.ID !== id)) return rpcErr(`raft apply failed: name '${name}' aliases an existing query name`);
    const idx = this.#bump();
    this.#queriesIndex = idx;
    const dns = (b["DNS"] ?? {}) as { TTL?: string };
    const q: Query = { ID: existing?.ID ?? this.#s.rng.uuid(), Name: name, Service: svc, DNS: { TTL: dns.TTL ?? "" }, CreateIndex: existing?.CreateIndex ?? idx, ModifyIndex: idx };
    if (existing) this.#queries.splice(this.#queries.indexOf(existing), 1, q);
    else this.#queries.push(q);
    return existing ? { status: 200, body: "" } : json({ ID: q.ID });
  }

  // ---- agent endpoints (answered locally, even when the servers are out of reach)

  #agentEndpoint(req: Req, a: Agent): Reply | undefined {
    const p = req.path.slice("/v1/agent/".length);
    const m = req.method;
    if (m === "GET" && p === "self") {
      return json({ Config: { Datacenter: this.datacenter, PrimaryDatacenter: this.datacenter, NodeName: a.node, NodeID: a.id, Server: false, Version: VERSION }, DebugConfig: { Experiments: [] }, Member: { Name: a.node, Addr: a.address, Port: 8301, Status: 1 } });
    }
    if (m === "GET" && p === "services") {
      const f = compileFilter(req.q.get("filter"));
      if (typeof f === "string") return { status: 400, body: f };
      const out: Record<string, unknown> = {};
      for (const d of a.services.values()) if (f(d)) out[d.ID] = { ...serviceJson(d), Datacenter: this.datacenter };
      return json(out);
    }
    if (m === "GET" && p === "checks") {
      const f = compileFilter(req.q.get("filter"));
      if (typeof f === "string") return { status: 400, body: f };
      const out: Record<string, unknown> = {};
      for (const c of a.checks.values()) {
        const svc = a.services.get(c.ServiceID);
        const row = { Node: a.node, CheckID: c.CheckID, Name: c.Name, Status: c.Status, Notes: c.Notes, Output: c.Output, ServiceID: c.ServiceID, ServiceName: svc?.Service ?? "", ServiceTags: svc ? [...svc.Tags] : [], Type: c.Type, Interval: "", Timeout: "", ExposedPort: 0, Definition: {}, CreateIndex: 0, ModifyIndex: 0 };
        if (f(row)) out[c.CheckID] = row;
      }
      return json(out);
    }
    if (m === "PUT" && p === "service/register") return this.#agentRegister(req, a);
    if (m === "PUT" && p.startsWith("service/deregister/")) {
      const id = decodeURIComponent(p.slice("service/deregister/".length));
      if (!a.services.has(id)) return { status: 404, body: `Unknown service ID "${id}". Ensure that the service ID is passed, not the service name.` };
      this.#agentDeregister(a, id);
      return { status: 200, body: "" };
    }
    if (m === "GET" && p.startsWith("service/")) {
      const id = decodeURIComponent(p.slice("service/".length));
      const read = (): Reply => {
        const d = a.services.get(id);
        if (!d) return { status: 404, body: `unknown service ID: ${id}` };
        const hash = contentHash(d);
        return json({ ...serviceJson(d), ContentHash: hash, Datacenter: this.datacenter }, { "X-Consul-ContentHash": hash });
      };
      const hash = req.q.get("hash");
      if (!hash) return read();
      const changed = (r: Reply) => r.status !== 200 || r.headers?.["X-Consul-ContentHash"] !== hash;
      return this.#park(req, `consul/${a.node}`, (t) => t === `svc:${a.node}:${id}`, read, changed, (r) => this.#agentReply(req, a, r), true);
    }
    if (m === "PUT" && p === "check/register") {
      const b = parseBody(req.body);
      if (typeof b === "string") return { status: 400, body: `Request decode failed: ${b}` };
      const sid = String(b["ServiceID"] ?? "");
      if (sid && !a.services.has(sid)) return { status: 404, body: `ServiceID "${sid}" does not exist` };
      const check = this.#checkFrom(a, { ...b, CheckID: b["ID"] ?? b["CheckID"] }, sid);
      if (!("ttlMs" in check)) return check;
      this.#putCheck(a, check);
      return { status: 200, body: "" };
    }
    if (m === "PUT" && p.startsWith("check/update/")) {
      const id = decodeURIComponent(p.slice("check/update/".length));
      const b = parseBody(req.body);
      if (typeof b === "string") return { status: 400, body: `Request decode failed: ${b}` };
      const status = String(b["Status"] ?? "");
      if (!["passing", "warning", "critical"].includes(status)) return { status: 400, body: `Invalid check status: '${status}'` };
      const c = a.checks.get(id);
      if (!c) return { status: 404, body: `Unknown check ID "${id}". Ensure that the check ID is passed, not the check name.` };
      if (c.Type !== "ttl") return { status: 500, body: `CheckID "${id}" does not have associated TTL` };
      this.#setCheck(a, c, status, String(b["Output"] ?? "").slice(0, 4096));
      this.#armCheck(a, c, c.ttlMs);
      return { status: 200, body: "" };
    }
    return { status: 404, body: "404 page not found\n" };
  }

  #agentRegister(req: Req, a: Agent): Reply {
    const b = parseBody(req.body);
    if (typeof b === "string") return { status: 400, body: `Request decode failed: ${b}` };
    if (!b["Name"]) return { status: 400, body: "Missing service name" };
    const def = toDef(b, String(b["Name"]));
    const bodies = [...(Array.isArray(b["Checks"]) ? b["Checks"] : []), ...(b["Check"] ? [b["Check"]] : [])] as Record<string, unknown>[];
    const checks: LocalCheck[] = [];
    for (const [i, c] of bodies.entries()) {
      const id = c["CheckID"] ?? c["ID"] ?? (bodies.length > 1 ? `service:${def.ID}:${i + 1}` : `service:${def.ID}`);
      const check = this.#checkFrom(a, { Name: `Service '${def.Service}' check`, ...c, CheckID: id }, def.ID);
      if (!("ttlMs" in check)) return check;
      checks.push(check);
    }
    a.services.set(def.ID, def);
    a.dirty.add(`svc:${def.ID}`);
    for (const c of checks) this.#putCheck(a, c);
    if (req.q.has("replace-existing-checks")) {
      const listed = new Set(checks.map((c) => c.CheckID));
      for (const c of [...a.checks.values()]) if (c.ServiceID === def.ID && !listed.has(c.CheckID)) this.#removeCheck(a, c.CheckID);
    }
    this.#touch(`svc:${a.node}:${def.ID}`);
    this.#queueSync(a);
    return { status: 200, body: "" };
  }

  /** A TTL check from a registration body; redefining a check keeps its status and output. */
  #checkFrom(a: Agent, b: Record<string, unknown>, serviceId: string): LocalCheck | Reply {
    const id = String(b["CheckID"] ?? b["Name"] ?? "");
    if (!b["Name"]) return { status: 400, body: "Missing check name" };
    const ttlMs = typeof b["TTL"] === "string" ? parseGoDuration(b["TTL"]) : undefined;
    if (!ttlMs) return { status: 400, body: "Invalid check: the simulator supports only TTL checks" };
    const status = (b["Status"] as string | undefined) || "critical";
    if (!["passing", "warning", "critical"].includes(status)) return { status: 400, body: "Status for checks must 'passing', 'warning', 'critical'" };
    const dcsa = typeof b["DeregisterCriticalServiceAfter"] === "string" ? parseGoDuration(b["DeregisterCriticalServiceAfter"]) ?? 0 : 0;
    const prev = a.checks.get(id);
    const c: LocalCheck = { CheckID: id, Name: String(b["Name"]), Status: prev?.Status ?? status, Notes: String(b["Notes"] ?? ""), Output: prev?.Output ?? "", ServiceID: serviceId, Type: "ttl", ttlMs, dcsaMs: dcsa ? Math.max(dcsa, DCSA_MIN_MS) : 0 };
    if (c.Status === "critical") c.criticalSince = prev?.criticalSince ?? this.#s.now;
    return c;
  }

  /** Adds or replaces a check; its TTL starts over. */
  #putCheck(a: Agent, c: LocalCheck): void {
    a.checks.get(c.CheckID)?.timer?.cancel();
    a.checks.set(c.CheckID, c);
    a.dirty.add(`chk:${c.CheckID}`);
    this.#armCheck(a, c, c.ttlMs);
    this.#queueSync(a);
  }

  #armCheck(a: Agent, c: LocalCheck, ms: number): void {
    c.timer?.cancel();
    c.deadline = this.#s.now + ms;
    c.timer = this.#s.at(ms, `consul/${a.node}`, () => this.#run(() => a.checks.get(c.CheckID) === c && this.#setCheck(a, c, "critical", "TTL expired")));
  }

  /** Only a status change is synced right away (output-only changes wait for check_update_interval). */
  #setCheck(a: Agent, c: LocalCheck, status: string, output: string): void {
    const changed = c.Status !== status;
    c.Status = status;
    c.Output = output;
    if (status === "critical") c.criticalSince ??= this.#s.now;
    else delete c.criticalSince;
    if (!changed) return;
    a.dirty.add(`chk:${c.CheckID}`);
    this.#queueSync(a);
  }

  #removeCheck(a: Agent, id: string): void {
    a.checks.get(id)?.timer?.cancel();
    a.checks.delete(id);
    a.dirty.add(`chk:${id}`);
  }

  #agentDeregister(a: Agent, id: string): void {
    a.services.delete(id);
    for (const c of [...a.checks.values()]) if (c.ServiceID === id) this.#removeCheck(a, c.CheckID);
    a.dirty.add(`svc:${id}`);
    this.#touch(`svc:${a.node}:${id}`);
    this.#queueSync(a);
  }

  /** Periodic full sync, and the reaper of services critical past DeregisterCriticalServiceAfter. */
  #startAgentTimers(a: Agent): void {
    const owner = `consul/${a.node}`;
    const ae = () => {
      this.#syncAgent(a, true);
      a.aeTimer = this.#s.at(this.aeIntervalMs + this.#s.rng.between(0, this.aeIntervalMs), owner, () => this.#run(ae));
    };
    a.aeTimer = this.#s.at(this.#s.rng.between(0, this.aeIntervalMs), owner, () => this.#run(ae));
    const reap = () => {
      for (const c of [...a.checks.values()]) {
        if (c.dcsaMs && c.criticalSince !== undefined && this.#s.now - c.criticalSince >= c.dcsaMs && a.services.has(c.ServiceID)) this.#agentDeregister(a, c.ServiceID);
      }
      a.reapTimer = this.#s.at(REAP_EVERY_MS, owner, () => this.#run(reap));
    };
    a.reapTimer = this.#s.at(REAP_EVERY_MS, owner, () => this.#run(reap));
  }

  #queueSync(a: Agent): void {
    if (a.syncQueued) return;
    a.syncQueued = true;
    this.#s.at(this.#serverHop(), `consul/${a.node}`, () =>
      this.#run(() => {
        a.syncQueued = false;
        this.#syncAgent(a, false);
      }));
  }

  /**
   * Anti-entropy: pushes the agent's services and checks to the catalog and
   * removes the node's catalog entries it no longer has. A full sync also
   * copies catalog tags into EnableTagOverride services (in place: blocking
   * GETs of the service do not wake) and pushes every difference; a change sync
   * pushes what changed, and a check pushes its service along (consul#2174).
   */
  #syncAgent(a: Agent, full: boolean): void {
    if (!a.up || a.partitioned || this.#s.now < this.#electionUntil) return;
    const cn = this.#catalog.get(a.node)!;
    if (full) {
      for (const d of a.services.values()) {
        const remote = cn.services.get(d.ID);
        if (remote && d.EnableTagOverride) d.Tags = [...remote.def.Tags];
      }
    }
    for (const d of a.services.values()) {
      if (!cn.services.has(d.ID) || full || a.dirty.has(`svc:${d.ID}`)) this.#catPutService(cn, d);
    }
    for (const c of a.checks.values()) {
      if (!cn.checks.has(c.CheckID) || full || a.dirty.has(`chk:${c.CheckID}`)) {
        const svc = a.services.get(c.ServiceID);
        if (svc) this.#catPutService(cn, svc);
        this.#catPutCheck(cn, c);
      }
    }
    // What the agent removed goes now; catalog entries it never had, at the full sync.
    for (const id of [...cn.services.keys()]) if (!a.services.has(id) && (full || a.dirty.has(`svc:${id}`))) this.#catDeleteService(cn, id);
    for (const id of [...cn.checks.keys()]) if (id !== "serfHealth" && !a.checks.has(id) && (full || a.dirty.has(`chk:${id}`))) this.#catDeleteCheck(cn, id);
    a.dirty.clear();
  }

  #agent(node: string): Agent {
    const a = this.#agents.get(node);
    if (!a) throw new Error(`no simulated Consul agent on node ${node}`);
    return a;
  }

  #bump(): number {
    return ++this.#index;
  }
}

// ---- helpers

/** The part of a fetch Response the client reads. */
function response(r: Reply): unknown {
  const h = new Map(Object.entries(r.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
  return { status: r.status, ok: r.status >= 200 && r.status < 300, headers: { get: (n: string) => h.get(n.toLowerCase()) ?? null }, text: () => Promise.resolve(r.body) };
}

function json(body: unknown, headers: Record<string, string> = {}): Reply {
  return { status: 200, body: JSON.stringify(body), headers };
}

function bool(b: boolean): Reply {
  return json(b);
}

/** A server-side error as a client agent relays it. */
function rpcErr(msg: string, viaRpc = true): Reply {
  return { status: 500, body: viaRpc ? `rpc error making call: ${msg}` : msg };
}

/** Bun's fetch error for a refused connection. */
function refused(url: string): Error {
  return Object.assign(new TypeError("ECONNREFUSED: Unable to connect. Is the computer able to access the url?"), { code: "ECONNREFUSED", path: url, errno: 0 });
}

function reset(): Error {
  return Object.assign(new TypeError("The socket connection was closed unexpectedly. For more information, pass `verbose: true` in the second argument to fetch()"), { code: "ECONNRESET", errno: 0 });
}

function b64(text: string): string {
  return Buffer.from(text, "utf8").toString("base64");
}

function parseBody(body: string | undefined): Record<string, unknown> | string {
  if (!body) return {};
  try {
    const v = JSON.parse(body) as unknown;
    return v && typeof v === "object" ? (v as Record<string, unknown>) : "not an object";
  } catch (err) {
    return (err as Error).message;
  }
}

/** ?wait: Go duration, default 5m, at most 10m. */
function waitOf(q: URLSearchParams): number {
  const w = q.get("wait");
  const ms = w ? parseGoDuration(w) ?? DEFAULT_WAIT_MS : DEFAULT_WAIT_MS;
  return Math.min(ms || DEFAULT_WAIT_MS, MAX_WAIT_MS);
}

/** Go's time.ParseDuration (non-negative): "1m30s", "250ms", "0". */
export function parseGoDuration(text: string): number | undefined {
  if (text === "0") return 0;
  const unit: Record<string, number> = { ns: 1e-6, us: 1e-3, "µs": 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  const part = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)/y;
  let total = 0;
  let pos = 0;
  while (pos < text.length) {
    part.lastIndex = pos;
    const m = part.exec(text);
    if (!m) return undefined;
    total += Number(m[1]) * unit[m[2]!]!;
    pos = part.lastIndex;
  }
  return pos === 0 ? undefined : total;
}

function toDef(b: Record<string, unknown>, name: string): ServiceDef {
  const address = String(b["Address"] ?? "");
  const port = Number(b["Port"] ?? 0);
  const tagged = b["TaggedAddresses"] as Record<string, unknown> | undefined;
  const def: ServiceDef = {
    ID: String(b["ID"] || name),
    Service: name,
    Tags: Array.isArray(b["Tags"]) ? (b["Tags"] as string[]).map(String) : [],
    Meta: { ...((b["Meta"] as Record<string, string> | undefined) ?? {}) },
    Port: port,
    Address: address,
    Weights: (b["Weights"] as ServiceDef["Weights"] | undefined) ?? { Passing: 1, Warning: 1 },
    EnableTagOverride: b["EnableTagOverride"] === true,
  };
  if (tagged && Object.keys(tagged).length) def.TaggedAddresses = tagged;
  else if (address) def.TaggedAddresses = { lan_ipv4: { Address: address, Port: port }, wan_ipv4: { Address: address, Port: port } };
  if (b["Kind"]) def.Kind = String(b["Kind"]);
  return def;
}

function serviceJson(d: ServiceDef): Record<string, unknown> {
  const { TaggedAddresses, Kind, ...rest } = d;
  return { ...(Kind ? { Kind } : {}), ...rest, Tags: [...d.Tags], Meta: { ...d.Meta }, ...(TaggedAddresses ? { TaggedAddresses } : {}) };
}

function sessionJson(s: Session): Record<string, unknown> {
  const { ID, Name, Node, LockDelay, Behavior, TTL, NodeChecks, ServiceChecks, CreateIndex, ModifyIndex } = s;
  return { ID, Name, Node, LockDelay, Behavior, TTL, NodeChecks, ServiceChecks, CreateIndex, ModifyIndex };
}

function queryJson(q: Query): Record<string, unknown> {
  return { ID: q.ID, Name: q.Name, Session: "", Token: "", Service: { Tags: null, OnlyPassing: false, ...q.Service }, DNS: q.DNS, CreateIndex: q.CreateIndex, ModifyIndex: q.ModifyIndex };
}

/** Stands in for Consul's hashstructure: any change to the definition changes it. */
function contentHash(d: ServiceDef): string {
  const text = JSON.stringify(d);
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193) >>> 0;
    h2 = Math.imul(h2 ^ c, 0x5bd1e995) >>> 0;
  }
  return h1.toString(16).padStart(8, "0") + h2.toString(16).padStart(8, "0");
}

/**
 * The go-bexpr subset the sidecar sends: `Sel == "v"`, `!=`, `matches "re"`,
 * `"v" in Sel`, joined by `and` / `or`. Returns an error message otherwise.
 */
function compileFilter(expr: string | null): ((o: object) => boolean) | string {
  if (!expr) return () => true;
  const get = (o: object, sel: string): unknown => sel.split(".").reduce<unknown>((v, k) => (v && typeof v === "object" ? (v as Record<string, unknown>)[k] : undefined), o);
  const unq = (s: string) => s.replace(/\\(.)/g, "$1");
  const clause = (c: string): ((o: object) => boolean) | undefined => {
    let m = /^\s*([A-Za-z][\w.]*)\s*(==|!=|matches|not matches)\s*"((?:[^"\\]|\\.)*)"\s*$/.exec(c);
    if (m) {
      const [, sel, op, raw] = m as unknown as [string, string, string, string];
      const v = op.includes("matches") ? raw : unq(raw);
      if (op === "==") return (o) => String(get(o, sel)) === v;
      if (op === "!=") return (o) => String(get(o, sel)) !== v;
      const re = new RegExp(v);
      return op === "matches" ? (o) => re.test(String(get(o, sel) ?? "")) : (o) => !re.test(String(get(o, sel) ?? ""));
    }
    m = /^\s*"((?:[^"\\]|\\.)*)"\s+(in|not in)\s+([A-Za-z][\w.]*)\s*$/.exec(c);
    if (m) {
      const [, raw, op, sel] = m as unknown as [string, string, string, string];
      const has = (o: object) => {
        const v = get(o, sel);
        return Array.isArray(v) ? v.includes(unq(raw)) : typeof v === "object" && v !== null && unq(raw) in v;
      };
      return op === "in" ? has : (o) => !has(o);
    }
    return undefined;
  };
  const ors: ((o: object) => boolean)[][] = [];
  for (const part of expr.split(/\s+or\s+/)) {
    const ands = part.split(/\s+and\s+/).map(clause);
    if (ands.some((f) => !f)) return `Failed to create boolean expression evaluator: unsupported filter ${JSON.stringify(expr)}`;
    ors.push(ands as ((o: object) => boolean)[]);
  }
  return (o) => ors.some((ands) => ands.every((f) => f(o)));
}
