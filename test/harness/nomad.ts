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

/** The environment Nomad runs in: ours without AWS_CA_BUNDLE (see the module comment). */
function nomadEnv(): Record<string, string | undefined> {
  const env: Record<string, string | undefined> = { ...process.env };
  delete env["AWS_CA_BUNDLE"];
  return env;
}

export class NomadAgent {
  readonly proc: Proc;
  readonly http: number;

  private constructor(proc: Proc, http: number) {
    this.proc = proc;
    this.http = http;
  }

  get addr(): string {
    return `http://127.0.0.1:${this.http}`;
  }

  /** `nomad agent -dev` with its services registered in the Consul agent at `consulAddr`. */
  static async start(consulAddr: string): Promise<NomadAgent> {
    const scope = Scope.current ?? new Scope("nomad");
    const dir = scope.tmpdir("nomad-");
    const http = freePort();
    const cfg = `
bind_addr = "127.0.0.1"
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
    const proc = new Proc("nomad", [nomadBinary(), "agent", "-dev", "-config", join(dir, "nomad.hcl")], { env: nomadEnv() });
    // Stop it here, before the scope removes its directory: Nomad leaves the
    // allocations' secrets mounts (tmpfs) and cgroup directories behind.
    scope.defer(async () => {
      await proc.stop("SIGINT", 10_000);
      unmountUnder(dir);
      removeNomadCgroups();
    });
    const agent = new NomadAgent(proc, http);
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
