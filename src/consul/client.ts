/**
 * The Consul HTTP API, as far as the sidecar uses it: sessions, the KV lock,
 * the local agent's services and checks, and health reads.
 *
 * This is the Consul boundary: every transport failure and unexpected answer
 * becomes a ConsulError here, with a stable code; nothing above this file sees
 * an HTTP status. Every call is logged at debug (method, path, status, ms) and
 * reported to `observe` for metrics. The token travels only in the
 * X-Consul-Token header and is never logged.
 *
 * Does not retry: callers decide, because only they know whether a write may
 * be repeated (api/api.go's IsRetryableError warns that a failed write may
 * still have gone through).
 */

import type { Clock } from "../clock.ts";
import type { ConsulClientConfig } from "../config/config.ts";
import { ConsulError, type ConsulErrorCode } from "../errors.ts";
import type { Logger } from "../log.ts";
import { checkList, checkRecord, type Parsed, type Schema } from "../wire.ts";
import { AGENT_CHECK, AGENT_SELF, AGENT_SERVICE, CATALOG_SERVICE, CREATED, HEALTH_ENTRY, KV_PAIR, PREPARED_QUERY, SESSION, TXN_REFUSED } from "./shapes.ts";

/** The subset of fetch we call; Bun's fetch with its `unix` and `tls` extensions. */
export type FetchLike = (url: string, init: RequestInit & { unix?: string; tls?: Record<string, unknown> }) => Promise<Response>;

export interface RequestEvent {
  method: string;
  /** Path with IDs and keys replaced, e.g. "/v1/session/renew/:id"; for metrics. */
  route: string;
  status: number;
  ms: number;
  code?: ConsulErrorCode;
}

export interface ConsulDeps {
  fetch: FetchLike;
  clock: Clock;
  log: Logger;
  /** Called once per request, after it ends; for metrics. */
  observe?: (event: RequestEvent) => void;
}

/** A session as Consul describes it; only the ID is read (shapes.ts SESSION). */
export interface SessionEntry {
  ID: string;
  Name?: string;
  Node?: string;
  LockDelay?: number;
  Behavior?: string;
  TTL?: string;
  NodeChecks?: string[] | null;
  ServiceChecks?: { ID: string; Namespace?: string }[] | null;
  CreateIndex?: number;
  ModifyIndex?: number;
}

export interface SessionRequest {
  Name: string;
  TTL: string;
  LockDelay: string;
  Behavior: "release" | "delete";
  NodeChecks: string[];
  ServiceChecks?: { ID: string }[];
}

export interface KVPair {
  Key: string;
  CreateIndex: number;
  ModifyIndex: number;
  LockIndex: number;
  Flags: number;
  /** Decoded from base64; null when the key has no value. */
  Value: string | null;
  Session?: string;
}

export interface AgentService {
  ID: string;
  Service: string;
  Tags: string[] | null;
  Meta: Record<string, string> | null;
  Port: number;
  Address: string;
  EnableTagOverride: boolean;
  Kind?: string;
  TaggedAddresses?: Record<string, unknown>;
  Weights?: { Passing: number; Warning: number };
  Proxy?: unknown;
  Connect?: unknown;
  Namespace?: string;
  Partition?: string;
  ContentHash?: string;
  Datacenter?: string;
}

/** The body of PUT /v1/agent/service/register. */
export interface ServiceRegistration {
  ID: string;
  Name: string;
  Tags?: string[];
  Address?: string;
  Port?: number;
  Meta?: Record<string, string>;
  EnableTagOverride?: boolean;
  Kind?: string;
  TaggedAddresses?: Record<string, unknown>;
  Weights?: { Passing: number; Warning: number };
  Proxy?: unknown;
  Connect?: unknown;
  Namespace?: string;
  Partition?: string;
  Checks?: CheckRegistration[];
}

export interface CheckRegistration {
  CheckID: string;
  Name: string;
  TTL: string;
  Status?: "passing" | "warning" | "critical";
  Notes?: string;
  ServiceID?: string;
  DeregisterCriticalServiceAfter?: string;
}

