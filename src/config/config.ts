/**
 * Turns the environment into a validated Config, or into the full list of
 * what is wrong with it. Pure: the environment, the host name and file reads
 * come in as arguments, so tests need no process.env and no disk.
 *
 * Guarantees: every problem is reported in one pass, each naming the knob,
 * the rule and the value (secrets excepted); a Config that comes back
 * satisfies every timing rule in `timingProblems`. Does not check that
 * addresses answer or files stay readable later.
 */

import { formatDuration, parseDuration } from "./duration.ts";
import { KNOBS } from "./knobs.ts";
import { hiddenWhole, shownValue, withoutUserinfo } from "./secrets.ts";
import { unknownKnobWarnings } from "./spelling.ts";
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from "../log.ts";
import { type HostPort, isLoopback, parseHostPort } from "../host-port.ts";
import type { RedisAuth } from "../redis/transport.ts";

export type Env = Readonly<Record<string, string | undefined>>;

/** Other spellings of a log level that mean the same one: syslog's and Go's "warning". */
export const LOG_LEVEL_ALIASES: Readonly<Record<string, LogLevel>> = { warning: "warn" };

export interface ConsulAddress {
  /** Base URL for requests, e.g. "https://10.0.0.1:8501" or "http://localhost" for a unix socket. */
  readonly baseUrl: string;
  /** Set for unix:// addresses. */
  readonly socketPath?: string;
  readonly https: boolean;
}

export interface ConsulTls {
  readonly verify: boolean;
  /** PEM text of every CA from CONSUL_CACERT and CONSUL_CAPATH. */
  readonly ca?: string[];
  readonly cert?: string;
  readonly key?: string;
  readonly serverName?: string;
}

export interface ConsulClientConfig {
  readonly address: ConsulAddress;
  readonly token?: string;
  readonly tls?: ConsulTls;
}

export type Mode =
  | {
    readonly kind: "nomad";
    readonly allocId: string;
    readonly allocDir?: string;
    readonly serviceWaitMs: number;
  }
  | {
    readonly kind: "standalone";
    readonly serviceId: string;
    readonly address: string;
    readonly port: number;
    readonly tags: readonly string[];
    readonly deregisterAfterMs: number;
  };

/** Durations the loop runs on. Derived values say what they derive from. */
export interface Timing {
  readonly ttlMs: number;
  readonly sleepMs: number;
  readonly lockDelayMs: number;
  /** 0: no liveness check; the session has only its TTL. */
  readonly checkTtlMs: number;
  readonly fenceMarginMs: number;
  /**
   * As rarely as the timing rule allows with this margin, (TTL + LOCKDELAY -
   * margin - request timeout)/2, so that one renewal can fail and the next
   * still lands before the fencing deadline; never more often than TTL/3.
   * Every renewal reaches the servers: spacing them is most of an idle
   * sidecar's server traffic.
   */
  readonly renewEveryMs: number;
  /**
   * Heartbeats the same way: (CHECK_TTL + LOCKDELAY - margin - heartbeat
   * timeout)/2, never more often than min(1s, CHECK_TTL/4); 0 without a check.
   */
  readonly checkEveryMs: number;
  /** Non-blocking Consul request timeout, (CHECK_TTL or TTL)/4 clamped to 0.25-5s (client-go derives it the same way). */
  readonly requestTimeoutMs: number;
  /**
   * Timeout of a heartbeat: CHECK_TTL/10, at least 250ms, at most the request
   * timeout. The agent answers a check update itself, without the servers;
   * what the TTL does not spend waiting on one heartbeat goes to spacing them.
   */
  readonly checkTimeoutMs: number;
  readonly electionWaitMs: number;
}

export interface RedisConfig {
  readonly addr: HostPort;
  readonly auth: RedisAuth;
  /** Explicit CONSUL_LEADER_ANNOUNCE_ADDR; otherwise derived at startup (see `announceFor`). */
  readonly announce?: HostPort;
  readonly pollMs: number;
  readonly timeoutMs: number;
  readonly downAfterMs: number;
  readonly maxLinkDownMs: number;
  readonly maxLagBytes: number;
  readonly minReplicas: number;
  readonly minReplicasMaxLagS: number;
  readonly handoverTimeoutMs: number;
  /** CONSUL_LEADER_FROZEN_PRIMARY_WAIT; null ("never"): wait until the previous primary answers or is gone. */
  readonly frozenPrimaryWaitMs: number | null;
}

export interface Config {
  readonly consul: ConsulClientConfig;
  readonly serviceName: string;
  readonly key: string;
  readonly primaryLabel: string;
  readonly replicaLabel: string;
  readonly priority: number;
  readonly timing: Timing;
  readonly log: { readonly level: LogLevel; readonly format: LogFormat };
  readonly mode: Mode;
  /** Absent in tags-only mode. */
  readonly redis?: RedisConfig;
  /** The Redis credentials (redis.auth when Redis is managed; for the client commands, whether or not it is). */
  readonly redisAuth?: RedisAuth;
  /** CONSUL_LEADER_HTTP_ADDR: where the status server listens, and how it is protected; absent when it is off. */
  readonly http?: { readonly host: string; readonly port: number } & StatusServerSecurity;
  readonly hooks: { readonly command?: string; readonly timeoutMs: number };
  readonly preparedQuery?: { readonly name: string; readonly extraTags: readonly string[] };
  /** CONSUL_LEADER_SENTINEL_*: the Sentinel-compatible endpoint; absent when it is off. */
  readonly sentinel?: SentinelConfig;
  readonly exec: { readonly killGraceMs: number; readonly restart: boolean; readonly passSecrets: boolean };
  /** Identifies this sidecar in the group: the Nomad alloc ID or the standalone service ID. */
  readonly instanceId: string;
  /** Every knob that was set, secrets replaced by "[redacted]"; for the startup log and /state. */
  readonly effective: Readonly<Record<string, string>>;
}

