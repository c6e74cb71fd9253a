/**
 * The production Redis transport: Bun's built-in RedisClient for commands,
 * and raw sockets for the two things it cannot do, naming a refused password
 * and writing a pipeline without waiting for replies.
 *
 * This is the Redis boundary: Bun's errors become RedisError here. Bun reports
 * a rejected password only as "Connection closed", so a failed connect to a
 * Redis that did answer is re-diagnosed with a raw AUTH exchange, and a wrong
 * password is named as such.
 */

import { type HostPort, formatHostPort } from "../host-port.ts";
import { RedisError, type RedisErrorCode } from "../errors.ts";
import { encodeCommand, type PipelineOutcome, type RedisAuth, type RedisConnection, type RedisTransport } from "./transport.ts";

export const bunTransport: RedisTransport = {
  async connect(addr, auth, timeoutMs) {
    const client = new Bun.RedisClient(redisUrl(addr, auth), {
      connectionTimeout: timeoutMs,
      autoReconnect: false,
      enableOfflineQueue: false,
      enableAutoPipelining: true,
      ...(auth.tls ? { tls: auth.ca ? { ca: auth.ca } : true } : {}),
    });
    const started = performance.now();
    try {
      await client.connect();
    } catch (err) {
      try {
        client.close();
      } catch {
        // never opened
      }
      // Only a server that answered and hung up is worth asking why; a silent
      // one (frozen, filtered) would just cost another timeout.
      const answered = performance.now() - started < timeoutMs * 0.8;
      throw answered ? await diagnose(addr, auth, timeoutMs, err) : new RedisError("REDIS_TIMEOUT", `cannot connect to Redis at ${formatHostPort(addr)} within ${timeoutMs}ms`, { cause: err });
    }
    return new BunConnection(addr, client);
  },
  pipeline: (addr, auth, commands, onConnected) => pipeline(addr, auth, commands, true, onConnected),
};

class BunConnection implements RedisConnection {
  readonly #addr: HostPort;
  readonly #client: Bun.RedisClient;
  #closed = false;
  #onClose: (() => void)[] = [];