export interface PreparedQuery {
  ID: string;
  Name: string;
  Service: { Service: string; Tags: string[]; OnlyPassing: boolean };
  DNS?: { TTL: string };
}

export interface CatalogService {
  Node: string;
  Address: string;
  ServiceID: string;
  ServiceName: string;
  ServiceTags: string[] | null;
  ServiceAddress: string;
  ServicePort: number;
  ServiceMeta: Record<string, string> | null;
  ServiceEnableTagOverride: boolean;
  ServiceTaggedAddresses?: Record<string, unknown> | null;
  ServiceWeights?: { Passing: number; Warning: number };
  ServiceKind?: string;
}

export interface HealthEntry {
  Node: { Node: string; Address: string };
  Service: AgentService;
  Checks: { CheckID: string; Status: string; ServiceID: string }[];
}

export interface BlockingOptions {
  index?: number;
  /** Server-side wait in ms; the request timeout is derived from it. */
  waitMs?: number;
  consistent?: boolean;
  signal?: AbortSignal;
}

interface Call {
  method: "GET" | "PUT" | "POST" | "DELETE";
  path: string;
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** Statuses returned to the caller instead of thrown (e.g. 404 on a GET of a missing key). */
  allow?: number[];
}

interface Answer {
  status: number;
  text: string;
  index: number;
}

export class Consul {
  readonly #cfg: ConsulClientConfig;
  readonly #deps: ConsulDeps;
  readonly #timeoutMs: number;
  readonly #tls: Record<string, unknown> | undefined;

  /** `requestTimeoutMs` bounds every non-blocking call; blocking calls add their wait. */
  constructor(cfg: ConsulClientConfig, deps: ConsulDeps, requestTimeoutMs: number) {
    this.#cfg = cfg;
    this.#deps = deps;
    this.#timeoutMs = requestTimeoutMs;
    const t = cfg.tls;
    this.#tls = t
      ? {
        rejectUnauthorized: t.verify,
        ...(t.ca ? { ca: t.ca } : {}),
        ...(t.cert ? { cert: t.cert } : {}),
        ...(t.key ? { key: t.key } : {}),
        ...(t.serverName ? { serverName: t.serverName } : {}),
      }
      : undefined;
  }

  // ---- agent

  /** GET /v1/agent/self: the agent's node name, datacenter and experiments. */
  async agentSelf(): Promise<{ nodeName: string; datacenter: string; experiments: string[]; version: string }> {
    const a = await this.#call({ method: "GET", path: "/v1/agent/self" });
    const body = this.#record<{ Config: { NodeName: string; Datacenter?: string; Version?: string }; DebugConfig?: { Experiments?: string[] } }>(a, "GET", "/v1/agent/self", AGENT_SELF);
    return {
      nodeName: body.Config.NodeName,
      datacenter: body.Config.Datacenter ?? "",
      experiments: body.DebugConfig?.Experiments ?? [],
      version: body.Config.Version ?? "",
    };
  }

  /** GET /v1/agent/services?filter=...: the local agent's services by ID. */
  async agentServices(filter?: string): Promise<Record<string, AgentService>> {
    const a = await this.#call({ method: "GET", path: "/v1/agent/services", query: { filter } });
    return this.#map(a, "GET", "/v1/agent/services", AGENT_SERVICE);
  }