/** The Sentinel-compatible endpoint (src/sentinel/). */
export interface SentinelConfig {
  /** Where it listens. */
  readonly listen: HostPort;
  /** Where clients reach it; published in the member entry. */
  readonly announce: HostPort;
  readonly masterName: string;
  /** CONSUL_LEADER_SENTINEL_PASSWORD(_FILE); absent: no AUTH. */
  readonly password?: string;
  /** CONSUL_LEADER_SENTINEL_WAIT. */
  readonly waitMs: number;
}

/** The CONSUL_LEADER_HTTP_* knobs beyond the address. */
export interface StatusServerSecurity {
  /** CONSUL_LEADER_HTTP_TOKEN(_FILE); absent: POST is off. */
  readonly token?: string;
  /** CONSUL_LEADER_HTTP_AUTH: which routes need the token. */
  readonly auth: "writes" | "all";
  /** CONSUL_LEADER_HTTP_ALLOWED_HOSTS, lower-cased, without ports. */
  readonly allowedHosts: readonly string[];
  /** PEM texts of CONSUL_LEADER_HTTP_TLS_CERT and _KEY; absent: plain HTTP. */
  readonly tls?: { readonly cert: string; readonly key: string };
}

/** The shortest status token accepted: 16 characters of a random token are beyond guessing over HTTP. */
const MIN_HTTP_TOKEN = 16;

function statusServerSecurity(get: (name: string) => string | undefined, p: Problems, io: LoadIo, env: Env): StatusServerSecurity {
  let token = get("CONSUL_LEADER_HTTP_TOKEN");
  const tokenFile = get("CONSUL_LEADER_HTTP_TOKEN_FILE");
  // Where the token came from, as a problem line names it.
  let source = "CONSUL_LEADER_HTTP_TOKEN";
  if (token && tokenFile) p.add(`CONSUL_LEADER_HTTP_TOKEN and CONSUL_LEADER_HTTP_TOKEN_FILE="${tokenFile}" are both set: set one`);
  else if (tokenFile) {
    source = `CONSUL_LEADER_HTTP_TOKEN_FILE="${tokenFile}"`;
    token = p.read(io, "CONSUL_LEADER_HTTP_TOKEN_FILE", tokenFile)?.trim();
    if (token === "") p.add(`CONSUL_LEADER_HTTP_TOKEN_FILE="${tokenFile}": the file is empty; it must hold the token`);
  } else if (!token) {
    // The systemd unit's credential; its fallback for a missing file (a bare newline) is no token.
    source = "the systemd credential status-token (/etc/consul-leader/status-token)";
    token = credential(env, io, "status-token")?.trim() || undefined;
  }
  if (token !== undefined && token !== "" && token.length < MIN_HTTP_TOKEN) {
    p.add(`${source}: the token has ${token.length} characters; it needs at least ${MIN_HTTP_TOKEN} (e.g. from: openssl rand -hex 24)`);
  }
  if (token !== undefined && /\s/.test(token)) p.add(`${source}: the token must not contain whitespace (it travels in an HTTP header)`);
  const auth = p.oneOf("CONSUL_LEADER_HTTP_AUTH", "writes", ["writes", "all"] as const);
  if (auth === "all" && !token) p.add("CONSUL_LEADER_HTTP_AUTH=all: needs CONSUL_LEADER_HTTP_TOKEN or CONSUL_LEADER_HTTP_TOKEN_FILE, or no request could pass");
  const allowedHosts = (get("CONSUL_LEADER_HTTP_ALLOWED_HOSTS") ?? "").split(",").map((h) => h.trim().toLowerCase()).filter(Boolean);
  for (const h of allowedHosts) {
    if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*\.?$/.test(h)) {
      p.add(`CONSUL_LEADER_HTTP_ALLOWED_HOSTS: "${h}" is not a host name (letters, digits, '-' and dots; no port, no scheme)`);
    }
  }
  const certPath = get("CONSUL_LEADER_HTTP_TLS_CERT");
  const keyPath = get("CONSUL_LEADER_HTTP_TLS_KEY");
  let tls: StatusServerSecurity["tls"];
  if (!!certPath !== !!keyPath) {
    p.add(`${certPath ? "CONSUL_LEADER_HTTP_TLS_CERT" : "CONSUL_LEADER_HTTP_TLS_KEY"} is set without ${certPath ? "CONSUL_LEADER_HTTP_TLS_KEY" : "CONSUL_LEADER_HTTP_TLS_CERT"}: HTTPS needs both`);
  } else if (certPath && keyPath) {
    const cert = p.read(io, "CONSUL_LEADER_HTTP_TLS_CERT", certPath);
    const key = p.read(io, "CONSUL_LEADER_HTTP_TLS_KEY", keyPath);
    if (cert !== undefined && !cert.includes("-----BEGIN CERTIFICATE-----")) p.add(`CONSUL_LEADER_HTTP_TLS_CERT="${certPath}": not a PEM certificate (no BEGIN CERTIFICATE line)`);
    if (key !== undefined && !/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(key)) p.add(`CONSUL_LEADER_HTTP_TLS_KEY="${keyPath}": not a PEM private key (no BEGIN PRIVATE KEY line)`);
    if (cert !== undefined && key !== undefined) tls = { cert, key };
  }
  return { ...(token ? { token } : {}), auth, allowedHosts, ...(tls ? { tls } : {}) };
}

/** What the process is about to do; exec mode counts the kill grace into the fencing margin. */
export type Purpose = "sidecar" | "exec" | "client";

export interface LoadIo {
  readFile(path: string): string;
  readDir(path: string): string[];
  hostname: string;
  /** A fresh random id: exec's default identity is unique per run. */
  randomId(): string;
}

