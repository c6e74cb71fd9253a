import { describe, expect, test } from "bun:test";
import { ConsulError, RedisError } from "./errors.ts";
import { createLogger, type LogFormat, type LoggerOptions, type LogLevel, silentLogger } from "./log.ts";

const T0 = Date.UTC(2024, 0, 2, 3, 4, 5, 678);
const TIME = "2024-01-02T03:04:05.678Z";

function capture(over: Partial<LoggerOptions> = {}) {
  const lines: string[] = [];
  const log = createLogger({ level: "debug", format: "json", write: (l) => lines.push(l), clock: { now: () => T0 }, ...over });
  return { log, lines, json: () => lines.map((l) => JSON.parse(l) as Record<string, unknown>) };
}

describe("createLogger json format", () => {
  test("writes one JSON object per line with time, level, msg and the fields", () => {
    const { log, lines } = capture();
    log.info("role changed", { from: "follower", to: "leader", epoch: 42 });
    expect(lines).toEqual([`{"time":"${TIME}","level":"info","msg":"role changed","from":"follower","to":"leader","epoch":42}\n`]);
  });

  test("keeps nested fields as JSON", () => {
    const { log, json } = capture();
    log.warn("members", { list: [{ id: "a", up: true }], none: null });
    expect(json()).toEqual([{ time: TIME, level: "warn", msg: "members", list: [{ id: "a", up: true }], none: null }]);
  });

  test("fields cannot overwrite time, level or msg", () => {
    const { log, json } = capture();
    log.error("real message", { time: "forged", level: "debug", msg: "forged", other: 1 });
    expect(json()).toEqual([{ time: TIME, level: "error", msg: "real message", other: 1 }]);
  });

  test("prints bigints as strings instead of throwing", () => {
    const { log, json } = capture();
    log.info("offset", { offset: 12345678901234567890n });
    expect(json()[0]!["offset"]).toBe("12345678901234567890");
  });
});

describe("createLogger text (logfmt) format", () => {
  test("writes key=value pairs, quoting values with spaces, quotes, = or backslashes", () => {
    const { log, lines } = capture({ format: "text" });
    log.info("role changed", { to: "leader", reason: "the lock is free", eq: "a=b", q: 'say "hi"', bs: "a\\b", empty: "", n: 3, t: true });
    expect(lines).toEqual([
      `time=${TIME} level=info msg="role changed" to=leader reason="the lock is free" eq="a=b" q="say \\"hi\\"" bs="a\\\\b" empty="" n=3 t=true\n`,
    ]);
  });

  test("drops undefined fields, prints null, and writes objects as quoted JSON", () => {
    const { log, lines } = capture({ format: "text" });
    log.info("x", { gone: undefined, nothing: null, obj: { a: 1, b: "two" } });
    expect(lines).toEqual([`time=${TIME} level=info msg=x nothing=null obj="{\\"a\\":1,\\"b\\":\\"two\\"}"\n`]);
  });

  test("writes an error as its code, message and cause message", () => {
    const { log, lines } = capture({ format: "text" });
    const err = new ConsulError("CONSUL_TIMEOUT", "PUT /v1/session/renew/abc: no answer within 500ms", {
      method: "PUT",
      path: "/v1/session/renew/abc",
      status: 0,
      cause: new Error("The operation was aborted"),
    });
    log.warn("renew failed", { err });
    expect(lines).toEqual([
      `time=${TIME} level=warn msg="renew failed" err.code=CONSUL_TIMEOUT err.message="PUT /v1/session/renew/abc: no answer within 500ms" err.cause="The operation was aborted"\n`,
    ]);
  });

  test("prints newlines inside values escaped, so one event stays one line", () => {
    const { log, lines } = capture({ format: "text" });
    log.info("multi", { text: "line one\nline two" });
    expect(lines).toHaveLength(1);
    expect(lines[0]!.slice(0, -1)).not.toContain("\n");
    expect(lines[0]).toContain(`text="line one\\nline two"`);
  });
});

