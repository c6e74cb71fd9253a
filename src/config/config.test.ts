import { describe, expect, test } from "bun:test";
import { type Config, dependentDefaults, deriveTiming, effectiveKnobs, type Env, type LoadIo, loadConfig, type Timing, timingProblems, timingRoomMs } from "./config.ts";
import { parseDuration } from "./duration.ts";
import { KNOBS } from "./knobs.ts";

// ---- A fake disk and host: no process.env, no files.

function enoent(path: string): Error {
  return Object.assign(new Error(`ENOENT: no such file or directory, open '${path}'`), { code: "ENOENT" });
}

function fakeIo(files: Record<string, string> = {}, dirs: Record<string, string[]> = {}, hostname = "host1.example.com"): LoadIo & { reads: string[] } {
  const reads: string[] = [];
  return {
    reads,
    readFile(path) {
      reads.push(path);
      const f = files[path];
      if (f === undefined) throw enoent(path);
      return f;
    },
    readDir(path) {
      const d = dirs[path];
      if (d === undefined) throw enoent(path);
      return d;
    },
    hostname,
    randomId: () => "5eed5eed5eed5eed",
  };
}

/** Loads a config that must be valid; a failure prints the problems. */
function valid(env: Env, io: LoadIo = fakeIo()): { config: Config; warnings: string[] } {
  const r = loadConfig(env, io);
  expect(r.ok ? [] : r.problems).toEqual([]);
  if (!r.ok) throw new Error("unreachable");
  return { config: r.config, warnings: r.warnings };
}

/** Loads a config that must be invalid and returns its problems. */
function problems(env: Env, io: LoadIo = fakeIo()): string[] {
  const r = loadConfig(env, io);
  expect(r.ok).toBe(false);
  return r.ok ? [] : r.problems;
}

const REDIS: Env = { CONSUL_LEADER_REDIS_ADDR: "127.0.0.1:6379" };
const ALLOC_ID = "5b3d2c1e-aaaa-bbbb-cccc-0123456789ab";
const NOMAD: Env = { NOMAD_ALLOC_ID: ALLOC_ID };
const USE_ADDR = "; use host:port, http://host:port, https://host:port or unix:///path";

describe("loadConfig defaults", () => {
  const bool = (d: string) => d === "true";
  const dur = (d: string) => parseDuration(d);
  // Every knob with a default: where loadConfig puts it and how its table
  // default reads. A new knob with a default must be added here.
  const table: Record<string, { env?: Env; get: (c: Config) => unknown; read: (d: string) => unknown }> = {
    CONSUL_HTTP_ADDR: { get: (c) => c.consul.address.baseUrl, read: (d) => d },
    CONSUL_HTTP_SSL: { get: (c) => c.consul.address.https, read: bool },
    CONSUL_HTTP_SSL_VERIFY: { env: { CONSUL_HTTP_ADDR: "https://consul.local:8501" }, get: (c) => c.consul.tls?.verify, read: bool },
    CONSUL_LEADER_SERVICE_NAME: { get: (c) => c.serviceName, read: (d) => d },
    CONSUL_LEADER_KEY: { get: (c) => c.key, read: (d) => d },
    CONSUL_LEADER_PRIMARY_LABEL: { get: (c) => c.primaryLabel, read: (d) => d },
    CONSUL_LEADER_TTL: { get: (c) => c.timing.ttlMs, read: dur },
    CONSUL_LEADER_SLEEP: { get: (c) => c.timing.sleepMs, read: dur },
    CONSUL_LEADER_LOCKDELAY: { get: (c) => c.timing.lockDelayMs, read: dur },
    CONSUL_LEADER_LOG_LEVEL: { get: (c) => c.log.level, read: (d) => d },
    CONSUL_LEADER_LOG_FORMAT: { get: (c) => c.log.format, read: (d) => d },
    CONSUL_LEADER_CHECK_TTL: { get: (c) => c.timing.checkTtlMs, read: dur },
    CONSUL_LEADER_FENCE_MARGIN: { get: (c) => c.timing.fenceMarginMs, read: dur },
    CONSUL_LEADER_DEREGISTER_AFTER: { get: (c) => (c.mode.kind === "standalone" ? c.mode.deregisterAfterMs : undefined), read: dur },
    CONSUL_LEADER_SERVICE_WAIT: { env: NOMAD, get: (c) => (c.mode.kind === "nomad" ? c.mode.serviceWaitMs : undefined), read: dur },
    CONSUL_LEADER_PRIORITY: { get: (c) => c.priority, read: Number },
    CONSUL_LEADER_ELECTION_WAIT: { get: (c) => c.timing.electionWaitMs, read: dur },
    CONSUL_LEADER_REDIS_TLS: { env: REDIS, get: (c) => c.redis?.auth.tls, read: bool },
    CONSUL_LEADER_REDIS_POLL: { env: REDIS, get: (c) => c.redis?.pollMs, read: dur },
    CONSUL_LEADER_REDIS_TIMEOUT: { env: REDIS, get: (c) => c.redis?.timeoutMs, read: dur },
    CONSUL_LEADER_REDIS_DOWN_AFTER: { env: REDIS, get: (c) => c.redis?.downAfterMs, read: dur },
    CONSUL_LEADER_MAX_LINK_DOWN: { env: REDIS, get: (c) => c.redis?.maxLinkDownMs, read: dur },
    CONSUL_LEADER_MAX_LAG: { env: REDIS, get: (c) => c.redis?.maxLagBytes, read: Number },
    CONSUL_LEADER_MIN_REPLICAS: { env: REDIS, get: (c) => c.redis?.minReplicas, read: Number },
    CONSUL_LEADER_MIN_REPLICAS_MAX_LAG: { env: REDIS, get: (c) => c.redis?.minReplicasMaxLagS, read: (d) => parseDuration(d)! / 1000 },
    CONSUL_LEADER_HANDOVER_TIMEOUT: { env: REDIS, get: (c) => c.redis?.handoverTimeoutMs, read: dur },
    CONSUL_LEADER_FROZEN_PRIMARY_WAIT: { env: REDIS, get: (c) => c.redis?.frozenPrimaryWaitMs, read: (d) => (d === "never" ? null : dur(d)) },
    CONSUL_LEADER_HOOK_TIMEOUT: { get: (c) => c.hooks.timeoutMs, read: dur },
    CONSUL_LEADER_EXEC_KILL_GRACE: { get: (c) => c.exec.killGraceMs, read: dur },
    CONSUL_LEADER_EXEC_RESTART: { get: (c) => c.exec.restart, read: bool },
    CONSUL_LEADER_EXEC_PASS_SECRETS: { get: (c) => c.exec.passSecrets, read: bool },
    CONSUL_LEADER_HTTP_AUTH: { env: { CONSUL_LEADER_HTTP_ADDR: "127.0.0.1:8008" }, get: (c) => c.http?.auth, read: (d) => d },
    CONSUL_LEADER_SENTINEL_WAIT: { env: { ...REDIS, CONSUL_LEADER_SENTINEL_ADDR: "127.0.0.1:26379" }, get: (c) => c.sentinel?.waitMs, read: dur },
  };

  test("the defaults table here covers every knob with a default in knobs.ts", () => {
    expect(Object.keys(table).sort()).toEqual(KNOBS.filter((k) => k.default !== "").map((k) => k.name).sort());
  });

  for (const k of KNOBS.filter((k) => k.default !== "")) {
    test(`loadConfig defaults ${k.name} to its documented ${k.default}`, () => {
      const row = table[k.name];
      expect(row).toBeDefined();
      const { config } = valid(row!.env ?? {});
      const expected = row!.read(k.default);
      expect(expected).toBeDefined();
      expect(row!.get(config)).toEqual(expected);
    });
  }

  test("loadConfig with an empty environment gives tags-only standalone mode with nothing optional set", () => {
    const { config, warnings } = valid({});
    expect(warnings).toEqual([]);
    expect(config.consul).toEqual({ address: { baseUrl: "http://localhost:8500", https: false } });
    expect(config.replicaLabel).toBe("");
    expect(config.redis).toBeUndefined();
    expect(config.mode).toEqual({ kind: "standalone", serviceId: "consul-leader-host1", address: "", port: 0, tags: [], deregisterAfterMs: 600_000 });
    expect(config.instanceId).toBe("consul-leader-host1");
    expect(config.effective).toEqual({});
  });

  test("loadConfig treats an empty variable as unset", () => {
    const { config } = valid({ CONSUL_LEADER_TTL: "", CONSUL_HTTP_ADDR: "", CONSUL_LEADER_SERVICE_NAME: "", CONSUL_LEADER_PRIORITY: "" });
    expect([config.timing.ttlMs, config.consul.address.baseUrl, config.serviceName, config.key, config.priority]).toEqual([
      15_000,
      "http://localhost:8500",
      "consul-leader",
      "consul-leader/lock",
      1,
    ]);
  });

  test("loadConfig derives the request timeout and refresh intervals from the default TTLs", () => {
    const { config } = valid({});
    expect(config.timing).toEqual({
      ttlMs: 15_000,
      sleepMs: 10_000,
      lockDelayMs: 0,
      checkTtlMs: 5000,
      fenceMarginMs: 1000,
      electionWaitMs: 2000,
      renewEveryMs: 6375,
      checkEveryMs: 1750,
      requestTimeoutMs: 1250,
      checkTimeoutMs: 500,
    });
  });
});