export type LoadResult =
  | { ok: true; config: Config; warnings: string[] }
  | { ok: false; problems: string[] };

/**
 * Reads and validates every knob; see the module comment for guarantees.
 * `origin` says where a variable came from ("the environment", ".env"), for
 * the warning about a name that is not a knob (spelling.ts).
 */
export function loadConfig(env: Env, io: LoadIo, purpose: Purpose = "sidecar", origin: (name: string) => string = () => "the environment"): LoadResult {
  const p = new Problems(env);
  p.warnings.push(...unknownKnobWarnings(Object.keys(env).filter((n) => env[n] !== undefined), origin));
  const get = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v === "" ? undefined : v;
  };

  // ---- Consul client
  const ssl = p.bool("CONSUL_HTTP_SSL", false);
  const verify = p.bool("CONSUL_HTTP_SSL_VERIFY", true);
  const address = parseConsulAddress(get("CONSUL_HTTP_ADDR") ?? "http://localhost:8500", ssl, p);
  let token = get("CONSUL_HTTP_TOKEN");
  const tokenFile = get("CONSUL_HTTP_TOKEN_FILE");
  if (tokenFile) {
    const t = p.read(io, "CONSUL_HTTP_TOKEN_FILE", tokenFile)?.trim();
    if (t === "") p.add(`CONSUL_HTTP_TOKEN_FILE="${tokenFile}": the file is empty; it must hold the ACL token`);
    else if (t !== undefined) token = t;
  } else if (token === undefined) {
    token = credential(env, io, "consul-http-token")?.trim() || undefined;
  }
  const ca: string[] = [];
  const caFile = get("CONSUL_CACERT");
  if (caFile) {
    const pem = p.read(io, "CONSUL_CACERT", caFile);
    if (pem !== undefined) ca.push(pem);
  }
  const caPath = get("CONSUL_CAPATH");
  if (caPath) {
    try {
      for (const f of io.readDir(caPath).filter((f) => /\.(pem|crt)$/.test(f)).sort()) {
        const pem = p.read(io, "CONSUL_CAPATH", `${caPath.replace(/\/$/, "")}/${f}`);
        if (pem !== undefined) ca.push(pem);
      }
    } catch (err) {
      p.add(`CONSUL_CAPATH="${caPath}": cannot list the directory (${errText(err)})`);
    }
  }
  const certFile = get("CONSUL_CLIENT_CERT");
  const keyFile = get("CONSUL_CLIENT_KEY");
  if (!!certFile !== !!keyFile) {
    p.add(`CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together (got only ${certFile ? "CONSUL_CLIENT_CERT" : "CONSUL_CLIENT_KEY"})`);
  }
  const cert = certFile ? p.read(io, "CONSUL_CLIENT_CERT", certFile) : undefined;
  const clientKey = keyFile ? p.read(io, "CONSUL_CLIENT_KEY", keyFile) : undefined;
  const serverName = get("CONSUL_TLS_SERVER_NAME")?.replace(/:\d+$/, "");
  const wantsTls = address?.https || ca.length > 0 || cert !== undefined || serverName !== undefined || !verify;
  const tls: ConsulTls | undefined = wantsTls
    ? {
      verify,
      ...(ca.length ? { ca } : {}),
      ...(cert !== undefined ? { cert } : {}),
      ...(clientKey !== undefined ? { key: clientKey } : {}),
      ...(serverName ? { serverName } : {}),
    }
    : undefined;

  // ---- Election
  const serviceNameSet = get("CONSUL_LEADER_SERVICE_NAME");
  const serviceName = serviceNameSet ?? "consul-leader";
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(serviceName)) {
    p.add(`CONSUL_LEADER_SERVICE_NAME="${serviceName}": must be letters, digits, '-', '_' or '.', starting with a letter or digit`);
  }
  const rawKey = get("CONSUL_LEADER_KEY") ?? (serviceNameSet ? `consul-leader/${serviceNameSet}/lock` : "consul-leader/lock");
  const key = rawKey.replace(/^\/+/, "");
  if (key === "" || key.endsWith("/") || /\/\//.test(key)) {
    p.add(`CONSUL_LEADER_KEY="${rawKey}": must be a KV key, not empty, without a trailing or doubled '/'`);
  }
  const primaryLabel = get("CONSUL_LEADER_PRIMARY_LABEL") ?? "primary";
  const replicaLabel = env["CONSUL_LEADER_REPLICA_LABEL"] ?? "";
  if (primaryLabel === replicaLabel) {
    p.add(`CONSUL_LEADER_REPLICA_LABEL="${replicaLabel}": must differ from CONSUL_LEADER_PRIMARY_LABEL, or discovery cannot tell them apart`);
  }
  const priority = p.int("CONSUL_LEADER_PRIORITY", 1, 0, 1000);

  // ---- Timing. A knob whose default depends on another follows it (see
  // `dependentDefaults`), so every documented range is accepted with the
  // other knobs at their defaults.
  const ttlMs = p.duration("CONSUL_LEADER_TTL", "15s", 10_000, 86_400_000, "10s and 24h (Consul's session TTL range)");
  const lockDelayMs = p.duration("CONSUL_LEADER_LOCKDELAY", "0s", 0, 60_000, "0s and 60s (Consul clamps lock-delay to 60s)");
  const checkTtlMs = p.duration("CONSUL_LEADER_CHECK_TTL", "5s", 0, 86_400_000, "0s and 24h");
  const dflt = dependentDefaults({ ttlMs, checkTtlMs, lockDelayMs });
  const sleepMs = get("CONSUL_LEADER_SLEEP") ? p.duration("CONSUL_LEADER_SLEEP", "10", 1, Infinity, "more than 0 (and less than CONSUL_LEADER_TTL)") : dflt.sleepMs;
  const killGraceMs = get("CONSUL_LEADER_EXEC_KILL_GRACE") ? p.duration("CONSUL_LEADER_EXEC_KILL_GRACE", "500ms", 0, 60_000, "0s and 1m") : dflt.killGraceMs;
  const fenceMarginMs = get("CONSUL_LEADER_FENCE_MARGIN")
    ? p.duration("CONSUL_LEADER_FENCE_MARGIN", "1s", 0, 60_000, "0s and 60s")
    : dflt.fenceMarginMs(purpose === "exec" ? killGraceMs : 0);
  const electionWaitMs = p.duration("CONSUL_LEADER_ELECTION_WAIT", "2s", 0, 60_000, "0s and 1m");
  const execRestart = p.bool("CONSUL_LEADER_EXEC_RESTART", false);
  const execPassSecrets = p.bool("CONSUL_LEADER_EXEC_PASS_SECRETS", false);
  // exec mode: the command must be dead (SIGKILL sent) by the deadline, so the
  // margin grows by the grace between SIGTERM and SIGKILL.
  const margin = fenceMarginMs + (purpose === "exec" ? killGraceMs : 0);
  const timing = deriveTiming({ ttlMs, sleepMs, lockDelayMs, checkTtlMs, fenceMarginMs: margin, electionWaitMs });
  for (const problem of timingProblems(timing)) {
    p.add(purpose === "exec" ? `${problem} (exec mode: the margin here is CONSUL_LEADER_FENCE_MARGIN ${formatDuration(fenceMarginMs)} + CONSUL_LEADER_EXEC_KILL_GRACE ${formatDuration(killGraceMs)})` : problem);
  }

  // ---- Logging
  const level = p.oneOf("CONSUL_LEADER_LOG_LEVEL", "warn", LOG_LEVELS, LOG_LEVEL_ALIASES);
  const format = p.oneOf("CONSUL_LEADER_LOG_FORMAT", "text", LOG_FORMATS);

  // ---- Status server
  const hookCommand = get("CONSUL_LEADER_ON_ROLE_CHANGE");
  const hookTimeoutMs = p.duration("CONSUL_LEADER_HOOK_TIMEOUT", "10s", 100, 600_000, "100ms and 10m");
  const queryName = get("CONSUL_LEADER_PREPARED_QUERY");
  if (queryName && !/^[A-Za-z0-9][A-Za-z0-9_-]*$/.test(queryName)) {
    p.add(`CONSUL_LEADER_PREPARED_QUERY="${queryName}": must be letters, digits, '-' or '_' (it becomes <name>.query.consul)`);
  }
  const queryTags = (get("CONSUL_LEADER_PREPARED_QUERY_TAGS") ?? "").split(",").map((t) => t.trim()).filter(Boolean);
  const httpText = get("CONSUL_LEADER_HTTP_ADDR");
  const http = httpText ? parseHostPort(httpText) : undefined;
  if (httpText && !http) p.add(`CONSUL_LEADER_HTTP_ADDR="${httpText}": must be host:port, e.g. 127.0.0.1:8008`);
  const httpSecurity = statusServerSecurity(get, p, io, env);
  if (!httpText && (httpSecurity.token || httpSecurity.tls)) {
    p.warnings.push("CONSUL_LEADER_HTTP_TOKEN or CONSUL_LEADER_HTTP_TLS_* is set but CONSUL_LEADER_HTTP_ADDR is not: there is no status server to protect");
  }

  // ---- Mode
  let mode: Mode;
  const allocId = get("NOMAD_ALLOC_ID");
  if (allocId) {
    for (const name of ["CONSUL_LEADER_SERVICE_ID", "CONSUL_LEADER_SERVICE_ADDRESS", "CONSUL_LEADER_SERVICE_PORT", "CONSUL_LEADER_SERVICE_TAGS", "CONSUL_LEADER_DEREGISTER_AFTER"]) {
      if (get(name)) p.warnings.push(`${name} is set but NOMAD_ALLOC_ID is too: Nomad mode tags Nomad's service and ignores the standalone service knobs`);
    }
    const allocDir = get("NOMAD_ALLOC_DIR");
    mode = {
      kind: "nomad",
      allocId,
      ...(allocDir ? { allocDir } : {}),
      serviceWaitMs: p.duration("CONSUL_LEADER_SERVICE_WAIT", "2m", 0, 86_400_000, "0s and 24h"),
    };
  } else {
    const port = get("CONSUL_LEADER_SERVICE_PORT") ? p.int("CONSUL_LEADER_SERVICE_PORT", 0, 1, 65535) : 0;
    const serviceId = get("CONSUL_LEADER_SERVICE_ID") ?? defaultInstanceId(serviceName, io, purpose, port, get("CONSUL_LEADER_REDIS_ADDR"));
    if (serviceId.startsWith("_nomad-task-")) {
      p.add(`CONSUL_LEADER_SERVICE_ID="${serviceId}": must not start with _nomad-task-, or Nomad deletes the service as its own`);
    }
    mode = {
      kind: "standalone",
      serviceId,
      address: get("CONSUL_LEADER_SERVICE_ADDRESS") ?? "",
      port,
      tags: (get("CONSUL_LEADER_SERVICE_TAGS") ?? "").split(",").map((t) => t.trim()).filter(Boolean),
      deregisterAfterMs: p.duration("CONSUL_LEADER_DEREGISTER_AFTER", "10m", 60_000, 86_400_000 * 30, "1m and 30 days (Consul's minimum is 1m)"),
    };
  }

  // ---- Redis. The credentials also serve the client commands (status reads
  // every member's Redis), which need no CONSUL_LEADER_REDIS_ADDR of their own.
  let redis: RedisConfig | undefined;
  let redisAuth: RedisAuth | undefined;
  const redisAddrText = get("CONSUL_LEADER_REDIS_ADDR");
  if (redisAddrText || purpose === "client") {
    let password = get("CONSUL_LEADER_REDIS_PASSWORD");
    const pwFile = get("CONSUL_LEADER_REDIS_PASSWORD_FILE");
    if (pwFile) {
      const pw = p.read(io, "CONSUL_LEADER_REDIS_PASSWORD_FILE", pwFile)?.replace(/\r?\n$/, "");
      if (pw === "") p.add(`CONSUL_LEADER_REDIS_PASSWORD_FILE="${pwFile}": the file is empty; it must hold the password`);
      else if (pw !== undefined) password = pw;
    } else if (password === undefined) {
      password = credential(env, io, "redis-password")?.replace(/\r?\n$/, "") || undefined;
    }
    const username = get("CONSUL_LEADER_REDIS_USERNAME");
    const tlsOn = p.bool("CONSUL_LEADER_REDIS_TLS", false);
    const caFileR = get("CONSUL_LEADER_REDIS_CACERT");
    const caR = caFileR ? p.read(io, "CONSUL_LEADER_REDIS_CACERT", caFileR) : undefined;
    redisAuth = {
      ...(username ? { username } : {}),
      ...(password !== undefined ? { password } : {}),
      tls: tlsOn,
      ...(caR !== undefined ? { ca: [caR] } : {}),
    };
  }
  if (redisAddrText) {
    const addr = parseHostPort(redisAddrText);
    if (!addr) p.add(`CONSUL_LEADER_REDIS_ADDR="${redisAddrText}": must be host:port`);
    const announceText = get("CONSUL_LEADER_ANNOUNCE_ADDR");
    const announce = announceText ? parseHostPort(announceText) : undefined;
    if (announceText && !announce) p.add(`CONSUL_LEADER_ANNOUNCE_ADDR="${announceText}": must be host:port`);
    const givenDownAfterMs = get("CONSUL_LEADER_REDIS_DOWN_AFTER") ? p.duration("CONSUL_LEADER_REDIS_DOWN_AFTER", "2s", 10, 3_600_000, "10ms and 1h") : undefined;
    const pollMs = get("CONSUL_LEADER_REDIS_POLL") ? p.duration("CONSUL_LEADER_REDIS_POLL", "1s", 10, 10_000, "10ms and 10s") : defaultRedisPollMs(givenDownAfterMs);
    const timeoutMs = get("CONSUL_LEADER_REDIS_TIMEOUT") ? p.duration("CONSUL_LEADER_REDIS_TIMEOUT", "500ms", 10, 10_000, "10ms and 10s") : defaultRedisTimeoutMs(fenceMarginMs);
    const downAfterMs = givenDownAfterMs ?? defaultDownAfterMs(pollMs);
    const maxLagS = p.duration("CONSUL_LEADER_MIN_REPLICAS_MAX_LAG", "10s", 1000, 3_600_000, "1s and 1h");
    redis = {
      addr: addr ?? { host: "", port: 0 },
      auth: redisAuth!,
      ...(announce ? { announce } : {}),
      pollMs,
      timeoutMs,
      downAfterMs,
      maxLinkDownMs: p.duration("CONSUL_LEADER_MAX_LINK_DOWN", "10s", 0, 86_400_000, "0s and 24h"),
      maxLagBytes: p.int("CONSUL_LEADER_MAX_LAG", 1048576, 0, Number.MAX_SAFE_INTEGER),
      minReplicas: p.int("CONSUL_LEADER_MIN_REPLICAS", 0, 0, 100),
      minReplicasMaxLagS: Math.round(maxLagS / 1000),
      handoverTimeoutMs: p.duration("CONSUL_LEADER_HANDOVER_TIMEOUT", "2s", 100, 60_000, "100ms and 1m"),
      frozenPrimaryWaitMs: (get("CONSUL_LEADER_FROZEN_PRIMARY_WAIT") ?? "never").trim().toLowerCase() === "never"
        ? null
        : p.duration("CONSUL_LEADER_FROZEN_PRIMARY_WAIT", "never", 0, 86_400_000, "0s and 24h, or never"),
    };
    if (!(downAfterMs >= pollMs)) {
      p.add(`CONSUL_LEADER_REDIS_DOWN_AFTER=${formatDuration(downAfterMs)} must be at least CONSUL_LEADER_REDIS_POLL=${formatDuration(pollMs)}, or one late poll marks Redis down`);
    }
    if (!(timing.fenceMarginMs > timeoutMs)) {
      p.add(`CONSUL_LEADER_FENCE_MARGIN=${formatDuration(timing.fenceMarginMs)} must exceed CONSUL_LEADER_REDIS_TIMEOUT=${formatDuration(timeoutMs)}, so the fence completes before another node could take the lock`);
    }
  } else if (purpose !== "client") {
    for (const name of KNOBS.filter((k) => k.group === "redis").map((k) => k.name)) {
      if (get(name)) p.warnings.push(`${name} is set but CONSUL_LEADER_REDIS_ADDR is not; Redis knobs are ignored in tags-only mode`);
    }
  }

  // ---- Sentinel-compatible endpoint
  const sentinel = sentinelEndpoint(get, p, io, { serviceName, redis, purpose });

  if (p.list.length) return { ok: false, problems: p.list };
  const config: Config = {
    consul: { address: address!, ...(token ? { token } : {}), ...(tls ? { tls } : {}) },
    serviceName,
    key,
    primaryLabel,
    replicaLabel,
    priority,
    timing,
    log: { level, format },
    mode,
    ...(redis ? { redis } : {}),
    ...(redisAuth ? { redisAuth } : {}),
    ...(http ? { http: { ...http, ...httpSecurity } } : {}),
    hooks: { ...(hookCommand ? { command: hookCommand } : {}), timeoutMs: hookTimeoutMs },
    ...(queryName ? { preparedQuery: { name: queryName, extraTags: queryTags } } : {}),
    ...(sentinel ? { sentinel } : {}),
    exec: { killGraceMs, restart: execRestart, passSecrets: execPassSecrets },
    instanceId: mode.kind === "nomad" ? mode.allocId : mode.serviceId,
    effective: effectiveKnobs(env),
  };
  return { ok: true, config, warnings: p.warnings };
}

