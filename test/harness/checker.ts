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
 * both certainly accepted writes, counted from when each write was sent and
 * acknowledged, so that a reply still travelling does not count; it must be
 * 0), when writes resumed after a fault, and, checked against the final
 * primary, which acknowledged writes were lost.
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
  /** Writes a server answered with an error (READONLY, NOREPLICAS, ...): it was not accepting then. */
  readonly refusals: Ack[] = [];
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
        // An error reply (not a timeout or a closed connection) is the server saying no.
        if (/^[A-Z]+$/.test(kind) && kind !== "ERR") this.refusals.push({ writer: name, key, server, sentAt, ackAt: performance.now() });
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

  /**
   * Per server, the maximal runs of acknowledged writes (acks less than
   * 100 ms apart), each as the span during which that server certainly
   * accepted writes: from the first ack's arrival (it had processed that
   * write by then) to the last write's sending (it processed that one
   * later). A reply still in flight when another server took over is not
   * counted as accepting: the server had processed that write before. A run
   * of a single write, or of writes all in flight at once, spans nothing.
   * A write the server refused certainly between two of its acks (sent after
   * the first was acknowledged, refused before the second was sent) ends the
   * run: it did not accept writes all along (a handover away and back).
   */
  intervals(): Map<string, [number, number][]> {
    const by = new Map<string, Ack[]>();
    for (const a of this.acks) by.set(a.server, [...(by.get(a.server) ?? []), a]);
    const out = new Map<string, [number, number][]>();
    for (const [server, acks] of by) {
      acks.sort((a, b) => a.ackAt - b.ackAt);
      const runs: { first: Ack; lastSent: number; lastAck: number }[] = [];
      const refused = this.refusals.filter((r) => r.server === server);
      for (const a of acks) {
        const last = runs.at(-1);
        const broken = last && refused.some((r) => r.sentAt > last.lastAck && r.ackAt < a.sentAt);
        if (last && !broken && a.ackAt - last.lastAck <= INTERVAL_GAP_MS) {
          last.lastAck = a.ackAt;
          last.lastSent = Math.max(last.lastSent, a.sentAt);
        } else {
          runs.push({ first: a, lastSent: a.sentAt, lastAck: a.ackAt });
        }
      }
      out.set(server, runs.filter((r) => r.lastSent > r.first.ackAt).map((r) => [r.first.ackAt, r.lastSent]));
    }
    return out;
  }

  /**
   * Milliseconds during which two different Redis both certainly accepted
   * writes: the summed overlap of their accepting spans (see `intervals`).
   * 0 means one writer at a time, as far as any client could tell.
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