describe("loadConfig lock key and labels", () => {
  test("the key defaults to consul-leader/lock without CONSUL_LEADER_SERVICE_NAME", () => {
    expect(valid({}).config.key).toBe("consul-leader/lock");
  });

  test("the key defaults to consul-leader/<SERVICE_NAME>/lock when CONSUL_LEADER_SERVICE_NAME is set", () => {
    const { config } = valid({ CONSUL_LEADER_SERVICE_NAME: "redis-cache" });
    expect([config.serviceName, config.key]).toEqual(["redis-cache", "consul-leader/redis-cache/lock"]);
  });

  test("the key defaults to consul-leader/consul-leader/lock when the service name is set to its own default", () => {
    expect(valid({ CONSUL_LEADER_SERVICE_NAME: "consul-leader" }).config.key).toBe("consul-leader/consul-leader/lock");
  });

  test("an explicit key wins over the service-name form", () => {
    expect(valid({ CONSUL_LEADER_SERVICE_NAME: "redis", CONSUL_LEADER_KEY: "locks/redis" }).config.key).toBe("locks/redis");
  });

  test("a leading slash on the key is dropped", () => {
    expect(valid({ CONSUL_LEADER_KEY: "/service/redis/leader" }).config.key).toBe("service/redis/leader");
    expect(valid({ CONSUL_LEADER_KEY: "//service/redis/leader" }).config.key).toBe("service/redis/leader");
  });

  for (const bad of ["/", "locks/", "locks//redis"]) {
    test(`the key ${JSON.stringify(bad)} is rejected, quoting it as written`, () => {
      expect(problems({ CONSUL_LEADER_KEY: bad })).toEqual([`CONSUL_LEADER_KEY="${bad}": must be a KV key, not empty, without a trailing or doubled '/'`]);
    });
  }

  for (const bad of ["my service", "_redis", "-redis", "redis/cache"]) {
    test(`the service name ${JSON.stringify(bad)} is rejected`, () => {
      expect(problems({ CONSUL_LEADER_SERVICE_NAME: bad, CONSUL_LEADER_KEY: "k" })).toEqual([
        `CONSUL_LEADER_SERVICE_NAME="${bad}": must be letters, digits, '-', '_' or '.', starting with a letter or digit`,
      ]);
    });
  }

  test("the replica label may be set, and is empty by default", () => {
    expect(valid({ CONSUL_LEADER_REPLICA_LABEL: "replica" }).config.replicaLabel).toBe("replica");
  });

  test("the primary and replica labels must differ", () => {
    expect(problems({ CONSUL_LEADER_PRIMARY_LABEL: "redis", CONSUL_LEADER_REPLICA_LABEL: "redis" })).toEqual([
      `CONSUL_LEADER_REPLICA_LABEL="redis": must differ from CONSUL_LEADER_PRIMARY_LABEL, or discovery cannot tell them apart`,
    ]);
  });
});

describe("loadConfig CONSUL_HTTP_ADDR", () => {
  const rows: { addr?: string; ssl?: string; baseUrl: string; https: boolean; socketPath?: string }[] = [
    { addr: "127.0.0.1:8500", baseUrl: "http://127.0.0.1:8500", https: false },
    { addr: "localhost:8500", baseUrl: "http://localhost:8500", https: false },
    { addr: "consul.service.consul:8500", baseUrl: "http://consul.service.consul:8500", https: false },
    { addr: "http://consul.local:8500", baseUrl: "http://consul.local:8500", https: false },
    { addr: "http://consul.local:8500/", baseUrl: "http://consul.local:8500", https: false },
    { addr: "https://consul.local:8501", baseUrl: "https://consul.local:8501", https: true },
    { addr: "HTTPS://consul.local:8501", baseUrl: "https://consul.local:8501", https: true },
    { addr: "[::1]:8500", baseUrl: "http://[::1]:8500", https: false },
    { addr: "unix:///var/run/consul/http.sock", baseUrl: "http://localhost", https: false, socketPath: "/var/run/consul/http.sock" },
    { addr: "consul.local:8501", ssl: "true", baseUrl: "https://consul.local:8501", https: true },
    // The CLI never falls back to http when TLS was asked for.
    { addr: "http://consul.local:8501", ssl: "true", baseUrl: "https://consul.local:8501", https: true },
    { ssl: "true", baseUrl: "https://localhost:8500", https: true },
    { addr: "https://consul.local:8501", ssl: "false", baseUrl: "https://consul.local:8501", https: true },
  ];
  for (const r of rows) {
    test(`CONSUL_HTTP_ADDR=${r.addr ?? "(unset)"}${r.ssl ? ` with CONSUL_HTTP_SSL=${r.ssl}` : ""} is ${r.socketPath ? `unix:${r.socketPath}` : r.baseUrl}`, () => {
      const env: Record<string, string> = {};
      if (r.addr) env["CONSUL_HTTP_ADDR"] = r.addr;
      if (r.ssl) env["CONSUL_HTTP_SSL"] = r.ssl;
      expect(valid(env).config.consul.address).toEqual({ baseUrl: r.baseUrl, https: r.https, ...(r.socketPath ? { socketPath: r.socketPath } : {}) });
    });
  }

  const bad: [addr: string, why: string][] = [
    ["unix://consul.sock", "a unix socket path must be absolute"],
    ["ftp://consul.local:21", "unknown protocol scheme ftp"],
    ["tcp://consul.local:8500", "unknown protocol scheme tcp"],
    ["http://:8500", "not a valid address"],
    ["consul:port", "not a valid address"],
  ];
  for (const [addr, why] of bad) {
    test(`CONSUL_HTTP_ADDR=${addr} is rejected: ${why}`, () => {
      expect(problems({ CONSUL_HTTP_ADDR: addr })).toEqual([`CONSUL_HTTP_ADDR="${addr}": ${why}${USE_ADDR}`]);
    });
  }
});

describe("loadConfig Consul token and TLS", () => {
  test("CONSUL_HTTP_TOKEN is the token", () => {
    expect(valid({ CONSUL_HTTP_TOKEN: "tok-1" }).config.consul.token).toBe("tok-1");
  });

  test("CONSUL_HTTP_TOKEN_FILE wins over CONSUL_HTTP_TOKEN, and its whitespace is trimmed", () => {
    const io = fakeIo({ "/secrets/token": "  file-token\n" });
    expect(valid({ CONSUL_HTTP_TOKEN: "env-token", CONSUL_HTTP_TOKEN_FILE: "/secrets/token" }, io).config.consul.token).toBe("file-token");
    expect(io.reads).toEqual(["/secrets/token"]);
  });

  for (const content of ["", " \n"]) {
    test(`an empty token file (${JSON.stringify(content)}) is an error, not an anonymous token`, () => {
      expect(problems({ CONSUL_HTTP_TOKEN: "env-token", CONSUL_HTTP_TOKEN_FILE: "/t" }, fakeIo({ "/t": content }))).toEqual([
        `CONSUL_HTTP_TOKEN_FILE="/t": the file is empty; it must hold the ACL token`,
      ]);
    });
  }

  test("an unreadable token file is an error naming the file and the reason", () => {
    expect(problems({ CONSUL_HTTP_TOKEN_FILE: "/missing" })).toEqual([`CONSUL_HTTP_TOKEN_FILE="/missing": cannot read the file (ENOENT)`]);
  });

  test("a plain http address needs no TLS settings", () => {
    expect(valid({ CONSUL_HTTP_ADDR: "127.0.0.1:8500" }).config.consul.tls).toBeUndefined();
  });

  test("an https address verifies the agent by default", () => {
    expect(valid({ CONSUL_HTTP_ADDR: "https://consul.local:8501" }).config.consul.tls).toEqual({ verify: true });
  });

  test("CONSUL_HTTP_SSL_VERIFY=false turns verification off", () => {
    expect(valid({ CONSUL_HTTP_ADDR: "https://consul.local:8501", CONSUL_HTTP_SSL_VERIFY: "false" }).config.consul.tls).toEqual({ verify: false });
  });

  test("CONSUL_CACERT and the .pem/.crt files of CONSUL_CAPATH are all trusted, in name order", () => {
    const io = fakeIo(
      { "/ca.pem": "CA-FILE", "/certs/a.crt": "CA-A", "/certs/b.pem": "CA-B" },
      { "/certs/": ["b.pem", "readme.txt", "a.crt", "a.key"] },
    );
    const { config } = valid({ CONSUL_HTTP_ADDR: "https://consul.local:8501", CONSUL_CACERT: "/ca.pem", CONSUL_CAPATH: "/certs/" }, io);
    expect(config.consul.tls).toEqual({ verify: true, ca: ["CA-FILE", "CA-A", "CA-B"] });
  });

  test("an unlistable CONSUL_CAPATH is an error", () => {
    expect(problems({ CONSUL_CAPATH: "/nope" })).toEqual([`CONSUL_CAPATH="/nope": cannot list the directory (ENOENT)`]);
  });

  test("an unreadable CONSUL_CACERT is an error", () => {
    expect(problems({ CONSUL_CACERT: "/missing.pem" })).toEqual([`CONSUL_CACERT="/missing.pem": cannot read the file (ENOENT)`]);
  });

  test("a client certificate and key are used together", () => {
    const io = fakeIo({ "/c.pem": "CERT", "/k.pem": "KEY" });
    const { config } = valid({ CONSUL_HTTP_ADDR: "https://consul.local:8501", CONSUL_CLIENT_CERT: "/c.pem", CONSUL_CLIENT_KEY: "/k.pem" }, io);
    expect(config.consul.tls).toEqual({ verify: true, cert: "CERT", key: "KEY" });
  });

  test("CONSUL_CLIENT_CERT without CONSUL_CLIENT_KEY is an error", () => {
    expect(problems({ CONSUL_CLIENT_CERT: "/c.pem" }, fakeIo({ "/c.pem": "CERT" }))).toEqual([
      "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together (got only CONSUL_CLIENT_CERT)",
    ]);
  });

  test("CONSUL_CLIENT_KEY without CONSUL_CLIENT_CERT is an error", () => {
    expect(problems({ CONSUL_CLIENT_KEY: "/k.pem" }, fakeIo({ "/k.pem": "KEY" }))).toEqual([
      "CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY must be set together (got only CONSUL_CLIENT_KEY)",
    ]);
  });

  test("CONSUL_TLS_SERVER_NAME drops a :port", () => {
    const { config } = valid({ CONSUL_HTTP_ADDR: "https://10.0.0.1:8501", CONSUL_TLS_SERVER_NAME: "server.dc1.consul:8501" });
    expect(config.consul.tls).toEqual({ verify: true, serverName: "server.dc1.consul" });
  });
});