/** The CONSUL_LEADER_SENTINEL_* knobs; undefined when the endpoint is off (or this process is not a sidecar). */
function sentinelEndpoint(
  get: (name: string) => string | undefined,
  p: Problems,
  io: LoadIo,
  o: { serviceName: string; redis: RedisConfig | undefined; purpose: Purpose },
): SentinelConfig | undefined {
  const addrText = get("CONSUL_LEADER_SENTINEL_ADDR");
  let password = get("CONSUL_LEADER_SENTINEL_PASSWORD");
  const passwordFile = get("CONSUL_LEADER_SENTINEL_PASSWORD_FILE");
  if (password && passwordFile) p.add(`CONSUL_LEADER_SENTINEL_PASSWORD and CONSUL_LEADER_SENTINEL_PASSWORD_FILE="${passwordFile}" are both set: set one`);
  else if (passwordFile) {
    password = p.read(io, "CONSUL_LEADER_SENTINEL_PASSWORD_FILE", passwordFile)?.replace(/\r?\n$/, "");
    if (password === "") p.add(`CONSUL_LEADER_SENTINEL_PASSWORD_FILE="${passwordFile}": the file is empty; it must hold the password`);
  }
  if (password !== undefined && /\s/.test(password)) p.add("CONSUL_LEADER_SENTINEL_PASSWORD: the password must not contain whitespace (clients send it as one argument)");
  const masterName = get("CONSUL_LEADER_SENTINEL_MASTER_NAME") ?? o.serviceName;
  // The service name's own rule already speaks for a default taken from it.
  if (addrText && get("CONSUL_LEADER_SENTINEL_MASTER_NAME") && !/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(masterName)) {
    p.add(`CONSUL_LEADER_SENTINEL_MASTER_NAME="${masterName}": must be letters, digits, '-', '_' or '.', starting with a letter or digit`);
  }
  const waitMs = p.duration("CONSUL_LEADER_SENTINEL_WAIT", "1s", 0, 10_000, "0s and 10s");
  const announceText = get("CONSUL_LEADER_SENTINEL_ANNOUNCE_ADDR");
  const announce = announceText ? parseHostPort(announceText) : undefined;
  if (announceText && !announce) p.add(`CONSUL_LEADER_SENTINEL_ANNOUNCE_ADDR="${announceText}": must be host:port`);
  if (!addrText) {
    if (password || announceText) p.warnings.push("CONSUL_LEADER_SENTINEL_PASSWORD or _ANNOUNCE_ADDR is set but CONSUL_LEADER_SENTINEL_ADDR is not: there is no Sentinel endpoint");
    return undefined;
  }
  // Only the sidecar serves it; exec and the commands ignore it.
  if (o.purpose !== "sidecar") return undefined;
  const listen = parseHostPort(addrText);
  if (!listen) p.add(`CONSUL_LEADER_SENTINEL_ADDR="${addrText}": must be host:port, e.g. 0.0.0.0:26379`);
  if (!o.redis) p.add("CONSUL_LEADER_SENTINEL_ADDR needs CONSUL_LEADER_REDIS_ADDR: the endpoint names the group's Redis primary");
  if (!listen || !o.redis) return undefined;
  const wildcard = listen.host === "0.0.0.0" || listen.host === "::" || listen.host === "[::]";
  const redisHost = (o.redis.announce ?? o.redis.addr).host;
  return {
    listen,
    announce: announce ?? (wildcard ? { host: redisHost, port: listen.port } : listen),
    masterName,
    ...(password ? { password } : {}),
    waitMs,
  };
}