  /**
   * GET /v1/agent/service/:id, optionally blocking on the content hash.
   * Returns null when the agent does not know the service.
   */
  async agentService(id: string, opts: { hash?: string; waitMs?: number; signal?: AbortSignal } = {}): Promise<AgentService | null> {
    const path = `/v1/agent/service/${encodeURIComponent(id)}`;
    const a = await this.#call({
      method: "GET",
      path,
      query: opts.hash ? { hash: opts.hash, wait: `${opts.waitMs ?? 30_000}ms` } : {},
      timeoutMs: opts.hash ? this.#blockingTimeout(opts.waitMs ?? 30_000) : undefined,
      signal: opts.signal,
      allow: [404],
    });
    if (a.status === 404) return null;
    return this.#record(a, "GET", path, AGENT_SERVICE);
  }

  /** PUT /v1/agent/service/register. Keeps existing checks (no replace-existing-checks). */
  async agentServiceRegister(reg: ServiceRegistration): Promise<void> {
    await this.#call({ method: "PUT", path: "/v1/agent/service/register", body: reg });
  }

  /** PUT /v1/agent/service/deregister/:id; a service already gone is not an error. */
  async agentServiceDeregister(id: string): Promise<void> {
    await this.#call({ method: "PUT", path: `/v1/agent/service/deregister/${encodeURIComponent(id)}`, allow: [404] });
  }

  /** PUT /v1/agent/check/register. */
  async agentCheckRegister(check: CheckRegistration): Promise<void> {
    // This endpoint calls the field ID; a service registration's Checks[] call it CheckID.
    const { CheckID, ...rest } = check;
    await this.#call({ method: "PUT", path: "/v1/agent/check/register", body: { ID: CheckID, ...rest } });
  }

  /** PUT /v1/agent/check/update/:id; resets the TTL clock. `timeoutMs`: instead of the request timeout. */
  async agentCheckUpdate(id: string, status: "passing" | "warning" | "critical", output: string, timeoutMs?: number): Promise<void> {
    await this.#call({ method: "PUT", path: `/v1/agent/check/update/${encodeURIComponent(id)}`, body: { Status: status, Output: output }, timeoutMs });
  }

  /** GET /v1/agent/checks?filter=...: the local agent's checks by ID. */
  async agentChecks(filter?: string): Promise<Record<string, { CheckID: string; Status: string; ServiceID: string; Name: string; Notes?: string }>> {
    const a = await this.#call({ method: "GET", path: "/v1/agent/checks", query: { filter } });
    return this.#map(a, "GET", "/v1/agent/checks", AGENT_CHECK);
  }

  /**
   * GET /v1/health/node/:node?filter=...: the node's checks as the catalog
   * has them, blocking until they change when `opts.index` is set.
   */
  async healthNode(node: string, filter: string, opts: BlockingOptions = {}): Promise<{ checks: { CheckID: string; Status: string; ServiceID: string; Name: string; Notes?: string }[]; index: number }> {
    const path = `/v1/health/node/${encodeURIComponent(node)}`;
    const { index, wait, timeoutMs, signal } = this.#blocking(opts);
    const a = await this.#call({ method: "GET", path, query: { filter, index, wait }, timeoutMs, signal });
    return { checks: this.#list(a, "GET", path, AGENT_CHECK), index: a.index };
  }

  // ---- prepared queries

  /** GET /v1/query: every prepared query this token may read. */
  async queryList(): Promise<PreparedQuery[]> {
    const a = await this.#call({ method: "GET", path: "/v1/query" });
    return this.#list(a, "GET", "/v1/query", PREPARED_QUERY);
  }

  /** POST /v1/query; returns the new query's ID. */
  async queryCreate(q: Omit<PreparedQuery, "ID">): Promise<string> {
    const a = await this.#call({ method: "POST", path: "/v1/query", body: q });
    return this.#record<{ ID: string }>(a, "POST", "/v1/query", CREATED).ID;
  }

  /** PUT /v1/query/:id: replaces the definition. */
  async queryUpdate(id: string, q: Omit<PreparedQuery, "ID">): Promise<void> {
    await this.#call({ method: "PUT", path: `/v1/query/${encodeURIComponent(id)}`, body: q });
  }

  // ---- sessions

  /** PUT /v1/session/create; returns the new session's ID. */
  async sessionCreate(req: SessionRequest): Promise<string> {
    const a = await this.#call({ method: "PUT", path: "/v1/session/create", body: req });
    return this.#record<{ ID: string }>(a, "PUT", "/v1/session/create", CREATED).ID;
  }

  /** PUT /v1/session/renew/:id; null when the session is gone (404). */
  async sessionRenew(id: string): Promise<SessionEntry | null> {
    const path = `/v1/session/renew/${id}`;
    const a = await this.#call({ method: "PUT", path, allow: [404] });
    if (a.status === 404) return null;
    return this.#list<SessionEntry>(a, "PUT", path, SESSION)[0] ?? null;
  }

  /** PUT /v1/session/destroy/:id; idempotent. Arms lock-delay on keys it held. */
  async sessionDestroy(id: string): Promise<void> {
    await this.#call({ method: "PUT", path: `/v1/session/destroy/${id}` });
  }

  /** GET /v1/session/info/:id; null when unknown. */
  async sessionInfo(id: string): Promise<SessionEntry | null> {
    const path = `/v1/session/info/${id}`;
    const a = await this.#call({ method: "GET", path, query: { consistent: true } });
    return this.#list<SessionEntry>(a, "GET", path, SESSION)[0] ?? null;
  }

  // ---- KV

  /**
   * GET /v1/kv/:key, optionally blocking. `pair` is null when the key does not
   * exist; `index` is X-Consul-Index for the next blocking call.
   */
  async kvGet(key: string, opts: BlockingOptions = {}): Promise<{ pair: KVPair | null; index: number }> {
    const path = `/v1/kv/${encodeKey(key)}`;
    const a = await this.#kvRead(path, false, opts);
    if (a.status === 404) return { pair: null, index: a.index };
    const raw = this.#list<RawKVPair>(a, "GET", path, KV_PAIR)[0];
    if (!raw) throw this.#badShape("GET", path, "no KV pair in a 200 answer");
    return { pair: decodePair(raw), index: a.index };
  }

  /** GET /v1/kv/:prefix?recurse: every pair under the prefix (empty when none). */
  async kvList(prefix: string, opts: { consistent?: boolean } = {}): Promise<KVPair[]> {
    return (await this.kvListIndexed(prefix, opts)).pairs;
  }

  /** kvList with X-Consul-Index, optionally blocking until something under the prefix changes or `waitMs` passes. */
  async kvListIndexed(prefix: string, opts: BlockingOptions = {}): Promise<{ pairs: KVPair[]; index: number }> {
    const path = `/v1/kv/${encodeKey(prefix)}`;
    const a = await this.#kvRead(path, true, opts);
    if (a.status === 404) return { pairs: [], index: a.index };
    return { pairs: this.#list<RawKVPair>(a, "GET", path, KV_PAIR).map(decodePair), index: a.index };
  }

  /** A GET of one key or (`recurse`) a prefix, blocking when `opts.index` is set; a 404 is answered, not thrown. */
  #kvRead(path: string, recurse: boolean, opts: BlockingOptions): Promise<Answer> {
    const { index, wait, timeoutMs, signal } = this.#blocking(opts);
    return this.#call({ method: "GET", path, query: { recurse: recurse || undefined, consistent: opts.consistent || undefined, index, wait }, timeoutMs, signal, allow: [404] });
  }

  /** PUT /v1/kv/:key?acquire=<session>; true when this session now holds the lock. */
  async kvAcquire(key: string, session: string, value: string): Promise<boolean> {
    return this.#kvWrite(key, value, { acquire: session });
  }

  /**
   * PUT /v1/txn: acquires `key` for `session` (as ?acquire does, lock-delay
   * included) only if `absentKey` does not exist, in one transaction, so no
   * write of `absentKey` can slip in between the check and the acquire.
   * "acquired", "refused" (lock-delay, or another session holds it) or
   * "blocked" (`absentKey` exists). An invalid session throws
   * CONSUL_SERVER_ERROR "invalid session", as ?acquire's answer does.
   */
  async kvAcquireUnless(key: string, session: string, value: string, absentKey: string): Promise<{ result: "acquired"; modifyIndex?: number } | { result: "refused" | "blocked" }> {
    const path = "/v1/txn";
    const ops = [
      { KV: { Verb: "check-not-exists", Key: absentKey } },
      { KV: { Verb: "lock", Key: key, Value: Buffer.from(value, "utf8").toString("base64"), Session: session } },
    ];
    const a = await this.#call({ method: "PUT", path, body: ops, allow: [409] });
    if (a.status !== 409) {
      // The lock's result carries the index it was taken at (no value): the caller need not read the key again.
      const results = (this.#json(a, "PUT", path) as { Results?: { KV?: { Key?: unknown; ModifyIndex?: unknown } }[] } | null)?.Results;
      const mine = Array.isArray(results) ? results.find((r) => r?.KV?.Key === key)?.KV?.ModifyIndex : undefined;
      return typeof mine === "number" && mine > 0 ? { result: "acquired", modifyIndex: mine } : { result: "acquired" };
    }
    const errors = this.#record<{ Errors?: { OpIndex?: number; What?: string }[] }>(a, "PUT", path, TXN_REFUSED).Errors ?? [];
    const denied = errors.find((e) => /permission denied|ACL not found/i.test(e.What ?? ""));
    if (denied) {
      throw new ConsulError("CONSUL_FORBIDDEN", `PUT ${path}: ${denied.What} (the token needs key:read on ${absentKey} and key:write on ${key})`, { method: "PUT", path, status: 403 });
    }
    if (errors.some((e) => (e.OpIndex ?? 0) === 0)) return { result: "blocked" };
    const invalid = errors.find((e) => /invalid session/i.test(e.What ?? ""));
    if (invalid) throw new ConsulError("CONSUL_SERVER_ERROR", `PUT ${path}: ${invalid.What}`, { method: "PUT", path, status: 409 });
    return { result: "refused" };
  }

  /** PUT /v1/kv/:key?release=<session>; does not arm lock-delay. */
  async kvRelease(key: string, session: string, value?: string): Promise<boolean> {
    return this.#kvWrite(key, value ?? null, { release: session });
  }

  /** PUT /v1/kv/:key, optionally check-and-set (cas=0: only if absent). */
  async kvPut(key: string, value: string, opts: { cas?: number } = {}): Promise<boolean> {
    return this.#kvWrite(key, value, { cas: opts.cas });
  }

  /** DELETE /v1/kv/:key (optionally ?cas). */
  async kvDelete(key: string, opts: { cas?: number } = {}): Promise<boolean> {
    const path = `/v1/kv/${encodeKey(key)}`;
    const a = await this.#call({ method: "DELETE", path, query: { cas: opts.cas } });
    return this.#bool(a, "DELETE", path);
  }

  // ---- health

  /** GET /v1/health/service/:name with optional tag/passing filters and blocking. */
  async healthService(name: string, opts: BlockingOptions & { tag?: string; passing?: boolean } = {}): Promise<{ entries: HealthEntry[]; index: number }> {
    const path = `/v1/health/service/${encodeURIComponent(name)}`;
    const { index, wait, timeoutMs, signal } = this.#blocking(opts);
    const a = await this.#call({ method: "GET", path, query: { tag: opts.tag, passing: opts.passing || undefined, consistent: opts.consistent || undefined, index, wait }, timeoutMs, signal });
    return { entries: this.#list(a, "GET", path, HEALTH_ENTRY), index: a.index };
  }

  // ---- catalog

  /** GET /v1/catalog/service/:name (optionally ?tag=): every instance in the datacenter. */
  async catalogService(name: string, opts: { tag?: string } = {}): Promise<CatalogService[]> {
    return (await this.catalogServiceIndexed(name, opts)).services;
  }

  /** catalogService with X-Consul-Index, blocking until the service's instances change when `opts.index` is set. */
  async catalogServiceIndexed(name: string, opts: BlockingOptions & { tag?: string } = {}): Promise<{ services: CatalogService[]; index: number }> {
    const path = `/v1/catalog/service/${encodeURIComponent(name)}`;
    const { index, wait, timeoutMs, signal } = this.#blocking(opts);
    const a = await this.#call({ method: "GET", path, query: { tag: opts.tag, index, wait }, timeoutMs, signal });
    return { services: this.#list(a, "GET", path, CATALOG_SERVICE), index: a.index };
  }

  /**
   * PUT /v1/catalog/register for an existing node (SkipNodeUpdate). Used to
   * take a stale role tag off a service whose own sidecar is gone (the owning
   * agent keeps catalog tags when the service has EnableTagOverride), and to
   * put our role check's new output into the catalog before the agent's
   * deferred sync does.
   */
  async catalogRegister(body: {
    Node: string;
    Address: string;
    Service?: Omit<ServiceRegistration, "Name"> & { Service: string };
    /** A check of a service on that node (service:write on it suffices): its status and output, as the agent has them. */
    Check?: { Node: string; CheckID: string; Name: string; Status: string; Output: string; ServiceID: string; Type: string };
  }): Promise<void> {
    await this.#call({ method: "PUT", path: "/v1/catalog/register", body: { ...body, SkipNodeUpdate: true } });
  }

  // ---- transport

  async #kvWrite(key: string, value: string | null, query: Record<string, string | number | undefined>): Promise<boolean> {
    const path = `/v1/kv/${encodeKey(key)}`;
    const a = await this.#call({ method: "PUT", path, query, body: value === null ? undefined : rawBody(value) });
    return this.#bool(a, "PUT", path);
  }

  /** Blocking calls: the server may add wait/16 of jitter, then the answer must travel. */
  #blockingTimeout(waitMs: number): number {
    return waitMs + Math.ceil(waitMs / 16) + this.#timeoutMs;
  }

  /** The query parameters, timeout and signal of a read that blocks when `opts.index` is set (60 s wait by default). */
  #blocking(opts: BlockingOptions): { index?: number; wait?: string; timeoutMs?: number; signal?: AbortSignal } {
    const waitMs = opts.waitMs ?? 60_000;
    if (!(opts.index !== undefined && opts.index > 0)) return { signal: opts.signal };
    return { index: opts.index, wait: `${waitMs}ms`, timeoutMs: this.#blockingTimeout(waitMs), signal: opts.signal };
  }

  async #call(c: Call): Promise<Answer> {
    const { clock, log, observe } = this.#deps;
    const url = new URL(this.#cfg.address.baseUrl + c.path);
    for (const [k, v] of Object.entries(c.query ?? {})) {
      if (v === undefined || v === false) continue;
      url.searchParams.set(k, v === true ? "" : String(v));
    }
    const search = url.search.replace(/=(&|$)/g, "$1");
    const target = `${url.origin}${url.pathname}${search}`;
    const route = routeOf(c.path);
    const headers: Record<string, string> = {};
    if (this.#cfg.token) headers["X-Consul-Token"] = this.#cfg.token;
    let body: string | undefined;
    if (c.body instanceof RawBody) body = c.body.text;
    else if (c.body !== undefined) {
      body = JSON.stringify(c.body);
      headers["Content-Type"] = "application/json";
    }

    const timeout = new AbortController();
    const timer = clock.timer(c.timeoutMs ?? this.#timeoutMs, () => timeout.abort());
    const signal = c.signal ? AbortSignal.any([c.signal, timeout.signal]) : timeout.signal;
    const started = clock.monotonic();
    const finish = (status: number, code?: ConsulErrorCode) => {
      const ms = Math.round(clock.monotonic() - started);
      log.debug("consul request", { method: c.method, path: c.path + search, status, ms, ...(code ? { code } : {}) });
      observe?.({ method: c.method, route, status, ms, ...(code ? { code } : {}) });
    };

    let res: Response;
    let text: string;
    try {
      res = await this.#deps.fetch(target, {
        method: c.method,
        headers,
        body,
        signal,
        ...(this.#cfg.address.socketPath ? { unix: this.#cfg.address.socketPath } : {}),
        ...(this.#tls ? { tls: this.#tls } : {}),
      });
      text = await res.text();
    } catch (err) {
      timer.cancel();
      if (c.signal?.aborted) {
        finish(0);
        throw c.signal.reason;
      }
      const code: ConsulErrorCode = timeout.signal.aborted ? "CONSUL_TIMEOUT" : isTlsError(err) ? "CONSUL_TLS" : "CONSUL_UNREACHABLE";
      finish(0, code);
      const what = code === "CONSUL_TIMEOUT"
        ? `no answer within ${c.timeoutMs ?? this.#timeoutMs}ms`
        : code === "CONSUL_TLS"
        ? `TLS failed (${errText(err).replace(/\s*For more information, pass `verbose: true`.*$/s, "")}); check CONSUL_CACERT or CONSUL_CAPATH, CONSUL_CLIENT_CERT/KEY and CONSUL_TLS_SERVER_NAME`
        : `cannot reach the Consul agent at ${this.#where()} (${errText(err)})`;
      throw new ConsulError(code, `${c.method} ${c.path}: ${what}`, { method: c.method, path: c.path, status: 0, cause: err });
    }
    timer.cancel();
    const index = Number(res.headers.get("X-Consul-Index") ?? 0) || 0;
    if (res.headers.get("X-Consul-Results-Filtered-By-ACLs") === "true") this.#filtered(c.method, route);
    if ((res.status >= 200 && res.status < 300) || c.allow?.includes(res.status)) {
      finish(res.status);
      return { status: res.status, text, index };
    }
    const err = httpError(c.method, c.path, res.status, text);
    finish(res.status, err.code);
    throw err;
  }

  readonly #warnedFiltered = new Set<string>();

  /**
   * Consul answers 200 but leaves out what the token may not read (nodes,
   * services, checks): stale primaries and node maintenance then go unseen.
   * Said once per route, at warn, since nothing else would say it.
   */
  #filtered(method: string, route: string): void {
    if (this.#warnedFiltered.has(route)) return;
    this.#warnedFiltered.add(route);
    this.#deps.log.warn("Consul left out part of an answer the ACL token may not read", {
      method,
      route,
      fix: 'grant node_prefix "" read and read on the group\'s services (packaging/acl-policy.hcl)',
    });
  }

  #where(): string {
    const a = this.#cfg.address;
    return a.socketPath ? `unix://${a.socketPath}` : a.baseUrl;
  }

  /** One JSON object of `schema` (shapes.ts), or CONSUL_BAD_RESPONSE naming what does not fit. */
  #record<T>(a: Answer, method: string, path: string, schema: Schema): T {
    return this.#checked(checkRecord<T>(this.#json(a, method, path), schema, "the answer", { open: true }), a, method, path);
  }

  /** A JSON array of `schema` records; `null` (Consul's "none" on some routes) is empty. */
  #list<T>(a: Answer, method: string, path: string, schema: Schema): T[] {
    const raw = this.#json(a, method, path);
    if (raw === null) return [];
    return this.#checked(checkList<T>(raw, schema, "the answer", { open: true }), a, method, path);
  }

  /** A JSON object of `schema` records by ID (the agent's services and checks). */
  #map<T>(a: Answer, method: string, path: string, schema: Schema): Record<string, T> {
    const raw = this.#json(a, method, path);
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw this.#badShape(method, path, `not a JSON object: ${snippet(a.text)}`);
    const out: Record<string, T> = {};
    for (const [id, v] of Object.entries(raw)) out[id] = this.#checked(checkRecord<T>(v, schema, `the answer's ${JSON.stringify(id)}`, { open: true }), a, method, path);
    return out;
  }

  #checked<T>(r: Parsed<T>, a: Answer, method: string, path: string): T {
    if (r.ok) return r.value;
    throw new ConsulError("CONSUL_BAD_RESPONSE", `${method} ${path}: ${r.problem}`, { method, path, status: a.status });
  }

  #json(a: Answer, method: string, path: string): unknown {
    try {
      return JSON.parse(a.text) as unknown;
    } catch (err) {
      throw new ConsulError("CONSUL_BAD_RESPONSE", `${method} ${path}: the answer is not JSON: ${snippet(a.text)}`, {
        method,
        path,
        status: a.status,
        cause: err,
      });
    }
  }

  #bool(a: Answer, method: string, path: string): boolean {
    const t = a.text.trim();
    if (t === "true") return true;
    if (t === "false") return false;
    throw new ConsulError("CONSUL_BAD_RESPONSE", `${method} ${path}: expected true or false, got ${snippet(a.text)}`, {
      method,
      path,
      status: a.status,
    });
  }

  #badShape(method: string, path: string, why: string): ConsulError {
    return new ConsulError("CONSUL_BAD_RESPONSE", `${method} ${path}: unexpected answer: ${why}`, { method, path, status: 200 });
  }
}

