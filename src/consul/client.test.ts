import { describe, expect, test } from "bun:test";
import { realClock } from "../clock.ts";
import type { ConsulClientConfig } from "../config/config.ts";
import { Consul, type FetchLike, httpError, type RequestEvent, routeOf } from "./client.ts";
import { ConsulError, type ConsulErrorCode } from "../errors.ts";
import { createLogger } from "../log.ts";

const TOKEN = "5e4b7c1a-22f0-4c1b-9d3e-8a6f0b1c2d3e";
const BASE = "http://127.0.0.1:8500";

// ---- httpError

describe("httpError", () => {
  const rows: {
    story: string;
    status: number;
    body: string;
    code: ConsulErrorCode;
    permission?: string;
    message: string;
  }[] = [
    {
      story: "names the missing permission and its resource from a 403",
      status: 403,
      body: `Permission denied: token with AccessorID 'x' lacks permission 'session:write' on "node1"`,
      code: "CONSUL_FORBIDDEN",
      permission: `session:write on "node1"`,
      message: `PUT /v1/session/create: 403 the ACL token lacks session:write on "node1": Permission denied: token with AccessorID 'x' lacks permission 'session:write' on "node1"`,
    },
    {
      story: "names a missing permission that has no resource",
      status: 403,
      body: `Permission denied: token with AccessorID 'x' lacks permission 'operator:read'`,
      code: "CONSUL_FORBIDDEN",
      permission: "operator:read",
      message: `PUT /v1/session/create: 403 the ACL token lacks operator:read: Permission denied: token with AccessorID 'x' lacks permission 'operator:read'`,
    },
    {
      story: "keeps a resource name with spaces whole",
      status: 403,
      body: `Permission denied: token with AccessorID 'x' lacks permission 'key:write' on "locks/my lock"`,
      code: "CONSUL_FORBIDDEN",
      permission: `key:write on "locks/my lock"`,
      message: `PUT /v1/session/create: 403 the ACL token lacks key:write on "locks/my lock": Permission denied: token with AccessorID 'x' lacks permission 'key:write' on "locks/my lock"`,
    },
    {
      story: "says the token is unknown on 'ACL not found'",
      status: 403,
      body: "ACL not found\n",
      code: "CONSUL_FORBIDDEN",
      message: "PUT /v1/session/create: 403 the ACL token is unknown to Consul (check CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE): ACL not found",
    },
    {
      story: "treats a 401 like a 403",
      status: 401,
      body: "ACL not found",
      code: "CONSUL_FORBIDDEN",
      message: "PUT /v1/session/create: 401 the ACL token is unknown to Consul (check CONSUL_HTTP_TOKEN or CONSUL_HTTP_TOKEN_FILE): ACL not found",
    },
    {
      story: "says permission denied when Consul names no permission",
      status: 403,
      body: "Permission denied",
      code: "CONSUL_FORBIDDEN",
      message: "PUT /v1/session/create: 403 permission denied by ACLs: Permission denied",
    },
    { story: "maps 404 to CONSUL_NOT_FOUND", status: 404, body: "Session id 'abc' not found", code: "CONSUL_NOT_FOUND", message: "PUT /v1/session/create: 404 Session id 'abc' not found" },
    { story: "maps 500 to CONSUL_SERVER_ERROR", status: 500, body: "No cluster leader", code: "CONSUL_SERVER_ERROR", message: "PUT /v1/session/create: 500 No cluster leader" },
    { story: "maps 503 to CONSUL_SERVER_ERROR", status: 503, body: "rpc error", code: "CONSUL_SERVER_ERROR", message: "PUT /v1/session/create: 503 rpc error" },
    { story: "maps 400 to CONSUL_BAD_REQUEST", status: 400, body: "Request decode failed: bad TTL", code: "CONSUL_BAD_REQUEST", message: "PUT /v1/session/create: 400 Request decode failed: bad TTL" },
    { story: "maps 413 to CONSUL_BAD_REQUEST", status: 413, body: "Value exceeds 524288 byte limit", code: "CONSUL_BAD_REQUEST", message: "PUT /v1/session/create: 413 Value exceeds 524288 byte limit" },
    { story: "says (empty body) when there is none", status: 500, body: "  \n", code: "CONSUL_SERVER_ERROR", message: "PUT /v1/session/create: 500 (empty body)" },
  ];
  for (const r of rows) {
    test(`httpError ${r.story}`, () => {
      const e = httpError("PUT", "/v1/session/create", r.status, r.body);
      expect(e).toBeInstanceOf(ConsulError);
      expect({ code: e.code, status: e.status, method: e.method, path: e.path, permission: e.permission, message: e.message }).toEqual({
        code: r.code,
        status: r.status,
        method: "PUT",
        path: "/v1/session/create",
        permission: r.permission,
        message: r.message,
      });
    });
  }

  test("httpError shortens a long body to 200 characters on one line", () => {
    const body = `${"x".repeat(150)}\n\n   ${"y".repeat(150)}`;
    const e = httpError("GET", "/v1/kv/k", 500, body);
    expect(e.message).toBe(`GET /v1/kv/k: 500 ${"x".repeat(150)} ${"y".repeat(49)}...`);
  });
});