  constructor(addr: HostPort, client: Bun.RedisClient) {
    this.#addr = addr;
    this.#client = client;
    client.onclose = () => {
      if (this.#closed) return;
      this.#closed = true;
      for (const fn of this.#onClose) fn();
    };
  }

  async send(name: string, args: string[]): Promise<unknown> {
    try {
      return await this.#client.send(name, args);
    } catch (err) {
      const e = convert(this.#addr, name, err);
      // Connected before: a closed connection now is a drop, not a refusal.
      throw e.code === "REDIS_UNREACHABLE" ? new RedisError("REDIS_DROPPED", e.message, { cause: err }) : e;
    }
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#client.onclose = null;
    try {
      this.#client.close();
    } catch {
      // already closed
    }
  }

  get connected(): boolean {
    return !this.#closed && this.#client.connected;
  }

  onClose(fn: () => void): void {
    this.#onClose.push(fn);
  }
}

function redisUrl(addr: HostPort, a: RedisAuth): string {
  const cred = a.password !== undefined
    ? `${encodeURIComponent(a.username ?? "default")}:${encodeURIComponent(a.password)}@`
    : a.username
    ? `${encodeURIComponent(a.username)}@`
    : "";
  const host = addr.host.includes(":") ? `[${addr.host}]` : addr.host;
  return `${a.tls ? "rediss" : "redis"}://${cred}${host}:${addr.port}`;
}

function convert(addr: HostPort, name: string, err: unknown): RedisError {
  if (err instanceof RedisError) return err;
  const msg = err instanceof Error ? err.message : String(err);
  const bunCode = String((err as { code?: unknown })?.code ?? "");
  let code: RedisErrorCode = "REDIS_COMMAND";
  if (/CONNECTION_CLOSED|CONNECTION|ECONNREFUSED|ECONNRESET|socket/i.test(bunCode) || /Connection closed/i.test(msg)) code = "REDIS_UNREACHABLE";
  else if (/^LOADING/.test(msg)) code = "REDIS_LOADING";
  else if (/^(WRONGPASS|NOAUTH|NOPERM)/.test(msg)) code = "REDIS_AUTH";
  return new RedisError(code, `${name} to ${formatHostPort(addr)}: ${msg}`, { cause: err });
}

/** Bun says "Connection closed" for a refused port and a wrong password alike; ask Redis directly. */
async function diagnose(addr: HostPort, auth: RedisAuth, timeoutMs: number, err: unknown): Promise<RedisError> {
  const where = formatHostPort(addr);
  const args = auth.password !== undefined ? ["AUTH", ...(auth.username ? [auth.username] : []), auth.password] : ["PING"];
  const r = await Promise.race([
    pipeline(addr, auth, [args], false),
    new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), timeoutMs)),
  ]);
  const reply = r?.replies?.[0];
  if (reply === undefined) {
    return new RedisError("REDIS_UNREACHABLE", `cannot connect to Redis at ${where}`, { cause: err });
  }
  if (reply.startsWith("-LOADING")) {
    return new RedisError("REDIS_LOADING", `Redis at ${where} is loading its dataset`, { cause: err });
  }
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

/**
 * See RedisTransport.pipeline. `withAuth` false: `commands` are sent as
 * given (the diagnosis sends its own AUTH). Every reply to the commands we
 * pipeline is one line (+OK, :n, -ERR ...), except INFO's bulk string, which
 * is read whole.
 */
function pipeline(addr: HostPort, auth: RedisAuth, commands: string[][], withAuth = true, onConnected?: () => void): Promise<PipelineOutcome> {
  const all = withAuth && auth.password !== undefined ? [["AUTH", ...(auth.username ? [auth.username] : []), auth.password], ...commands] : commands;
  const skip = all.length - commands.length;
  const wire = all.map(encodeCommand).join("");
  return new Promise((resolve) => {
    const parser = new ReplyLines();
    let settled = false;
    const done = (v: PipelineOutcome) => {
      if (settled) return;
      settled = true;
      resolve(v);
    };
    const replies = parser.replies;
    const finish = () => {
      const mine = replies.slice(skip);
      const refused = replies.find((l) => l.startsWith("-"));
      done(refused === undefined ? { outcome: "done", replies: mine } : { outcome: "refused", detail: refused.slice(1), replies: mine });
    };
    Bun.connect({
      hostname: addr.host,
      port: addr.port,
      ...(auth.tls ? { tls: auth.ca ? { ca: auth.ca } : true } : {}),
      socket: {
        open(sock) {
          sock.write(wire);
          onConnected?.();
        },
        data(sock, chunk) {
          parser.push(chunk);
          if (replies.length >= all.length) {
            finish(); // before end(): end() runs close() synchronously
            sock.end();
          }
        },
        close() {
          done({ outcome: "unreachable", replies: replies.slice(skip) });
        },
        error() {
          done({ outcome: "unreachable", replies: replies.slice(skip) });
        },
        connectError() {
          done({ outcome: "unreachable" });
        },
      },
    }).catch(() => done({ outcome: "unreachable" }));
  });
}

/**
 * Splits a stream of RESP replies into one string each: simple strings,
 * errors and integers as their line ("+OK", "-ERR ...", ":1"), bulk strings
 * as their content. Enough for the commands pipelined here (no arrays).
 */
class ReplyLines {
  readonly replies: string[] = [];
  #buf = Buffer.alloc(0);

  push(chunk: Uint8Array): void {
    this.#buf = Buffer.concat([this.#buf, chunk]);
    for (;;) {
      const nl = this.#buf.indexOf("\r\n");
      if (nl < 0) return;
      const line = this.#buf.subarray(0, nl).toString();
      if (line.startsWith("$") && Number(line.slice(1)) >= 0) {
        const len = Number(line.slice(1));
        if (this.#buf.length < nl + 2 + len + 2) return;
        this.replies.push(this.#buf.subarray(nl + 2, nl + 2 + len).toString());
        this.#buf = this.#buf.subarray(nl + 2 + len + 2);
        continue;
      }
      this.replies.push(line);
      this.#buf = this.#buf.subarray(nl + 2);
    }
  }
}