describe("loadConfig bools", () => {
  for (const text of ["true", "1", "t", "yes", "on", "TRUE", " True "]) {
    test(`CONSUL_HTTP_SSL=${JSON.stringify(text)} is true`, () => {
      expect(valid({ CONSUL_HTTP_SSL: text }).config.consul.address.https).toBe(true);
    });
  }
  for (const text of ["false", "0", "f", "no", "off", "FALSE"]) {
    test(`CONSUL_HTTP_SSL=${JSON.stringify(text)} is false`, () => {
      expect(valid({ CONSUL_HTTP_SSL: text }).config.consul.address.https).toBe(false);
    });
  }
  for (const text of ["maybe", "2", "y", "enabled"]) {
    test(`CONSUL_HTTP_SSL=${JSON.stringify(text)} is rejected`, () => {
      expect(problems({ CONSUL_HTTP_SSL: text })).toEqual([`CONSUL_HTTP_SSL="${text}": must be true or false`]);
    });
  }

  test("a rejected value is quoted as the operator wrote it", () => {
    expect(problems({ CONSUL_HTTP_SSL: "Maybe" })).toEqual([`CONSUL_HTTP_SSL="Maybe": must be true or false`]);
  });
});

describe("loadConfig numbers and choices", () => {
  test("CONSUL_LEADER_PRIORITY accepts 0 and 1000", () => {
    expect(valid({ CONSUL_LEADER_PRIORITY: "0" }).config.priority).toBe(0);
    expect(valid({ CONSUL_LEADER_PRIORITY: "1000" }).config.priority).toBe(1000);
  });

  const bad: [text: string, problem: string][] = [
    ["1001", `CONSUL_LEADER_PRIORITY="1001": must be between 0 and 1000`],
    ["-1", `CONSUL_LEADER_PRIORITY="-1": must be between 0 and 1000`],
    ["1.5", `CONSUL_LEADER_PRIORITY="1.5": not a whole number`],
    ["high", `CONSUL_LEADER_PRIORITY="high": not a whole number`],
  ];
  for (const [text, problem] of bad) {
    test(`CONSUL_LEADER_PRIORITY=${JSON.stringify(text)} is rejected`, () => {
      expect(problems({ CONSUL_LEADER_PRIORITY: text })).toEqual([problem]);
    });
  }

  test("log level and format accept any case", () => {
    expect(valid({ CONSUL_LEADER_LOG_LEVEL: "DEBUG", CONSUL_LEADER_LOG_FORMAT: "Json" }).config.log).toEqual({ level: "debug", format: "json" });
  });

  test("an unknown log level or format is rejected with the allowed values", () => {
    expect(problems({ CONSUL_LEADER_LOG_LEVEL: "verbose", CONSUL_LEADER_LOG_FORMAT: "xml" })).toEqual([
      `CONSUL_LEADER_LOG_LEVEL="verbose": must be one of error, warn, info, debug`,
      `CONSUL_LEADER_LOG_FORMAT="xml": must be one of text, json`,
    ]);
  });

  test("a value that is not a duration says how to write one", () => {
    expect(problems({ CONSUL_LEADER_ELECTION_WAIT: "2 seconds" })).toEqual([
      `CONSUL_LEADER_ELECTION_WAIT="2 seconds": not a duration; write e.g. 15s, 500ms or 1m30s`,
    ]);
  });
});

describe("loadConfig reports every problem together", () => {
  test("four bad knobs give four problems, each naming its knob, the rule and the value", () => {
    const found = problems({
      CONSUL_HTTP_SSL: "maybe",
      CONSUL_LEADER_PRIORITY: "high",
      CONSUL_LEADER_LOCKDELAY: "2m",
      CONSUL_LEADER_LOG_LEVEL: "loud",
    });
    expect(found.sort()).toEqual([
      `CONSUL_HTTP_SSL="maybe": must be true or false`,
      `CONSUL_LEADER_LOCKDELAY="2m": must be between 0s and 60s (Consul clamps lock-delay to 60s)`,
      `CONSUL_LEADER_LOG_LEVEL="loud": must be one of error, warn, info, debug`,
      `CONSUL_LEADER_PRIORITY="high": not a whole number`,
    ]);
  });

  test("problems from every section arrive in one result", () => {
    const found = problems(
      {
        ...REDIS,
        CONSUL_HTTP_ADDR: "ftp://consul",
        CONSUL_HTTP_TOKEN_FILE: "/missing-token",
        CONSUL_LEADER_KEY: "a//b",
        CONSUL_LEADER_TTL: "5s",
        CONSUL_LEADER_LOG_FORMAT: "xml",
        CONSUL_LEADER_SERVICE_ID: "_nomad-task-x",
        CONSUL_LEADER_REDIS_ADDR: "redis",
        CONSUL_LEADER_MIN_REPLICAS: "101",
      },
    );
    const knobs = ["CONSUL_HTTP_ADDR", "CONSUL_HTTP_TOKEN_FILE", "CONSUL_LEADER_KEY", "CONSUL_LEADER_TTL", "CONSUL_LEADER_LOG_FORMAT", "CONSUL_LEADER_SERVICE_ID", "CONSUL_LEADER_REDIS_ADDR", "CONSUL_LEADER_MIN_REPLICAS"];
    expect(found).toHaveLength(knobs.length);
    expect(knobs.filter((k) => !found.some((p) => p.startsWith(`${k}=`)))).toEqual([]);
  });

  test("secrets never appear in problems, warnings or the effective knobs", () => {
    const TOKEN = "tok-SECRET-0a1b2c3d";
    const PASSWORD = "pw-SECRET-9z8y7x";
    const env: Env = {
      CONSUL_HTTP_TOKEN: TOKEN,
      CONSUL_LEADER_REDIS_PASSWORD: PASSWORD,
      CONSUL_HTTP_SSL: "maybe",
      CONSUL_LEADER_TTL: "1s",
      CONSUL_LEADER_PRIORITY: "x",
    };
    const bad = problems(env);
    expect(bad.length).toBe(3);
    const leaks = (s: string) => s.includes(TOKEN) || s.includes(PASSWORD);
    expect(bad.filter(leaks)).toEqual([]);

    const tagsOnly = valid({ CONSUL_HTTP_TOKEN: TOKEN, CONSUL_LEADER_REDIS_PASSWORD: PASSWORD });
    expect(tagsOnly.warnings).toEqual([
      "CONSUL_LEADER_REDIS_PASSWORD is set but CONSUL_LEADER_REDIS_ADDR is not; Redis knobs are ignored in tags-only mode",
    ]);
    expect(tagsOnly.config.effective).toEqual({ CONSUL_HTTP_TOKEN: "[redacted]", CONSUL_LEADER_REDIS_PASSWORD: "[redacted]" });

    const withRedis = valid({ ...REDIS, CONSUL_HTTP_TOKEN: TOKEN, CONSUL_LEADER_REDIS_PASSWORD: PASSWORD });
    expect(JSON.stringify(withRedis.config.effective)).not.toContain("SECRET");
    expect([withRedis.config.consul.token, withRedis.config.redis?.auth.password]).toEqual([TOKEN, PASSWORD]);
  });

  test("secrets read from files never appear in the effective knobs", () => {
    const io = fakeIo({ "/t": "file-SECRET-token\n", "/p": "file-SECRET-pw\n" });
    const { config } = valid({ ...REDIS, CONSUL_HTTP_TOKEN_FILE: "/t", CONSUL_LEADER_REDIS_PASSWORD_FILE: "/p" }, io);
    expect(JSON.stringify(config.effective)).not.toContain("SECRET");
    expect(config.effective).toEqual({ ...REDIS, CONSUL_HTTP_TOKEN_FILE: "/t", CONSUL_LEADER_REDIS_PASSWORD_FILE: "/p" });
  });
});

describe("effectiveKnobs", () => {
  test("effectiveKnobs lists every knob that is set, plus NOMAD_ALLOC_ID, and nothing else", () => {
    expect(effectiveKnobs({
      CONSUL_LEADER_TTL: "20s",
      CONSUL_LEADER_REPLICA_LABEL: "",
      NOMAD_ALLOC_ID: "abc",
      NOMAD_ALLOC_DIR: "/alloc",
      PATH: "/usr/bin",
      CONSUL_HTTP_TOKEN: "t0k3n-value",
    })).toEqual({ CONSUL_LEADER_TTL: "20s", NOMAD_ALLOC_ID: "abc", CONSUL_HTTP_TOKEN: "[redacted]" });
  });
});