// ---- routeOf

describe("routeOf", () => {
  const rows: [path: string, route: string][] = [
    ["/v1/kv/consul-leader/redis/lock", "/v1/kv/:key"],
    ["/v1/session/renew/3f1c2a9e-0b7d", "/v1/session/renew/:id"],
    ["/v1/session/destroy/3f1c2a9e-0b7d", "/v1/session/destroy/:id"],
    ["/v1/session/info/3f1c2a9e-0b7d", "/v1/session/info/:id"],
    ["/v1/session/create", "/v1/session/create"],
    ["/v1/agent/service/register", "/v1/agent/service/register"],
    ["/v1/agent/service/deregister/redis-host1", "/v1/agent/service/deregister/:id"],
    ["/v1/agent/service/_nomad-task-abc-redis-redis-db", "/v1/agent/service/:id"],
    ["/v1/agent/check/register", "/v1/agent/check/register"],
    ["/v1/agent/check/update/consul-leader-alive", "/v1/agent/check/update/:id"],
    ["/v1/agent/check/pass/c1", "/v1/agent/check/pass/:id"],
    ["/v1/agent/check/deregister/c1", "/v1/agent/check/deregister/:id"],
    ["/v1/health/service/redis", "/v1/health/service/:name"],
    ["/v1/health/node/node1", "/v1/health/node/:node"],
    ["/v1/catalog/service/redis", "/v1/catalog/service/:name"],
    ["/v1/catalog/register", "/v1/catalog/register"],
    ["/v1/query/abc", "/v1/query/:id"],
    ["/v1/query/abc/execute", "/v1/query/:id/execute"],
    ["/v1/agent/self", "/v1/agent/self"],
    ["/v1/agent/services", "/v1/agent/services"],
  ];
  for (const [path, route] of rows) {
    test(`routeOf maps ${path} to ${route}`, () => {
      expect(routeOf(path)).toBe(route);
    });
  }
});

// ---- Consul over a fake fetch

interface Step {
  method: string;
  url: string;
  reply: (init: Parameters<FetchLike>[1]) => Response | Promise<Response>;
}

/** A fetch that answers a fixed script in order and records anything else as a failure. */
function scripted(steps: Step[]) {
  const script = [...steps];
  const inits: Parameters<FetchLike>[1][] = [];
  const unexpected: string[] = [];
  const fetch: FetchLike = async (url, init) => {
    inits.push(init);
    const next = script[0];
    if (!next || next.method !== init.method || next.url !== url) {
      const msg = `unexpected request ${init.method} ${url}; expected ${next ? `${next.method} ${next.url}` : "nothing"}`;
      unexpected.push(msg);
      throw new Error(msg);
    }
    script.shift();
    return await next.reply(init);
  };
  return {
    fetch,
    inits,
    /** Every scripted request happened, and nothing else did. */
    done() {
      expect(unexpected).toEqual([]);
      expect(script.map((s) => `${s.method} ${s.url}`)).toEqual([]);
    },
  };
}

function reply(status: number, body: string, headers: Record<string, string> = {}): () => Response {
  return () => new Response(body, { status, headers });
}

