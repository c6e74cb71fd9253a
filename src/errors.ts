/**
 * The error types every module throws and every log line serialises.
 *
 * Each error carries a stable `code` that callers branch on and tests assert,
 * and the lower-level `cause`. Errors from Consul and Redis are converted into
 * these types once, at the client boundary (consul/client.ts, redis/node.ts); nothing above
 * that boundary inspects HTTP statuses or socket errors.
 */

export type ConsulErrorCode =
  /** Connection refused, DNS failure, socket closed: the agent is not answering. */
  | "CONSUL_UNREACHABLE"
  /** No answer within the request timeout. */
  | "CONSUL_TIMEOUT"
  /** TLS handshake or certificate verification failed. */
  | "CONSUL_TLS"
  /** 401/403: the token lacks a permission; `permission` names it when Consul said. */
  | "CONSUL_FORBIDDEN"
  /** 404 on an object that must exist (session, service, check). */
  | "CONSUL_NOT_FOUND"
  /** 400/413 and other 4xx: Consul rejected what we sent. */
  | "CONSUL_BAD_REQUEST"
  /** 5xx: Consul failed (no leader, RPC error, ...). Safe to retry reads. */
  | "CONSUL_SERVER_ERROR"
  /** 2xx whose body is not what the API documents (malformed JSON, wrong shape). */
  | "CONSUL_BAD_RESPONSE";

export type RedisErrorCode =
  /** Nothing accepts connections at the address (refused or reset while connecting): no Redis runs there. */
  | "REDIS_UNREACHABLE"
  /**
   * Redis accepted the connection and then closed it (CLIENT KILL, a full
   * client table, a restart under way): alive, or just died; not proof of either.
   */
  | "REDIS_DROPPED"
  /** No answer within the timeout: frozen, busy, or the network lost it. */
  | "REDIS_TIMEOUT"
  /** Wrong password or ACL user (WRONGPASS, NOAUTH, NOPERM). */
  | "REDIS_AUTH"
  /** Redis is loading its dataset and refuses commands. */
  | "REDIS_LOADING"
  /** Any other error reply. */
  | "REDIS_COMMAND";

export type ErrorCode =
  | ConsulErrorCode
  | RedisErrorCode
  | "CONFIG_INVALID"
  | "SERVICE_NOT_FOUND"
  /** A Redis-changing action was not taken: the lease was not proven to outlive it. */
  | "LEASE_UNPROVEN"
  /** Another process uses this sidecar's identity (instance ID); this one stops. */
  | "IDENTITY_TWIN"
  /** The Redis user may not run a command a failover needs (redis/permissions.ts); the sidecar stops. */
  | "REDIS_PERMISSIONS";

/** Base class: a message for humans, a code for code. */
export class LeaderError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    // Spelled out, not new.target.name: the minified binary renames classes.
    this.name = "LeaderError";
  }
}

/** A failed Consul HTTP call. `status` is 0 when no HTTP answer arrived. */
export class ConsulError extends LeaderError {
  declare readonly code: ConsulErrorCode;
  readonly method: string;
  readonly path: string;
  readonly status: number;
  /** For CONSUL_FORBIDDEN: the ACL permission Consul reported missing, e.g. `session:write on "node1"`. */
  readonly permission: string | undefined;
  constructor(
    code: ConsulErrorCode,
    message: string,
    detail: { method: string; path: string; status: number; permission?: string; cause?: unknown },
  ) {
    super(code, message, { cause: detail.cause });
    this.name = "ConsulError";
    this.method = detail.method;
    this.path = detail.path;
    this.status = detail.status;
    this.permission = detail.permission;
  }
}

/** A failed Redis command or connection. */
export class RedisError extends LeaderError {
  declare readonly code: RedisErrorCode;
  constructor(code: RedisErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "RedisError";
  }
}

/** Every invalid knob at once; `problems` has one sentence per knob. */
export class ConfigError extends LeaderError {
  readonly problems: readonly string[];
  constructor(problems: readonly string[]) {
    super("CONFIG_INVALID", `invalid configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

export function isConsulError(err: unknown, ...codes: ConsulErrorCode[]): err is ConsulError {
  return err instanceof ConsulError && (codes.length === 0 || codes.includes(err.code));
}

export function isRedisError(err: unknown, ...codes: RedisErrorCode[]): err is RedisError {
  return err instanceof RedisError && (codes.length === 0 || codes.includes(err.code));
}

/** The shape errors take in log lines and /state: `{type, code, message, cause}`. */
export interface SerializedError {
  type: string;
  code?: string;
  message: string;
  cause?: SerializedError;
}

export function serializeError(err: unknown, depth = 0): SerializedError {
  if (!(err instanceof Error)) return { type: typeof err, message: String(err) };
  const out: SerializedError = { type: err.name, message: err.message };
  const code = (err as { code?: unknown }).code;
  if (typeof code === "string") out.code = code;
  if (err.cause !== undefined && depth < 3) out.cause = serializeError(err.cause, depth + 1);
  return out;
}

/** One line for humans: "message (code)". */
export function describeError(err: unknown): string {
  if (err instanceof LeaderError) return `${err.message} (${err.code})`;
  return err instanceof Error ? err.message : String(err);
}
