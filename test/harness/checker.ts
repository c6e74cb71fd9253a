/**
 * The checker: clients that keep writing numbered keys and record every
 * acknowledged write and which Redis acknowledged it.
 *
 * - "discovery" writers find the primary the way applications do
 *   (`/v1/health/service/<name>?passing&tag=<primary>`, re-resolved on error)
 *   and write to it.
 * - one "pinned" writer per Redis keeps writing to that one address whatever
 *   discovery says, the way a client with a stale connection would. Any write
 *   a non-primary acknowledges shows up here.
 *
 * From the record: the split-brain window (the time during which two Redis
 * both acknowledged writes; it must be 0), when writes resumed after a fault,
 * and, checked against the final primary, which acknowledged writes were lost.
 */

export interface Ack {
  writer: string;
  key: string;
  server: string;
  sentAt: number;
  ackAt: number;
}

export interface CheckerOptions {
  /** How clients find the primary; `consulDiscovery` for consul-leader, a Sentinel query for Sentinel. */
  discover: () => Promise<string | undefined>;
  /** host:port of every Redis in the group (one pinned writer each). */
  servers: string[];
  password?: string;
  discoveryWriters?: number;
  /** Per-write timeout; a write that times out is not acknowledged. */
  timeoutMs?: number;
  /** Pause between writes of one writer. */
  everyMs?: number;
}

/** Discovery through Consul: the one passing instance tagged `label`, as host:port. */
export function consulDiscovery(consulUrl: string, service: string, label = "primary"): () => Promise<string | undefined> {
  return async () => {
    const res = await fetch(`${consulUrl}/v1/health/service/${service}?passing&tag=${label}`, { signal: AbortSignal.timeout(1000) });
    const entries = (await res.json()) as { Node: { Address: string }; Service: { Address: string; Port: number } }[];
    return entries.length === 1 ? `${entries[0]!.Service.Address || entries[0]!.Node.Address}:${entries[0]!.Service.Port}` : undefined;
  };
}

/** Two acks of one server closer than this belong to one "accepting" interval. */
const INTERVAL_GAP_MS = 100;

export class Checker {
  readonly acks: Ack[] = [];
  readonly errors = new Map<string, number>();
  #running = true;
  #loops: Promise<void>[] = [];
  #discovered: string | undefined;
  readonly #o: Required<Omit<CheckerOptions, "password">> & { password?: string };

  constructor(opts: CheckerOptions) {
    this.#o = { discoveryWriters: 2, timeoutMs: 200, everyMs: 5, ...opts };
    this.#loops.push(this.#discoverLoop());
    for (let i = 0; i < this.#o.discoveryWriters; i++) this.#loops.push(this.#writer(`d${i}`, () => this.#discovered));
    for (const s of this.#o.servers) this.#loops.push(this.#writer(`p:${s}`, () => s));
  }

  async #discoverLoop(): Promise<void> {
    while (this.#running) {
      this.#discovered = await this.#o.discover().catch(() => undefined);
      await Bun.sleep(10);
    }
  }

  async #writer(name: string, target: () => string | undefined): Promise<void> {
    let seq = 0;
    let client: Bun.RedisClient | undefined;
    let connectedTo: string | undefined;
    while (this.#running) {
      const server = target();
      if (!server) {
        await Bun.sleep(this.#o.everyMs);
        continue;
      }
      if (connectedTo !== server || !client?.connected) {
        client?.close();
        const cred = this.#o.password ? `default:${encodeURIComponent(this.#o.password)}@` : "";
        client = new Bun.RedisClient(`redis://${cred}${server}`, { autoReconnect: false, enableOfflineQueue: false, connectionTimeout: this.#o.timeoutMs });
        connectedTo = server;
      }
      const key = `chk:${name}:${++seq}`;
      const sentAt = performance.now();
      try {
        const c = client;
        await Promise.race([
          (async () => {
            if (!c.connected) await c.connect();
            await c.send("SET", [key, String(seq)]);
          })(),
          Bun.sleep(this.#o.timeoutMs).then(() => {
            throw new Error("timeout");
          }),
        ]);
        this.acks.push({ writer: name, key, server, sentAt, ackAt: performance.now() });
      } catch (err) {
        const kind = String(err instanceof Error ? err.message : err).split(" ")[0] ?? "error";
        this.errors.set(kind, (this.errors.get(kind) ?? 0) + 1);
        client?.close();
        client = undefined;
      }
      await Bun.sleep(this.#o.everyMs);
    }
    client?.close();
  }

  async stop(): Promise<void> {
    this.#running = false;
    await Promise.all(this.#loops);
  }

  /** Per server, the maximal runs of acknowledged writes (gaps under 100 ms). */
  intervals(): Map<string, [number, number][]> {
    const by = new Map<string, number[]>();
    for (const a of this.acks) by.set(a.server, [...(by.get(a.server) ?? []), a.ackAt]);
    const out = new Map<string, [number, number][]>();
    for (const [server, times] of by) {
      times.sort((a, b) => a - b);
      const runs: [number, number][] = [];
      for (const t of times) {
        const last = runs.at(-1);
        if (last && t - last[1] <= INTERVAL_GAP_MS) last[1] = t;
        else runs.push([t, t]);
      }
      out.set(server, runs);
    }
    return out;
  }

  /**
   * Milliseconds during which two different Redis both acknowledged writes:
   * the summed overlap of their accepting intervals. 0 means one writer at a
   * time, as far as any client could tell.
   */
  splitBrainMs(): number {
    const all = [...this.intervals()].flatMap(([server, runs]) => runs.map(([a, b]) => ({ server, a, b })));
    let total = 0;
    for (let i = 0; i < all.length; i++) {
      for (let j = i + 1; j < all.length; j++) {
        const x = all[i]!;
        const y = all[j]!;
        if (x.server === y.server) continue;
        total += Math.max(0, Math.min(x.b, y.b) - Math.max(x.a, y.a));
      }
    }
    return total;
  }

  /** How many writes each server acknowledged. */
  acksBy(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const a of this.acks) out[a.server] = (out[a.server] ?? 0) + 1;
    return out;
  }

  /**
   * When clients could write again after a fault at `t`: the first write a
   * discovery writer had acknowledged by `server` (the new primary) after `t`.
   */
  resumedAt(t: number, server: string): number | undefined {
    return this.acks.filter((a) => a.writer.startsWith("d") && a.server === server && a.ackAt > t).reduce<number | undefined>((m, a) => (m === undefined || a.ackAt < m ? a.ackAt : m), undefined);
  }

  /** Acknowledged writes missing from `server` (the surviving primary), after it has had time to settle. */
  async lost(server: string): Promise<Ack[]> {
    const cred = this.#o.password ? `default:${encodeURIComponent(this.#o.password)}@` : "";
    const c = new Bun.RedisClient(`redis://${cred}${server}`, { autoReconnect: false, connectionTimeout: 2000 });
    await c.connect();
    const missing: Ack[] = [];
    const batch = 500;
    for (let i = 0; i < this.acks.length; i += batch) {
      const chunk = this.acks.slice(i, i + batch);
      const values = (await c.send("MGET", chunk.map((a) => a.key))) as (string | null)[];
      chunk.forEach((a, k) => {
        if (values[k] === null) missing.push(a);
      });
    }
    c.close();
    return missing;
  }
}