function setup(steps: Step[], opts: { cfg?: Partial<ConsulClientConfig>; timeoutMs?: number } = {}) {
  const f = scripted(steps);
  const lines: string[] = [];
  const events: RequestEvent[] = [];
  const log = createLogger({ level: "debug", format: "json", write: (l) => lines.push(l), clock: realClock });
  const cfg: ConsulClientConfig = { address: { baseUrl: BASE, https: false }, token: TOKEN, ...opts.cfg };
  const consul = new Consul(cfg, { fetch: f.fetch, clock: realClock, log, observe: (e) => events.push(e) }, opts.timeoutMs ?? 1000);
  return { consul, f, lines, events };
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}

function headersOf(init: Parameters<FetchLike>[1] | undefined): Record<string, string> {
  return { ...(init?.headers as Record<string, string>) };
}

const b64 = (s: string) => Buffer.from(s, "utf8").toString("base64");

describe("Consul requests", () => {
  test("Consul sends the token in X-Consul-Token and never logs it", async () => {
    const { consul, f, lines } = setup([
      { method: "PUT", url: `${BASE}/v1/kv/consul-leader/lock?acquire=s1`, reply: reply(200, "true") },
      { method: "PUT", url: `${BASE}/v1/session/renew/s1`, reply: reply(403, "ACL not found") },
    ]);
    expect(await consul.kvAcquire("consul-leader/lock", "s1", "v")).toBe(true);
    const err = await rejection(consul.sessionRenew("s1"));
    f.done();
    expect(f.inits.map((i) => headersOf(i)["X-Consul-Token"])).toEqual([TOKEN, TOKEN]);
    expect(lines).toHaveLength(2);
    expect(lines.filter((l) => l.includes(TOKEN))).toEqual([]);
    expect(String((err as Error).message)).not.toContain(TOKEN);
  });

  test("Consul sends no X-Consul-Token header without a token", async () => {
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/agent/services`, reply: reply(200, "{}") }], { cfg: { token: undefined } });
    expect(await consul.agentServices()).toEqual({});
    f.done();
    expect(Object.keys(headersOf(f.inits[0]))).not.toContain("X-Consul-Token");
  });

  test("Consul logs every call at debug with method, path, status and ms, and reports it to observe", async () => {
    const { consul, f, lines, events } = setup([
      { method: "PUT", url: `${BASE}/v1/session/renew/s1`, reply: reply(200, JSON.stringify([{ ID: "s1" }])) },
      { method: "PUT", url: `${BASE}/v1/session/renew/s2`, reply: reply(500, "No cluster leader") },
    ]);
    await consul.sessionRenew("s1");
    await rejection(consul.sessionRenew("s2"));
    f.done();
    const logged = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(logged.map(({ time: _t, ms, ...rest }): Record<string, unknown> => ({ ...rest, msIsNumber: typeof ms === "number" }))).toEqual([
      { level: "debug", msg: "consul request", method: "PUT", path: "/v1/session/renew/s1", status: 200, msIsNumber: true },
      { level: "debug", msg: "consul request", method: "PUT", path: "/v1/session/renew/s2", status: 500, code: "CONSUL_SERVER_ERROR", msIsNumber: true },
    ]);
    expect(events.map(({ ms: _ms, ...e }) => e)).toEqual([
      { method: "PUT", route: "/v1/session/renew/:id", status: 200 },
      { method: "PUT", route: "/v1/session/renew/:id", status: 500, code: "CONSUL_SERVER_ERROR" },
    ]);
  });

  test("Consul gives CONSUL_TIMEOUT when the agent does not answer within the request timeout", async () => {
    let aborted = false;
    const never: Step["reply"] = (init) =>
      new Promise<Response>((_, reject) => {
        init.signal!.addEventListener("abort", () => {
          aborted = true;
          reject(init.signal!.reason);
        });
      });
    const { consul, f, lines, events } = setup([{ method: "PUT", url: `${BASE}/v1/session/renew/s1`, reply: never }], { timeoutMs: 40 });
    const started = performance.now();
    const err = await rejection(consul.sessionRenew("s1"));
    const took = performance.now() - started;
    f.done();
    expect(aborted).toBe(true);
    expect(err).toBeInstanceOf(ConsulError);
    expect({ code: (err as ConsulError).code, status: (err as ConsulError).status, message: (err as ConsulError).message }).toEqual({
      code: "CONSUL_TIMEOUT",
      status: 0,
      message: "PUT /v1/session/renew/s1: no answer within 40ms",
    });
    expect(took).toBeGreaterThanOrEqual(35);
    expect(took).toBeLessThan(2000);
    expect(events.map((e) => [e.status, e.code])).toEqual([[0, "CONSUL_TIMEOUT"]]);
    expect(lines.filter((l) => l.includes(TOKEN))).toEqual([]);
  });

  test("Consul gives a blocking read its wait plus jitter plus the request timeout before timing out", async () => {
    let abortedAfter = -1;
    const started = performance.now();
    const never: Step["reply"] = (init) =>
      new Promise<Response>((_, reject) => {
        init.signal!.addEventListener("abort", () => {
          abortedAfter = performance.now() - started;
          reject(init.signal!.reason);
        });
      });
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/kv/k?index=5&wait=160ms`, reply: never }], { timeoutMs: 40 });
    const err = (await rejection(consul.kvGet("k", { index: 5, waitMs: 160 }))) as ConsulError;
    f.done();
    expect(err.code).toBe("CONSUL_TIMEOUT");
    // 160ms wait + 160/16 jitter + 40ms request timeout = 210ms.
    expect(err.message).toBe("GET /v1/kv/k: no answer within 210ms");
    expect(abortedAfter).toBeGreaterThanOrEqual(200);
    expect(abortedAfter).toBeLessThan(2000);
  });

  test("Consul rethrows the caller's abort reason, not a ConsulError, when the caller cancels", async () => {
    const ac = new AbortController();
    const stop = new Error("shutting down");
    const never: Step["reply"] = (init) => new Promise<Response>((_, reject) => init.signal!.addEventListener("abort", () => reject(init.signal!.reason)));
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/kv/k?index=5&wait=60000ms`, reply: never }]);
    const p = rejection(consul.kvGet("k", { index: 5, signal: ac.signal }));
    ac.abort(stop);
    expect(await p).toBe(stop);
    f.done();
  });

  test("Consul gives CONSUL_UNREACHABLE when the connection is refused", async () => {
    const refused = () => Promise.reject(Object.assign(new Error("Unable to connect. Is the computer able to access the url?"), { code: "ConnectionRefused" }));
    const { consul, f, events } = setup([{ method: "GET", url: `${BASE}/v1/agent/self`, reply: refused }]);
    const err = (await rejection(consul.agentSelf())) as ConsulError;
    f.done();
    expect(err).toBeInstanceOf(ConsulError);
    expect({ code: err.code, status: err.status, message: err.message }).toEqual({
      code: "CONSUL_UNREACHABLE",
      status: 0,
      message: `GET /v1/agent/self: cannot reach the Consul agent at ${BASE} (ConnectionRefused: Unable to connect. Is the computer able to access the url?)`,
    });
    expect((err.cause as Error).message).toBe("Unable to connect. Is the computer able to access the url?");
    expect(events.map((e) => e.code)).toEqual(["CONSUL_UNREACHABLE"]);
  });

  test("Consul names the unix socket it cannot reach", async () => {
    const refused = () => Promise.reject(Object.assign(new Error("connect ENOENT /run/consul.sock"), { code: "ENOENT" }));
    const { consul, f } = setup([{ method: "GET", url: "http://localhost/v1/agent/self", reply: refused }], {
      cfg: { address: { baseUrl: "http://localhost", socketPath: "/run/consul.sock", https: false } },
    });
    const err = (await rejection(consul.agentSelf())) as ConsulError;
    f.done();
    expect(f.inits[0]!.unix).toBe("/run/consul.sock");
    expect(err.code).toBe("CONSUL_UNREACHABLE");
    expect(err.message).toBe("GET /v1/agent/self: cannot reach the Consul agent at unix:///run/consul.sock (connect ENOENT /run/consul.sock)");
  });

  test("Consul gives CONSUL_TLS when certificate verification fails", async () => {
    const bad = () => Promise.reject(Object.assign(new Error("unable to verify the first certificate"), { code: "UNABLE_TO_VERIFY_LEAF_SIGNATURE" }));
    const { consul, f } = setup([{ method: "GET", url: "https://consul.local:8501/v1/agent/self", reply: bad }], {
      cfg: { address: { baseUrl: "https://consul.local:8501", https: true }, tls: { verify: true, ca: ["PEM"], serverName: "server.dc1.consul" } },
    });
    const err = (await rejection(consul.agentSelf())) as ConsulError;
    f.done();
    expect(f.inits[0]!.tls).toEqual({ rejectUnauthorized: true, ca: ["PEM"], serverName: "server.dc1.consul" });
    expect(err.code).toBe("CONSUL_TLS");
    expect(err.message).toContain("TLS failed (UNABLE_TO_VERIFY_LEAF_SIGNATURE: unable to verify the first certificate)");
  });

  test("Consul gives CONSUL_BAD_RESPONSE for a 200 that is not JSON", async () => {
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/agent/self`, reply: reply(200, "<html>\n  proxy error\n</html>") }]);
    const err = (await rejection(consul.agentSelf())) as ConsulError;
    f.done();
    expect(err).toBeInstanceOf(ConsulError);
    expect({ code: err.code, status: err.status, message: err.message }).toEqual({
      code: "CONSUL_BAD_RESPONSE",
      status: 200,
      message: "GET /v1/agent/self: the answer is not JSON: <html> proxy error </html>",
    });
  });

  test("Consul gives CONSUL_BAD_RESPONSE when agent/self has no node name", async () => {
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/agent/self`, reply: reply(200, JSON.stringify({ Config: {} })) }]);
    const err = (await rejection(consul.agentSelf())) as ConsulError;
    f.done();
    expect([err.code, err.message]).toEqual(["CONSUL_BAD_RESPONSE", "GET /v1/agent/self: the answer: Config has no NodeName"]);
  });

  test("Consul reads the node name, datacenter, version and experiments from agent/self", async () => {
    const body = { Config: { NodeName: "node1", Datacenter: "dc1", Version: "1.20.1" }, DebugConfig: { Experiments: ["x"] } };
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/agent/self`, reply: reply(200, JSON.stringify(body)) }]);
    expect(await consul.agentSelf()).toEqual({ nodeName: "node1", datacenter: "dc1", version: "1.20.1", experiments: ["x"] });
    f.done();
  });
});

