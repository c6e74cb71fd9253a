/**
 * Addresses as the sidecar passes them around: `host:port`, with IPv6 hosts
 * in brackets. Shared by config, Redis, Consul members and the election.
 */

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

/** True for names and addresses that only this host can reach. */
export function isLoopback(host: string): boolean {
  return host === "localhost" || host.startsWith("127.") || host === "::1";
}

/**
 * 4 for a dotted-quad IPv4 address, 6 for an IPv6 address (no zone, no
 * brackets), 0 for anything else. Accepts what Node's `net.isIP` accepts
 * for those inputs: decimal octets without leading zeros, hex groups of one
 * to four digits, one `::`, and a trailing IPv4 part in IPv6. Written here
 * because importing node:net for this costs the sidecar megabytes of memory.
 */
export function ipVersion(text: string): 0 | 4 | 6 {
  if (isIPv4(text)) return 4;
  return isIPv6(text) ? 6 : 0;
}

const OCTET = /^(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]\d|\d)$/;
const GROUP = /^[0-9a-fA-F]{1,4}$/;

function isIPv4(text: string): boolean {
  const parts = text.split(".");
  return parts.length === 4 && parts.every((p) => OCTET.test(p));
}

function isIPv6(text: string): boolean {
  const halves = text.split("::");
  if (halves.length > 2) return false;
  const groups = (half: string): string[] => (half === "" ? [] : half.split(":"));
  const tail = halves.length === 2 ? groups(halves[1]!) : undefined;
  const all = [...groups(halves[0]!), ...(tail ?? [])];
  // An IPv4 part may end the address (not stand before a final "::"); it counts as two groups.
  const last = all.at(-1);
  const v4 = last !== undefined && last.includes(".") && tail?.length !== 0;
  if (v4 && !isIPv4(last)) return false;
  const hex = v4 ? all.slice(0, -1) : all;
  if (!hex.every((g) => GROUP.test(g))) return false;
  const count = hex.length + (v4 ? 2 : 0);
  return halves.length === 2 ? count <= 7 : count === 8;
}