/**
 * The instance ID when CONSUL_LEADER_SERVICE_ID is not set: different for
 * every sidecar or exec process that may run at the same time, so that two
 * never share an identity (identity.ts stops a twin that does anyway).
 * - a sidecar: `<name>-<host>-<port>`, the port being CONSUL_LEADER_SERVICE_PORT
 *   or else the Redis port, and the Redis host inserted when Redis is not on
 *   this host (`<name>-<host>-<redis host>-<port>`): one per Redis address, and
 *   the same after a restart, so a restarted sidecar finds its session again;
 * - exec: `<name>-<host>-exec-<random>`: every run is a process of its own
 *   (an overlapping cron run must not take over the running one's lock).
 */
export function defaultInstanceId(serviceName: string, io: Pick<LoadIo, "hostname" | "randomId">, purpose: Purpose, servicePort: number, redisAddr: string | undefined): string {
  const host = io.hostname.split(".")[0] || "localhost";
  if (purpose === "exec") return `${serviceName}-${host}-exec-${io.randomId().slice(0, 12)}`;
  const redis = redisAddr ? parseHostPort(redisAddr) : undefined;
  const redisHost = redis && !isLoopback(redis.host) && redis.host !== host && redis.host !== io.hostname ? `-${redis.host.replace(/[^A-Za-z0-9_.-]/g, "_")}` : "";
  const port = servicePort || redis?.port || 0;
  return `${serviceName}-${host}${redisHost}${port ? `-${port}` : ""}`;
}

