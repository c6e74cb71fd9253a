import { describe, expect, test } from "bun:test";
import { childEnvironment, shownValue, WITHHELD, withoutUserinfo } from "./secrets.ts";

describe("childEnvironment", () => {
  const env = {
    PATH: "/usr/bin",
    CONSUL_HTTP_TOKEN: "t",
    CONSUL_HTTP_TOKEN_FILE: "/run/t",
    CONSUL_LEADER_REDIS_PASSWORD: "p",
    CONSUL_LEADER_HTTP_TOKEN: "s",
    CONSUL_LEADER_ON_ROLE_CHANGE: "curl -u a:b x",
    CONSUL_HTTP_AUTH: "a:b",
    NOMAD_TOKEN: "n",
    CONSUL_HTTP_ADDR: "https://ops:pw@consul:8501",
    DATABASE_URL: "postgres://app:pw@db/x",
    CONSUL_LEADER_SERVICE_NAME: "redis",
    UNSET: undefined,
  };

  test("withholds every secret carrier and our knobs' URL user-info; leaves the operator's own variables alone", () => {
    expect(childEnvironment(env, false)).toEqual({
      PATH: "/usr/bin",
      CONSUL_HTTP_ADDR: "https://[redacted]@consul:8501",
      DATABASE_URL: "postgres://app:pw@db/x",
      CONSUL_LEADER_SERVICE_NAME: "redis",
    });
  });

  test("passSecrets passes everything set, unchanged", () => {
    const { UNSET: _, ...set } = env;
    expect(childEnvironment(env, true)).toEqual(set);
  });

  test("withholds the _FILE knobs too: a child of the same user could read the file", () => {
    for (const k of ["CONSUL_HTTP_TOKEN_FILE", "CONSUL_LEADER_REDIS_PASSWORD_FILE", "CONSUL_LEADER_HTTP_TOKEN_FILE"]) expect(WITHHELD.has(k)).toBe(true);
  });
});

describe("shownValue", () => {
  test("secrets, the hook command and URL user-info never show", () => {
    expect(shownValue("CONSUL_HTTP_TOKEN", "abc")).toBe("[redacted]");
    expect(shownValue("CONSUL_LEADER_HTTP_TOKEN", "abc")).toBe("[redacted]");
    expect(shownValue("CONSUL_LEADER_ON_ROLE_CHANGE", "curl -u admin:pw http://x")).toBe("[redacted: a command line of 25 characters]");
    expect(shownValue("CONSUL_HTTP_ADDR", "http://u:p@h:8500")).toBe("http://[redacted]@h:8500");
    expect(shownValue("CONSUL_LEADER_SERVICE_NAME", "redis")).toBe("redis");
  });

  test("withoutUserinfo finds user-info anywhere in a text, and only there", () => {
    expect(withoutUserinfo("a redis://:pw@h:6379 and https://u@h/x")).toBe("a redis://[redacted]@h:6379 and https://[redacted]@h/x");
    expect(withoutUserinfo("mail me at ops@example.com, http://h/x?a=b@c")).toBe("mail me at ops@example.com, http://h/x?a=b@c");
  });
});
