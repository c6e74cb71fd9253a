/**
 * The one table of every environment knob: name, default, unit, range, what it
 * means and why its default is what it is. `--help`, the README's knob table
 * (checked by a test) and config.ts's parsing all read this table, so they
 * cannot drift apart.
 *
 * Owns documentation only; parsing and validation live in config.ts.
 */

export type KnobGroup = "consul" | "election" | "timing" | "service" | "redis" | "ops" | "exec";

export interface Knob {
  readonly name: string;
  readonly group: KnobGroup;
  /** The default as an operator would write it; "" means unset. */
  readonly default: string;
  readonly unit: string;
  /** Allowed values or range, as text. */
  readonly range: string;
  readonly meaning: string;
  /** Why the default has its value (or where it comes from). */
  readonly why: string;
  /** Holds a secret: never printed, logged, or shown in /state. */
  readonly secret?: boolean;
  /**
   * The ends of `range` as an operator would write them: each is accepted
   * with every other knob at its default (a test loads each one), in the
   * mode the knob belongs to (`where`). Absent for knobs without a range of
   * values (names, paths, addresses).
   */
  readonly bounds?: readonly string[];
  /** What else must be set for the knob to be read: Redis on, Nomad mode, or exec. Default: nothing. */
  readonly where?: "redis" | "nomad" | "exec";
}