/**
 * A systemd credential (LoadCredential=) by ID, from $CREDENTIALS_DIRECTORY;
 * undefined without one. The unit's fallback for a missing file is a bare
 * newline (packaging/consul-leader.service), which the callers read as none.
 */
function credential(env: Env, io: Pick<LoadIo, "readFile">, id: string): string | undefined {
  const dir = env["CREDENTIALS_DIRECTORY"];
  if (!dir) return undefined;
  try {
    return io.readFile(`${dir.replace(/\/$/, "")}/${id}`);
  } catch {
    return undefined;
  }
}

/** Fills in the derived timings; see `Timing` for where each comes from. */
export function deriveTiming(t: {
  ttlMs: number;
  sleepMs: number;
  lockDelayMs: number;
  checkTtlMs: number;
  fenceMarginMs: number;
  electionWaitMs: number;
}): Timing {
  const leases = leasesOf(t);
  // As rarely as the rule (see timingProblems) allows with this margin, never more often than the fastest refresh.
  const spaced = (l: Lease | undefined) => (l ? Math.max(l.fastestMs, Math.floor((l.leaseMs + t.lockDelayMs - t.fenceMarginMs - l.timeoutMs) / 2)) : 0);
  return {
    ...t,
    renewEveryMs: spaced(leases[0]),
    checkEveryMs: spaced(leases[1]),
    requestTimeoutMs: leases[0]!.timeoutMs,
    checkTimeoutMs: leases[1]?.timeoutMs ?? 0,
  };
}

