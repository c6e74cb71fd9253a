// ioredis with its Sentinel support, default options otherwise (see README.md).
import Redis from "ioredis";

const sentinels = process.env.SENTINELS.split(",").map((a) => {
  const i = a.lastIndexOf(":");
  return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
});
const redis = process.env.DIRECT
  ? new Redis({ host: process.env.DIRECT.split(":")[0], port: Number(process.env.DIRECT.split(":")[1]) })
  : new Redis({ sentinels, name: process.env.MASTER, ...(process.env.SENTINEL_PASSWORD ? { sentinelPassword: process.env.SENTINEL_PASSWORD } : {}) });
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
