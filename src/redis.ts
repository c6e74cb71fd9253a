/**
 * Redis, as the sidecar drives it: one connection with hard timeouts, the
 * replication state parsed from INFO, and the role changes (promote, follow,
 * park, fence) as single idempotent operations.
 *
 * This is the Redis boundary: transport failures and error replies become
 * RedisError here. Uses Bun's built-in RedisClient; because it reports a
 * rejected password only as "Connection closed", a failed connect is
 * re-diagnosed with a raw AUTH exchange so a wrong password is named as such.
 *
 * The fence: `min-replicas-to-write` set far above any replica count makes a
 * master refuse every write (NOREPLICAS) until lifted. Unlike CLIENT PAUSE it
 * does not expire, survives the sidecar dying, keeps the data and the
 * replication stream, and is lifted by one CONFIG SET. Replicas ignore it.
 *
 * The queued fence (`RedisNode.queueFence`) is the same fence for a Redis that
 * does not answer: written on a fresh connection without waiting for any
 * reply, so a frozen Redis (SIGSTOP, a stalled disk or VM) runs it the moment
 * it runs again, before it serves clients that connect after it resumes.
 */

import type { Logger } from "./log.ts";
import { RedisError, type RedisErrorCode } from "./errors.ts";

/** min-replicas-to-write while fenced: no group has this many replicas. */
export const FENCE_MIN_REPLICAS = 2147483647;

/** Parked replicas point here: nothing listens, so they keep their data and serve no sync. */
export const PARK_HOST = "127.0.0.1";
export const PARK_PORT = 1;

export interface RedisAuth {
  username?: string;
  password?: string;
  tls: boolean;
  /** PEM CA certificates for TLS; system CAs when absent. */
  ca?: string[];
}

export interface HostPort {
  host: string;
  port: number;
}

/** "host:port" or "[v6]:port"; rejects URLs ("redis://h:1"), credentials and stray brackets. */
export function parseHostPort(text: string): HostPort | undefined {
  const t = text.trim();
  const m = /^\[([^\]\s]+)\]:(\d{1,5})$/.exec(t) ?? /^([^\s[\]/@]+):(\d{1,5})$/.exec(t);
  if (!m) return undefined;
  const port = Number(m[2]);
  if (port < 1 || port > 65535) return undefined;
  return { host: m[1]!, port };
}