describe("Logger.dump", () => {
  const doc = { role: "follower", epoch: null, lock: { holder: "s1", epoch: 7 }, recent: [{ kind: "follow" }], empty: {}, none: [] };

  test("text: one dotted field per value, nulls left out, so a logfmt reader sees fields", () => {
    const { log, lines } = capture({ format: "text", level: "error" });
    log.dump("state", "state", doc);
    expect(lines).toEqual([
      `time=${TIME} level=info msg=state state.role=follower state.lock.holder=s1 state.lock.epoch=7 state.recent.0.kind=follow state.empty={} state.none=[]\n`,
    ]);
    expect(lines[0]).not.toContain("epoch=null");
  });

  test("json: the document as one nested field, nulls left out, written at any level", () => {
    const { log, json } = capture({ level: "error" });
    log.dump("state", "state", doc);
    expect(json()).toEqual([{ time: TIME, level: "info", msg: "state", state: { role: "follower", lock: { holder: "s1", epoch: 7 }, recent: [{ kind: "follow" }], empty: {}, none: [] } }]);
  });

  test("secrets are redacted in a dump too", () => {
    const { log, lines } = capture({ format: "text", secrets: ["hunter2"] });
    log.dump("state", "state", { knobs: { CONSUL_LEADER_REDIS_PASSWORD: "hunter2" } });
    expect(lines[0]).toContain("state.knobs.CONSUL_LEADER_REDIS_PASSWORD=[redacted]");
  });
});

describe("createLogger levels", () => {
  const emitted = (level: LogLevel): string[] => {
    const { log, json } = capture({ level });
    log.error("e");
    log.warn("w");
    log.info("i");
    log.debug("d");
    return json().map((r) => r["msg"] as string);
  };
  const rows: [LogLevel, string[]][] = [
    ["error", ["e"]],
    ["warn", ["e", "w"]],
    ["info", ["e", "w", "i"]],
    ["debug", ["e", "w", "i", "d"]],
  ];
  for (const [level, msgs] of rows) {
    test(`level ${level} prints ${msgs.join(", ")} and nothing less severe`, () => {
      expect(emitted(level)).toEqual(msgs);
    });
  }

  test("isEnabled says which levels print", () => {
    const { log } = capture({ level: "warn" });
    expect((["error", "warn", "info", "debug"] as const).map((l) => log.isEnabled(l))).toEqual([true, true, false, false]);
  });

  test("always writes whatever the level, as an info line", () => {
    const { log, json } = capture({ level: "error" });
    log.info("hidden");
    log.always("state dump", { role: "leader" });
    expect(json()).toEqual([{ time: TIME, level: "info", msg: "state dump", role: "leader" }]);
  });

  test("each line carries the clock's time at the moment it was written", () => {
    let now = T0;
    const lines: string[] = [];
    const log = createLogger({ level: "info", format: "json", write: (l) => lines.push(l), clock: { now: () => now } });
    log.info("a");
    now += 1500;
    log.info("b");
    expect(lines.map((l) => JSON.parse(l).time)).toEqual([TIME, "2024-01-02T03:04:07.178Z"]);
  });
});

describe("createLogger child loggers", () => {
  test("a child's lines carry its bindings after level and before msg", () => {
    const { log, lines } = capture();
    log.child({ component: "elector", instance: "redis-a" }).info("hello", { n: 1 });
    expect(lines).toEqual([`{"time":"${TIME}","level":"info","component":"elector","instance":"redis-a","msg":"hello","n":1}\n`]);
  });

  test("a child of a child carries both sets of bindings, the inner one winning", () => {
    const { log, json } = capture();
    log.child({ a: 1, b: 1 }).child({ b: 2, c: 3 }).info("x");
    expect(json()).toEqual([{ time: TIME, level: "info", a: 1, b: 2, c: 3, msg: "x" }]);
  });

  test("a child does not change its parent's bindings", () => {
    const { log, json } = capture();
    log.child({ a: 1 });
    log.info("parent");
    expect(json()).toEqual([{ time: TIME, level: "info", msg: "parent" }]);
  });

  test("a child keeps the parent's level and secrets", () => {
    const { log, lines } = capture({ level: "warn", secrets: ["tok-secret-123"] });
    const c = log.child({ c: 1 });
    c.info("dropped");
    c.warn("kept tok-secret-123");
    expect(lines).toHaveLength(1);
    expect(lines[0]).not.toContain("tok-secret-123");
  });
});