interface RawKVPair extends Omit<KVPair, "Value"> {
  Value: string | null;
}

class RawBody {
  constructor(readonly text: string) {}
}

function rawBody(text: string): RawBody {
  return new RawBody(text);
}

function decodePair(raw: RawKVPair): KVPair {
  return { ...raw, Value: raw.Value === null || raw.Value === undefined ? null : Buffer.from(raw.Value, "base64").toString("utf8") };
}

/** Keys keep their slashes; every segment is percent-encoded. */
function encodeKey(key: string): string {
  return key.split("/").map(encodeURIComponent).join("/");
}

/** Maps a failed HTTP answer to its ConsulError, naming the missing permission on 403. */
export function httpError(method: string, path: string, status: number, body: string): ConsulError {
  const text = body.trim();
  if (status === 401 || status === 403) {
    const m = /lacks permission '([^']+)'(?: on "([^"]*)")?/.exec(text);
    const permission = m ? (m[2] ? `${m[1]} on "${m[2]}"` : m[1]) : undefined;
    const hint = permission
      ? `the ACL token lacks ${permission}`
      : /ACL not found/i.test(text)
      ? "the ACL token is unknown to Consul (check CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE)"
      : "permission denied by ACLs";
    return new ConsulError("CONSUL_FORBIDDEN", `${method} ${path}: ${status} ${hint}: ${snippet(text)}`, {
      method,
      path,
      status,
      ...(permission ? { permission } : {}),
    });
  }
  const code: ConsulErrorCode = status === 404 ? "CONSUL_NOT_FOUND" : status >= 500 ? "CONSUL_SERVER_ERROR" : "CONSUL_BAD_REQUEST";
  return new ConsulError(code, `${method} ${path}: ${status} ${snippet(text)}`, { method, path, status });
}

