/**
 * Failover as applications see it: stock clients (ioredis, go-redis's
 * FailoverClient; test/clients/) write continuously while the primary moves,
 * and each trial measures, per client, the time from the fault to its first
 * acknowledged write on the new primary, the time from the server-side
 * failover (the harness first sees the new primary take a write) to that
 * write, the writes it had acknowledged that the final primary lacks, and its
 * longest time without an acknowledged write. Against three setups on the
 * same machine in the same run:
 *   (a) Redis Sentinel, down-after 1000 and 5000 ms, the clients' Sentinel support;
 *   (b) consul-leader through its Sentinel-compatible endpoint, same client code;
 *   (c) consul-leader through Consul DNS (primary.<service>.service.consul,
 *       asked of the agent's DNS port), with the client's own reconnect.
 * Faults: the primary's Redis kill -9 (restarted empty afterwards), SIGTERM of
 * the leader's sidecar (consul-leader only) and a switchover (Sentinel:
 * SENTINEL FAILOVER).
 */

import { BINARY } from "../test/harness/sidecar.ts";
import { type ClientKind, StockWriter, type WriterOptions } from "../test/harness/clients.ts";
import { Proc, waitFor } from "../test/harness/proc.ts";
import type { RedisGroup } from "../test/harness/group.ts";
import { ConsulLeaderSystem, type FaultId, SentinelSystem } from "./systems.ts";

export type ClientFault = "redis-kill" | "sidecar-term" | "switchover";
export const CLIENT_FAULTS: readonly { id: ClientFault; title: string }[] = [
  { id: "redis-kill", title: "primary Redis kill -9" },
  { id: "sidecar-term", title: "leader sidecar SIGTERM" },
  { id: "switchover", title: "switchover" },
];
const BENCH_KINDS: readonly ClientKind[] = ["ioredis", "go-redis"];

/** One way clients find the primary, on one system. */
interface Setup {
  label: string;
  system: ConsulLeaderSystem | SentinelSystem;
  faults: ReadonlySet<ClientFault>;
  writer(kind: ClientKind, prefix: string): WriterOptions;
  /** The Redis a client of this setup reaches for `addr` (the DNS setup reaches Redis by its loopback address). */
  group: RedisGroup | undefined;
}

export interface ClientTrial {
  client: ClientKind;
  setup: string;
  fault: ClientFault;
  /** Fault to the client's first acknowledged write on the new primary; null when it never wrote again. */
  clientMs: number | null;
  /** Server-side failover (new primary writable) to that write. */
  afterServerMs: number | null;
  serverMs: number;
  lost: number;
  gapMs: number;
  failed: number;
  note: string;
}

export interface ClientRow {
  client: ClientKind;
  setup: string;
  fault: ClientFault;
  trials: ClientTrial[];
}

/** Starts what the client rows need beside the failover benchmark's systems: one consul-leader group with endpoints, on `cl`'s cluster. */
export async function clientSetups(cl: ConsulLeaderSystem, sentinels: SentinelSystem[]): Promise<Setup[]> {
  const { system, endpoints, port } = await cl.clientGroup("benchclients");
  const name = system.group.name;
  const dns = `127.0.0.1:${cl.agent.ports.dns}`;
  const out: Setup[] = sentinels.map((s) => ({
    label: s.label,
    system: s,
    faults: new Set<ClientFault>(s.faults.has("graceful") ? ["redis-kill", "switchover"] : ["redis-kill"]),
    writer: (_kind, prefix) => ({ sentinels: s.group.sentinels.map((x) => x.addr), master: s.group.name, prefix }),
    group: undefined,
  }));
  out.push({
    label: "consul-leader, Sentinel endpoint",
    system,
    faults: new Set(CLIENT_FAULTS.map((f) => f.id)),
    writer: (_kind, prefix) => ({ sentinels: endpoints, master: name, prefix }),
    group: system.group,
  });
  out.push({
    label: "consul-leader, Consul DNS",
    system,
    faults: new Set(CLIENT_FAULTS.map((f) => f.id)),
    writer: (_kind, prefix) => ({ sentinels: [], master: name, prefix, env: { DNS_SERVER: dns, ADDR: `primary.${name}.service.consul:${port}` } }),
    group: system.group,
  });
  return out;
}