describe("loadConfig timing rules", () => {
  test("CONSUL_LEADER_SLEEP must be less than the TTL", () => {
    expect(problems({ CONSUL_LEADER_SLEEP: "15s" })).toEqual([
      "CONSUL_LEADER_SLEEP=15s must be less than CONSUL_LEADER_TTL=15s, or a loop could outlive the session",
    ]);
  });

  test("CONSUL_LEADER_SLEEP as bare seconds is printed as a duration in the problem", () => {
    expect(problems({ CONSUL_LEADER_SLEEP: "20" })).toEqual([
      "CONSUL_LEADER_SLEEP=20s must be less than CONSUL_LEADER_TTL=15s, or a loop could outlive the session",
    ]);
  });

  test("CONSUL_LEADER_SLEEP=0 is rejected with a sentence that reads", () => {
    expect(problems({ CONSUL_LEADER_SLEEP: "0" })).toEqual([expect.stringMatching(/^CONSUL_LEADER_SLEEP="0": must be (more than|greater than|at least)/)]);
  });

  for (const ttl of ["9s", "9999ms", "25h"]) {
    test(`CONSUL_LEADER_TTL=${ttl} is outside Consul's 10s-24h range`, () => {
      expect(problems({ CONSUL_LEADER_TTL: ttl })).toEqual([`CONSUL_LEADER_TTL="${ttl}": must be between 10s and 24h (Consul's session TTL range)`]);
    });
  }

  test("CONSUL_LEADER_TTL accepts both ends of its range", () => {
    expect(valid({ CONSUL_LEADER_TTL: "10s", CONSUL_LEADER_SLEEP: "5" }).config.timing.ttlMs).toBe(10_000);
    expect(valid({ CONSUL_LEADER_TTL: "24h" }).config.timing.ttlMs).toBe(86_400_000);
  });

  test("CONSUL_LEADER_CHECK_TTL=0 turns the liveness check off", () => {
    const { config } = valid({ CONSUL_LEADER_CHECK_TTL: "0" });
    expect([config.timing.checkTtlMs, config.timing.checkEveryMs, config.timing.requestTimeoutMs]).toEqual([0, 0, 3750]);
  });

  test("CONSUL_LEADER_CHECK_TTL below 1s is rejected", () => {
    expect(problems({ CONSUL_LEADER_CHECK_TTL: "500ms" })).toContain("CONSUL_LEADER_CHECK_TTL=500ms must be 0s (off) or at least 1s");
  });

  test("CONSUL_LEADER_CHECK_TTL may not exceed the TTL", () => {
    expect(problems({ CONSUL_LEADER_CHECK_TTL: "20s" })).toContain(
      "CONSUL_LEADER_CHECK_TTL=20s must not exceed CONSUL_LEADER_TTL=15s: the check exists to detect a dead sidecar sooner than the session TTL",
    );
  });

  test("a fence margin the check TTL cannot fit is rejected with the rule and every value", () => {
    expect(problems({ CONSUL_LEADER_FENCE_MARGIN: "3s" })).toEqual([
      "CONSUL_LEADER_CHECK_TTL=5s is too short for CONSUL_LEADER_FENCE_MARGIN=3s: " +
      "rule 2 x refresh (1s) + request timeout (500ms) + margin <= CONSUL_LEADER_CHECK_TTL + CONSUL_LEADER_LOCKDELAY (0s); " +
      "5.5s > 5s. Raise CONSUL_LEADER_CHECK_TTL or CONSUL_LEADER_LOCKDELAY, or lower the margin",
    ]);
  });

  test("lock-delay buys room for a larger fence margin", () => {
    expect(valid({ CONSUL_LEADER_FENCE_MARGIN: "3s", CONSUL_LEADER_LOCKDELAY: "2s" }).config.timing.fenceMarginMs).toBe(3000);
  });

  test("a fence margin the session TTL cannot fit is rejected with the rule and every value", () => {
    expect(problems({ CONSUL_LEADER_CHECK_TTL: "0s", CONSUL_LEADER_TTL: "10s", CONSUL_LEADER_SLEEP: "5", CONSUL_LEADER_FENCE_MARGIN: "3s" })).toEqual([
      "CONSUL_LEADER_TTL=10s is too short for CONSUL_LEADER_FENCE_MARGIN=3s: " +
      "rule 2 x refresh (3.333s) + request timeout (2.5s) + margin <= CONSUL_LEADER_TTL + CONSUL_LEADER_LOCKDELAY (0s); " +
      "12.166s > 10s. Raise CONSUL_LEADER_TTL or CONSUL_LEADER_LOCKDELAY, or lower the margin",
    ]);
  });

  test("the fence margin must exceed the Redis command timeout when Redis is managed", () => {
    // The timeout set too: left to its default, it follows a margin under 1s (half of it).
    expect(problems({ ...REDIS, CONSUL_LEADER_FENCE_MARGIN: "500ms", CONSUL_LEADER_REDIS_TIMEOUT: "500ms" })).toEqual([
      "CONSUL_LEADER_FENCE_MARGIN=500ms must exceed CONSUL_LEADER_REDIS_TIMEOUT=500ms, so the fence completes before another node could take the lock",
    ]);
    expect(problems({ ...REDIS, CONSUL_LEADER_REDIS_TIMEOUT: "1s" })).toEqual([
      "CONSUL_LEADER_FENCE_MARGIN=1s must exceed CONSUL_LEADER_REDIS_TIMEOUT=1s, so the fence completes before another node could take the lock",
    ]);
  });

  test("without Redis, the fence margin has no Redis timeout to exceed", () => {
    expect(valid({ CONSUL_LEADER_FENCE_MARGIN: "0s" }).config.timing.fenceMarginMs).toBe(0);
  });

  test("a Config that comes back satisfies every timing rule", () => {
    let accepted = 0;
    for (const ttl of ["10s", "15s", "30s", "1m"]) {
      for (const check of ["0s", "1s", "2s", "5s", "10s", "30s"]) {
        for (const margin of ["0s", "600ms", "1s", "3s", "8s"]) {
          for (const lockDelay of ["0s", "5s"]) {
            const r = loadConfig({ ...REDIS, CONSUL_LEADER_TTL: ttl, CONSUL_LEADER_SLEEP: "5", CONSUL_LEADER_CHECK_TTL: check, CONSUL_LEADER_FENCE_MARGIN: margin, CONSUL_LEADER_LOCKDELAY: lockDelay, CONSUL_LEADER_REDIS_TIMEOUT: "100ms" }, fakeIo());
            if (!r.ok) continue;
            accepted++;
            expect({ ttl, check, margin, lockDelay, problems: timingProblems(r.config.timing) }).toEqual({ ttl, check, margin, lockDelay, problems: [] });
          }
        }
      }
    }
    expect(accepted).toBeGreaterThan(20);
  });
});

describe("deriveTiming and timingProblems", () => {
  const base = { ttlMs: 15_000, sleepMs: 10_000, lockDelayMs: 0, checkTtlMs: 5000, fenceMarginMs: 1000, electionWaitMs: 2000 };
  type Derived = Pick<Timing, "renewEveryMs" | "checkEveryMs" | "requestTimeoutMs" | "checkTimeoutMs">;
  const rows: [story: string, over: Partial<typeof base>, derived: Derived][] = [
    ["the defaults: refreshes as rarely as the rule allows with the 1s margin", {}, { renewEveryMs: 6375, checkEveryMs: 1750, requestTimeoutMs: 1250, checkTimeoutMs: 500 }],
    ["no check: the request timeout comes from the TTL", { checkTtlMs: 0 }, { renewEveryMs: 5125, checkEveryMs: 0, requestTimeoutMs: 3750, checkTimeoutMs: 0 }],
    ["a long TTL: the request timeout is capped at 5s", { ttlMs: 60_000, checkTtlMs: 0 }, { renewEveryMs: 27_000, checkEveryMs: 0, requestTimeoutMs: 5000, checkTimeoutMs: 0 }],
    ["a short check: heartbeats every quarter at the fastest, timeouts stop at 250ms", { checkTtlMs: 1000 }, { renewEveryMs: 6875, checkEveryMs: 250, requestTimeoutMs: 250, checkTimeoutMs: 250 }],
    ["a shorter check still: the request timeout stops at 250ms", { checkTtlMs: 800 }, { renewEveryMs: 6875, checkEveryMs: 200, requestTimeoutMs: 250, checkTimeoutMs: 250 }],
    ["a long check: heartbeats spaced by what it leaves, a tenth of it to answer", { checkTtlMs: 10_000 }, { renewEveryMs: 5750, checkEveryMs: 4000, requestTimeoutMs: 2500, checkTimeoutMs: 1000 }],
    ["a margin at the top of its range: the fastest refreshes", { fenceMarginMs: 2500 }, { renewEveryMs: 5625, checkEveryMs: 1000, requestTimeoutMs: 1250, checkTimeoutMs: 500 }],
  ];
  for (const [story, over, derived] of rows) {
    test(`deriveTiming: ${story}`, () => {
      expect(deriveTiming({ ...base, ...over })).toEqual({ ...base, ...over, ...derived });
    });
  }

  test("timingProblems finds nothing wrong with the defaults", () => {
    expect(timingProblems(deriveTiming(base))).toEqual([]);
  });

  test("timingProblems accepts a need exactly equal to the lease", () => {
    // check: 2 x 1s + 0.5s + 2.5s = 5s
    expect(timingProblems(deriveTiming({ ...base, fenceMarginMs: 2500 }))).toEqual([]);
    expect(timingProblems(deriveTiming({ ...base, fenceMarginMs: 2501 }))).toHaveLength(1);
  });
});

