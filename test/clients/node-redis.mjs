// node-redis's createSentinel, default options otherwise (see README.md).
import { createSentinel } from "redis";

const sentinelRootNodes = process.env.SENTINELS.split(",").map((a) => {
  const i = a.lastIndexOf(":");
  return { host: a.slice(0, i), port: Number(a.slice(i + 1)) };
});
const sentinel = createSentinel({
  name: process.env.MASTER,
  sentinelRootNodes,
  ...(process.env.SENTINEL_PASSWORD ? { sentinelClientOptions: { password: process.env.SENTINEL_PASSWORD } } : {}),
});
sentinel.on("error", () => {});
const prefix = process.env.PREFIX;
const interval = Number(process.env.INTERVAL_MS ?? 5);
const now = () => (performance.timeOrigin + performance.now()).toFixed(1);
let stop = false;
process.on("SIGTERM", () => (stop = true));
for (;;) {
  try {
    await sentinel.connect();
    break;
  } catch (err) {
    process.stderr.write(`connect: ${err.message}\n`);
    await new Promise((r) => setTimeout(r, 100));
    if (stop) break;
  }
}
let n = 0;
while (!stop) {
  n++;
  try {
    await sentinel.set(`${prefix}:${n}`, String(n));
    process.stdout.write(`ack ${n} ${now()}\n`);
  } catch (err) {
    process.stdout.write(`fail ${n} ${now()} ${String(err.message).replace(/\s+/g, " ").slice(0, 200)}\n`);
  }
  if (interval > 0) await new Promise((r) => setTimeout(r, interval));
}
process.stdout.write(`done ${n}\n`);
process.exit(0);
