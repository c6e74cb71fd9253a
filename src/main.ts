/**
 * Composition root: the only file that reads process.env and argv, loads
 * `.env`, installs signal handlers, starts servers and exits. Everything else
 * receives what it needs as arguments.
 *
 * Exit codes (also in --help and the README):
 *   0  clean shutdown
 *   1  fatal runtime error (e.g. the Nomad service never appeared)
 *   2  bad usage (unknown command or flag)
 *   75 exec --try/--timeout: the lock was not held in time; the command did not run (EX_TEMPFAIL)
 *   78 invalid configuration (EX_CONFIG): bad knobs (nothing was sent to Consul),
 *      or another process runs with this sidecar's identity
 */

import { existsSync, readdirSync, readFileSync } from "node:fs";
import { hostname, userInfo } from "node:os";
import { fetch as undiciFetch } from "undici";
import pkg from "../package.json" with { type: "json" };
import { type Clock, realClock } from "./clock.ts";
import { type Config, type Env, loadConfig } from "./config/config.ts";
import { Consul, type FetchLike } from "./consul/client.ts";
import type { RoleChange } from "./election/types.ts";
import { ExecRunner } from "./exec/runner.ts";
import { runGuard, type ToGuard } from "./exec/guard.ts";
import { GUARD_COMMAND as GUARD, groupAlive, killGroup, spawnCommand, spawnGuard } from "./exec/processes.ts";
import { PROBE_TIMEOUT_MS, runStatus } from "./cli/status.ts";
import { parseExecArgs, parseFlags } from "./cli/args.ts";
import { runPause, runResume } from "./cli/pause.ts";
import { parseInfo } from "./redis/info.ts";
import { RedisLink } from "./redis/link.ts";
import { RoleHooks } from "./hooks.ts";
import { describeError, LeaderError } from "./errors.ts";
import { knobTableText } from "./config/knobs.ts";
import { childEnvironment } from "./config/secrets.ts";
import { formatDuration, parseDuration } from "./config/duration.ts";
import { createLogger, type Logger, silentLogger } from "./log.ts";
import { readMembers } from "./consul/members.ts";
import { SidecarMetrics } from "./status/metrics.ts";
import { formatHostPort, parseHostPort } from "./host-port.ts";
import { bunTransport } from "./redis/bun-transport.ts";
import { assembleSidecar } from "./sidecar.ts";
import { guardStatus, type Refusal, securityHeaders } from "./status/guard.ts";
import { createStatusHandler, livenessMaxAgeMs, overviewCsp, stateDocument } from "./status/server.ts";
import { runSwitchover } from "./cli/switchover.ts";
import { runPrimary } from "./cli/primary.ts";
import { SentinelEndpoint, type Socket as SentinelSocket } from "./sentinel/endpoint.ts";
import { readProcessStats } from "./status/process-stats.ts";

export const EXIT = { ok: 0, fatal: 1, usage: 2, tempfail: 75, config: 78 } as const;


/** Bun resolves "undici" to its own fetch, which takes the `unix` and `tls` options we need. */
const fetchImpl = undiciFetch as unknown as FetchLike;

/** `bytes` random bytes as hex (Web Crypto). */
function randomHex(bytes: number): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(bytes))).toString("hex");
}

const USAGE = `consul-leader ${pkg.version}: leader election on Consul for a Redis group (or any service)

Usage:
  consul-leader             run the sidecar (configured only by environment variables)
  consul-leader exec [--try DUR] [--] CMD [ARGS...]
                            run CMD only while holding the lock (instead of consul lock);
                            CMD gets CONSUL_LEADER_FENCING_TOKEN and CONSUL_LOCK_HELD=true;
                            --try DUR (or --timeout DUR): give up after DUR without the
                            lock, without running CMD, and exit 75
  consul-leader switchover [--to INSTANCE|HOST:PORT] [--timeout 10s]
                            ask the running group's leader to hand the primary role
                            over (to the given member), and wait until it has
  consul-leader status [--json]
                            print the group as Consul and its Redis servers see it now
                            (roles, live lag, why a member may not lead, the last
                            failovers); exit 0 when healthy with one primary, 1 when
                            not, 3 when Consul cannot be read
  consul-leader pause [--reason TEXT]
                            pause the group: no failover and no switchover until resume;
                            the leader keeps leading
  consul-leader resume      end the pause
  consul-leader primary     print the primary's host:port (like SENTINEL get-master-addr-by-name);
                            exit 1 when there is none, 3 when Consul cannot be read
  consul-leader --help      this text
  consul-leader --version   print the version

Configuration comes from the environment, and from ./.env when present
(the real environment wins).

Exit codes: 0 clean shutdown, 1 fatal error, 2 bad usage, 78 invalid configuration
(bad knobs, or another process with the same instance ID);
exec exits with the command's exit code, or 75 when --try ran out.

Environment variables:
`;

