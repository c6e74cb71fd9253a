/**
 * The role operations on one Redis (promote, follow, park, fence, lift the
 * fence), each a single idempotent step over a RedisLink, and the snapshot of
 * its replication state they are decided on.
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

import { RedisError } from "../errors.ts";
import type { HostPort } from "../host-port.ts";
import { parseInfo, type ReplicationInfo } from "./info.ts";
import type { RedisLink } from "./link.ts";
import type { RedisAuth } from "./transport.ts";

/** min-replicas-to-write while fenced: no group has this many replicas. */
export const FENCE_MIN_REPLICAS = 2147483647;

/** Parked replicas point here: nothing listens, so they keep their data and serve no sync. */
export const PARK_HOST = "127.0.0.1";
export const PARK_PORT = 1;

/** A snapshot of one Redis: replication info plus whether our fence is up. */
export interface RedisSnapshot extends ReplicationInfo {
  fenced: boolean;
}

/**
 * How a queued fence ended. "fenced": Redis ran it and answered, with the
 * replication offset it had right after (`offset`); "refused": Redis answered
 * with an error (`detail`: NOPERM, WRONGPASS, ...); "unreachable": the
 * connection failed or closed first, so the fence did not run, or Redis died
 * after running it.
 */
export interface QueuedFence {
  outcome: "fenced" | "refused" | "unreachable";
  detail?: string;
  offset?: number;
  replid?: string;
}

export class RedisNode {
  readonly link: RedisLink;
  readonly #minReplicas: number;
  readonly #minReplicasMaxLagS: number;

  constructor(link: RedisLink, opts: { minReplicas: number; minReplicasMaxLagS: number }) {
    this.link = link;
    this.#minReplicas = opts.minReplicas;
    this.#minReplicasMaxLagS = opts.minReplicasMaxLagS;
  }

  get addr(): HostPort {
    return this.link.addr;
  }

  get #auth(): RedisAuth {
    return this.link.auth;
  }

  /**
   * INFO, and for a master whether our fence is up. A replica takes no writes
   * whatever min-replicas-to-write says (its fence matters again only once it
   * is a master, and a promotion lifts it), so a replica's snapshot costs one
   * command and says `fenced: false`.
   */
  async snapshot(): Promise<RedisSnapshot> {
    const info = parseInfo(String(await this.link.cmd("INFO", ["replication", "persistence", "server"])));
    if (info.role !== "master") return { ...info, fenced: false };
    const minRep = await this.link.cmd("CONFIG", ["GET", "min-replicas-to-write"]).catch((err: unknown) => {
      if (err instanceof RedisError && err.code === "REDIS_LOADING") return {};
      throw err;
    });
    const value = configValue(minRep, "min-replicas-to-write");
    return { ...info, fenced: Number(value) >= FENCE_MIN_REPLICAS };
  }

  /**
   * Stops accepting writes (NOREPLICAS), drops normal clients so they
   * re-discover, and returns the replication offset read after the fence:
   * every write this Redis acknowledged is at or below it.
   */
  async fence(timeoutMs?: number): Promise<{ offset: number; replid: string }> {
    await this.link.cmd("CONFIG", ["SET", "min-replicas-to-write", String(FENCE_MIN_REPLICAS), "min-replicas-max-lag", String(Math.max(1, this.#minReplicasMaxLagS))], timeoutMs);
    await this.link.cmd("CLIENT", ["KILL", "TYPE", "normal", "SKIPME", "yes"], timeoutMs);
    const info = parseInfo(String(await this.link.cmd("INFO", ["replication"], timeoutMs)));
    return { offset: info.offset, replid: info.replid };
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
    const auth = this.#auth;
    if (auth.password !== undefined) {
      await this.link.cmd("CONFIG", ["SET", "masterauth", auth.password, ...(auth.username ? ["masteruser", auth.username] : [])]);
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
   * (when configured), the fence's CONFIG SET, CLIENT KILL TYPE normal and
   * INFO replication are written in one go as soon as TCP connects, without
   * waiting for replies. A frozen Redis already accepted the connection in
   * the kernel, so it runs them first thing when it resumes: ahead of every
   * client that connects later, though not ahead of writes that were already
   * in other clients' socket buffers when it froze.
   *
   * Never closes the connection itself while replies are outstanding: bytes
   * already sent would still arrive, so closing could not take the fence
   * back, only hide whether it ran. Over TLS the commands wait for the
   * handshake, so a frozen Redis gets them only after it resumes.
   */
  async queueFence(onConnected?: () => void): Promise<QueuedFence> {
    const r = await this.link.transport.pipeline(this.addr, this.#auth, [
      ["CONFIG", "SET", "min-replicas-to-write", String(FENCE_MIN_REPLICAS), "min-replicas-max-lag", String(Math.max(1, this.#minReplicasMaxLagS))],
      ["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"],
      ["INFO", "replication"],
    ], onConnected);
    if (r.outcome === "done") {
      const text = r.replies?.at(-1);
      const info = text !== undefined ? parseInfo(text) : undefined;
      return { outcome: "fenced", ...(info ? { offset: info.offset, replid: info.replid } : {}) };
    }
    if (r.outcome === "refused") return { outcome: "refused", ...(r.detail !== undefined ? { detail: r.detail } : {}) };
    return { outcome: "unreachable" };
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