/** A lease the sidecar refreshes: its length, the fastest it is ever refreshed, and the timeout of one refresh. */
interface Lease {
  leaseMs: number;
  fastestMs: number;
  timeoutMs: number;
}

/** The session (TTL/3 at the fastest) and, when there is one, the liveness check (min(1s, CHECK_TTL/4) at the fastest). */
function leasesOf(t: { ttlMs: number; checkTtlMs: number }): Lease[] {
  const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));
  const requestTimeoutMs = Math.floor(clamp((t.checkTtlMs || t.ttlMs) / 4, 250, 5000));
  const out: Lease[] = [{ leaseMs: t.ttlMs, fastestMs: Math.floor(t.ttlMs / 3), timeoutMs: requestTimeoutMs }];
  if (t.checkTtlMs) {
    out.push({ leaseMs: t.checkTtlMs, fastestMs: Math.min(1000, Math.floor(t.checkTtlMs / 4)), timeoutMs: Math.min(requestTimeoutMs, Math.max(250, Math.floor(t.checkTtlMs / 10))) });
  }
  return out;
}

/**
 * The room the timing rule leaves for the fence margin (and exec's kill
 * grace): the smallest lease + lock-delay - 2 x fastest refresh - refresh
 * timeout, over the session and the check. May be negative (then nothing
 * fits). The refreshes then space themselves into whatever the chosen
 * margin leaves (deriveTiming).
 */
export function timingRoomMs(t: { ttlMs: number; checkTtlMs: number; lockDelayMs: number }): number {
  return Math.min(...leasesOf(t).map((l) => l.leaseMs + t.lockDelayMs - 2 * l.fastestMs - l.timeoutMs));
}

/**
 * Defaults that follow other knobs, so that each knob's documented range is
 * accepted with every other knob at its default:
 * - SLEEP: 10 s (the shell tool's), or 2/3 of a TTL under 15 s, so it stays below the TTL;
 * - EXEC_KILL_GRACE: 500 ms, or half the timing rule's room when that is less;
 * - FENCE_MARGIN: 1 s, or the room the timing rule leaves (minus exec's
 *   grace) when that is less, so a short CHECK_TTL needs no second knob.
 * The values at the documented defaults are the table's.
 */
export function dependentDefaults(t: { ttlMs: number; checkTtlMs: number; lockDelayMs: number }): {
  sleepMs: number;
  killGraceMs: number;
  fenceMarginMs: (killGraceMs: number) => number;
} {
  const room = Math.max(0, timingRoomMs(t));
  return {
    sleepMs: Math.min(10_000, Math.floor((t.ttlMs * 2) / 3)),
    killGraceMs: Math.min(500, Math.floor(room / 2)),
    fenceMarginMs: (grace) => Math.min(1000, Math.max(0, room - grace)),
  };
}

/** REDIS_TIMEOUT's default: 500 ms, or half the fence margin when that is under 1 s (it must stay below it); at least 10 ms. */
export function defaultRedisTimeoutMs(fenceMarginMs: number): number {
  return Math.max(10, Math.min(500, Math.floor(fenceMarginMs / 2)));
}

/** REDIS_POLL's default: 1 s, or REDIS_DOWN_AFTER when that is set shorter (it may not be below the poll). */
export function defaultRedisPollMs(downAfterMs: number | undefined): number {
  return Math.min(1000, downAfterMs ?? 1000);
}

/** REDIS_DOWN_AFTER's default: 2 s, or two polls when that is longer (one late poll must not mark Redis down). */
export function defaultDownAfterMs(pollMs: number): number {
  return Math.max(2000, 2 * pollMs);
}

/**
 * The timing model's rules (README, "Timing"). Each says what it protects, the
 * rule, and the values, so a rejected combination explains itself.
 */