const COMMANDS = ["run", "exec", "switchover", "status", "primary", "pause", "resume", GUARD] as const;

/** The flags each client command takes; `--json` is a switch. */
const CLIENT_FLAGS: Record<string, string[]> = { switchover: ["--to", "--timeout"], status: ["--json"], pause: ["--reason"], resume: [], primary: [] };

async function main(argv: string[]): Promise<number> {
  const args = argv.slice(2);
  const command = args[0] ?? "run";
  // exec's own arguments belong to the command it runs, never to us.
  const ours = command === "exec" || command === GUARD ? [] : args;
  if (ours.includes("--help") || ours.includes("-h") || command === "help") {
    process.stdout.write(USAGE + knobTableText() + "\n");
    return EXIT.ok;
  }
  if (ours.includes("--version") || ours.includes("-v") || command === "version") {
    process.stdout.write(`consul-leader ${pkg.version}\n`);
    return EXIT.ok;
  }
  if (!(COMMANDS as readonly string[]).includes(command)) return usage(`unknown command or flag: ${command}`);
  if (command === GUARD) return await guardMain(args.slice(1));
  let execArgs: { command: string[]; tryMs?: number } = { command: [] };
  let flags: Record<string, string> = {};
  if (command === "exec") {
    const parsed = parseExecArgs(args.slice(1));
    if (typeof parsed === "string") return usage(parsed);
    execArgs = parsed;
  } else {
    const parsed = parseFlags(args.slice(1), CLIENT_FLAGS[command] ?? [], ["--json"]);
    if (typeof parsed === "string") return usage(parsed);
    flags = parsed;
  }
  const { env, origin } = await readEnv();
  const loaded = loadConfig(env, {
    readFile: (p) => readFileSync(p, "utf8"),
    readDir: (p) => readdirSync(p),
    hostname: hostname(),
    randomId: () => randomHex(8),
  }, command === "exec" ? "exec" : command === "run" ? "sidecar" : "client", origin);
  if (!loaded.ok) {
    process.stderr.write(`consul-leader: invalid configuration (${loaded.problems.length} problem${loaded.problems.length > 1 ? "s" : ""}):\n  - ${loaded.problems.join("\n  - ")}\n`);
    return EXIT.config;
  }
  const config = loaded.config;
  // The commands that print for people say it on stderr; the sidecar and exec log it below.
  if (command !== "run" && command !== "exec") for (const w of loaded.warnings) process.stderr.write(`consul-leader: warning: ${w}\n`);
  if (command in CLIENT_FLAGS) return await clientMain(command, flags, config);
  const log = createLogger({
    level: config.log.level,
    format: config.log.format,
    // exec: the command owns stdout; our lines go to stderr.
    write: (line) => (command === "exec" ? process.stderr : process.stdout).write(line),
    clock: realClock,
    secrets: secretsOf(config),
  });
  for (const w of loaded.warnings) log.warn("configuration warning", { warning: w });
  log.info("starting", { version: pkg.version, mode: config.mode.kind, instance: config.instanceId, key: config.key, knobs: config.effective });
  if (command === "exec") {
    const exec = new ExecRunner(
      // The command gets no token or password unless CONSUL_LEADER_EXEC_PASS_SECRETS says so.
      { command: execArgs.command, killGraceMs: config.exec.killGraceMs, restart: config.exec.restart, env: childEnvironment(env, config.exec.passSecrets) },
      {
        spawnGuard: (cmd, cmdEnv, onMessage) => spawnGuard(cmd, cmdEnv, config.exec.killGraceMs, onMessage),
        killGroup,
        groupAlive,
        clock: realClock,
        log: log.child({ component: "exec" }),
      },
    );
    return await runSidecar(config, log, env, exec, execArgs.tryMs);
  }
  return await runSidecar(config, log, env);
}

