/**
 * The runtime floor: what a Bun program costs before any sidecar logic, as a
 * reference row beside the sidecars in the idle and soak measurements. It is
 * compiled like the sidecar (`bun build --compile`) and uses the runtime
 * features every sidecar uses: fetch to the Consul agent and Bun's
 * RedisClient once a second each, and a Bun.serve listener on loopback.
 * Nothing else: no election, no parsing, no logging.
 *
 *   CONSUL_HTTP_ADDR=http://127.0.0.1:8500 REDIS_URL=redis://127.0.0.1:6379 ./floor
 *
 * `buildFloor(dir)` compiles it and returns the binary's path.
 */

import { join } from "node:path";

if (import.meta.main) {
  const consul = process.env["CONSUL_HTTP_ADDR"] ?? "http://127.0.0.1:8500";
  const redis = new Bun.RedisClient(process.env["REDIS_URL"] ?? "redis://127.0.0.1:6379");
  Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response("ok") });
  setInterval(() => {
    void fetch(`${consul}/v1/agent/self`).then((r) => r.arrayBuffer(), () => undefined);
    void redis.send("INFO", ["replication"]).catch(() => undefined);
  }, 1000);
}

/** Compiles this file into `dir`/floor with the Bun that runs the benchmark; returns the path. */
export function buildFloor(dir: string): string {
  const out = join(dir, "floor");
  const r = Bun.spawnSync([process.execPath, "build", "--compile", "--minify", import.meta.path, "--outfile", out], { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`building the runtime floor program failed: ${r.stderr.toString()}`);
  return out;
}