describe("createLogger errors", () => {
  test("serialises an error field as {type, code, message, cause}", () => {
    const { log, json } = capture();
    const root = Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:6379"), { code: "ECONNREFUSED" });
    const err = new RedisError("REDIS_UNREACHABLE", "cannot connect to Redis at 127.0.0.1:6379", { cause: root });
    log.error("redis down", { err });
    expect(json()[0]!["err"]).toEqual({
      type: "RedisError",
      code: "REDIS_UNREACHABLE",
      message: "cannot connect to Redis at 127.0.0.1:6379",
      cause: { type: "Error", code: "ECONNREFUSED", message: "connect ECONNREFUSED 127.0.0.1:6379" },
    });
  });

  test("serialises errors nested inside other fields too", () => {
    const { log, json } = capture();
    log.warn("hook failed", { hook: { name: "onFence", err: new TypeError("boom") } });
    expect(json()[0]!["hook"]).toEqual({ name: "onFence", err: { type: "TypeError", message: "boom" } });
  });

  test("a non-Error cause is kept as a string message", () => {
    const { log, json } = capture();
    log.warn("x", { err: new Error("outer", { cause: "plain text" }) });
    expect(json()[0]!["err"]).toEqual({ type: "Error", message: "outer", cause: { type: "string", message: "plain text" } });
  });
});

describe("createLogger secrets", () => {
  const TOKEN = "3f1c2a9e-0b7d-4d7e-9a51-7c0e6b2f9d11";
  const PASSWORD = "hunter2-redis-pw";

  for (const format of ["json", "text"] as LogFormat[]) {
    test(`redacts secrets in the message, fields, nested fields, bindings and error messages (${format})`, () => {
      const { log, lines } = capture({ format, secrets: [TOKEN, PASSWORD] });
      log.child({ auth: `Bearer ${TOKEN}` }).info(`token ${TOKEN} rejected`, {
        token: TOKEN,
        nested: { deeper: [{ pw: PASSWORD }], url: `redis://default:${PASSWORD}@10.0.0.1:6379` },
        err: new Error(`AUTH ${PASSWORD} failed`, { cause: new Error(`token ${TOKEN}`) }),
      });
      expect(lines).toHaveLength(1);
      expect(lines[0]).not.toContain(TOKEN);
      expect(lines[0]).not.toContain(PASSWORD);
      // msg, binding, token, nested pw, url, error message, cause message.
      expect(lines[0]!.split("[redacted]").length - 1).toBe(7);
    });
  }

  test("keeps the rest of a line readable around a redacted secret", () => {
    const { log, json } = capture({ secrets: [TOKEN] });
    log.info("using token", { header: `X-Consul-Token: ${TOKEN}` });
    expect(json()[0]!["header"]).toBe("X-Consul-Token: [redacted]");
  });

  test("ignores empty secrets instead of redacting everything", () => {
    const { log, json } = capture({ secrets: ["", PASSWORD] });
    log.info("hello world");
    expect(json()[0]!["msg"]).toBe("hello world");
  });

  // The module promises that *every* registered secret is replaced; only empty
  // strings are documented as ignored. A short Redis password is still a secret.
  test("redacts a short secret too (only empty strings are ignored)", () => {
    const { log, lines } = capture({ secrets: ["pw1"] });
    log.info("auth", { password: "pw1" });
    expect(lines[0]).not.toContain("pw1");
  });

  // Secrets with characters that JSON or logfmt escape (", \, control
  // characters) appear escaped in the line, so redacting the raw text of the
  // serialised line misses them.
  for (const format of ["json", "text"] as LogFormat[]) {
    test(`redacts a secret containing a quote and a backslash (${format})`, () => {
      const secret = 'p"ss\\w0rd-x';
      const { log, lines } = capture({ format, secrets: [secret] });
      log.info("auth", { password: secret, nested: { password: secret } });
      const escaped = JSON.stringify(secret).slice(1, -1);
      const twiceEscaped = JSON.stringify(escaped).slice(1, -1);
      expect({ raw: lines[0]!.includes(secret), escaped: lines[0]!.includes(escaped), twiceEscaped: lines[0]!.includes(twiceEscaped) })
        .toEqual({ raw: false, escaped: false, twiceEscaped: false });
    });
  }
});

describe("createLogger sink failures", () => {
  test("a sink that throws loses the line but does not throw into the caller", () => {
    const log = createLogger({ level: "info", format: "json", write: () => { throw new Error("EPIPE"); }, clock: { now: () => T0 } });
    expect(() => log.error("x")).not.toThrow();
  });
});

describe("silentLogger", () => {
  test("silentLogger drops everything and reports every level as disabled", () => {
    expect(() => {
      silentLogger.error("x");
      silentLogger.always("x");
      silentLogger.child({ a: 1 }).warn("x");
    }).not.toThrow();
    expect((["error", "warn", "info", "debug"] as const).some((l) => silentLogger.isEnabled(l))).toBe(false);
    expect(silentLogger.child({})).toBe(silentLogger);
  });
});
