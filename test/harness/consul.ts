/**
 * Real Consul for tests: a `-dev` agent, or a cluster of servers and client
 * agents with data dirs, all on free loopback ports. Modelled on Consul's
 * sdk/testutil: generated config, wait for a leader, stop with SIGINT then
 * SIGKILL. Refuses a dev agent with the `resource-apis` experiment (it
 * disables the v1 catalog and health APIs).
 */

import { existsSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import { freePort, Proc, ROOT, readVersions, Scope, waitFor } from "./proc.ts";

let binary: string | undefined;

/** CONSUL_BIN, else a `consul` on PATH, else the cached build (built now if missing). */
export function consulBinary(): string {
  if (binary) return binary;
  const fromEnv = process.env.CONSUL_BIN;
  if (fromEnv) return (binary = fromEnv);
  const onPath = Bun.which("consul");
  if (onPath) return (binary = onPath);
  const version = readVersions()["CONSUL_VERSION"]!;
  const cacheRoot = process.env.CONSUL_LEADER_CACHE ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), ".cache"), "consul-leader");
  const cached = join(cacheRoot, "consul", version, "consul");
  if (existsSync(cached)) return (binary = cached);
  const r = Bun.spawnSync(["sh", join(ROOT, "scripts", "build-hashicorp.sh"), "consul", version], { stderr: "inherit" });
  if (r.exitCode !== 0 || !existsSync(cached)) {
    throw new Error("consul not found: set CONSUL_BIN, put consul on PATH, or let scripts/build-hashicorp.sh build it (needs Go)");
  }
  return (binary = cached);
}

export interface AgentPorts {
  http: number;
  dns: number;
  server: number;
  serfLan: number;
}

export class ConsulAgent {
  proc: Proc;
  readonly name: string;
  readonly ports: AgentPorts;
  readonly args: string[];
  readonly dataDir: string | undefined;
  /** Sent as X-Consul-Token by `api` (the management token of an ACL-enabled agent). */
  token: string | undefined;

  /** Where the test process reaches its HTTP API (127.0.0.1, or a netns host's IP). */
  readonly host: string;
  readonly wrap: string[];

  constructor(name: string, args: string[], ports: AgentPorts, dataDir?: string, opts: { host?: string; wrap?: string[] } = {}) {
    this.name = name;
    this.args = args;
    this.ports = ports;
    this.dataDir = dataDir;
    this.host = opts.host ?? "127.0.0.1";
    this.wrap = opts.wrap ?? [];
    this.proc = new Proc(name, [...this.wrap, consulBinary(), ...args]);
  }

  get addr(): string {
    return `${this.host}:${this.ports.http}`;
  }

  get url(): string {
    return `http://${this.host}:${this.ports.http}`;
  }

  /** Starts the same agent again (same ports, config and data dir). */
  restart(): void {
    this.proc = new Proc(this.name, [...this.wrap, consulBinary(), ...this.args], this.proc.scope ? { scope: this.proc.scope } : {});
  }