describe("Consul KV", () => {
  test("kvGet returns a null pair and the index for a missing key (404)", async () => {
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/kv/consul-leader/lock`, reply: reply(404, "", { "X-Consul-Index": "17" }) }]);
    expect(await consul.kvGet("consul-leader/lock")).toEqual({ pair: null, index: 17 });
    f.done();
  });

  test("kvGet decodes the base64 Value as UTF-8 and keeps the session and indexes", async () => {
    const value = JSON.stringify({ instance: "redis-ä", note: "✓" });
    const raw = [{ Key: "consul-leader/lock", CreateIndex: 10, ModifyIndex: 12, LockIndex: 3, Flags: 0, Value: b64(value), Session: "s1" }];
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/kv/consul-leader/lock?consistent`, reply: reply(200, JSON.stringify(raw), { "X-Consul-Index": "12" }) }]);
    expect(await consul.kvGet("consul-leader/lock", { consistent: true })).toEqual({
      pair: { Key: "consul-leader/lock", CreateIndex: 10, ModifyIndex: 12, LockIndex: 3, Flags: 0, Value: value, Session: "s1" },
      index: 12,
    });
    f.done();
  });

  test("kvGet gives a null Value for a key without one", async () => {
    const raw = [{ Key: "k", CreateIndex: 1, ModifyIndex: 1, LockIndex: 0, Flags: 0, Value: null }];
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/kv/k`, reply: reply(200, JSON.stringify(raw)) }]);
    expect((await consul.kvGet("k")).pair?.Value).toBeNull();
    f.done();
  });

  test("kvGet blocks with index and wait, and percent-encodes each key segment", async () => {
    const raw = [{ Key: "svc/my lock", CreateIndex: 1, ModifyIndex: 9, LockIndex: 0, Flags: 0, Value: null }];
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/kv/svc/my%20lock?index=8&wait=5000ms`, reply: reply(200, JSON.stringify(raw), { "X-Consul-Index": "9" }) }]);
    expect((await consul.kvGet("svc/my lock", { index: 8, waitMs: 5000 })).index).toBe(9);
    f.done();
  });

  test("kvGet gives CONSUL_BAD_RESPONSE for malformed JSON", async () => {
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/kv/k`, reply: reply(200, "[{") }]);
    const err = (await rejection(consul.kvGet("k"))) as ConsulError;
    f.done();
    expect([err.code, err.message]).toEqual(["CONSUL_BAD_RESPONSE", "GET /v1/kv/k: the answer is not JSON: [{"]);
  });

  test("kvGet gives CONSUL_BAD_RESPONSE for a 200 without a pair", async () => {
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/kv/k`, reply: reply(200, "[]") }]);
    const err = (await rejection(consul.kvGet("k"))) as ConsulError;
    f.done();
    expect([err.code, err.message]).toEqual(["CONSUL_BAD_RESPONSE", "GET /v1/kv/k: unexpected answer: no KV pair in a 200 answer"]);
  });

  const bools: [body: string, result: boolean][] = [["true", true], ["false", false], ["true\n", true], ["false\n", false]];
  for (const [body, result] of bools) {
    test(`kvAcquire reads ${JSON.stringify(body)} as ${result}`, async () => {
      const { consul, f } = setup([{ method: "PUT", url: `${BASE}/v1/kv/consul-leader/lock?acquire=s1`, reply: reply(200, body) }]);
      expect(await consul.kvAcquire("consul-leader/lock", "s1", '{"instance":"a"}')).toBe(result);
      f.done();
    });
  }

  test("kvAcquire sends the value as the raw body, not JSON-encoded", async () => {
    const { consul, f } = setup([{ method: "PUT", url: `${BASE}/v1/kv/consul-leader/lock?acquire=s1`, reply: reply(200, "true") }]);
    await consul.kvAcquire("consul-leader/lock", "s1", '{"instance":"a"}');
    f.done();
    expect(f.inits[0]!.body).toBe('{"instance":"a"}');
    expect(headersOf(f.inits[0])["Content-Type"]).toBeUndefined();
  });

  test("kvAcquire gives CONSUL_BAD_RESPONSE for an answer that is not true or false", async () => {
    const { consul, f } = setup([{ method: "PUT", url: `${BASE}/v1/kv/k?acquire=s1`, reply: reply(200, "yes") }]);
    const err = (await rejection(consul.kvAcquire("k", "s1", "v"))) as ConsulError;
    f.done();
    expect([err.code, err.message]).toEqual(["CONSUL_BAD_RESPONSE", "PUT /v1/kv/k: expected true or false, got yes"]);
  });

  test("kvAcquire names the missing permission on a 403", async () => {
    const body = `Permission denied: token with AccessorID 'a1' lacks permission 'key:write' on "consul-leader/lock"`;
    const { consul, f } = setup([{ method: "PUT", url: `${BASE}/v1/kv/consul-leader/lock?acquire=s1`, reply: reply(403, body) }]);
    const err = (await rejection(consul.kvAcquire("consul-leader/lock", "s1", "v"))) as ConsulError;
    f.done();
    expect([err.code, err.permission, err.status]).toEqual(["CONSUL_FORBIDDEN", `key:write on "consul-leader/lock"`, 403]);
  });

  test("kvRelease without a value sends no body", async () => {
    const { consul, f } = setup([{ method: "PUT", url: `${BASE}/v1/kv/k?release=s1`, reply: reply(200, "true") }]);
    expect(await consul.kvRelease("k", "s1")).toBe(true);
    f.done();
    expect(f.inits[0]!.body).toBeUndefined();
  });

  test("kvPut with cas=0 asks for check-and-set on absence", async () => {
    const { consul, f } = setup([{ method: "PUT", url: `${BASE}/v1/kv/k?cas=0`, reply: reply(200, "false") }]);
    expect(await consul.kvPut("k", "v", { cas: 0 })).toBe(false);
    f.done();
  });

  test("kvList returns an empty list for a missing prefix and decodes values otherwise", async () => {
    const raw = [{ Key: "m/a", CreateIndex: 1, ModifyIndex: 1, LockIndex: 0, Flags: 0, Value: b64("A") }];
    const { consul, f } = setup([
      { method: "GET", url: `${BASE}/v1/kv/m/?recurse`, reply: reply(404, "") },
      { method: "GET", url: `${BASE}/v1/kv/m/?recurse&consistent`, reply: reply(200, JSON.stringify(raw)) },
    ]);
    expect(await consul.kvList("m/")).toEqual([]);
    expect((await consul.kvList("m/", { consistent: true })).map((p) => [p.Key, p.Value])).toEqual([["m/a", "A"]]);
    f.done();
  });
});