/** The commands for people: switchover, status, pause, resume. Progress on stdout, refusals and errors on stderr. */
async function clientMain(command: string, flags: Record<string, string>, config: Config): Promise<number> {
  const consul = new Consul(config.consul, { fetch: fetchImpl, clock: realClock, log: silentLogger }, config.timing.requestTimeoutMs);
  const io = { consul, clock: realClock, out: (text: string) => process.stdout.write(text + "\n"), err: (text: string) => process.stderr.write(text + "\n") };
  switch (command) {
    case "switchover": {
      const timeoutMs = parseDuration(flags["--timeout"] ?? "10s");
      if (timeoutMs === undefined || timeoutMs <= 0) return usage(`--timeout ${flags["--timeout"]}: not a duration`);
      return await runSwitchover({ key: config.key, timeoutMs, ...(flags["--to"] ? { to: flags["--to"] } : {}) }, io);
    }
    case "status": {
      const auth = config.redisAuth ?? { tls: false };
      const probe = async (addr: string) => {
        const hp = parseHostPort(addr);
        if (!hp) throw new Error(`${addr} is not host:port`);
        const link = new RedisLink(hp, auth, PROBE_TIMEOUT_MS, { transport: bunTransport, clock: realClock, log: silentLogger });
        try {
          return parseInfo(String(await link.cmd("INFO", ["replication", "persistence", "server"])));
        } finally {
          link.close();
        }
      };
      return await runStatus({ key: config.key, service: config.serviceName, primaryLabel: config.primaryLabel, json: "--json" in flags }, { ...io, probe });
    }
    case "primary":
      return await runPrimary({ key: config.key }, io);
    case "pause":
      return await runPause({ key: config.key, by: `${process.env["USER"] ?? process.env["LOGNAME"] ?? userInfo().username}@${hostname()}`, ...(flags["--reason"] ? { reason: flags["--reason"] } : {}) }, io);
    default:
      return await runResume({ key: config.key }, io);
  }
}

/** The hidden `__exec-guard` subcommand: `--grace MS -- CMD...` (see exec/guard.ts). */
async function guardMain(args: string[]): Promise<number> {
  const sep = args.indexOf("--");
  const graceMs = Number(args[args.indexOf("--grace") + 1]);
  if (sep < 0 || !Number.isFinite(graceMs) || args.length <= sep + 1) return usage(`${GUARD} --grace MS -- CMD...`);
  // The guard ignores every catchable signal: the exec process decides, through the channel.
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGTSTP", "SIGTTIN", "SIGTTOU"] as const) process.on(sig, () => {});
  return await runGuard({ command: args.slice(sep + 1), graceMs }, {
    spawn: (command) => spawnCommand(command, process.env),
    killGroup: (sig) => killGroup(process.pid, sig),
    clock: realClock,
    send: (m) => {
      try {
        process.send?.(m);
      } catch {
        // the parent is gone; nothing to tell
      }
    },
    onMessage: (fn) => process.on("message", (m: ToGuard) => fn(m)),
    onDisconnect: (fn) => process.on("disconnect", fn),
    stderr: (text) => process.stderr.write(text),
  });
}