/** Runs `trials` trials of every fault on every setup; setups sharing a system run in the same trial, side by side. */
export async function runClientTrials(setups: Setup[], trials: number, progress: (m: string) => void): Promise<ClientRow[]> {
  const rows = new Map<string, ClientRow>();
  const systems = [...new Set(setups.map((s) => s.system))];
  for (const fault of CLIENT_FAULTS) {
    for (let n = 1; n <= trials; n++) {
      for (const system of systems) {
        const mine = setups.filter((s) => s.system === system && s.faults.has(fault.id));
        if (!mine.length) continue;
        const results = await oneTrial(system, mine, fault.id, n).catch((err: unknown) => {
          progress(`clients, ${mine.map((s) => s.label).join(" + ")}, ${fault.title} ${n}/${trials}: ${err instanceof Error ? err.message : String(err)}`);
          return [] as ClientTrial[];
        });
        for (const r of results) {
          const key = `${r.client}|${r.setup}|${r.fault}`;
          if (!rows.has(key)) rows.set(key, { client: r.client, setup: r.setup, fault: r.fault, trials: [] });
          rows.get(key)!.trials.push(r);
          progress(`${r.client} via ${r.setup}, ${fault.title} ${n}/${trials}: writing after ${fmt(r.clientMs)} ms (${fmt(r.afterServerMs)} ms after the server side), gap ${fmt(r.gapMs)} ms, lost ${r.lost}${r.note ? ` (${r.note})` : ""}`);
        }
      }
    }
  }
  return [...rows.values()];
}

async function oneTrial(system: ConsulLeaderSystem | SentinelSystem, setups: Setup[], fault: ClientFault, n: number): Promise<ClientTrial[]> {
  const primary = await system.converged(120_000);
  const writers: { setup: Setup; w: StockWriter }[] = [];
  try {
    for (const setup of setups) {
      for (const kind of BENCH_KINDS) {
        writers.push({ setup, w: new StockWriter(kind, setup.writer(kind, `t${n}-${fault}-${kind}-${setup.label.replace(/\W+/g, "")}`)) });
      }
    }
    await waitFor(() => writers.every(({ w }) => w.acks().length >= 20), { timeoutMs: 30_000, what: "every client writing before the fault" });
    await Bun.sleep(300);
    const plan = planFor(system, fault, primary);
    const t0 = Date.now();
    await plan.inject();
    const next = await system.newWritablePrimary(primary, 60_000);
    const tServer = Date.now();
    await waitFor(() => writers.every(({ w }) => w.firstAckAfter(tServer) !== undefined), { timeoutMs: 20_000, intervalMs: 10, what: "every client writing on the new primary" }).catch(() => {});
    await Bun.sleep(1000);
    const tEnd = Date.now();
    await plan.recover();
    for (const { w } of writers) await w.stop();
    const final = await system.converged(120_000);
    const out: ClientTrial[] = [];
    for (const { setup, w } of writers) {
      const first = w.firstAckAfter(tServer);
      const missing = await lostAcks(final, w);
      out.push({
        client: w.kind,
        setup: setup.label,
        fault,
        clientMs: first === undefined ? null : first - t0,
        afterServerMs: first === undefined ? null : first - tServer,
        serverMs: tServer - t0,
        lost: missing,
        gapMs: w.longestGap(t0, first === undefined ? tEnd : Math.max(first, tServer)),
        failed: w.outcomes().filter((o) => !o.ok && o.at >= t0 && o.at <= tEnd).length,
        note: first === undefined ? "did not write on the new primary within 20 s" : next === primary ? "the primary did not move" : "",
      });
    }
    return out;
  } finally {
    for (const { w } of writers) if (w.proc.running) await w.stop().catch(() => {});
  }
}

function planFor(system: ConsulLeaderSystem | SentinelSystem, fault: ClientFault, primary: string): { inject(): Promise<void>; recover(): Promise<void> } {
  const map: Record<ClientFault, FaultId> = { "redis-kill": "redis-kill", "sidecar-term": "graceful", switchover: "graceful" };
  if (fault === "switchover" && system instanceof ConsulLeaderSystem) {
    const g = system.group;
    return {
      inject: async () => {
        const cli = new Proc("switchover", [BINARY, "switchover", "--timeout", "10s"], { env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: system.agent.addr, CONSUL_LEADER_KEY: g.key } });
        if ((await cli.exited) !== 0) throw new Error(`consul-leader switchover failed: ${cli.tail(5)}`);
      },
      recover: async () => {},
    };
  }
  return system.plan(map[fault], primary);
}