describe("Consul sessions and checks", () => {
  test("sessionRenew returns null when the session is gone (404)", async () => {
    const { consul, f, events } = setup([{ method: "PUT", url: `${BASE}/v1/session/renew/s1`, reply: reply(404, "Session id 's1' not found") }]);
    expect(await consul.sessionRenew("s1")).toBeNull();
    f.done();
    expect(events.map((e) => [e.status, e.code])).toEqual([[404, undefined]]);
  });

  test("sessionRenew returns the renewed session entry", async () => {
    const entry = { ID: "s1", Name: "n", Node: "node1", LockDelay: 0, Behavior: "release", TTL: "15s", CreateIndex: 1, ModifyIndex: 1 };
    const { consul, f } = setup([{ method: "PUT", url: `${BASE}/v1/session/renew/s1`, reply: reply(200, JSON.stringify([entry])) }]);
    expect(await consul.sessionRenew("s1")).toEqual(entry);
    f.done();
  });

  test("sessionCreate sends the request as JSON and returns the ID", async () => {
    const req = { Name: "consul-leader:redis:a", TTL: "15s", LockDelay: "0s", Behavior: "release" as const, NodeChecks: [], ServiceChecks: [{ ID: "c1" }] };
    const { consul, f } = setup([{ method: "PUT", url: `${BASE}/v1/session/create`, reply: reply(200, '{"ID":"s-new"}') }]);
    expect(await consul.sessionCreate(req)).toBe("s-new");
    f.done();
    expect(JSON.parse(String(f.inits[0]!.body))).toEqual(req);
    expect(headersOf(f.inits[0])["Content-Type"]).toBe("application/json");
  });

  test("sessionCreate gives CONSUL_BAD_RESPONSE without an ID", async () => {
    const { consul, f } = setup([{ method: "PUT", url: `${BASE}/v1/session/create`, reply: reply(200, "{}") }]);
    const err = (await rejection(consul.sessionCreate({ Name: "n", TTL: "15s", LockDelay: "0s", Behavior: "release", NodeChecks: [] }))) as ConsulError;
    f.done();
    expect(err.code).toBe("CONSUL_BAD_RESPONSE");
  });

  test("sessionInfo returns null for an unknown session", async () => {
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/session/info/s1?consistent`, reply: reply(200, "null") }]);
    expect(await consul.sessionInfo("s1")).toBeNull();
    f.done();
  });

  test("agentCheckRegister sends the check's ID in the ID field this endpoint expects", async () => {
    const { consul, f } = setup([{ method: "PUT", url: `${BASE}/v1/agent/check/register`, reply: reply(200, "") }]);
    await consul.agentCheckRegister({ CheckID: "alive", Name: "consul-leader alive", TTL: "5s", ServiceID: "redis-1" });
    f.done();
    expect(JSON.parse(String(f.inits[0]!.body))).toEqual({ ID: "alive", Name: "consul-leader alive", TTL: "5s", ServiceID: "redis-1" });
  });

  test("agentService returns null when the agent does not know the service", async () => {
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/agent/service/redis-1`, reply: reply(404, "unknown service ID") }]);
    expect(await consul.agentService("redis-1")).toBeNull();
    f.done();
  });

  test("agentServiceDeregister treats a service already gone as done", async () => {
    const { consul, f } = setup([{ method: "PUT", url: `${BASE}/v1/agent/service/deregister/redis-1`, reply: reply(404, "") }]);
    await consul.agentServiceDeregister("redis-1");
    f.done();
  });

  test("healthService passes tag and passing filters and returns the index", async () => {
    const { consul, f } = setup([{ method: "GET", url: `${BASE}/v1/health/service/redis?tag=primary&passing`, reply: reply(200, "[]", { "X-Consul-Index": "33" }) }]);
    expect(await consul.healthService("redis", { tag: "primary", passing: true })).toEqual({ entries: [], index: 33 });
    f.done();
  });

  test("a 5xx on a call that allows only 404 still throws CONSUL_SERVER_ERROR", async () => {
    const { consul, f } = setup([{ method: "PUT", url: `${BASE}/v1/session/renew/s1`, reply: reply(500, "rpc error making call: No cluster leader") }]);
    const err = (await rejection(consul.sessionRenew("s1"))) as ConsulError;
    f.done();
    expect([err.code, err.status, err.message]).toEqual(["CONSUL_SERVER_ERROR", 500, "PUT /v1/session/renew/s1: 500 rpc error making call: No cluster leader"]);
  });
});