  async api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(this.url + path, {
      method,
      headers: this.token ? { "X-Consul-Token": this.token } : {},
      ...(body !== undefined ? { body: typeof body === "string" ? body : JSON.stringify(body) } : {}),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text}`);
    try {
      return JSON.parse(text) as T;
    } catch {
      return text as T;
    }
  }

  async waitReady(timeoutMs = 30_000): Promise<void> {
    await waitFor(async () => {
      if (!this.proc.running) throw new Error(`consul exited with ${this.proc.exitCode}:\n${this.proc.tail(30)}`);
      const leader = await this.api<string>("GET", "/v1/status/leader");
      return typeof leader === "string" && leader.length > 0;
    }, { timeoutMs, intervalMs: 100, what: `${this.name} to have a cluster leader` });
  }

  async stop(): Promise<void> {
    await this.proc.stop("SIGINT", 5000);
  }
}

/** `consul agent -dev` on free ports. */
export async function startDevAgent(extra: Record<string, unknown> = {}, opts: { httpPort?: number; wait?: boolean; token?: string } = {}): Promise<ConsulAgent> {
  const dir = (Scope.current ?? new Scope("consul")).tmpdir("consul-dev-");
  const ports: AgentPorts = { http: opts.httpPort ?? freePort(), dns: freePort(), server: freePort(), serfLan: freePort() };
  const cfg = {
    node_name: `dev-${ports.http}`,
    bind_addr: "127.0.0.1",
    client_addr: "127.0.0.1",
    ports: { http: ports.http, dns: ports.dns, server: ports.server, serf_lan: ports.serfLan, serf_wan: -1, grpc: -1, grpc_tls: -1 },
    disable_update_check: true,
    log_level: "warn",
    ...extra,
  };
  writeFileSync(join(dir, "dev.json"), JSON.stringify(cfg));
  const agent = new ConsulAgent(`consul-dev:${ports.http}`, ["agent", "-dev", "-config-file", join(dir, "dev.json")], ports);
  agent.token = opts.token;
  if (opts.wait === false) return agent;
  await agent.waitReady();
  // With ACLs on, the first authorized request must wait for the ACL bootstrap.
  const self = await waitFor(() => agent.api<{ DebugConfig?: { Experiments?: string[] } }>("GET", "/v1/agent/self"), { timeoutMs: 15_000, what: "/v1/agent/self" });
  if (self.DebugConfig?.Experiments?.includes("resource-apis")) {
    await agent.stop();
    throw new Error("this consul -dev enables the resource-apis experiment, which disables the v1 catalog/health APIs the sidecar uses");
  }
  return agent;
}

export async function consulVersion(): Promise<string> {
  const r = Bun.spawnSync([consulBinary(), "version"]);
  return r.stdout.toString().split("\n")[0] ?? "unknown";
}

/**
 * A cluster on loopback: `servers` servers (bootstrap_expect = servers) and
 * `clients` client agents, each with its own data dir so a restarted agent
 * keeps its services, checks and check state.
 */
export async function startCluster(servers: number, clients: number, extra: Record<string, unknown> = {}): Promise<{ servers: ConsulAgent[]; clients: ConsulAgent[] }> {
  const scope = Scope.current ?? new Scope("consul");
  const all: { name: string; server: boolean; ports: AgentPorts; dir: string }[] = [];
  for (let i = 0; i < servers + clients; i++) {
    const server = i < servers;
    all.push({ name: `${server ? "server" : "client"}${server ? i + 1 : i - servers + 1}`, server, ports: { http: freePort(), dns: freePort(), server: freePort(), serfLan: freePort() }, dir: scope.tmpdir("consul-") });
  }
  const join0 = all.slice(0, servers).map((a) => `127.0.0.1:${a.ports.serfLan}`);
  const agents = all.map((a) => {
    const cfg = {
      node_name: `${a.name}-${a.ports.http}`,
      datacenter: "dc1",
      data_dir: join(a.dir, "data"),
      server: a.server,
      ...(a.server ? { bootstrap_expect: servers } : {}),
      bind_addr: "127.0.0.1",
      client_addr: "127.0.0.1",
      retry_join: join0,
      ports: { http: a.ports.http, dns: a.ports.dns, server: a.ports.server, serf_lan: a.ports.serfLan, serf_wan: -1, grpc: -1, grpc_tls: -1 },
      disable_update_check: true,
      leave_on_terminate: false,
      performance: { raft_multiplier: 1 },
      log_level: "warn",
      ...extra,
    };
    writeFileSync(join(a.dir, "agent.json"), JSON.stringify(cfg));
    return new ConsulAgent(`consul-${a.name}`, ["agent", "-config-file", join(a.dir, "agent.json")], a.ports, a.dir);
  });
  await Promise.all(agents.map((a) => a.waitReady(60_000)));
  return { servers: agents.slice(0, servers), clients: agents.slice(servers) };
}