describe("loadConfig modes", () => {
  test("NOMAD_ALLOC_ID selects Nomad mode, identified by the alloc ID", () => {
    const { config } = valid({ ...NOMAD, NOMAD_ALLOC_DIR: "/alloc" });
    expect(config.mode).toEqual({ kind: "nomad", allocId: ALLOC_ID, allocDir: "/alloc", serviceWaitMs: 120_000 });
    expect(config.instanceId).toBe(ALLOC_ID);
    expect(config.effective).toEqual({ NOMAD_ALLOC_ID: ALLOC_ID });
  });

  test("Nomad mode reads CONSUL_LEADER_SERVICE_WAIT", () => {
    const { config } = valid({ ...NOMAD, CONSUL_LEADER_SERVICE_WAIT: "5m" });
    expect(config.mode.kind === "nomad" && config.mode.serviceWaitMs).toBe(300_000);
  });

  test("Nomad mode rejects a bad CONSUL_LEADER_SERVICE_WAIT", () => {
    expect(problems({ ...NOMAD, CONSUL_LEADER_SERVICE_WAIT: "-1s" })).toEqual([
      `CONSUL_LEADER_SERVICE_WAIT="-1s": not a duration; write e.g. 15s, 500ms or 1m30s`,
    ]);
  });

  test("standalone mode names its service <SERVICE_NAME>-<short hostname>", () => {
    const { config } = valid({ CONSUL_LEADER_SERVICE_NAME: "redis" }, fakeIo({}, {}, "db-3.dc1.example.com"));
    expect(config.mode.kind === "standalone" && config.mode.serviceId).toBe("redis-db-3");
    expect(config.instanceId).toBe("redis-db-3");
  });

  test("standalone mode adds the port to the default service ID when one is set", () => {
    const { config } = valid({ CONSUL_LEADER_SERVICE_NAME: "redis", CONSUL_LEADER_SERVICE_PORT: "6380" });
    expect(config.mode).toMatchObject({ kind: "standalone", serviceId: "redis-host1-6380", port: 6380 });
  });

  test("a sidecar's default identity carries its Redis address: two sidecars on one host differ", () => {
    const a = valid({ CONSUL_LEADER_SERVICE_NAME: "redis", CONSUL_LEADER_REDIS_ADDR: "127.0.0.1:6379" });
    const b = valid({ CONSUL_LEADER_SERVICE_NAME: "redis", CONSUL_LEADER_REDIS_ADDR: "127.0.0.1:6380" });
    expect(a.config.instanceId).toBe("redis-host1-6379");
    expect(b.config.instanceId).toBe("redis-host1-6380");
    expect(valid({ CONSUL_LEADER_SERVICE_NAME: "redis", CONSUL_LEADER_REDIS_ADDR: "10.0.0.7:6379" }).config.instanceId).toBe("redis-host1-10.0.0.7-6379");
    expect(valid({ CONSUL_LEADER_SERVICE_NAME: "redis", CONSUL_LEADER_REDIS_ADDR: "[fd00::7]:6379" }).config.instanceId).toBe("redis-host1-fd00__7-6379");
    // CONSUL_LEADER_SERVICE_PORT, when set, is the port in the ID (as before).
    expect(valid({ CONSUL_LEADER_SERVICE_NAME: "redis", CONSUL_LEADER_REDIS_ADDR: "127.0.0.1:6379", CONSUL_LEADER_SERVICE_PORT: "7000" }).config.instanceId).toBe("redis-host1-7000");
  });

  test("exec's default identity is new for every run: an overlapping run never shares it", () => {
    let n = 0;
    const io = { ...fakeIo(), randomId: () => `run${++n}aaaaaaaaaaaa` };
    const first = loadConfig({ CONSUL_LEADER_SERVICE_NAME: "mailer" }, io, "exec");
    const second = loadConfig({ CONSUL_LEADER_SERVICE_NAME: "mailer" }, io, "exec");
    expect(first.ok && second.ok).toBe(true);
    if (!first.ok || !second.ok) return;
    expect(first.config.instanceId).toBe("mailer-host1-exec-run1aaaaaaaa");
    expect(second.config.instanceId).not.toBe(first.config.instanceId);
    // An explicit ID is kept: identity.ts then tells a twin from a restart.
    const fixed = loadConfig({ CONSUL_LEADER_SERVICE_NAME: "mailer", CONSUL_LEADER_SERVICE_ID: "mailer-a" }, io, "exec");
    expect(fixed.ok && fixed.config.instanceId).toBe("mailer-a");
  });

  test("standalone mode falls back to localhost without a hostname", () => {
    const { config } = valid({}, fakeIo({}, {}, ""));
    expect(config.instanceId).toBe("consul-leader-localhost");
  });

  test("standalone mode takes an explicit service ID, address and tags", () => {
    const { config } = valid({
      CONSUL_LEADER_SERVICE_ID: "redis-main",
      CONSUL_LEADER_SERVICE_ADDRESS: "10.0.0.5",
      CONSUL_LEADER_SERVICE_TAGS: " cache, v7,,eu-west ",
      CONSUL_LEADER_DEREGISTER_AFTER: "1h",
    });
    expect(config.mode).toEqual({ kind: "standalone", serviceId: "redis-main", address: "10.0.0.5", port: 0, tags: ["cache", "v7", "eu-west"], deregisterAfterMs: 3_600_000 });
    expect(config.instanceId).toBe("redis-main");
  });

  test("standalone mode rejects a service ID Nomad would take for its own", () => {
    expect(problems({ CONSUL_LEADER_SERVICE_ID: "_nomad-task-abc-redis" })).toEqual([
      `CONSUL_LEADER_SERVICE_ID="_nomad-task-abc-redis": must not start with _nomad-task-, or Nomad deletes the service as its own`,
    ]);
  });

  for (const port of ["0", "65536"]) {
    test(`standalone mode rejects CONSUL_LEADER_SERVICE_PORT=${port}`, () => {
      expect(problems({ CONSUL_LEADER_SERVICE_PORT: port })).toEqual([`CONSUL_LEADER_SERVICE_PORT="${port}": must be between 1 and 65535`]);
    });
  }

  test("standalone mode rejects a deregister delay under Consul's 1m minimum", () => {
    expect(problems({ CONSUL_LEADER_DEREGISTER_AFTER: "30s" })).toEqual([
      `CONSUL_LEADER_DEREGISTER_AFTER="30s": must be between 1m and 30 days (Consul's minimum is 1m)`,
    ]);
  });
});