describe("kvAcquireUnless (the acquire that checks the pause flag in the same transaction)", () => {
  const url = `${BASE}/v1/txn`;
  const txnErrors = (errors: { OpIndex: number; What: string }[]) => reply(409, JSON.stringify({ Results: null, Errors: errors }));

  test("sends check-not-exists on the flag and lock on the key, the value in base64; 200 is acquired, at the index the lock's result names", async () => {
    let body = "";
    const { consul, f } = setup([{ method: "PUT", url, reply: (init) => ((body = String(init?.body)), new Response(JSON.stringify({ Results: [{ KV: { Key: "k", ModifyIndex: 42, Value: null } }], Errors: null }), { status: 200 })) }]);
    expect(await consul.kvAcquireUnless("k", "s1", "v", "k/pause")).toEqual({ result: "acquired", modifyIndex: 42 });
    f.done();
    expect(JSON.parse(body)).toEqual([{ KV: { Verb: "check-not-exists", Key: "k/pause" } }, { KV: { Verb: "lock", Key: "k", Value: b64("v"), Session: "s1" } }]);
  });

  test("the flag present is blocked; lock-delay or another holder is refused", async () => {
    const { consul, f } = setup([
      { method: "PUT", url, reply: txnErrors([{ OpIndex: 0, What: 'key "k/pause" exists' }]) },
      { method: "PUT", url, reply: txnErrors([{ OpIndex: 1, What: 'failed to lock key "k" due to lock delay' }]) },
    ]);
    expect(await consul.kvAcquireUnless("k", "s1", "v", "k/pause")).toEqual({ result: "blocked" });
    expect(await consul.kvAcquireUnless("k", "s1", "v", "k/pause")).toEqual({ result: "refused" });
    f.done();
  });

  test("an invalid session throws as ?acquire does, so the lease notices; a denied check throws CONSUL_FORBIDDEN, never 'blocked'", async () => {
    const { consul, f } = setup([
      { method: "PUT", url, reply: txnErrors([{ OpIndex: 1, What: 'invalid session "s1"' }]) },
      { method: "PUT", url, reply: txnErrors([{ OpIndex: 0, What: "Permission denied: token with AccessorID 'x' lacks permission 'key:read' on \"k/pause\"" }]) },
    ]);
    const invalid = (await rejection(consul.kvAcquireUnless("k", "s1", "v", "k/pause"))) as ConsulError;
    expect([invalid.code, /invalid session/.test(invalid.message)]).toEqual(["CONSUL_SERVER_ERROR", true]);
    const denied = (await rejection(consul.kvAcquireUnless("k", "s1", "v", "k/pause"))) as ConsulError;
    expect(denied.code).toBe("CONSUL_FORBIDDEN");
    f.done();
  });
});