async function runSidecar(config: Config, log: Logger, env: Env, exec?: ExecRunner, tryMs?: number): Promise<number> {
  const clock = realClock;
  const metrics = new SidecarMetrics(pkg.version);
  const hooks = config.hooks.command || config.mode.kind === "nomad"
    ? new RoleHooks({
      ...(config.hooks.command ? { command: config.hooks.command } : {}),
      timeoutMs: config.hooks.timeoutMs,
      env,
      instance: config.instanceId,
      service: config.serviceName,
      ...(config.mode.kind === "nomad" && config.mode.allocDir ? { nomad: { allocId: config.mode.allocId, allocDir: config.mode.allocDir } } : {}),
    }, log.child({ component: "hooks" }))
    : undefined;
  const sidecar = assembleSidecar(config, log, { fetch: fetchImpl, redis: bunTransport, clock, randomId: () => randomHex(8), process: { host: hostname(), pid: process.pid } }, {
    onConsulRequest: (e) => metrics.consulRequest(e),
    onRenew: (ms, ok) => metrics.renew(ms, ok),
    onRoleChange: (c: RoleChange) => {
      metrics.roleChanged(c);
      hooks?.onRoleChange(c);
      exec?.onRoleChange(c);
    },
    onLockChange: () => sentinel?.refresh(),
    ...(exec ? { guarded: exec } : {}),
  });
  const { elector, consul } = sidecar;
  const info = { version: pkg.version, knobs: config.effective };

  // The Sentinel-compatible endpoint, like the status server, starts before the elector.
  let sentinel: SentinelEndpoint | undefined;
  let sentinelListener: { stop(closeActive?: boolean): void } | undefined;
  if (config.sentinel && config.redis) {
    const sc = config.sentinel;
    const slog = log.child({ component: "sentinel" });
    const malformed = malformedOnce(slog);
    const endpoint = new SentinelEndpoint(
      {
        masterName: sc.masterName,
        ...(sc.password ? { password: sc.password } : {}),
        waitMs: sc.waitMs,
        announce: sc.announce,
        downAfterMs: config.redis.downAfterMs,
        instance: config.instanceId,
        version: pkg.version,
        pid: process.pid,
      },
      {
        clock,
        log: slog,
        facts: () => {
          const s = elector.state();
          return { lock: elector.lockView(), self: config.instanceId, role: s.role, redisWritable: !!s.redis?.up && !!s.redis.writable };
        },
        members: () => readMembers(consul, config.key, malformed),
      },
    );
    try {
      sentinelListener = Bun.listen<SentinelSocket>({
        hostname: sc.listen.host,
        port: sc.listen.port,
        socket: {
          open: (s) => endpoint.open(s),
          data: (s, d) => endpoint.data(s, d),
          drain: (s) => endpoint.drain(s),
          close: (s) => endpoint.close(s),
          error: (s) => endpoint.close(s),
        },
      });
    } catch (err) {
      const inUse = (err as { code?: unknown })?.code === "EADDRINUSE";
      log.error("cannot start the Sentinel endpoint", { addr: formatHostPort(sc.listen), err });
      process.stderr.write(`consul-leader: cannot listen on CONSUL_LEADER_SENTINEL_ADDR=${formatHostPort(sc.listen)}: ${inUse ? "the address is already in use" : describeError(err)}\n`);
      return EXIT.fatal;
    }
    sentinel = endpoint;
    log.info("sentinel endpoint listening", { addr: formatHostPort(sc.listen), announce: formatHostPort(sc.announce), master: sc.masterName, auth: sc.password ? "password" : "off" });
  }

  // The status server starts before the elector, so a port in use stops the
  // sidecar before it has a session or a tag to clean up.
  let server: ReturnType<typeof Bun.serve> | undefined;
  if (config.http) {
    const { host, port } = config.http;
    const malformed = malformedOnce(log.child({ component: "status" }));
    const handler = createStatusHandler(
      {
        state: () => elector.state(),
        requestSwitchover: (to) => elector.requestSwitchover(to),
        members: () => readMembers(consul, config.key, malformed),
        metrics: (s) => metrics.render(s, readProcessStats()),
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
    const guarded = guardStatus(handler, {
      ...config.http,
      listenHost: host,
      csp: overviewCsp(),
      onRefused: refusalLog(log.child({ component: "status" }), clock),
    });
    try {
      server = Bun.serve({
        hostname: host,
        port,
        development: false,
        // Nothing the server accepts has a body worth more than this.
        maxRequestBodySize: 64 * 1024,
        ...(config.http.tls ? { tls: { cert: config.http.tls.cert, key: config.http.tls.key } } : {}),
        fetch: guarded,
        error: (err) => new Response(`internal error: ${describeError(err)}\n`, { status: 500, headers: securityHeaders(overviewCsp()) }),
      });
    } catch (err) {
      const inUse = (err as { code?: unknown })?.code === "EADDRINUSE";
      log.error("cannot start the status server", { addr: formatHostPort(config.http), err });
      process.stderr.write(`consul-leader: cannot listen on CONSUL_LEADER_HTTP_ADDR=${formatHostPort(config.http)}: ${inUse ? "the address is already in use" : describeError(err)}\n`);
      return EXIT.fatal;
    }
    log.info("status server listening", {
      addr: formatHostPort(config.http),
      tls: !!config.http.tls,
      writes: config.http.token ? "token" : "off",
      reads: config.http.auth === "all" ? "token" : "open",
    });
  }

  const stop = new AbortController();
  let signals = 0;
  let exitCode: number = EXIT.ok;
  const onStop = (sig: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      log.warn("second signal; exiting without a graceful shutdown", { signal: sig });
      process.exit(EXIT.fatal);
    }
    log.info("shutting down", { signal: sig });
    // The Sentinel endpoint goes first: a sidecar on its way out stops watching the lock, so it could
    // only answer the old primary; its clients ask the other endpoints instead.
    sentinel?.stop();
    sentinelListener?.stop(true);
    if (exec?.running) {
      // The command first: it gets the signal, then SIGKILL after the grace; the lock is released after it is gone.
      exec.forward(sig);
      void Promise.race([exec.done, clock.sleep(config.exec.killGraceMs)]).then(() => stop.abort(new Error(sig)));
    } else {
      stop.abort(new Error(sig));
    }
  };
  process.on("SIGTERM", () => onStop("SIGTERM"));
  process.on("SIGINT", () => onStop("SIGINT"));
  process.on("SIGQUIT", () => (exec?.running ? exec.forward("SIGQUIT") : onStop("SIGQUIT")));
  process.on("SIGHUP", () => (exec?.running ? exec.forward("SIGHUP") : exec ? onStop("SIGHUP") : log.info("SIGHUP ignored: nothing to reload")));
  process.on("SIGUSR1", () => (exec?.running ? exec.forward("SIGUSR1") : log.dump("state", "state", stateDocument(elector.state(), info))));
  process.on("SIGUSR2", () => void exec?.forward("SIGUSR2"));
  if (exec && tryMs !== undefined) {
    // exec --try: give up, without ever running the command, when the lock is not held in time.
    const giveUp = setTimeout(() => {
      if (exec.started || stop.signal.aborted) return;
      log.warn("giving up: the lock was not held within --try; the command did not run", { tryMs, holder: elector.state().lock?.instance ?? null });
      process.stderr.write(`consul-leader: the lock was not held within ${formatDuration(tryMs)}${elector.state().lock?.instance ? ` (${elector.state().lock?.instance} holds it)` : ""}; the command did not run\n`);
      exitCode = EXIT.tempfail;
      stop.abort(new Error("--try ran out"));
    }, tryMs);
    stop.signal.addEventListener("abort", () => clearTimeout(giveUp));
  }
  if (exec) {
    void exec.done.then((code) => {
      log.info("the command exited; releasing the lock", { code });
      exitCode = code;
      stop.abort(new Error("command exited"));
    });
  }
  try {
    await sidecar.run(stop.signal);
    await hooks?.idle();
    log.info("stopped", { exitCode });
    return exitCode;
  } catch (err) {
    log.error("fatal", { err });
    process.stderr.write(`consul-leader: ${describeError(err)}\n`);
    // A twin and a Redis user without the permissions it needs are configuration mistakes: exit like
    // one, so supervisors do not restart it in a loop.
    return err instanceof LeaderError && (err.code === "IDENTITY_TWIN" || err.code === "REDIS_PERMISSIONS") ? EXIT.config : EXIT.fatal;
  } finally {
    // After the hand-over, so /state, /primary and the Sentinel endpoint answer through the shutdown.
    await server?.stop(true);
    sentinel?.stop();
    sentinelListener?.stop(true);
  }
}

function usage(problem: string): number {
  process.stderr.write(`consul-leader: ${problem}\nRun consul-leader --help for usage.\n`);
  return EXIT.usage;
}

/**
 * The environment, with ./.env underneath it when present (dotenv; the real
 * environment wins), and where each name came from, for the warnings about
 * names that are not knobs.
 */
async function readEnv(): Promise<{ env: Env; origin: (name: string) => string }> {
  const env: Record<string, string | undefined> = {};
  const fromFile = existsSync(".env") ? (await import("dotenv")).parse(readFileSync(".env")) : {};
  Object.assign(env, fromFile);
  Object.assign(env, process.env);
  return { env, origin: (name) => (name in process.env ? "the environment" : ".env") };
}

/** Every secret value, raw and URL-encoded, for the logger to redact. */
/** A malformed member entry met by the status server, warned about once per entry and problem (the page reloads every 5 s). */
function malformedOnce(log: Logger): (key: string, problem: string) => void {
  const seen = new Set<string>();
  return (key, problem) => {
    const k = `${key}\n${problem}`;
    if (seen.has(k)) return;
    if (seen.size >= 1000) seen.clear();
    seen.add(k);
    log.warn("ignoring a malformed member entry", { key, problem });
  };
}

/** Refused status requests, logged at warn: the first at once, then one line per 10 s with how many were refused. */
function refusalLog(log: Logger, clock: Clock): (r: Refusal) => void {
  let last = -Infinity;
  let since = 0;
  return (r) => {
    since++;
    const now = clock.monotonic();
    if (now - last < 10_000) return;
    log.warn("refused a status request", { method: r.method, path: r.path, status: r.status, rule: r.rule, reason: r.reason, refusedSinceLastLine: since });
    last = now;
    since = 0;
  };
}

function secretsOf(c: Config): string[] {
  const out: string[] = [];
  if (c.consul.token) out.push(c.consul.token);
  if (c.http?.token) out.push(c.http.token);
  const pw = c.redis?.auth.password;
  if (pw) out.push(pw, encodeURIComponent(pw));
  const spw = c.sentinel?.password;
  if (spw) out.push(spw, encodeURIComponent(spw));
  return out;
}

process.exitCode = await main(process.argv).catch((err: unknown) => {
  process.stderr.write(`consul-leader: ${describeError(err)}\n`);
  return EXIT.fatal;
});
// Background timers must not keep a finished process alive.
process.exit(process.exitCode);