describe("loadConfig Redis", () => {
  test("CONSUL_LEADER_REDIS_ADDR turns Redis management on with every default", () => {
    const { config } = valid({ CONSUL_LEADER_REDIS_ADDR: "redis.local:6380" });
    expect(config.redis).toEqual({
      addr: { host: "redis.local", port: 6380 },
      auth: { tls: false },
      pollMs: 1000,
      timeoutMs: 500,
      downAfterMs: 2000,
      maxLinkDownMs: 10_000,
      maxLagBytes: 1_048_576,
      minReplicas: 0,
      minReplicasMaxLagS: 10,
      handoverTimeoutMs: 2000,
      frozenPrimaryWaitMs: null,
    });
  });

  test("an IPv6 Redis address in brackets is read", () => {
    expect(valid({ CONSUL_LEADER_REDIS_ADDR: "[::1]:6379" }).config.redis?.addr).toEqual({ host: "::1", port: 6379 });
  });

  for (const addr of ["redis", "redis:0", "redis:99999", "redis://redis:6379"]) {
    test(`CONSUL_LEADER_REDIS_ADDR=${addr} is rejected`, () => {
      expect(problems({ CONSUL_LEADER_REDIS_ADDR: addr })).toEqual([`CONSUL_LEADER_REDIS_ADDR="${addr}": must be host:port`]);
    });
  }

  test("CONSUL_LEADER_ANNOUNCE_ADDR is read, and rejected when not host:port", () => {
    expect(valid({ ...REDIS, CONSUL_LEADER_ANNOUNCE_ADDR: "10.0.0.5:6379" }).config.redis?.announce).toEqual({ host: "10.0.0.5", port: 6379 });
    expect(problems({ ...REDIS, CONSUL_LEADER_ANNOUNCE_ADDR: "10.0.0.5" })).toEqual([`CONSUL_LEADER_ANNOUNCE_ADDR="10.0.0.5": must be host:port`]);
  });

  test("the Redis user, password, TLS and CA are passed on", () => {
    const io = fakeIo({ "/redis-ca.pem": "REDIS-CA" });
    const { config } = valid({ ...REDIS, CONSUL_LEADER_REDIS_USERNAME: "sidecar", CONSUL_LEADER_REDIS_PASSWORD: "pw", CONSUL_LEADER_REDIS_TLS: "yes", CONSUL_LEADER_REDIS_CACERT: "/redis-ca.pem" }, io);
    expect(config.redis?.auth).toEqual({ username: "sidecar", password: "pw", tls: true, ca: ["REDIS-CA"] });
  });

  const files: [content: string, password: string][] = [
    ["file-pw\n", "file-pw"],
    ["file-pw\r\n", "file-pw"],
    ["file-pw", "file-pw"],
    [" spaced pw \n", " spaced pw "],
  ];
  for (const [content, password] of files) {
    test(`a password file holding ${JSON.stringify(content)} gives ${JSON.stringify(password)} and wins over the variable`, () => {
      const { config } = valid({ ...REDIS, CONSUL_LEADER_REDIS_PASSWORD: "env-pw", CONSUL_LEADER_REDIS_PASSWORD_FILE: "/pw" }, fakeIo({ "/pw": content }));
      expect(config.redis?.auth.password).toBe(password);
    });
  }

  for (const content of ["", "\n"]) {
    test(`an empty password file (${JSON.stringify(content)}) is an error`, () => {
      expect(problems({ ...REDIS, CONSUL_LEADER_REDIS_PASSWORD_FILE: "/pw" }, fakeIo({ "/pw": content }))).toEqual([
        `CONSUL_LEADER_REDIS_PASSWORD_FILE="/pw": the file is empty; it must hold the password`,
      ]);
    });
  }

  test("an unreadable password file is an error", () => {
    expect(problems({ ...REDIS, CONSUL_LEADER_REDIS_PASSWORD_FILE: "/nope" })).toEqual([`CONSUL_LEADER_REDIS_PASSWORD_FILE="/nope": cannot read the file (ENOENT)`]);
  });

  test("Redis down-after must be at least one poll", () => {
    expect(problems({ ...REDIS, CONSUL_LEADER_REDIS_POLL: "250ms", CONSUL_LEADER_REDIS_DOWN_AFTER: "100ms" })).toEqual([
      "CONSUL_LEADER_REDIS_DOWN_AFTER=100ms must be at least CONSUL_LEADER_REDIS_POLL=250ms, or one late poll marks Redis down",
    ]);
  });

  test("the poll's default follows a down-after set below it: 1s, or REDIS_DOWN_AFTER when shorter", () => {
    expect(valid({ ...REDIS, CONSUL_LEADER_REDIS_DOWN_AFTER: "100ms" }).config.redis).toMatchObject({ pollMs: 100, downAfterMs: 100 });
    expect(valid({ ...REDIS, CONSUL_LEADER_REDIS_DOWN_AFTER: "5s" }).config.redis).toMatchObject({ pollMs: 1000, downAfterMs: 5000 });
    expect(valid({ ...REDIS, CONSUL_LEADER_REDIS_POLL: "3s" }).config.redis).toMatchObject({ pollMs: 3000, downAfterMs: 6000 });
  });

  test("Redis down-after equal to the poll written two ways is accepted", () => {
    const { config } = valid({ ...REDIS, CONSUL_LEADER_REDIS_POLL: "1005ms", CONSUL_LEADER_REDIS_DOWN_AFTER: "1.005s" });
    expect(config.redis?.downAfterMs).toBe(1005);
  });

  test("min-replicas-max-lag is kept in whole seconds", () => {
    expect(valid({ ...REDIS, CONSUL_LEADER_MIN_REPLICAS_MAX_LAG: "1m" }).config.redis?.minReplicasMaxLagS).toBe(60);
  });

  const bad: [knob: string, value: string, problem: string][] = [
    ["CONSUL_LEADER_REDIS_POLL", "5ms", `CONSUL_LEADER_REDIS_POLL="5ms": must be between 10ms and 10s`],
    ["CONSUL_LEADER_REDIS_TIMEOUT", "11s", `CONSUL_LEADER_REDIS_TIMEOUT="11s": must be between 10ms and 10s`],
    ["CONSUL_LEADER_MAX_LAG", "-1", `CONSUL_LEADER_MAX_LAG="-1": must be between 0 and 9007199254740991`],
    ["CONSUL_LEADER_MIN_REPLICAS", "101", `CONSUL_LEADER_MIN_REPLICAS="101": must be between 0 and 100`],
    ["CONSUL_LEADER_MIN_REPLICAS_MAX_LAG", "500ms", `CONSUL_LEADER_MIN_REPLICAS_MAX_LAG="500ms": must be between 1s and 1h`],
    ["CONSUL_LEADER_HANDOVER_TIMEOUT", "50ms", `CONSUL_LEADER_HANDOVER_TIMEOUT="50ms": must be between 100ms and 1m`],
    ["CONSUL_LEADER_REDIS_TLS", "sometimes", `CONSUL_LEADER_REDIS_TLS="sometimes": must be true or false`],
  ];
  for (const [knob, value, problem] of bad) {
    test(`${knob}=${value} is rejected`, () => {
      expect(problems({ ...REDIS, [knob]: value })).toEqual([problem]);
    });
  }

  test("Redis knobs set without CONSUL_LEADER_REDIS_ADDR each give a warning and are not validated", () => {
    const { config, warnings } = valid({
      CONSUL_LEADER_ANNOUNCE_ADDR: "10.0.0.5:6379",
      CONSUL_LEADER_REDIS_POLL: "not-a-duration",
      CONSUL_LEADER_MAX_LAG: "5",
      CONSUL_LEADER_REDIS_TLS: "",
    });
    expect(config.redis).toBeUndefined();
    expect(warnings).toEqual([
      "CONSUL_LEADER_ANNOUNCE_ADDR is set but CONSUL_LEADER_REDIS_ADDR is not; Redis knobs are ignored in tags-only mode",
      "CONSUL_LEADER_REDIS_POLL is set but CONSUL_LEADER_REDIS_ADDR is not; Redis knobs are ignored in tags-only mode",
      "CONSUL_LEADER_MAX_LAG is set but CONSUL_LEADER_REDIS_ADDR is not; Redis knobs are ignored in tags-only mode",
    ]);
  });

  test("no Redis warnings when Redis is managed", () => {
    expect(valid({ ...REDIS, CONSUL_LEADER_MAX_LAG: "5" }).warnings).toEqual([]);
  });
});

describe("loadConfig exec mode", () => {
  test("exec mode counts the kill grace into the fencing margin", () => {
    const sidecar = loadConfig({}, fakeIo());
    const exec = loadConfig({}, fakeIo(), "exec");
    expect(sidecar.ok && exec.ok).toBe(true);
    if (sidecar.ok && exec.ok) expect(exec.config.timing.fenceMarginMs).toBe(sidecar.config.timing.fenceMarginMs + 500);
  });

  test("exec mode rejects a kill grace that does not fit the check TTL, naming both knobs", () => {
    // The margin set too: left to its default, it shrinks to what the grace leaves of the room.
    const r = loadConfig({ CONSUL_LEADER_EXEC_KILL_GRACE: "2s", CONSUL_LEADER_FENCE_MARGIN: "1s" }, fakeIo(), "exec");
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.problems).toHaveLength(1);
      expect(r.problems[0]).toMatch(/^CONSUL_LEADER_CHECK_TTL=5s is too short .*\(exec mode: the margin here is CONSUL_LEADER_FENCE_MARGIN 1s \+ CONSUL_LEADER_EXEC_KILL_GRACE 2s\)$/);
    }
  });

  test("the same kill grace is fine for the sidecar, which kills nothing", () => {
    expect(loadConfig({ CONSUL_LEADER_EXEC_KILL_GRACE: "3s" }, fakeIo()).ok).toBe(true);
  });
});

describe("the status server's protection knobs", () => {
  const ADDR = { CONSUL_LEADER_HTTP_ADDR: "127.0.0.1:8008" };
  const TOKEN = "0123456789abcdef-token";

  test("a token from the environment or a file (trimmed), the scope, allowed hosts and TLS", () => {
    const io = fakeIo({ "/run/t": `${TOKEN}\n`, "/c.pem": "-----BEGIN CERTIFICATE-----\nx\n", "/k.pem": "-----BEGIN PRIVATE KEY-----\nx\n" });
    const { config } = valid({ ...ADDR, CONSUL_LEADER_HTTP_TOKEN_FILE: "/run/t", CONSUL_LEADER_HTTP_AUTH: "all", CONSUL_LEADER_HTTP_ALLOWED_HOSTS: "Redis-1.Example, node2", CONSUL_LEADER_HTTP_TLS_CERT: "/c.pem", CONSUL_LEADER_HTTP_TLS_KEY: "/k.pem" }, io);
    expect(config.http).toEqual({
      host: "127.0.0.1", port: 8008, token: TOKEN, auth: "all", allowedHosts: ["redis-1.example", "node2"],
      tls: { cert: "-----BEGIN CERTIFICATE-----\nx\n", key: "-----BEGIN PRIVATE KEY-----\nx\n" },
    });
    expect(config.effective["CONSUL_LEADER_HTTP_TOKEN_FILE"]).toBe("/run/t");
    expect(valid({ ...ADDR, CONSUL_LEADER_HTTP_TOKEN: TOKEN }).config.effective["CONSUL_LEADER_HTTP_TOKEN"]).toBe("[redacted]");
  });

  test("every mistake at once, each naming the knob and the rule, never the token", () => {
    const io = fakeIo({ "/empty": "\n", "/c.pem": "not pem" });
    const found = problems({ ...ADDR, CONSUL_LEADER_HTTP_TOKEN: "short-secret", CONSUL_LEADER_HTTP_AUTH: "everything", CONSUL_LEADER_HTTP_ALLOWED_HOSTS: "http://x.example", CONSUL_LEADER_HTTP_TLS_CERT: "/c.pem" }, io);
    expect(found).toEqual([
      "CONSUL_LEADER_HTTP_TOKEN: the token has 12 characters; it needs at least 16 (e.g. from: openssl rand -hex 24)",
      "CONSUL_LEADER_HTTP_AUTH=\"everything\": must be one of writes, all",
      "CONSUL_LEADER_HTTP_ALLOWED_HOSTS: \"http://x.example\" is not a host name (letters, digits, '-' and dots; no port, no scheme)",
      "CONSUL_LEADER_HTTP_TLS_CERT is set without CONSUL_LEADER_HTTP_TLS_KEY: HTTPS needs both",
    ]);
    expect(found.join("\n")).not.toContain("short-secret");
    expect(problems({ ...ADDR, CONSUL_LEADER_HTTP_TOKEN_FILE: "/empty" }, io)).toEqual(['CONSUL_LEADER_HTTP_TOKEN_FILE="/empty": the file is empty; it must hold the token']);
    expect(problems({ ...ADDR, CONSUL_LEADER_HTTP_AUTH: "all" })).toEqual(["CONSUL_LEADER_HTTP_AUTH=all: needs CONSUL_LEADER_HTTP_TOKEN or CONSUL_LEADER_HTTP_TOKEN_FILE, or no request could pass"]);
    expect(problems({ ...ADDR, CONSUL_LEADER_HTTP_TOKEN: TOKEN, CONSUL_LEADER_HTTP_TOKEN_FILE: "/run/t" })).toEqual(['CONSUL_LEADER_HTTP_TOKEN and CONSUL_LEADER_HTTP_TOKEN_FILE="/run/t" are both set: set one']);
    expect(problems({ ...ADDR, CONSUL_LEADER_HTTP_TLS_CERT: "/c.pem", CONSUL_LEADER_HTTP_TLS_KEY: "/missing" }, io)).toEqual([
      'CONSUL_LEADER_HTTP_TLS_KEY="/missing": cannot read the file (ENOENT)',
      'CONSUL_LEADER_HTTP_TLS_CERT="/c.pem": not a PEM certificate (no BEGIN CERTIFICATE line)',
    ]);
  });

  test("a token without a status server is a warning, not an error", () => {
    expect(valid({ CONSUL_LEADER_HTTP_TOKEN: TOKEN }).warnings).toContain("CONSUL_LEADER_HTTP_TOKEN or CONSUL_LEADER_HTTP_TLS_* is set but CONSUL_LEADER_HTTP_ADDR is not: there is no status server to protect");
  });

  test("the hook's command line and URL user-info are hidden from the effective knobs and from errors", () => {
    const { config } = valid({ CONSUL_LEADER_ON_ROLE_CHANGE: "curl -u admin:hunter2 http://x", CONSUL_HTTP_ADDR: "http://ops:hunter2@127.0.0.1:8500" });
    expect(JSON.stringify(config.effective)).not.toContain("hunter2");
    expect(problems({ CONSUL_HTTP_ADDR: "ftp://ops:hunter2@h" }).join("\n")).not.toContain("hunter2");
  });
});