/** How many of `w`'s acknowledged keys the Redis at `addr` lacks. */
async function lostAcks(addr: string, w: StockWriter): Promise<number> {
  const acked = w.acks().map((a) => a.n);
  const c = new Bun.RedisClient(`redis://${addr}`, { autoReconnect: false, connectionTimeout: 2000, enableOfflineQueue: false });
  await c.connect();
  try {
    let lost = 0;
    for (let i = 0; i < acked.length; i += 500) {
      const batch = acked.slice(i, i + 500);
      const values = (await c.send("MGET", batch.map((x) => `${w.o.prefix}:${x}`))) as (string | null)[];
      lost += values.filter((v) => v === null).length;
    }
    return lost;
  } finally {
    c.close();
  }
}

function fmt(v: number | null): string {
  return v === null ? "-" : String(Math.round(v));
}

function median(xs: number[]): number | null {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The client-observed table, and the issue's two client targets checked against it. */
export function clientTables(rows: ClientRow[]): string {
  const header = ["client", "discovery", "fault", "trials", "wrote", "median ms", "max ms", "after server-side median ms", "lost acked", "max gap ms", "failed writes"];
  const faultTitle = (f: ClientFault) => CLIENT_FAULTS.find((x) => x.id === f)!.title;
  const body = rows.map((r) => {
    const ok = r.trials.filter((t) => t.clientMs !== null);
    const cms = ok.map((t) => t.clientMs!);
    return [
      r.client,
      r.setup,
      faultTitle(r.fault),
      String(r.trials.length),
      `${ok.length}/${r.trials.length}`,
      fmt(median(cms)),
      fmt(cms.length ? Math.max(...cms) : null),
      fmt(median(ok.map((t) => t.afterServerMs!))),
      String(r.trials.reduce((a, t) => a + t.lost, 0)),
      fmt(Math.max(0, ...r.trials.map((t) => t.gapMs))),
      String(r.trials.reduce((a, t) => a + t.failed, 0)),
    ];
  });
  const lines = [table(header, body), ""];
  const targets: string[][] = [];
  const endpoint = "consul-leader, Sentinel endpoint";
  for (const client of BENCH_KINDS) {
    for (const f of CLIENT_FAULTS) {
      const r = rows.find((x) => x.client === client && x.setup === endpoint && x.fault === f.id);
      const m = r ? median(r.trials.filter((t) => t.afterServerMs !== null).map((t) => t.afterServerMs!)) : null;
      targets.push([`${client}, ${f.title}: writing within 100 ms of the server-side failover (median)`, m === null ? "no data" : `median ${fmt(m)} ms`, m === null ? "NO DATA" : m <= 100 ? "PASS" : "FAIL"]);
    }
    for (const f of ["redis-kill", "switchover"] as const) {
      const ours = rows.find((x) => x.client === client && x.setup === endpoint && x.fault === f);
      const theirs = rows.find((x) => x.client === client && x.setup === "Sentinel (down-after 1000 ms)" && x.fault === f);
      const a = ours ? median(ours.trials.filter((t) => t.clientMs !== null).map((t) => t.clientMs!)) : null;
      const b = theirs ? median(theirs.trials.filter((t) => t.clientMs !== null).map((t) => t.clientMs!)) : null;
      const ratio = a !== null && b !== null && a > 0 ? b / a : null;
      targets.push([`${client}, ${faultTitle(f)}: >= 5x faster than with Sentinel at down-after 1000 ms`, a === null || b === null ? "no data" : `${fmt(a)} ms vs ${fmt(b)} ms (${ratio!.toFixed(1)}x)`, ratio === null ? "NO DATA" : ratio >= 5 ? "PASS" : "FAIL"]);
    }
    const sw = rows.find((x) => x.client === client && x.setup === endpoint && x.fault === "switchover");
    const lost = sw ? sw.trials.reduce((a, t) => a + t.lost, 0) : null;
    targets.push([`${client}, switchover: no acknowledged write lost`, lost === null ? "no data" : `${lost} lost`, lost === null ? "NO DATA" : lost === 0 ? "PASS" : "FAIL"]);
  }
  lines.push(table(["target (stock client through the Sentinel endpoint)", "measured", "result"], targets));
  return lines.join("\n");
}

function table(header: string[], body: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
  const line = (r: string[]) => r.map((c, i) => (i >= 3 && /^[\d/-]+$/.test(c) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(header), widths.map((w) => "-".repeat(w)).join("  "), ...body.map(line)].join("\n");
}
