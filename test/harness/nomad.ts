/**
 * A real Nomad dev agent (server and client in one process, raw_exec enabled)
 * registering its services in a given Consul agent, built from the Go module
 * proxy like Consul (scripts/build-hashicorp.sh) unless NOMAD_BIN or a nomad
 * on PATH is there.
 *
 * Two things this machine needs (found when Nomad first ran here): the cloud
 * fingerprinters are denied, because AWS_CA_BUNDLE in the environment makes
 * the AWS one fail the agent's start; and the cgroup directories a root Nomad
 * creates under /sys/fs/cgroup/<controller>/nomad are removed afterwards, as
 * Nomad itself leaves them.
 */

import { existsSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import type { ConsulAgent } from "./consul.ts";
import { freePort, Proc, ROOT, readVersions, Scope, waitFor } from "./proc.ts";

let binary: string | undefined;

export function nomadBinary(): string {
  if (binary) return binary;
  if (process.env.NOMAD_BIN) return (binary = process.env.NOMAD_BIN);
  const onPath = Bun.which("nomad");
  if (onPath) return (binary = onPath);
  const version = readVersions()["NOMAD_VERSION"]!;
  const cacheRoot = process.env.CONSUL_LEADER_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "consul-leader");
  const cached = join(cacheRoot, "nomad", version, "nomad");
  if (existsSync(cached)) return (binary = cached);
  const r = Bun.spawnSync(["sh", join(ROOT, "scripts", "build-hashicorp.sh"), "nomad", version], { stderr: "inherit" });
  if (r.exitCode !== 0 || !existsSync(cached)) throw new Error("nomad not found: set NOMAD_BIN, put nomad on PATH, or let scripts/build-hashicorp.sh build it (needs Go and gcc)");
  return (binary = cached);
}

/**
 * The environment Nomad runs in: ours without AWS_CA_BUNDLE (see the module
 * comment), plus `marker` when given: every process Nomad starts (its logmon
 * and executor plugins, raw_exec tasks) inherits it, so they can all be found
 * and stopped after the agent, whose plugins outlive it by design.
 */
function nomadEnv(marker?: string): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env };
  delete env["AWS_CA_BUNDLE"];
  if (marker) env[NOMAD_MARKER] = marker;
  return env;
}

/** The variable that marks every process one Nomad agent started. */
const NOMAD_MARKER = "CL_TEST_NOMAD_AGENT";

/** Pids of every process whose environment holds `name=value`. */
export function processesMarked(name: string, value: string): number[] {
  const needle = `${name}=${value}\0`;
  return readdirSync("/proc").filter((d) => /^\d+$/.test(d)).flatMap((d) => {
    try {
      return readFileSync(`/proc/${d}/environ`, "latin1").includes(needle) ? [Number(d)] : [];
    } catch {
      return []; // gone meanwhile, or not ours to read
    }
  });
}

/** Where and how an agent runs when not on this host's loopback. */
export interface NomadPlacement {
  /** Command prefix, e.g. ["ip", "netns", "exec", ns] (its last word must exec Nomad). */
  wrap?: string[];
  /** The address it binds, advertises and fingerprints (its network interface's), instead of 127.0.0.1. */
  ip?: string;
  /** That interface's name, for the network fingerprint. */
  iface?: string;
}

export class NomadAgent {
  readonly proc: Proc;
  readonly http: number;
  readonly ip: string;

  private constructor(proc: Proc, http: number, ip: string) {
    this.proc = proc;
    this.http = http;
    this.ip = ip;
  }

  get addr(): string {
    return `http://${this.ip}:${this.http}`;
  }

  /**
   * `nomad agent -dev` with its services registered in the Consul agent at
   * `consulAddr`; on this host's loopback, or as `at` says (a network
   * namespace, a wrapper that sets up its mounts).
   */
  static async start(consulAddr: string, at: NomadPlacement = {}): Promise<NomadAgent> {
    const scope = Scope.current ?? new Scope("nomad");
    const dir = scope.tmpdir("nomad-");
    const http = freePort();
    const ip = at.ip ?? "127.0.0.1";
    const cfg = `
bind_addr = "${ip}"
data_dir  = "${dir}/data"
ports {
  http = ${http}
  rpc  = ${freePort()}
  serf = ${freePort()}
}
consul {
  address = "${consulAddr}"
}
client {
  ${at.iface ? `network_interface = "${at.iface}"` : ""}
  options = {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean"
  }
}
plugin "raw_exec" {
  config {
    enabled = true
  }
}
`;
    writeFileSync(join(dir, "nomad.hcl"), cfg);
    const marker = crypto.randomUUID();
    const proc = new Proc("nomad", [...(at.wrap ?? []), nomadBinary(), "agent", "-dev", "-config", join(dir, "nomad.hcl")], { env: nomadEnv(marker), cwd: dir });
    // Stop it here, before the scope removes its directory: Nomad leaves the
    // allocations' secrets mounts (tmpfs) and cgroup directories behind, and
    // its logmon and executor plugins (and their tasks) outlive the agent by
    // design, reparented to init: stop every process it started.
    scope.defer(async () => {
      await proc.stop("SIGINT", 10_000);
      for (const sig of ["SIGTERM", "SIGKILL"] as const) {
        const left = processesMarked(NOMAD_MARKER, marker);
        for (const pid of left) {
          try {
            process.kill(pid, sig);
          } catch {
            // gone meanwhile
          }
        }
        if (left.length) await Bun.sleep(500);
      }
      unmountUnder(dir);
      removeNomadCgroups();
    });
    const agent = new NomadAgent(proc, http, ip);
    await waitFor(async () => {
      if (!proc.running) throw new Error(`nomad exited ${proc.exitCode}: ${proc.tail(20)}`);
      const nodes = (await (await fetch(`${agent.addr}/v1/nodes`)).json()) as { Status: string; Drivers?: Record<string, { Healthy: boolean }> }[];
      return nodes.some((n) => n.Status === "ready" && n.Drivers?.["raw_exec"]?.Healthy);
    }, { timeoutMs: 60_000, intervalMs: 250, what: "a ready Nomad client with raw_exec" });
    return agent;
  }

