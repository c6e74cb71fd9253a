/**
 * Composition root: the only file that reads process.env and argv, loads
 * `.env`, installs signal handlers, starts servers and exits. Everything else
 * receives what it needs as arguments.
 *
 * Exit codes (also in --help and the README):
 *   0  clean shutdown
 *   1  fatal runtime error (e.g. the Nomad service never appeared)
 *   2  bad usage (unknown command or flag)
 *   78 invalid configuration (EX_CONFIG); nothing was sent to Consul
 */

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { hostname } from "node:os";
import { parse as parseDotenv } from "dotenv";
import { fetch as undiciFetch } from "undici";
import pkg from "../package.json" with { type: "json" };
import { realClock } from "./clock.ts";
import { type Config, type Env, loadConfig } from "./config.ts";
import { Consul, type FetchLike } from "./consul.ts";
import { Elector } from "./elector.ts";
import { describeError } from "./errors.ts";
import { knobTableText } from "./knobs.ts";
import { parseDuration } from "./duration.ts";
import { createLogger, type Logger, silentLogger } from "./log.ts";
import { readMembers } from "./members.ts";
import { SidecarMetrics } from "./metrics.ts";
import { formatHostPort, RedisLink, RedisNode } from "./redis.ts";
import { RedisRole } from "./redis-role.ts";
import { ServiceManager } from "./service.ts";
import { createStatusHandler, livenessMaxAgeMs, stateDocument } from "./status.ts";
import { runSwitchover } from "./switchover.ts";

export const EXIT = { ok: 0, fatal: 1, usage: 2, config: 78 } as const;

/** Bun resolves "undici" to its own fetch, which takes the `unix` and `tls` options we need. */
const fetchImpl = undiciFetch as unknown as FetchLike;

const USAGE = `consul-leader ${pkg.version}: leader election on Consul for a Redis group (or any service)

Usage:
  consul-leader             run the sidecar (configured only by environment variables)
  consul-leader switchover [--to INSTANCE|HOST:PORT] [--timeout 10s]
                            ask the running group's leader to hand the primary role
                            over (to the given member), and wait until it has
  consul-leader --help      this text
  consul-leader --version   print the version

Configuration comes from the environment, and from ./.env when present
(the real environment wins).

Exit codes: 0 clean shutdown, 1 fatal error, 2 bad usage, 78 invalid configuration.

Environment variables:
`;

async function main(argv: string[]): Promise<number> {
  const args = argv.slice(2);
  if (args.includes("--help") || args.includes("-h") || args[0] === "help") {
    process.stdout.write(USAGE + knobTableText() + "\n");
    return EXIT.ok;
  }
  if (args.includes("--version") || args.includes("-v") || args[0] === "version") {
    process.stdout.write(`consul-leader ${pkg.version}\n`);
    return EXIT.ok;
  }
  const command = args[0] ?? "run";
  if (command !== "run" && command !== "switchover") return usage(`unknown command or flag: ${command}`);
  const flags = parseFlags(args.slice(1), command === "switchover" ? ["--to", "--timeout"] : []);
  if (typeof flags === "string") return usage(flags);
  const env = readEnv();
  const loaded = loadConfig(env, {
    readFile: (p) => readFileSync(p, "utf8"),
    readDir: (p) => readdirSync(p),
    hostname: hostname(),
  });
  if (!loaded.ok) {
    process.stderr.write(`consul-leader: invalid configuration (${loaded.problems.length} problem${loaded.problems.length > 1 ? "s" : ""}):\n  - ${loaded.problems.join("\n  - ")}\n`);
    return EXIT.config;
  }
  const config = loaded.config;
  if (command === "switchover") {
    const timeoutMs = parseDuration(flags["--timeout"] ?? "10s");
    if (timeoutMs === undefined || timeoutMs <= 0) return usage(`--timeout ${flags["--timeout"]}: not a duration`);
    const consul = new Consul(config.consul, { fetch: fetchImpl, clock: realClock, log: silentLogger }, config.timing.requestTimeoutMs);
    return await runSwitchover(
      { key: config.key, timeoutMs, ...(flags["--to"] ? { to: flags["--to"] } : {}) },
      { consul, clock: realClock, out: (line) => process.stdout.write(line + "\n") },
    );
  }
  const log = createLogger({
    level: config.log.level,
    format: config.log.format,
    write: (line) => process.stdout.write(line),
    clock: realClock,
    secrets: secretsOf(config),
  });
  for (const w of loaded.warnings) log.warn("configuration warning", { warning: w });
  log.info("starting", { version: pkg.version, mode: config.mode.kind, instance: config.instanceId, key: config.key, knobs: config.effective });
  return await runSidecar(config, log);
}