describe("loadConfig Sentinel endpoint", () => {
  const ON = { ...REDIS, CONSUL_LEADER_SENTINEL_ADDR: "0.0.0.0:26379" };

  test("off by default", () => {
    expect(valid(REDIS).config.sentinel).toBeUndefined();
  });

  test("the master name defaults to the service name; a wildcard listen host announces the Redis host", () => {
    const s = valid({ ...ON, CONSUL_LEADER_SERVICE_NAME: "cache", CONSUL_LEADER_ANNOUNCE_ADDR: "10.0.0.7:6379" }).config.sentinel!;
    expect(s).toEqual({ listen: { host: "0.0.0.0", port: 26379 }, announce: { host: "10.0.0.7", port: 26379 }, masterName: "cache", waitMs: 1000 });
  });

  test("needs Redis: the endpoint names a Redis primary", () => {
    expect(problems({ CONSUL_LEADER_SENTINEL_ADDR: "127.0.0.1:26379" })).toEqual(["CONSUL_LEADER_SENTINEL_ADDR needs CONSUL_LEADER_REDIS_ADDR: the endpoint names the group's Redis primary"]);
  });

  test("the password comes from the environment or a file, never both, and is not shown in a problem", () => {
    expect(valid({ ...ON, CONSUL_LEADER_SENTINEL_PASSWORD_FILE: "/pw" }, fakeIo({ "/pw": "from-file\n" })).config.sentinel!.password).toBe("from-file");
    const p = problems({ ...ON, CONSUL_LEADER_SENTINEL_PASSWORD: "hunter2-secret", CONSUL_LEADER_SENTINEL_PASSWORD_FILE: "/pw" }, fakeIo({ "/pw": "x" }));
    expect(p).toEqual([`CONSUL_LEADER_SENTINEL_PASSWORD and CONSUL_LEADER_SENTINEL_PASSWORD_FILE="/pw" are both set: set one`]);
    expect(problems({ ...ON, CONSUL_LEADER_SENTINEL_PASSWORD: "two words" })).toEqual(["CONSUL_LEADER_SENTINEL_PASSWORD: the password must not contain whitespace (clients send it as one argument)"]);
  });

  test("bad addresses, names and waits are reported together", () => {
    expect(problems({ ...REDIS, CONSUL_LEADER_SENTINEL_ADDR: "26379", CONSUL_LEADER_SENTINEL_MASTER_NAME: "my master", CONSUL_LEADER_SENTINEL_WAIT: "1m" })).toEqual([
      `CONSUL_LEADER_SENTINEL_MASTER_NAME="my master": must be letters, digits, '-', '_' or '.', starting with a letter or digit`,
      `CONSUL_LEADER_SENTINEL_WAIT="1m": must be between 0s and 10s`,
      `CONSUL_LEADER_SENTINEL_ADDR="26379": must be host:port, e.g. 0.0.0.0:26379`,
    ]);
  });
});

describe("loadConfig documented ranges", () => {
  // Each end of every knob's documented range (knobs.ts `bounds`) is accepted
  // with every other knob at its default, in the mode the knob belongs to.
  const context = (where: string | undefined): { env: Env; purpose: "sidecar" | "exec" } =>
    where === "redis" ? { env: REDIS, purpose: "sidecar" } : where === "nomad" ? { env: NOMAD, purpose: "sidecar" } : { env: {}, purpose: where === "exec" ? "exec" : "sidecar" };
  for (const k of KNOBS.filter((k) => k.bounds)) {
    for (const bound of k.bounds!) {
      test(`${k.name}=${bound} (documented range ${k.range}) is accepted with every other knob at its default`, () => {
        const { env, purpose } = context(k.where);
        const r = loadConfig({ ...env, [k.name]: bound }, fakeIo(), purpose);
        expect(r.ok ? [] : r.problems).toEqual([]);
      });
    }
  }

  test("every knob with a duration, number, count, port, bool, level or format unit lists the ends of its range", () => {
    const ranged = KNOBS.filter((k) => /^(duration|integer|count|port|bytes|bool|level|format|seconds or duration)$/.test(k.unit));
    expect(ranged.filter((k) => !k.bounds?.length).map((k) => k.name)).toEqual([]);
  });

  test("CONSUL_LEADER_FENCE_MARGIN's lower end with Redis is just above the Redis timeout its default follows", () => {
    expect(valid({ ...REDIS, CONSUL_LEADER_FENCE_MARGIN: "20ms" }).config.redis?.timeoutMs).toBe(10);
    expect(problems({ ...REDIS, CONSUL_LEADER_FENCE_MARGIN: "10ms" })).toEqual([
      "CONSUL_LEADER_FENCE_MARGIN=10ms must exceed CONSUL_LEADER_REDIS_TIMEOUT=10ms, so the fence completes before another node could take the lock",
    ]);
  });

  // Just past each end: still rejected, so the ranges are the real edges.
  const past: [Env, RegExp][] = [
    [{ CONSUL_LEADER_TTL: "9999ms" }, /^CONSUL_LEADER_TTL="9999ms": must be between 10s and 24h/],
    [{ CONSUL_LEADER_SLEEP: "15s" }, /^CONSUL_LEADER_SLEEP=15s must be less than CONSUL_LEADER_TTL=15s/],
    [{ CONSUL_LEADER_CHECK_TTL: "999ms" }, /^CONSUL_LEADER_CHECK_TTL=999ms must be 0s \(off\) or at least 1s/],
    [{ CONSUL_LEADER_CHECK_TTL: "15001ms" }, /^CONSUL_LEADER_CHECK_TTL=15.001s must not exceed CONSUL_LEADER_TTL=15s/],
    [{ CONSUL_LEADER_FENCE_MARGIN: "2501ms" }, /^CONSUL_LEADER_CHECK_TTL=5s is too short for CONSUL_LEADER_FENCE_MARGIN=2.501s/],
    [{ ...REDIS, CONSUL_LEADER_REDIS_TIMEOUT: "1s" }, /^CONSUL_LEADER_FENCE_MARGIN=1s must exceed CONSUL_LEADER_REDIS_TIMEOUT=1s/],
    [{ ...REDIS, CONSUL_LEADER_REDIS_DOWN_AFTER: "9ms" }, /^CONSUL_LEADER_REDIS_DOWN_AFTER="9ms": must be between 10ms and 1h/],
    [{ ...REDIS, CONSUL_LEADER_REDIS_POLL: "1s", CONSUL_LEADER_REDIS_DOWN_AFTER: "999ms" }, /^CONSUL_LEADER_REDIS_DOWN_AFTER=999ms must be at least CONSUL_LEADER_REDIS_POLL=1s/],
  ];
  for (const [env, problem] of past) {
    test(`${JSON.stringify(env)} is just past a documented end and rejected`, () => {
      expect(problems(env)).toEqual([expect.stringMatching(problem)]);
    });
  }

  test("exec: a kill grace just past its documented end is rejected", () => {
    const r = loadConfig({ CONSUL_LEADER_EXEC_KILL_GRACE: "2501ms" }, fakeIo(), "exec");
    expect(r.ok ? [] : r.problems).toEqual([expect.stringMatching(/^CONSUL_LEADER_CHECK_TTL=5s is too short/)]);
  });
});