/** "/v1/session/renew/abc" -> "/v1/session/renew/:id"; keeps metric label sets small. */
export function routeOf(path: string): string {
  const fixed: [RegExp, string][] = [
    [/^\/v1\/kv\/.*/, "/v1/kv/:key"],
    [/^\/v1\/session\/(renew|destroy|info)\/.*/, "/v1/session/$1/:id"],
    [/^\/v1\/agent\/service\/deregister\/.*/, "/v1/agent/service/deregister/:id"],
    [/^\/v1\/agent\/service\/(?!register$).*/, "/v1/agent/service/:id"],
    [/^\/v1\/agent\/check\/(update|pass|warn|fail|deregister)\/.*/, "/v1/agent/check/$1/:id"],
    [/^\/v1\/health\/service\/.*/, "/v1/health/service/:name"],
    [/^\/v1\/health\/node\/.*/, "/v1/health/node/:node"],
    [/^\/v1\/catalog\/service\/.*/, "/v1/catalog/service/:name"],
    [/^\/v1\/query\/[^/]+(\/execute)?$/, "/v1/query/:id$1"],
  ];
  for (const [re, to] of fixed) if (re.test(path)) return path.replace(re, to);
  return path;
}

function isTlsError(err: unknown): boolean {
  const code = String((err as { code?: unknown })?.code ?? "");
  const msg = err instanceof Error ? err.message : "";
  return /CERT|SSL|TLS|ALTNAME|SELF_SIGNED|UNABLE_TO_GET_ISSUER|HANDSHAKE/i.test(code) ||
    /certificate|TLS|SSL|handshake/i.test(msg);
}

function errText(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  const msg = err instanceof Error ? err.message : String(err);
  return typeof code === "string" && !msg.includes(code) ? `${code}: ${msg}` : msg;
}

function snippet(text: string): string {
  const t = text.trim().replace(/\s+/g, " ");
  return t.length > 200 ? `${t.slice(0, 200)}...` : t || "(empty body)";
}
