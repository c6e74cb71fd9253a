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