export function formatHostPort(a: HostPort): string {
  return a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/** One connection to one Redis with a timeout on every command; reconnects lazily. */
export class RedisLink {
  readonly addr: HostPort;
  readonly #auth: RedisAuth;
  readonly #timeoutMs: number;
  readonly #log: Logger;
  #client: Bun.RedisClient | undefined;
  #connecting: Promise<Bun.RedisClient> | undefined;

  constructor(addr: HostPort, auth: RedisAuth, timeoutMs: number, log: Logger) {
    this.addr = addr;
    this.#auth = auth;
    this.#timeoutMs = timeoutMs;
    this.#log = log;
  }

  /** Sends one command; rejects with a RedisError after the timeout and drops the connection. */
  async cmd(name: string, args: string[] = [], timeoutMs = this.#timeoutMs): Promise<unknown> {
    const client = await this.#connect(timeoutMs);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new RedisError("REDIS_TIMEOUT", `${name} to ${formatHostPort(this.addr)}: no answer within ${timeoutMs}ms`)), timeoutMs);
    });
    try {
      return await Promise.race([client.send(name, args), timeout]);
    } catch (err) {
      const e = err instanceof RedisError && err.code === "REDIS_TIMEOUT" ? err : this.#convert(name, err);
      if (e.code === "REDIS_TIMEOUT" || e.code === "REDIS_UNREACHABLE") this.close();
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  close(): void {
    const c = this.#client;
    this.#client = undefined;
    this.#connecting = undefined;
    if (c) {
      c.onclose = null;
      try {
        c.close();
      } catch {
        // already closed
      }
    }
  }

  get connected(): boolean {
    return !!this.#client?.connected;
  }

  #connect(timeoutMs: number): Promise<Bun.RedisClient> {
    if (this.#client?.connected) return Promise.resolve(this.#client);
    if (this.#connecting) return this.#connecting;
    this.close();
    const client = new Bun.RedisClient(this.#url(), {
      connectionTimeout: timeoutMs,
      autoReconnect: false,
      enableOfflineQueue: false,
      enableAutoPipelining: true,
      ...(this.#auth.tls ? { tls: this.#auth.ca ? { ca: this.#auth.ca } : true } : {}),
    });
    const started = performance.now();
    const attempt = (async () => {
      try {
        await client.connect();
      } catch (err) {
        this.#connecting = undefined;
        try {
          client.close();
        } catch {
          // never opened
        }
        // Only a server that answered and hung up is worth asking why; a silent
        // one (frozen, filtered) would just cost another timeout.
        const answered = performance.now() - started < timeoutMs * 0.8;
        throw answered ? await this.#diagnose(err) : new RedisError("REDIS_TIMEOUT", `cannot connect to Redis at ${formatHostPort(this.addr)} within ${timeoutMs}ms`, { cause: err });
      }
      client.onclose = () => {
        if (this.#client === client) this.#client = undefined;
      };
      this.#client = client;
      this.#connecting = undefined;
      return client;
    })();
    this.#connecting = attempt;
    return attempt;
  }

  #url(): string {
    const a = this.#auth;
    const cred = a.password !== undefined
      ? `${encodeURIComponent(a.username ?? "default")}:${encodeURIComponent(a.password)}@`
      : a.username
      ? `${encodeURIComponent(a.username)}@`
      : "";
    const host = this.addr.host.includes(":") ? `[${this.addr.host}]` : this.addr.host;
    return `${a.tls ? "rediss" : "redis"}://${cred}${host}:${this.addr.port}`;
  }

  /** Bun says "Connection closed" for a refused port and a wrong password alike; ask Redis directly. */
  async #diagnose(err: unknown): Promise<RedisError> {
    const where = formatHostPort(this.addr);
    const reply = await probe(this.addr, this.#auth, this.#timeoutMs).catch(() => undefined);
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
    return new RedisError("REDIS_UNREACHABLE", `cannot connect to Redis at ${where} (it answered ${reply.slice(0, 60)})`, { cause: err });
  }

  #convert(name: string, err: unknown): RedisError {
    if (err instanceof RedisError) return err;
    const msg = err instanceof Error ? err.message : String(err);
    const bunCode = String((err as { code?: unknown })?.code ?? "");
    const where = formatHostPort(this.addr);
    let code: RedisErrorCode = "REDIS_COMMAND";
    if (/CONNECTION_CLOSED|CONNECTION|ECONNREFUSED|ECONNRESET|socket/i.test(bunCode) || /Connection closed/i.test(msg)) code = "REDIS_UNREACHABLE";
    else if (/^LOADING/.test(msg)) code = "REDIS_LOADING";
    else if (/^(WRONGPASS|NOAUTH|NOPERM)/.test(msg)) code = "REDIS_AUTH";
    this.#log.debug("redis command failed", { command: name, addr: where, code, message: msg });
    return new RedisError(code, `${name} to ${where}: ${msg}`, { cause: err });
  }
}

/** One command in RESP, as a client sends it. */
function encodeCommand(args: string[]): string {
  return `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("");
}

/** Sends AUTH (or PING) on a raw socket and returns Redis's first reply line. */
async function probe(addr: HostPort, auth: RedisAuth, timeoutMs: number): Promise<string> {
  const args = auth.password !== undefined
    ? ["AUTH", ...(auth.username ? [auth.username] : []), auth.password]
    : ["PING"];
  const wire = encodeCommand(args);
  return await new Promise<string>((resolve, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error("probe timeout")), timeoutMs);
    Bun.connect({
      hostname: addr.host,
      port: addr.port,
      ...(auth.tls ? { tls: auth.ca ? { ca: auth.ca } : true } : {}),
      socket: {
        open(s) {
          s.write(wire);
        },
        data(s, chunk) {
          buf += chunk.toString();
          const nl = buf.indexOf("\r\n");
          if (nl >= 0) {
            clearTimeout(timer);
            resolve(buf.slice(0, nl)); // before end(): end() runs close() synchronously
            s.end();
          }
        },
        error(_s, e) {
          clearTimeout(timer);
          reject(e);
        },
        close() {
          clearTimeout(timer);
          reject(new Error("closed"));
        },
        connectError(_s, e) {
          clearTimeout(timer);
          reject(e);
        },
      },
    }).catch((e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** The fields of INFO the sidecar reads. */
export interface ReplicationInfo {
  role: "master" | "replica";
  runId: string;
  loading: boolean;
  masterHost: string | null;
  masterPort: number | null;
  linkUp: boolean;
  /** Seconds the replica's link has been down; 0 when up or a master. */
  linkDownSeconds: number;
  syncing: boolean;
  offset: number;
  replid: string;
  replid2: string;
  failoverState: string;
  replicas: { host: string; port: number; state: string; offset: number; lag: number }[];
}

/** Parses the text of `INFO replication persistence server`. */
export function parseInfo(text: string): ReplicationInfo {
  const kv = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0 && !line.startsWith("#")) kv.set(line.slice(0, i), line.slice(i + 1).trim());
  }
  const num = (k: string) => Number(kv.get(k) ?? 0) || 0;
  const role = kv.get("role") === "master" ? "master" : "replica";
  const replicas: ReplicationInfo["replicas"] = [];
  for (const [k, v] of kv) {
    if (!/^slave\d+$/.test(k)) continue;
    const f = Object.fromEntries(v.split(",").map((p) => p.split("=") as [string, string]));
    replicas.push({ host: f["ip"] ?? "", port: Number(f["port"]) || 0, state: f["state"] ?? "", offset: Number(f["offset"]) || 0, lag: Number(f["lag"]) || 0 });
  }
  const linkUp = role === "replica" && kv.get("master_link_status") === "up";
  return {
    role,
    runId: kv.get("run_id") ?? "",
    loading: kv.get("loading") === "1",
    masterHost: role === "replica" ? kv.get("master_host") ?? null : null,
    masterPort: role === "replica" ? num("master_port") : null,
    linkUp,
    linkDownSeconds: role === "replica" && !linkUp ? num("master_link_down_since_seconds") : 0,
    syncing: kv.get("master_sync_in_progress") === "1",
    offset: num("master_repl_offset"),
    replid: kv.get("master_replid") ?? "",
    replid2: kv.get("master_replid2") ?? "",
    failoverState: kv.get("master_failover_state") ?? "no-failover",
    replicas,
  };
}

/** A snapshot of one Redis: replication info plus whether our fence is up. */
export interface RedisSnapshot extends ReplicationInfo {
  fenced: boolean;
}

/**
 * The role operations on one Redis. Each is idempotent and safe to repeat;
 * none retries on its own.
 */
export class RedisNode {
  readonly link: RedisLink;
  readonly #minReplicas: number;
  readonly #minReplicasMaxLagS: number;
  readonly #auth: RedisAuth;

  constructor(link: RedisLink, opts: { minReplicas: number; minReplicasMaxLagS: number; auth: RedisAuth }) {
    this.link = link;
    this.#minReplicas = opts.minReplicas;
    this.#minReplicasMaxLagS = opts.minReplicasMaxLagS;
    this.#auth = opts.auth;
  }

  get addr(): HostPort {
    return this.link.addr;
  }

  async snapshot(): Promise<RedisSnapshot> {
    const [infoText, minRep] = await Promise.all([
      this.link.cmd("INFO", ["replication", "persistence", "server"]),
      this.link.cmd("CONFIG", ["GET", "min-replicas-to-write"]).catch((err: unknown) => {
        if (err instanceof RedisError && err.code === "REDIS_LOADING") return {};
        throw err;
      }),
    ]);
    const info = parseInfo(String(infoText));
    const value = configValue(minRep, "min-replicas-to-write");
    return { ...info, fenced: Number(value) >= FENCE_MIN_REPLICAS };
  }

  /** Stops accepting writes (NOREPLICAS) and drops normal clients so they re-discover. */
  async fence(): Promise<void> {
    await this.link.cmd("CONFIG", ["SET", "min-replicas-to-write", String(FENCE_MIN_REPLICAS), "min-replicas-max-lag", String(Math.max(1, this.#minReplicasMaxLagS))]);
    await this.killClients();
  }

  /** Restores the configured min-replicas-to-write (CONSUL_LEADER_MIN_REPLICAS). */
  async unfence(): Promise<void> {
    await this.link.cmd("CONFIG", ["SET", "min-replicas-to-write", String(this.#minReplicas), "min-replicas-max-lag", String(this.#minReplicasMaxLagS)]);
  }

  /** REPLICAOF NO ONE, then lift the fence: a writable primary. */
  async promote(): Promise<void> {
    await this.link.cmd("REPLICAOF", ["NO", "ONE"]);
    await this.unfence();
  }

  /** Replicate from `leader`; sets masterauth first so the sync can authenticate. */
  async follow(leader: HostPort, wasMaster: boolean): Promise<void> {
    if (this.#auth.password !== undefined) {
      await this.link.cmd("CONFIG", ["SET", "masterauth", this.#auth.password, ...(this.#auth.username ? ["masteruser", this.#auth.username] : [])]);
    }
    await this.link.cmd("REPLICAOF", [leader.host, String(leader.port)]);
    if (wasMaster) await this.killClients();
  }

  /** Detach from a leader that is gone, keeping the data and serving no sync. */
  async park(): Promise<void> {
    await this.link.cmd("REPLICAOF", [PARK_HOST, String(PARK_PORT)]);
  }

  /**
   * The fence for a Redis that does not answer: on a fresh connection, AUTH
   * (when configured), the fence's CONFIG SET and CLIENT KILL TYPE normal are
   * written in one go as soon as TCP connects, without waiting for replies.
   * A frozen Redis already accepted the connection in the kernel, so it runs
   * them first thing when it resumes: ahead of every client that connects
   * later, though not ahead of writes that were already in other clients'
   * socket buffers when it froze.
   *
   * Resolves "fenced" when all replies arrived and none is an error,
   * "refused" (with Redis's error) when one is, and "unreachable" when the
   * connection fails or closes first, in which case the fence did not run or
   * Redis died after it. Never closes the connection itself while replies
   * are outstanding: bytes already sent would still arrive, so closing could
   * not take the fence back, only hide whether it ran. Over TLS the commands
   * wait for the handshake, so a frozen Redis gets them only after it resumes.
   */
  queueFence(): Promise<{ outcome: "fenced" | "refused" | "unreachable"; detail?: string }> {
    const auth = this.#auth;
    const commands: string[][] = [
      ...(auth.password !== undefined ? [["AUTH", ...(auth.username ? [auth.username] : []), auth.password]] : []),
      ["CONFIG", "SET", "min-replicas-to-write", String(FENCE_MIN_REPLICAS), "min-replicas-max-lag", String(Math.max(1, this.#minReplicasMaxLagS))],
      ["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
    ];
    const wire = commands.map(encodeCommand).join("");
    return new Promise((resolve) => {
      let buf = "";
      let replies = 0;
      let refused: string | undefined;
      let settled = false;
      const done = (v: { outcome: "fenced" | "refused" | "unreachable"; detail?: string }) => {
        if (settled) return;
        settled = true;
        resolve(v);
      };
      Bun.connect({
        hostname: this.addr.host,
        port: this.addr.port,
        ...(auth.tls ? { tls: auth.ca ? { ca: auth.ca } : true } : {}),
        socket: {
          open(sock) {
            sock.write(wire);
          },
          data(sock, chunk) {
            buf += chunk.toString();
            // Every reply to these commands is one line: +OK, :n or -ERR ...
            for (let nl = buf.indexOf("\r\n"); nl >= 0; nl = buf.indexOf("\r\n")) {
              const line = buf.slice(0, nl);
              buf = buf.slice(nl + 2);
              replies++;
              if (line.startsWith("-") && refused === undefined) refused = line.slice(1);
            }
            if (replies >= commands.length) {
              done(refused === undefined ? { outcome: "fenced" } : { outcome: "refused", detail: refused });
              sock.end();
            }
          },
          close() {
            done({ outcome: "unreachable" });
          },
          error() {
            done({ outcome: "unreachable" });
          },
          connectError() {
            done({ outcome: "unreachable" });
          },
        },
      }).catch(() => done({ outcome: "unreachable" }));
    });
  }

  async killClients(): Promise<void> {
    await this.link.cmd("CLIENT", ["KILL", "TYPE", "normal", "SKIPME", "yes"]);
  }
}

function configValue(reply: unknown, key: string): string | undefined {
  if (Array.isArray(reply)) {
    const i = reply.indexOf(key);
    return i >= 0 ? String(reply[i + 1]) : undefined;
  }
  if (reply && typeof reply === "object") {
    const v = (reply as Record<string, unknown>)[key];
    return v === undefined ? undefined : String(v);
  }
  return undefined;
}