export const KNOBS: readonly Knob[] = [
  // ---- Consul client: the Consul CLI's own variables, with the CLI's meaning.
  {
    name: "CONSUL_HTTP_ADDR", group: "consul", default: "http://localhost:8500", unit: "address",
    range: "host:port, http://host:port, https://host:port, unix:///path",
    meaning: "Consul agent HTTP API address.",
    why: "The shell consul-leader's default; same agent as the Consul CLI's 127.0.0.1:8500.",
  },
  {
    name: "CONSUL_HTTP_TOKEN", group: "consul", default: "", unit: "token", range: "ACL token", secret: true,
    meaning: "ACL token sent as X-Consul-Token.", why: "Unset: the agent's default token applies, as with the CLI.",
  },
  {
    name: "CONSUL_HTTP_TOKEN_FILE", group: "consul", default: "", unit: "path", range: "readable file",
    meaning: "File holding the ACL token; wins over CONSUL_HTTP_TOKEN, as in the CLI.",
    why: "Unset: under systemd, the credential consul-http-token when the unit passes one (LoadCredential=, see packaging/consul-leader.service) and neither token knob is set.",
  },
  {
    name: "CONSUL_HTTP_SSL", group: "consul", default: "false", unit: "bool", range: "true|false|1|0",
    bounds: ["true", "false", "1", "0"],
    meaning: "Use HTTPS even when CONSUL_HTTP_ADDR has no scheme.", why: "The CLI's default.",
  },
  {
    name: "CONSUL_HTTP_SSL_VERIFY", group: "consul", default: "true", unit: "bool", range: "true|false|1|0",
    bounds: ["true", "false", "1", "0"],
    meaning: "Verify the agent's TLS certificate.", why: "Verification on is the only safe default.",
  },
  {
    name: "CONSUL_CACERT", group: "consul", default: "", unit: "path", range: "PEM file",
    meaning: "CA certificate to verify the agent with.", why: "Unset: the system CAs.",
  },
  {
    name: "CONSUL_CAPATH", group: "consul", default: "", unit: "path", range: "directory of PEM files",
    meaning: "Directory of CA certificates to verify the agent with.", why: "Unset: the system CAs.",
  },
  {
    name: "CONSUL_CLIENT_CERT", group: "consul", default: "", unit: "path", range: "PEM file; needs CONSUL_CLIENT_KEY",
    meaning: "Client certificate for mutual TLS.", why: "Unset: no client certificate.",
  },
  {
    name: "CONSUL_CLIENT_KEY", group: "consul", default: "", unit: "path", range: "PEM file; needs CONSUL_CLIENT_CERT",
    meaning: "Private key of the client certificate.", why: "Unset.",
  },
  {
    name: "CONSUL_TLS_SERVER_NAME", group: "consul", default: "", unit: "name", range: "host name (a :port is dropped)",
    meaning: "Server name to verify the agent's certificate against (SNI).", why: "Unset: the host of CONSUL_HTTP_ADDR.",
  },

  // ---- The shell consul-leader's knobs: same names, meanings and defaults.
  {
    name: "CONSUL_LEADER_SERVICE_NAME", group: "election", default: "consul-leader", unit: "name", range: "Consul service name",
    meaning: "The Consul service to tag; also names the session and, when set, the default key.",
    why: "The shell consul-leader's default.",
  },
  {
    name: "CONSUL_LEADER_KEY", group: "election", default: "consul-leader/lock", unit: "KV key",
    range: "KV path; a leading / is dropped",
    meaning: "KV key to lock on. Default consul-leader/lock, or consul-leader/<SERVICE_NAME>/lock when CONSUL_LEADER_SERVICE_NAME is set.",
    why: "The shell consul-leader's two default forms.",
  },
  {
    name: "CONSUL_LEADER_PRIMARY_LABEL", group: "election", default: "primary", unit: "tag", range: "non-empty tag",
    meaning: "Tag put on the lock holder's service.", why: "The shell consul-leader's default.",
  },
  {
    name: "CONSUL_LEADER_REPLICA_LABEL", group: "election", default: "", unit: "tag", range: "tag, or empty for none",
    meaning: "Tag put on the other services; empty puts none.", why: "The shell consul-leader's default.",
  },
  {
    name: "CONSUL_LEADER_TTL", group: "timing", default: "15s", unit: "duration", range: "10s-24h",
    bounds: ["10s", "24h"],
    meaning: "Session TTL. Consul may keep an unrenewed session up to 2x this long.",
    why: "The shell consul-leader's default; renewed as rarely as the timing rule allows (every 6.4s with the other defaults, never more often than TTL/3).",
  },
  {
    name: "CONSUL_LEADER_SLEEP", group: "timing", default: "10", unit: "seconds or duration", range: "1ms to below TTL (14.999s with the default TTL)",
    bounds: ["1ms", "14.999s"],
    meaning: "Period of the full reconcile (re-read the lock, re-assert tags and Redis role); changes are also seen at once through blocking queries.",
    why: "The shell consul-leader's default; with a TTL under 15s, two thirds of the TTL instead, so that it stays below it. It is only the safety net now, so its value does not set failover time.",
  },
  {
    name: "CONSUL_LEADER_LOCKDELAY", group: "timing", default: "0s", unit: "duration", range: "0s-60s",
    bounds: ["0s", "60s"],
    meaning: "Session lock-delay: after the session is invalidated, nobody may acquire for this long.",
    why: "The shell consul-leader's default; safe here because the leader fences itself on its own timer before its check or session can lapse.",
  },
  {
    name: "CONSUL_LEADER_LOG_LEVEL", group: "ops", default: "warn", unit: "level", range: "error|warn|info|debug (warning is read as warn)",
    bounds: ["error", "warn", "warning", "info", "debug"],
    meaning: "Least severe level printed. info shows every role change and its reason; debug every decision and Consul call.",
    why: "The shell consul-leader's default.",
  },

  // ---- New knobs.
  {
    name: "CONSUL_LEADER_LOG_FORMAT", group: "ops", default: "text", unit: "format", range: "text|json",
    bounds: ["text", "json"],
    meaning: "text: one logfmt line per event; json: one JSON object per line.", why: "Readable in `nomad alloc logs`; json for shippers.",
  },
  {
    name: "CONSUL_LEADER_HTTP_ADDR", group: "ops", default: "", unit: "host:port", range: "host:port, e.g. 127.0.0.1:8008",
    meaning: "Where the status HTTP server listens: /health, /liveness, /readiness, /primary, /replica (200 or 503, for load balancers and Consul HTTP checks), /state (JSON), /metrics (Prometheus), an HTML overview at /, and POST /switchover. Unset: no server.",
    why: "Off unless asked for: it opens a port, so the operator chooses where it listens (Patroni's REST API uses 8008).",
  },
  {
    name: "CONSUL_LEADER_HTTP_TOKEN", group: "ops", default: "", unit: "token", range: "at least 16 characters", secret: true,
    meaning: "The bearer token (`Authorization: Bearer <token>`) the status server requires for POST /switchover, and for every route with CONSUL_LEADER_HTTP_AUTH=all. Compared in constant time.",
    why: "Unset: POST /switchover is off (405) and the server only reads; moving the primary drops every client, so it takes a credential.",
  },
  {
    name: "CONSUL_LEADER_HTTP_TOKEN_FILE", group: "ops", default: "", unit: "path", range: "readable file",
    meaning: "Read CONSUL_LEADER_HTTP_TOKEN from this file (a Nomad template, a Docker secret); surrounding whitespace is dropped. Unset: under systemd, the credential status-token when the unit passes one (LoadCredential=) and CONSUL_LEADER_HTTP_TOKEN is not set.",
    why: "Keeps the token out of the environment, which /proc/<pid>/environ shows and child processes inherit.",
  },
  {
    name: "CONSUL_LEADER_HTTP_AUTH", group: "ops", default: "writes", unit: "scope", range: "writes|all",
    meaning: "writes: only POST needs the token; all: every route does (give Consul and Nomad HTTP checks and Prometheus the header).",
    why: "The reads are what health checks and Prometheus need, carry no secret and change nothing; `all` hides the group's layout as well.",
  },
  {
    name: "CONSUL_LEADER_HTTP_ALLOWED_HOSTS", group: "ops", default: "", unit: "list", range: "comma-separated host names",
    meaning: "Names a request's Host header may carry besides IP addresses and localhost, e.g. the node's DNS name. Any other Host is refused (403).",
    why: "Unset: IP addresses and localhost only, so a web page cannot reach the server through a DNS name it controls (DNS rebinding).",
  },
  {
    name: "CONSUL_LEADER_HTTP_TLS_CERT", group: "ops", default: "", unit: "path", range: "PEM file; needs CONSUL_LEADER_HTTP_TLS_KEY",
    meaning: "Serve the status server over HTTPS with this certificate (chain).",
    why: "Unset: plain HTTP; the token then crosses the network in clear, so listen on loopback or a private address.",
  },
  {
    name: "CONSUL_LEADER_HTTP_TLS_KEY", group: "ops", default: "", unit: "path", range: "PEM file; needs CONSUL_LEADER_HTTP_TLS_CERT",
    meaning: "The private key of CONSUL_LEADER_HTTP_TLS_CERT.",
    why: "Unset: plain HTTP.",
  },
  {
    name: "CONSUL_LEADER_ON_ROLE_CHANGE", group: "ops", default: "", unit: "command", range: "a /bin/sh command line",
    meaning: "Run on every role change with CONSUL_LEADER_ROLE, CONSUL_LEADER_PREVIOUS_ROLE, CONSUL_LEADER_LEADER_ADDR, CONSUL_LEADER_EPOCH and CONSUL_LEADER_REASON in its environment (never a token or password). A failing or hanging hook is logged and never blocks the election.",
    why: "Unset: no hook.",
  },
  {
    name: "CONSUL_LEADER_HOOK_TIMEOUT", group: "ops", default: "10s", unit: "duration", range: "100ms-10m",
    bounds: ["100ms", "10m"],
    meaning: "A role-change hook still running after this long is killed (with its process group).",
    why: "Long enough for a notification or a config reload, short enough that hooks do not pile up.",
  },
  {
    name: "CONSUL_LEADER_PREPARED_QUERY", group: "ops", default: "", unit: "name", range: "prepared query name",
    meaning: "Create and keep a prepared query of this name returning only the passing instance tagged primary, so <name>.query.consul resolves to the writer.",
    why: "Unset: no query (it needs query:write).",
  },
  {
    name: "CONSUL_LEADER_PREPARED_QUERY_TAGS", group: "ops", default: "", unit: "list", range: "comma-separated tags",
    meaning: "Extra tags the prepared query requires besides the primary label.",
    why: "None.",
  },
  {
    name: "CONSUL_LEADER_SENTINEL_ADDR", group: "ops", default: "", unit: "host:port", range: "host:port, e.g. 0.0.0.0:26379; needs CONSUL_LEADER_REDIS_ADDR",
    meaning: "Where the Sentinel-compatible endpoint listens: Redis clients configured for Sentinel (ioredis, node-redis, go-redis, redis-py, Jedis, Lettuce, redis-cli) ask it for the primary and follow it. Unset: no endpoint.",
    why: "Off unless asked for: it opens a port (26379 is Sentinel's own).",
  },
  {
    name: "CONSUL_LEADER_SENTINEL_ANNOUNCE_ADDR", group: "ops", default: "", unit: "host:port", range: "host:port",
    meaning: "The endpoint's address as clients reach it, published in this sidecar's member entry so the other endpoints list it in SENTINEL sentinels. Default: CONSUL_LEADER_SENTINEL_ADDR, with a wildcard host (0.0.0.0, ::) replaced by the host of CONSUL_LEADER_ANNOUNCE_ADDR (else CONSUL_LEADER_REDIS_ADDR).",
    why: "A wildcard or loopback listen address means nothing to clients on other hosts.",
  },
  {
    name: "CONSUL_LEADER_SENTINEL_MASTER_NAME", group: "ops", default: "", unit: "name", range: "letters, digits, '-', '_', '.'",
    meaning: "The master name the endpoint answers to (the name in the clients' Sentinel configuration). Default: CONSUL_LEADER_SERVICE_NAME.",
    why: "One group, one name: the service's, unless the applications already use another (mymaster).",
  },
  {
    name: "CONSUL_LEADER_SENTINEL_PASSWORD", group: "ops", default: "", unit: "password", range: "any string without whitespace", secret: true,
    meaning: "The password the endpoint requires (AUTH, or HELLO ... AUTH default <password>) before it answers anything; clients set it as their sentinel password. Compared in constant time.",
    why: "Unset: no AUTH, as Sentinel's default; the endpoint only reads, but it tells whoever asks where the primary is.",
  },
  {
    name: "CONSUL_LEADER_SENTINEL_PASSWORD_FILE", group: "ops", default: "", unit: "path", range: "readable file",
    meaning: "Read CONSUL_LEADER_SENTINEL_PASSWORD from this file; a trailing newline is dropped.",
    why: "Keeps the password out of the environment, which /proc/<pid>/environ shows and child processes inherit.",
  },
  {
    name: "CONSUL_LEADER_SENTINEL_WAIT", group: "ops", default: "1s", unit: "duration", range: "0s-10s",
    bounds: ["0s", "10s"], where: "redis",
    meaning: "While a failover is in progress, how long a query for the primary (SENTINEL get-master-addr-by-name, master, masters) waits for the new one before answering as Sentinel does then (the old address, flagged failover_in_progress). 0s: answer at once, like Sentinel.",
    why: "Longer than a Redis crash failover (~0.1-0.3 s), so a client that asks mid-failover gets the new primary the moment it is certain instead of retrying on its own backoff; well below go-redis's 3 s read timeout.",
  },
  {
    name: "CONSUL_LEADER_EXEC_KILL_GRACE", group: "exec", default: "500ms", unit: "duration", range: "0s-2.5s with the other defaults; the timing rule sets the top",
    bounds: ["0s", "2500ms"], where: "exec",
    meaning: "consul-leader exec: between SIGTERM and SIGKILL to the command's process group when leadership ends. Counted in the fencing margin, so the command is dead before another holder could start.",
    why: "Short enough to fit the default 5s check TTL; half the room the timing rule leaves when that is less (a short CHECK_TTL), and FENCE_MARGIN's default takes what it leaves. Raise CONSUL_LEADER_CHECK_TTL to give the command longer.",
  },
  {
    name: "CONSUL_LEADER_EXEC_PASS_SECRETS", group: "exec", default: "false", unit: "bool", range: "true|false",
    bounds: ["true", "false"], where: "exec",
    meaning: "exec: give the command the sidecar's CONSUL_HTTP_TOKEN, Redis password and status token (and their _FILE knobs). Role-change hooks never get them.",
    why: "A command that needs Consul can carry its own token; by default it gets none, so a compromised or chatty command does not hold the sidecar's.",
  },
  {
    name: "CONSUL_LEADER_EXEC_RESTART", group: "exec", default: "false", unit: "bool", range: "true|false",
    bounds: ["true", "false"], where: "exec",
    meaning: "consul-leader exec: start the command again when it exits while this process still leads (else exit with its code and release the lock).",
    why: "Like consul lock: the command's exit ends the run.",
  },
  {
    name: "CONSUL_LEADER_CHECK_TTL", group: "timing", default: "5s", unit: "duration", range: "0s (off) or 1s-TTL",
    bounds: ["0s", "1s", "15s"],
    meaning: "TTL of the sidecar's own liveness check, which the session is bound to: a dead or frozen sidecar loses the lock this long after its last heartbeat, instead of after up to 2xTTL.",
    why: "Fast crash detection, yet long enough to ride out a local agent restart.",
  },
  {
    name: "CONSUL_LEADER_FENCE_MARGIN", group: "timing", default: "1s", unit: "duration", range: "0s-2.5s with the other defaults (the timing rule sets the top); with Redis, more than REDIS_TIMEOUT",
    bounds: ["0s", "2500ms"],
    meaning: "How long before the earliest moment another node could acquire the leader fences its Redis when it cannot renew.",
    why: "Twice the default Redis command timeout, so the fence completes in time; all the room the timing rule leaves when that is less than 1s (a short CHECK_TTL), so a documented CHECK_TTL works without setting this too. In exec mode, the room EXEC_KILL_GRACE leaves.",
  },
  {
    name: "CONSUL_LEADER_SERVICE_ID", group: "service", default: "", unit: "ID", range: "must not start with _nomad-task-",
    meaning: "Standalone mode: ID of the service the sidecar registers, and its instance ID in the group. Default <SERVICE_NAME>-<hostname>-<port> (port: CONSUL_LEADER_SERVICE_PORT, else the Redis port; the Redis host is added when Redis is not on this host); exec: <SERVICE_NAME>-<hostname>-exec-<random>, new for every run.",
    why: "Different for every sidecar that can run at the same time (one per Redis address), the same after a restart so the session is re-adopted; a twin with the same ID exits 78.",
  },
  {
    name: "CONSUL_LEADER_SERVICE_ADDRESS", group: "service", default: "", unit: "address", range: "host or IP",
    meaning: "Standalone mode: address registered for the service. Default: the announce address's host.",
    why: "What replicas and clients must connect to.",
  },
  {
    name: "CONSUL_LEADER_SERVICE_PORT", group: "service", default: "", unit: "port", range: "1-65535",
    bounds: ["1", "65535"],
    meaning: "Standalone mode: port registered for the service. Default: the announce address's port.",
    why: "What replicas and clients must connect to.",
  },
  {
    name: "CONSUL_LEADER_SERVICE_TAGS", group: "service", default: "", unit: "list", range: "comma-separated tags",
    meaning: "Standalone mode: tags always registered besides the role label.", why: "None.",
  },
  {
    name: "CONSUL_LEADER_DEREGISTER_AFTER", group: "service", default: "10m", unit: "duration", range: "1m-720h",
    bounds: ["1m", "720h"],
    meaning: "Standalone mode: Consul removes the service when its checks stay critical this long (a sidecar that died without deregistering).",
    why: "Long enough to see in the UI what died; Consul's minimum is 1m.",
  },
  {
    name: "CONSUL_LEADER_SERVICE_WAIT", group: "service", default: "2m", unit: "duration", range: "0s-24h",
    bounds: ["0s", "24h"], where: "nomad",
    meaning: "Nomad mode: how long to wait for Nomad to register the task's service before exiting.",
    why: "A prestart sidecar starts before the main task whose service it tags; image pulls can take a while.",
  },
  {
    name: "CONSUL_LEADER_PRIORITY", group: "election", default: "1", unit: "integer", range: "0-1000; 0 never leads",
    bounds: ["0", "1000"],
    meaning: "Breaks ties between candidates with the same data (higher first); 0 means never take the lock.",
    why: "All equal unless an operator says otherwise.",
  },
  {
    name: "CONSUL_LEADER_ELECTION_WAIT", group: "election", default: "2s", unit: "duration", range: "0s-1m",
    bounds: ["0s", "1m"],
    meaning: "When the lock is free, how long a candidate defers to a better one before taking the lock itself.",
    why: "Bounds the cost of a missing best candidate; the best one acts well before this.",
  },

  // ---- Redis (off unless CONSUL_LEADER_REDIS_ADDR is set: then tags only).
  {
    name: "CONSUL_LEADER_REDIS_ADDR", group: "redis", default: "", unit: "host:port", range: "host:port",
    meaning: "The Redis this sidecar manages. Unset: tags only, Redis untouched.", why: "Off unless asked for.",
  },
  {
    name: "CONSUL_LEADER_REDIS_PASSWORD", group: "redis", default: "", unit: "password", range: "any string", secret: true,
    meaning: "Redis password (AUTH); also set as masterauth so replicas can sync.", why: "Unset: no AUTH.",
  },
  {
    name: "CONSUL_LEADER_REDIS_PASSWORD_FILE", group: "redis", default: "", unit: "path", range: "readable file",
    meaning: "File holding the Redis password; wins over CONSUL_LEADER_REDIS_PASSWORD.",
    why: "Unset: under systemd, the credential redis-password when the unit passes one (LoadCredential=) and neither password knob is set.",
  },
  {
    name: "CONSUL_LEADER_REDIS_USERNAME", group: "redis", default: "", unit: "name", range: "Redis ACL user",
    meaning: "Redis ACL user for AUTH (and masteruser).", why: "Unset: the default user.",
  },
  {
    name: "CONSUL_LEADER_REDIS_TLS", group: "redis", default: "false", unit: "bool", range: "true|false",
    bounds: ["true", "false"], where: "redis",
    meaning: "Connect to Redis over TLS.", why: "Redis's default is plain TCP.",
  },
  {
    name: "CONSUL_LEADER_REDIS_CACERT", group: "redis", default: "", unit: "path", range: "PEM file",
    meaning: "CA certificate to verify Redis's TLS certificate.", why: "Unset: the system CAs.",
  },
  {
    name: "CONSUL_LEADER_ANNOUNCE_ADDR", group: "redis", default: "", unit: "host:port", range: "host:port",
    meaning: "Address other nodes use to reach this Redis (published in the lock value; replicas REPLICAOF it). Default: CONSUL_LEADER_REDIS_ADDR, or the service's address and port when that is a loopback address.",
    why: "A loopback Redis address means nothing to other hosts.",
  },
  {
    name: "CONSUL_LEADER_REDIS_POLL", group: "redis", default: "1s", unit: "duration", range: "10ms-10s",
    bounds: ["10ms", "10s"], where: "redis",
    meaning: "How often Redis's replication state is read (INFO) while all is steady; every 250ms (or this, if shorter) after a failed poll and while Redis loads, syncs or a replica's link is down. Default: 1s, or REDIS_DOWN_AFTER when that is set shorter.",
    why: "Polling is the safety net: a crash is seen at once through the connection the polls keep open (its close triggers a poll), and a frozen Redis is timed against REDIS_DOWN_AFTER by the quarter-second polls that follow the first failed one. One INFO a second costs half the CPU of four, and still shows a role changed by hand within a second.",
  },
  {
    name: "CONSUL_LEADER_REDIS_TIMEOUT", group: "redis", default: "500ms", unit: "duration", range: "10ms to below FENCE_MARGIN (999ms with the default)",
    bounds: ["10ms", "999ms"], where: "redis",
    meaning: "Timeout of every Redis command the sidecar sends.", why: "INFO answers in microseconds; half a second is a stuck server. Half of FENCE_MARGIN when that is under 1s, so it stays below it.",
  },
  {
    name: "CONSUL_LEADER_REDIS_DOWN_AFTER", group: "redis", default: "2s", unit: "duration", range: "10ms-1h, at least REDIS_POLL",
    bounds: ["10ms", "1h"], where: "redis",
    meaning: "A Redis that answers nothing for this long counts as down (a refused connection counts at once).",
    why: "Rides out one slow command; a crash is still seen at once because the port refuses. Twice REDIS_POLL when that is longer, so that one late poll does not mark Redis down.",
  },
  {
    name: "CONSUL_LEADER_MAX_LINK_DOWN", group: "redis", default: "10s", unit: "duration", range: "0s-24h",
    bounds: ["0s", "24h"], where: "redis",
    meaning: "A replica whose link to a live leader has been down longer than this leaves discovery and does not compete.",
    why: "resec's hard-coded value, now a knob.",
  },
  {
    name: "CONSUL_LEADER_MAX_LAG", group: "redis", default: "1048576", unit: "bytes", range: "0-9007199254740991",
    bounds: ["0", "9007199254740991"], where: "redis",
    meaning: "A replica further behind the primary than this loses its replica tag (and passing role check).",
    why: "Patroni's maximum_lag_on_failover default.",
  },
  {
    name: "CONSUL_LEADER_MIN_REPLICAS", group: "redis", default: "0", unit: "count", range: "0-100",
    bounds: ["0", "100"], where: "redis",
    meaning: "min-replicas-to-write kept on the primary. 1 makes a primary cut off from every replica refuse writes after MIN_REPLICAS_MAX_LAG, at the cost of refusing writes when all replicas are down.",
    why: "Redis's default; see 'One writer' in docs/design.md for when to raise it.",
  },
  {
    name: "CONSUL_LEADER_MIN_REPLICAS_MAX_LAG", group: "redis", default: "10s", unit: "duration", range: "1s-1h (whole seconds)",
    bounds: ["1s", "1h"], where: "redis",
    meaning: "min-replicas-max-lag kept on the primary.", why: "Redis's default.",
  },
  {
    name: "CONSUL_LEADER_FROZEN_PRIMARY_WAIT", group: "redis", default: "never", unit: "duration", range: "0s-24h, or never",
    bounds: ["0s", "24h", "never"], where: "redis",
    meaning: "How long a new leader waits for a previous primary that stopped answering while its own sidecar still ran (frozen, busy, a stalled disk) to run the queued fence before promoting without it. Promoting sooner brings writes back sooner, but a write that Redis had already received when it froze can then be acknowledged by it when it resumes, and be lost.",
    why: "never: no acknowledged write is lost; the group waits for that Redis to answer again or to die (a refused connection counts at once).",
  },
  {
    name: "CONSUL_LEADER_HANDOVER_TIMEOUT", group: "redis", default: "2s", unit: "duration", range: "100ms-1m",
    bounds: ["100ms", "1m"], where: "redis",
    meaning: "How long a new leader waits for its Redis to catch up with the fenced previous primary before promoting anyway (on a handover, a crashed sidecar, a switchover).",
    why: "Catching up takes milliseconds on a healthy link; this bounds the time without a writable primary when it does not.",
  },
];