describe("loadConfig defaults that follow other knobs", () => {
  test("CONSUL_LEADER_SLEEP follows a TTL under 15s (two thirds of it) and is the shell's 10s from 15s up", () => {
    expect(valid({ CONSUL_LEADER_TTL: "10s" }).config.timing.sleepMs).toBe(6666);
    expect(valid({ CONSUL_LEADER_TTL: "15s" }).config.timing.sleepMs).toBe(10_000);
    expect(valid({ CONSUL_LEADER_TTL: "1h" }).config.timing.sleepMs).toBe(10_000);
  });

  test("an explicit CONSUL_LEADER_SLEEP is never adjusted: one at or over the TTL is still an error", () => {
    expect(problems({ CONSUL_LEADER_TTL: "10s", CONSUL_LEADER_SLEEP: "10" })).toEqual([
      "CONSUL_LEADER_SLEEP=10s must be less than CONSUL_LEADER_TTL=10s, or a loop could outlive the session",
    ]);
  });

  const margins: [check: string, margin: number, redisTimeout: number][] = [
    ["1s", 250, 125],
    ["2s", 750, 375],
    ["3s", 1000, 500],
    ["4s", 1000, 500],
    ["5s", 1000, 500],
    ["0s", 1000, 500],
  ];
  for (const [check, margin, redisTimeout] of margins) {
    test(`CONSUL_LEADER_CHECK_TTL=${check}: the fence margin defaults to ${margin}ms and the Redis timeout to ${redisTimeout}ms`, () => {
      const { config } = valid({ ...REDIS, CONSUL_LEADER_CHECK_TTL: check });
      expect([config.timing.fenceMarginMs, config.redis?.timeoutMs]).toEqual([margin, redisTimeout]);
      expect(timingProblems(config.timing)).toEqual([]);
    });
  }

  test("exec: the kill grace takes half the room a short check leaves, the margin the rest", () => {
    const r = loadConfig({ CONSUL_LEADER_CHECK_TTL: "2s" }, fakeIo(), "exec");
    // room 750ms (2s - 2 x 500ms - a 250ms heartbeat timeout): half each.
    expect(r.ok ? [r.config.exec.killGraceMs, r.config.timing.fenceMarginMs] : r.problems).toEqual([375, 750]);
    const d = loadConfig({}, fakeIo(), "exec");
    // The defaults: 500ms of grace inside a 1.5s margin (1s + the grace).
    expect(d.ok ? [d.config.exec.killGraceMs, d.config.timing.fenceMarginMs] : d.problems).toEqual([500, 1500]);
  });

  test("exec: an explicit kill grace leaves the margin default what is left of the room", () => {
    const r = loadConfig({ CONSUL_LEADER_EXEC_KILL_GRACE: "1s" }, fakeIo(), "exec");
    // room 2.5s: grace 1s, margin 1s (its own default fits); Timing carries margin + grace.
    expect(r.ok ? r.config.timing.fenceMarginMs : r.problems).toEqual(2000);
  });

  test("CONSUL_LEADER_REDIS_DOWN_AFTER follows a slow poll (two polls) and is 2s otherwise", () => {
    expect(valid({ ...REDIS, CONSUL_LEADER_REDIS_POLL: "10s" }).config.redis?.downAfterMs).toBe(20_000);
    expect(valid({ ...REDIS, CONSUL_LEADER_REDIS_POLL: "1s" }).config.redis?.downAfterMs).toBe(2000);
  });

  test("timingRoomMs is what the timing rule leaves for the margin", () => {
    expect(timingRoomMs({ ttlMs: 15_000, checkTtlMs: 5000, lockDelayMs: 0 })).toBe(2500);
    expect(timingRoomMs({ ttlMs: 15_000, checkTtlMs: 5000, lockDelayMs: 2000 })).toBe(4500);
    expect(timingRoomMs({ ttlMs: 15_000, checkTtlMs: 0, lockDelayMs: 0 })).toBe(1250);
    expect(dependentDefaults({ ttlMs: 15_000, checkTtlMs: 5000, lockDelayMs: 0 }).fenceMarginMs(0)).toBe(1000);
  });
});

describe("loadConfig log level aliases", () => {
  test("CONSUL_LEADER_LOG_LEVEL=warning is read as warn, in any case", () => {
    expect(valid({ CONSUL_LEADER_LOG_LEVEL: "warning" }).config.log.level).toBe("warn");
    expect(valid({ CONSUL_LEADER_LOG_LEVEL: "WARNING" }).config.log.level).toBe("warn");
  });
});

describe("loadConfig names that are not knobs", () => {
  test("a misspelled knob in the environment is warned about, naming the closest real knob", () => {
    const { warnings } = valid({ CONSUL_LEADER_LOGLEVEL: "debug", CONSUL_LEADR_TTL: "20s" });
    expect(warnings).toEqual([
      "CONSUL_LEADER_LOGLEVEL (in the environment) is not a knob and is ignored; did you mean CONSUL_LEADER_LOG_LEVEL?",
      "CONSUL_LEADR_TTL (in the environment) is not a knob and is ignored; did you mean CONSUL_LEADER_TTL?",
    ]);
  });

  test("the warning says which names came from .env", () => {
    const { warnings } = valid({ CONSUL_LEADER_TTLL: "20s", CONSUL_LEADER_SLEPP: "5" }, fakeIo());
    expect(warnings).toHaveLength(2);
    const r = loadConfig({ CONSUL_LEADER_TTLL: "20s", CONSUL_LEADER_SLEPP: "5" }, fakeIo(), "sidecar", (n) => (n === "CONSUL_LEADER_TTLL" ? ".env" : "the environment"));
    expect(r.ok ? r.warnings : r.problems).toEqual([
      "CONSUL_LEADER_SLEPP (in the environment) is not a knob and is ignored; did you mean CONSUL_LEADER_SLEEP?",
      "CONSUL_LEADER_TTLL (in .env) is not a knob and is ignored; did you mean CONSUL_LEADER_TTL?",
    ]);
  });

  test("the variables hooks and exec's command receive, and the Consul CLI's own, are not warned about", () => {
    const { warnings } = valid({
      CONSUL_LEADER_ROLE: "leader", CONSUL_LEADER_EPOCH: "12", CONSUL_LEADER_FENCING_TOKEN: "12", CONSUL_LEADER_REASON: "x",
      CONSUL_HTTP_AUTH: "u:p", CONSUL_GRPC_ADDR: "127.0.0.1:8502", CONSUL_NAMESPACE: "ns", PATH: "/bin", HOME: "/root",
    });
    expect(warnings).toEqual([]);
  });

  test("an unknown CONSUL_LEADER_ name far from every knob is still warned about, without a guess", () => {
    expect(valid({ CONSUL_LEADER_SOMETHING_ELSE_ENTIRELY: "1" }).warnings).toEqual([
      "CONSUL_LEADER_SOMETHING_ELSE_ENTIRELY (in the environment) is not a knob and is ignored; consul-leader --help lists every knob",
    ]);
  });
});

describe("loadConfig systemd credentials", () => {
  const creds = { CREDENTIALS_DIRECTORY: "/run/credentials/consul-leader.service" };

  test("the status token comes from the status-token credential when no knob names it; its fallback is no token", () => {
    const on = { ...creds, CONSUL_LEADER_HTTP_ADDR: "127.0.0.1:8008" };
    const tok = "0123456789abcdef-credential";
    expect(valid(on, fakeIo({ "/run/credentials/consul-leader.service/status-token": `${tok}\n` })).config.http?.token).toBe(tok);
    expect(valid(on, fakeIo({ "/run/credentials/consul-leader.service/status-token": "\n" })).config.http?.token).toBeUndefined();
    expect(valid({ ...on, CONSUL_LEADER_HTTP_TOKEN: "from-the-environment-123" }, fakeIo({ "/run/credentials/consul-leader.service/status-token": `${tok}\n` })).config.http?.token).toBe("from-the-environment-123");
    // A short credential is refused like a short knob, naming neither value.
    expect(problems(on, fakeIo({ "/run/credentials/consul-leader.service/status-token": "short\n" }))).toEqual([
      "the systemd credential status-token (/etc/consul-leader/status-token): the token has 5 characters; it needs at least 16 (e.g. from: openssl rand -hex 24)",
    ]);
  });

  test("the token and the Redis password come from $CREDENTIALS_DIRECTORY when no knob names them", () => {
    const io = fakeIo({ "/run/credentials/consul-leader.service/consul-http-token": "tok-123\n", "/run/credentials/consul-leader.service/redis-password": "pw 456\n" });
    const { config } = valid({ ...creds, ...REDIS }, io);
    expect(config.consul.token).toBe("tok-123");
    expect(config.redis?.auth.password).toBe("pw 456");
  });

  test("the unit's fallback for a missing file, a bare newline, is no credential; so is a missing file", () => {
    const io = fakeIo({ "/run/credentials/consul-leader.service/consul-http-token": "\n", "/run/credentials/consul-leader.service/redis-password": "\n" });
    const { config } = valid({ ...creds, ...REDIS }, io);
    expect(config.consul.token).toBeUndefined();
    expect(config.redis?.auth.password).toBeUndefined();
    expect(valid({ ...creds }, fakeIo()).config.consul.token).toBeUndefined();
  });

  test("a knob wins over the credential", () => {
    const io = fakeIo({ "/run/credentials/consul-leader.service/consul-http-token": "from-credential\n", "/etc/tok": "from-file\n" });
    expect(valid({ ...creds, CONSUL_HTTP_TOKEN: "from-env" }, io).config.consul.token).toBe("from-env");
    expect(valid({ ...creds, CONSUL_HTTP_TOKEN_FILE: "/etc/tok" }, io).config.consul.token).toBe("from-file");
  });
});
