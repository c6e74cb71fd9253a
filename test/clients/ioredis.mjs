// ioredis with its Sentinel support, default options otherwise (see README.md).
import dns from "node:dns";
import Redis from "ioredis";

const sentinels = (process.env.SENTINELS || "").split(",").filter(Boolean).map((a) => {
  const i = a.lastIndexOf(":");
  return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
});
let redis;
if (process.env.DNS_SERVER) {
  // The DNS variant: a plain client of ADDR, a Consul DNS name. What a host's resolver does when it
  // forwards .consul to the agent (dnsmasq, systemd-resolved) is done here for this process alone.
  const resolver = new dns.promises.Resolver();
  resolver.setServers([process.env.DNS_SERVER]);
  const systemLookup = dns.lookup;
  dns.lookup = (host, opts, cb) => {
    if (typeof opts === "function") [cb, opts] = [opts, {}];
    if (!String(host).endsWith(".consul")) return systemLookup(host, opts, cb);
    resolver.resolve4(host).then(
      (a) => (opts?.all ? cb(null, a.map((address) => ({ address, family: 4 }))) : cb(null, a[0], 4)),
      (err) => cb(err),
    );
  };
  const [host, port] = [process.env.ADDR.slice(0, process.env.ADDR.lastIndexOf(":")), Number(process.env.ADDR.slice(process.env.ADDR.lastIndexOf(":") + 1))];
  redis = new Redis({ host, port });
} else {
  redis = new Redis({ sentinels, name: process.env.MASTER, ...(process.env.SENTINEL_PASSWORD ? { sentinelPassword: process.env.SENTINEL_PASSWORD } : {}) });
}
redis.on("error", () => {});
const prefix = process.env.PREFIX;
const interval = Number(process.env.INTERVAL_MS ?? 5);
const now = () => (performance.timeOrigin + performance.now()).toFixed(1);
let stop = false;
process.on("SIGTERM", () => (stop = true));
let n = 0;
while (!stop) {
  n++;
  try {
    await redis.set(`${prefix}:${n}`, String(n));
    process.stdout.write(`ack ${n} ${now()}\n`);
  } catch (err) {
    process.stdout.write(`fail ${n} ${now()} ${String(err.message).replace(/\s+/g, " ").slice(0, 200)}\n`);
  }
  if (interval > 0) await new Promise((r) => setTimeout(r, interval));
}
process.stdout.write(`done ${n}\n`);
redis.disconnect();
process.exit(0);
