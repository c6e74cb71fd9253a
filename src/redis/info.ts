/**
 * INFO, as the sidecar reads it: the replication, persistence and server
 * fields that say what role a Redis has and how much data it holds. Pure
 * parsing; Redis's words ("master", "slave") stay inside this layer.
 */

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

