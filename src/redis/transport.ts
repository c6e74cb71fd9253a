/**
 * The seam between the sidecar and the Redis wire: opening a connection and
 * sending commands on it, and writing a pipeline without waiting. Production
 * wires Bun's RedisClient and sockets (bun-transport.ts); the deterministic
 * simulator wires simulated Redis servers. Everything above this interface
 * (timeouts, role changes, fencing) is the same code in both.
 *
 * Errors: implementations reject with RedisError (codes REDIS_UNREACHABLE
 * when nothing accepts the connection, REDIS_DROPPED when an accepted one is
 * closed, REDIS_AUTH, REDIS_LOADING, REDIS_COMMAND); timeouts are the
 * caller's job (RedisLink), on the injected clock.
 */

import type { HostPort } from "../host-port.ts";

export interface RedisAuth {
  username?: string;
  password?: string;
  tls: boolean;
  /** PEM CA certificates for TLS; system CAs when absent. */
  ca?: string[];
}

/** One open connection. Replies come back in the order commands were sent. */
export interface RedisConnection {
  /** Sends one command; resolves with Redis's reply, rejects with a RedisError (REDIS_DROPPED when the connection closes). */
  send(name: string, args: string[]): Promise<unknown>;
  /** Closes it; commands still in flight reject. Idempotent. */
  close(): void;
  readonly connected: boolean;
  /** `fn` runs once when the connection closes from the far side or fails (not after close()). */
  onClose(fn: () => void): void;
}

/** How a pipeline written without waiting ended (see RedisNode.queueFence). */
export interface PipelineOutcome {
  /** "done": every reply arrived, none an error; "refused": one was an error; "unreachable": the connection failed or closed first. */
  outcome: "done" | "refused" | "unreachable";
  /** Redis's first error reply, for "refused". */
  detail?: string;
  /** Every reply line, in order, when the connection lasted that long. */
  replies?: string[];
}

export interface RedisTransport {
  /**
   * Opens an authenticated connection. Rejects with REDIS_AUTH when the
   * credentials are refused, REDIS_LOADING while Redis loads its dataset, and
   * REDIS_UNREACHABLE when the connection is refused, REDIS_DROPPED when Redis
   * accepted it and closed it before it was ready.
   * Does not time out by itself.
   */
  connect(addr: HostPort, auth: RedisAuth, timeoutMs: number): Promise<RedisConnection>;
  /**
   * Opens a fresh connection and writes every command (AUTH first when
   * configured) as soon as it connects, without waiting for replies; resolves
   * once every reply arrived or the connection failed. Never closes the
   * connection while replies are outstanding: bytes already sent would still
   * reach Redis, so closing could not take them back, only hide whether they ran.
   * `onConnected` runs when the TCP connection is up: the host is alive and
   * something listens, whether or not it answers.
   */
  pipeline(addr: HostPort, auth: RedisAuth, commands: string[][], onConnected?: () => void): Promise<PipelineOutcome>;
}

/** One command in RESP, as a client sends it. */
export function encodeCommand(args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("");
}