async function runSidecar(config: Config, log: Logger): Promise<number> {
  const clock = realClock;
  const metrics = new SidecarMetrics(pkg.version);
  const consul = new Consul(
    config.consul,
    { fetch: fetchImpl, clock, log: log.child({ component: "consul" }), observe: (e) => metrics.consulRequest(e) },
    config.timing.requestTimeoutMs,
  );
  const service = new ServiceManager(
    {
      serviceName: config.serviceName,
      primaryLabel: config.primaryLabel,
      replicaLabel: config.replicaLabel,
      checkTtlMs: config.timing.checkTtlMs,
      mode: config.mode,
      ...(config.redis ? { announce: config.redis.announce ?? config.redis.addr } : {}),
    },
    { consul, clock, log: log.child({ component: "service" }) },
  );
  let redis: RedisRole | undefined;
  if (config.redis) {
    const r = config.redis;
    const rlog = log.child({ component: "redis" });
    const nodeFor = (addr: { host: string; port: number }) =>
      new RedisNode(new RedisLink(addr, r.auth, r.timeoutMs, rlog), { minReplicas: r.minReplicas, minReplicasMaxLagS: r.minReplicasMaxLagS, auth: r.auth });
    redis = new RedisRole(r, { node: nodeFor(r.addr), connect: nodeFor, clock, log: rlog });
  }
  const elector = new Elector(config, {
    consul,
    clock,
    log: log.child({ component: "election" }),
    service,
    ...(redis ? { redis } : {}),
    onRenew: (ms, ok) => metrics.renew(ms, ok),
    onRoleChange: (c) => metrics.roleChanged(c),
  });
  const info = { version: pkg.version, knobs: config.effective };

  // The status server starts before the elector, so a port in use stops the
  // sidecar before it has a session or a tag to clean up.
  let server: ReturnType<typeof Bun.serve> | undefined;
  if (config.http) {
    const { host, port } = config.http;
    const handler = createStatusHandler(
      {
        state: () => elector.state(),
        requestSwitchover: (to) => elector.requestSwitchover(to),
        members: () => readMembers(consul, config.key),
        metrics: (s) => metrics.render(s),
      },
      {
        ...info,
        livenessMaxAgeMs: livenessMaxAgeMs(config.timing),
        maxLagBytes: config.redis?.maxLagBytes ?? 0,
        serviceName: config.serviceName,
        key: config.key,
        now: () => clock.now(),
        secrets: secretsOf(config),
      },
    );
    try {
      server = Bun.serve({ hostname: host, port, development: false, fetch: handler, error: (err) => new Response(`internal error: ${describeError(err)}\n`, { status: 500 }) });
    } catch (err) {
      const inUse = (err as { code?: unknown })?.code === "EADDRINUSE";
      log.error("cannot start the status server", { addr: formatHostPort(config.http), err });
      process.stderr.write(`consul-leader: cannot listen on CONSUL_LEADER_HTTP_ADDR=${formatHostPort(config.http)}: ${inUse ? "the address is already in use" : describeError(err)}\n`);
      return EXIT.fatal;
    }
    log.info("status server listening", { addr: formatHostPort(config.http) });
  }

  const stop = new AbortController();
  let signals = 0;
  const onStop = (sig: string) => {
    signals++;
    if (signals > 1) {
      log.warn("second signal; exiting without a graceful shutdown", { signal: sig });
      process.exit(EXIT.fatal);
    }
    log.info("shutting down", { signal: sig });
    stop.abort(new Error(sig));
  };
  process.on("SIGTERM", () => onStop("SIGTERM"));
  process.on("SIGINT", () => onStop("SIGINT"));
  process.on("SIGUSR1", () => log.always("state", { state: stateDocument(elector.state(), info) }));

  try {
    await elector.run(stop.signal);
    log.info("stopped");
    return EXIT.ok;
  } catch (err) {
    log.error("fatal", { err });
    process.stderr.write(`consul-leader: ${describeError(err)}\n`);
    return EXIT.fatal;
  } finally {
    // After the hand-over, so /state and /primary answer through the shutdown.
    await server?.stop(true);
  }
}

function usage(problem: string): number {
  process.stderr.write(`consul-leader: ${problem}\nRun consul-leader --help for usage.\n`);
  return EXIT.usage;
}

/** `--name value` pairs, only the allowed names; a string is the problem. */
function parseFlags(args: string[], allowed: string[]): Record<string, string> | string {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const [name, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    if (!allowed.includes(name)) return `unknown flag: ${name}`;
    const value = inline ?? args[++i];
    if (value === undefined) return `${name} needs a value`;
    out[name] = value;
  }
  return out;
}

/** The environment, with ./.env underneath it when present (dotenv; the real environment wins). */
function readEnv(): Env {
  const env: Record<string, string | undefined> = {};
  if (existsSync(".env")) Object.assign(env, parseDotenv(readFileSync(".env")));
  return Object.assign(env, process.env);
}

/** Every secret value, raw and URL-encoded, for the logger to redact. */
function secretsOf(c: Config): string[] {
  const out: string[] = [];
  if (c.consul.token) out.push(c.consul.token);
  const pw = c.redis?.auth.password;
  if (pw) out.push(pw, encodeURIComponent(pw));
  return out;
}

process.exitCode = await main(process.argv).catch((err: unknown) => {
  process.stderr.write(`consul-leader: ${describeError(err)}\n`);
  return EXIT.fatal;
});
// Background timers must not keep a finished process alive.
process.exit(process.exitCode);
