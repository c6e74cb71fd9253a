/**
 * A small network of hosts on one machine: each host is a network namespace
 * with a veth into a bridge in the root namespace (iproute2, needs root).
 * The test process reaches every host through the bridge; a host can be cut
 * off from everything by taking its link down, and healed again.
 */

import { record as recordInLedger } from "./ledger.ts";
import { Proc, Scope } from "./proc.ts";

export interface Host {
  name: string;
  ns: string;
  ip: string;
  /** The host end of its veth, inside its namespace. */
  dev: string;
}

function sh(cmd: string[]): { ok: boolean; out: string } {
  const r = Bun.spawnSync(cmd, { stderr: "pipe", stdout: "pipe" });
  return { ok: r.exitCode === 0, out: (r.stdout.toString() + r.stderr.toString()).trim() };
}

function must(cmd: string[]): void {
  const r = sh(cmd);
  if (!r.ok) throw new Error(`${cmd.join(" ")}: ${r.out}`);
}

/** Why namespaces cannot be used here, or undefined when they can. */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return "not running as root";
  if (!Bun.which("ip")) return "iproute2 (ip) is not installed";
  const probe = `clprobe${process.pid}`;
  const r = sh(["ip", "netns", "add", probe]);
  if (!r.ok) return `ip netns add failed: ${r.out}`;
  sh(["ip", "netns", "del", probe]);
  return undefined;
}

export class Net {
  readonly hosts: Host[] = [];
  readonly bridge: string;
  readonly subnet: string;
  readonly gateway: string;
  readonly #tag: string;

  /** Creates the bridge and `names.length` hosts; removed again by the current Scope. */
  constructor(names: string[]) {
    const id = (process.pid % 200) + 20;
    this.#tag = `cl${id}`;
    this.bridge = `${this.#tag}br`;
    this.subnet = `10.77.${id}`;
    this.gateway = `${this.subnet}.1`;
    Scope.current?.defer(() => this.destroy());
    this.destroy(); // leftovers of a crashed run with the same id
    must(["ip", "link", "add", this.bridge, "type", "bridge"]);
    must(["ip", "addr", "add", `${this.gateway}/24`, "dev", this.bridge]);
    must(["ip", "link", "set", this.bridge, "up"]);
    names.forEach((name, i) => {
      const ns = `${this.#tag}-${name}`;
      const ip = `${this.subnet}.${10 + i}`;
      const outer = `${this.#tag}v${i}`;
      const dev = "eth0";
      must(["ip", "netns", "add", ns]);
      recordInLedger("netns", ns);
      must(["ip", "link", "add", outer, "type", "veth", "peer", "name", `${this.#tag}p${i}`]);
      must(["ip", "link", "set", `${this.#tag}p${i}`, "netns", ns]);
      must(["ip", "netns", "exec", ns, "ip", "link", "set", `${this.#tag}p${i}`, "name", dev]);
      must(["ip", "link", "set", outer, "master", this.bridge]);
      must(["ip", "link", "set", outer, "up"]);
      must(["ip", "netns", "exec", ns, "ip", "addr", "add", `${ip}/24`, "dev", dev]);
      must(["ip", "netns", "exec", ns, "ip", "link", "set", dev, "up"]);
      must(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"]);
      must(["ip", "netns", "exec", ns, "ip", "route", "add", "default", "via", this.gateway]);
      this.hosts.push({ name, ns, ip, dev });
    });
  }

  host(name: string): Host {
    const h = this.hosts.find((x) => x.name === name);
    if (!h) throw new Error(`no host ${name}`);
    return h;
  }

  /** Starts `cmd` inside the host's namespace (the process itself, not a wrapper: ip execs it). */
  spawn(host: Host, name: string, cmd: string[], env?: Record<string, string | undefined>): Proc {
    return new Proc(name, ["ip", "netns", "exec", host.ns, ...cmd], env ? { env } : {});
  }

  /** Cuts the host off from every other host and from the test process. */
  partition(host: Host): void {
    must(["ip", "netns", "exec", host.ns, "ip", "link", "set", host.dev, "down"]);
  }

  heal(host: Host): void {
    must(["ip", "netns", "exec", host.ns, "ip", "link", "set", host.dev, "up"]);
    sh(["ip", "netns", "exec", host.ns, "ip", "route", "replace", "default", "via", this.gateway]);
  }

  destroy(): void {
    for (const line of sh(["ip", "netns", "list"]).out.split("\n")) {
      const ns = line.split(" ")[0] ?? "";
      if (ns.startsWith(`${this.#tag}-`)) sh(["ip", "netns", "del", ns]);
    }
    sh(["ip", "link", "del", this.bridge]);
  }
}