/** Looks a knob up by name; throws on a typo so tables and code stay in step. */
export function knob(name: string): Knob {
  const k = KNOBS.find((x) => x.name === name);
  if (!k) throw new Error(`unknown knob ${name}`);
  return k;
}

export const SECRET_KNOBS: ReadonlySet<string> = new Set(KNOBS.filter((k) => k.secret).map((k) => k.name));

/** The knob table as Markdown, for the README (a test keeps the two equal). */
export function knobTableMarkdown(): string {
  const cell = (t: string) => t.replace(/\|/g, "\\|");
  const rows = KNOBS.map((k) =>
    `| \`${k.name}\` | ${k.default === "" ? "(unset)" : `\`${k.default}\``} | ${cell(k.unit)} | ${cell(k.range)} | ${cell(`${k.meaning} ${k.why}`)} |`
  );
  return ["| Knob | Default | Unit | Range | Meaning, and why the default |", "|---|---|---|---|---|", ...rows].join("\n");
}

/** The knob table as plain text, for `--help`. */
export function knobTableText(): string {
  return KNOBS.map((k) => {
    const def = k.default === "" ? "(unset)" : k.default;
    return `  ${k.name}\n      default ${def}; ${k.unit}; ${k.range}\n      ${k.meaning}`;
  }).join("\n");
}