  /** Runs the nomad CLI against this agent; resolves with its exit code and output. */
  async cli(args: string[]): Promise<{ code: number; out: string }> {
    const p = Bun.spawn([nomadBinary(), ...args], { env: { ...nomadEnv(), NOMAD_ADDR: this.addr }, stdout: "pipe", stderr: "pipe" });
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
    return { code, out: out + err };
  }

  async api<T>(path: string): Promise<T> {
    return (await (await fetch(this.addr + path)).json()) as T;
  }
}

export interface Svc {
  Service: { ID: string; Tags: string[]; Address: string; Port: number; Meta: Record<string, string> };
  Checks: { Status: string }[];
}

/** Every instance of `name` in `consul`'s health view. */
export async function instances(consul: ConsulAgent, name: string): Promise<Svc[]> {
  return await consul.api<Svc[]>("GET", `/v1/health/service/${name}`);
}

export async function redisRole(addr: string): Promise<string> {
  const c = new Bun.RedisClient(`redis://${addr}`, { autoReconnect: false, connectionTimeout: 1000 });
  try {
    await c.connect();
    return /role:(\w+)/.exec(String(await c.send("INFO", ["replication"])))?.[1] ?? "unknown";
  } finally {
    c.close();
  }
}

/** Exactly one Nomad-registered instance tagged primary and passing, its Redis a master, the rest replicas of it. */
export async function oneNomadPrimary(consul: ConsulAgent, name: string, count: number, timeoutMs = 60_000): Promise<Svc> {
  return await waitFor(async () => {
    const all = await instances(consul, name);
    if (all.length !== count) throw new Error(`${all.length} instances of ${name}`);
    if (!all.every((s) => s.Service.ID.startsWith("_nomad-task-"))) throw new Error("an instance is not Nomad's");
    const primaries = all.filter((s) => s.Service.Tags.includes("primary") && s.Checks.every((c) => c.Status === "passing"));
    if (primaries.length !== 1) throw new Error(`${primaries.length} passing primaries`);
    const p = primaries[0]!;
    if ((await redisRole(`${p.Service.Address}:${p.Service.Port}`)) !== "master") throw new Error("the tagged primary's Redis is not a master");
    for (const s of all.filter((x) => x !== p)) {
      if (!s.Service.Tags.includes("replica")) throw new Error(`${s.Service.ID} is not tagged replica`);
      if ((await redisRole(`${s.Service.Address}:${s.Service.Port}`)) !== "slave") throw new Error(`${s.Service.ID}'s Redis is not a replica`);
    }
    return p;
  }, { timeoutMs, intervalMs: 200, what: `one Nomad-registered ${name} primary` });
}

export function allocOf(serviceId: string): string {
  return /^_nomad-task-([0-9a-f-]{36})-/.exec(serviceId)![1]!;
}

/** Lazily unmounts every mount point below `dir`, deepest first. */
function unmountUnder(dir: string): void {
  const mounts = readFileSync("/proc/mounts", "utf8").split("\n").map((l) => l.split(" ")[1] ?? "").filter((m) => m.startsWith(dir + "/"));
  for (const m of mounts.sort((a, b) => b.length - a.length)) Bun.spawnSync(["umount", "-l", m]);
}

/** Removes the empty `nomad` cgroup directories a root Nomad agent leaves behind. */
function removeNomadCgroups(): void {
  const root = "/sys/fs/cgroup";
  if (!existsSync(root)) return;
  for (const ctl of readdirSync(root)) {
    const dir = join(root, ctl, "nomad");
    if (!existsSync(dir)) continue;
    const rm = (d: string) => {
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) rm(join(d, e.name));
      try {
        rmdirSync(d);
      } catch {
        // still in use, or not ours to remove
      }
    };
    rm(dir);
  }
}