export function timingProblems(t: Timing): string[] {
  const out: string[] = [];
  const d = formatDuration;
  if (!(t.sleepMs < t.ttlMs)) {
    out.push(`CONSUL_LEADER_SLEEP=${d(t.sleepMs)} must be less than CONSUL_LEADER_TTL=${d(t.ttlMs)}, or a loop could outlive the session`);
  }
  if (t.checkTtlMs !== 0 && t.checkTtlMs < 1000) {
    out.push(`CONSUL_LEADER_CHECK_TTL=${d(t.checkTtlMs)} must be 0s (off) or at least 1s`);
  }
  if (t.checkTtlMs > t.ttlMs) {
    out.push(`CONSUL_LEADER_CHECK_TTL=${d(t.checkTtlMs)} must not exceed CONSUL_LEADER_TTL=${d(t.ttlMs)}: the check exists to detect a dead sidecar sooner than the session TTL`);
  }
  // A healthy leader must get a refresh in before its own fencing deadline even
  // when one attempt fails: 2 x interval + one request + margin <= lease.
  const leases: [string, number, number, number][] = [["CONSUL_LEADER_TTL", t.ttlMs, t.renewEveryMs, t.requestTimeoutMs]];
  if (t.checkTtlMs) leases.push(["CONSUL_LEADER_CHECK_TTL", t.checkTtlMs, t.checkEveryMs, t.checkTimeoutMs]);
  for (const [name, lease, every, timeout] of leases) {
    const need = 2 * every + timeout + t.fenceMarginMs;
    if (need > lease + t.lockDelayMs) {
      out.push(
        `${name}=${d(lease)} is too short for CONSUL_LEADER_FENCE_MARGIN=${d(t.fenceMarginMs)}: ` +
          `rule 2 x refresh (${d(every)}) + request timeout (${d(timeout)}) + margin <= ${name} + CONSUL_LEADER_LOCKDELAY (${d(t.lockDelayMs)}); ` +
          `${d(need)} > ${d(lease + t.lockDelayMs)}. Raise ${name} or CONSUL_LEADER_LOCKDELAY, or lower the margin`,
      );
    }
  }
  return out;
}

/** Every knob in the table that is set, plus NOMAD_ALLOC_ID, with secrets redacted. */
export function effectiveKnobs(env: Env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of KNOBS) {
    const v = env[k.name];
    if (v !== undefined && v !== "") out[k.name] = shownValue(k.name, v);
  }
  if (env["NOMAD_ALLOC_ID"]) out["NOMAD_ALLOC_ID"] = env["NOMAD_ALLOC_ID"];
  return out;
}

function parseConsulAddress(raw: string, ssl: boolean, p: Problems): ConsulAddress | undefined {
  const bad = (why: string) => {
    p.add(`CONSUL_HTTP_ADDR="${withoutUserinfo(raw)}": ${why}; use host:port, http://host:port, https://host:port or unix:///path`);
    return undefined;
  };
  if (raw.startsWith("unix://")) {
    const socketPath = raw.slice("unix://".length);
    if (!socketPath.startsWith("/")) return bad("a unix socket path must be absolute");
    return { baseUrl: "http://localhost", socketPath, https: false };
  }
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\//.exec(raw);
  let scheme = m ? m[1]!.toLowerCase() : ssl ? "https" : "http";
  if (m && scheme !== "http" && scheme !== "https") return bad(`unknown protocol scheme ${scheme}`);
  if (m && scheme === "http" && ssl) scheme = "https";
  const rest = m ? raw.slice(m[0].length) : raw;
  let url: URL;
  try {
    url = new URL(`${scheme}://${rest}`);
  } catch {
    return bad("not a valid address");
  }
  if (!url.hostname) return bad("no host");
  const prefix = url.pathname.replace(/\/+$/, "");
  return { baseUrl: `${url.protocol}//${url.host}${prefix}`, https: scheme === "https" };
}

class Problems {
  readonly list: string[] = [];
  readonly warnings: string[] = [];
  constructor(private readonly env: Env) {}

  add(problem: string): void {
    this.list.push(problem);
  }

  private raw(name: string, def: string): string {
    const v = this.env[name];
    return v === undefined || v === "" ? def : v;
  }

  private show(name: string, value: string): string {
    return hiddenWhole(name) ? `${name}=${shownValue(name, value)}` : `${name}="${shownValue(name, value)}"`;
  }

  duration(name: string, def: string, min: number, max: number, rangeText: string): number {
    const text = this.raw(name, def);
    const ms = parseDuration(text);
    if (ms === undefined) {
      this.add(`${this.show(name, text)}: not a duration; write e.g. 15s, 500ms or 1m30s`);
      return parseDuration(def)!;
    }
    if (ms < min || ms > max) {
      this.add(`${this.show(name, text)}: must be ${/^(more|less|at) /.test(rangeText) ? "" : "between "}${rangeText}`);
      return parseDuration(def)!;
    }
    return ms;
  }

  int(name: string, def: number, min: number, max: number): number {
    const text = this.raw(name, String(def));
    if (!/^-?\d+$/.test(text.trim())) {
      this.add(`${this.show(name, text)}: not a whole number`);
      return def;
    }
    const n = Number(text);
    if (n < min || n > max) {
      this.add(`${this.show(name, text)}: must be between ${min} and ${max}`);
      return def;
    }
    return n;
  }

  bool(name: string, def: boolean): boolean {
    const raw = this.raw(name, String(def));
    const text = raw.trim().toLowerCase();
    if (["true", "1", "t", "yes", "on"].includes(text)) return true;
    if (["false", "0", "f", "no", "off"].includes(text)) return false;
    this.add(`${this.show(name, raw)}: must be true or false`);
    return def;
  }

  oneOf<T extends string>(name: string, def: T, allowed: readonly T[], aliases: Readonly<Record<string, T>> = {}): T {
    const raw = this.raw(name, def);
    const text = raw.trim().toLowerCase();
    if ((allowed as readonly string[]).includes(text)) return text as T;
    const alias = aliases[text];
    if (alias !== undefined) return alias;
    this.add(`${this.show(name, raw)}: must be one of ${allowed.join(", ")}`);
    return def;
  }

  read(io: LoadIo, name: string, path: string): string | undefined {
    try {
      return io.readFile(path);
    } catch (err) {
      this.add(`${name}="${path}": cannot read the file (${errText(err)})`);
      return undefined;
    }
  }
}

function errText(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  return typeof code === "string" ? code : err instanceof Error ? err.message : String(err);
}
