import { describe, expect, test } from "bun:test";
import { type GuardOptions, guardStatus, hostAllowed, type Refusal } from "./guard.ts";
import { overviewCsp } from "./server.ts";

const TOKEN = "0123456789abcdef0123";

/** A guarded handler whose inner routes answer 200 "reached" and count the calls. */
function setup(over: Partial<GuardOptions> = {}, withToken = true) {
  const reached: string[] = [];
  const refused: Refusal[] = [];
  const inner = async (req: Request) => {
    reached.push(`${req.method} ${new URL(req.url).pathname}`);
    return new Response("reached\n", { status: 200, headers: { "Content-Type": "text/plain" } });
  };
  const base = { auth: "writes" as const, allowedHosts: [], listenHost: "127.0.0.1", csp: overviewCsp(), onRefused: (r: Refusal) => refused.push(r) };
  const h = guardStatus(inner, { ...base, ...(withToken ? { token: TOKEN } : {}), ...over });
  const call = (method: string, path: string, headers: Record<string, string> = {}) =>
    h(new Request(`http://127.0.0.1:8008${path}`, { method, headers: { Host: "127.0.0.1:8008", ...headers } }));
  return { call, reached, refused };
}

const AUTH = { Authorization: `Bearer ${TOKEN}` };

describe("writes need the token", () => {
  test("right token: reaches the route", async () => {
    const s = setup();
    expect((await s.call("POST", "/switchover", AUTH)).status).toBe(200);
    expect(s.reached).toEqual(["POST /switchover"]);
  });

  test("no token: 401 with a Bearer challenge, naming the header to send; the route is not reached", async () => {
    const s = setup();
    const r = await s.call("POST", "/switchover");
    expect(r.status).toBe(401);
    expect(r.headers.get("WWW-Authenticate")).toBe('Bearer realm="consul-leader"');
    expect(await r.text()).toContain("send Authorization: Bearer <CONSUL_LEADER_HTTP_TOKEN>");
    expect(s.reached).toEqual([]);
    expect(s.refused.map((x) => x.rule)).toEqual(["no-token"]);
  });

  for (const [name, header] of [
    ["a wrong token", `Bearer ${TOKEN}x`],
    ["a prefix of the token", `Bearer ${TOKEN.slice(0, 8)}`],
    ["the token with another scheme", `Basic ${TOKEN}`],
    ["an empty bearer", "Bearer "],
    ["the token twice", `Bearer ${TOKEN} ${TOKEN}`],
  ] as const) {
    test(`${name}: 401, and the answer never echoes what was sent`, async () => {
      const s = setup();
      const r = await s.call("POST", "/switchover", { Authorization: header });
      expect(r.status).toBe(401);
      const body = await r.text();
      expect(body).not.toContain(TOKEN.slice(0, 8));
      expect(s.reached).toEqual([]);
    });
  }

  test("the scheme is case-insensitive, as RFC 7235 says", async () => {
    const s = setup();
    expect((await s.call("POST", "/switchover", { Authorization: `bearer ${TOKEN}` })).status).toBe(200);
  });

  test("no token configured: every write is 405 with the reason, even with a header", async () => {
    const s = setup({}, false);
    for (const method of ["POST", "PUT", "DELETE", "PATCH"]) {
      const r = await s.call(method, "/switchover", AUTH);
      expect(r.status).toBe(405);
      expect(await r.text()).toContain("no CONSUL_LEADER_HTTP_TOKEN is set");
    }
    expect(s.reached).toEqual([]);
  });

  test("reads stay open by default", async () => {
    const s = setup();
    for (const path of ["/health", "/state", "/metrics", "/"]) expect((await s.call("GET", path)).status).toBe(200);
  });

  test("CONSUL_LEADER_HTTP_AUTH=all: reads need the token too", async () => {
    const s = setup({ auth: "all" });
    expect((await s.call("GET", "/state")).status).toBe(401);
    expect((await s.call("HEAD", "/primary")).status).toBe(401);
    expect((await s.call("GET", "/state", AUTH)).status).toBe(200);
  });
});

describe("cross-site requests (CSRF matrix)", () => {
  const cases: [string, Record<string, string>, number][] = [
    ["no Origin (curl, a CLI)", {}, 200],
    ["same Origin", { Origin: "http://127.0.0.1:8008" }, 200],
    ["Origin null (a sandboxed iframe)", { Origin: "null" }, 403],
    ["a cross-site Origin", { Origin: "http://evil.example" }, 403],
    ["same host, other port", { Origin: "http://127.0.0.1:9999" }, 403],
    ["same host, other scheme", { Origin: "https://127.0.0.1:8008" }, 403],
    ["Sec-Fetch-Site cross-site", { "Sec-Fetch-Site": "cross-site" }, 403],
    ["Sec-Fetch-Site same-site", { "Sec-Fetch-Site": "same-site" }, 403],
    ["Sec-Fetch-Site same-origin", { "Sec-Fetch-Site": "same-origin" }, 200],
    ["text/plain body (what a no-preflight fetch sends)", { "Content-Type": "text/plain" }, 415],
    ["form body", { "Content-Type": "application/x-www-form-urlencoded" }, 415],
    ["multipart form", { "Content-Type": "multipart/form-data; boundary=x" }, 415],
    ["JSON body", { "Content-Type": "application/json" }, 200],
  ];
  for (const [name, headers, status] of cases) {
    test(`POST with the right token and ${name}: ${status}`, async () => {
      const s = setup();
      const r = await s.call("POST", "/switchover", { ...AUTH, ...headers });
      expect(r.status).toBe(status);
      expect(s.reached.length).toBe(status === 200 ? 1 : 0);
    });
  }

  test("a browser's preflight (OPTIONS) is refused and carries no CORS header", async () => {
    const s = setup();
    const r = await s.call("OPTIONS", "/switchover", { Origin: "http://evil.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization" });
    expect(r.status).toBe(405);
    expect([...r.headers.keys()].filter((k) => k.startsWith("access-control"))).toEqual([]);
  });

  test("a cross-site GET of a read is answered (a browser keeps the body from the page without CORS)", async () => {
    const s = setup();
    const r = await s.call("GET", "/health", { Origin: "http://evil.example", "Sec-Fetch-Site": "cross-site" });
    expect(r.status).toBe(200);
    expect(r.headers.get("Access-Control-Allow-Origin")).toBeNull();
  });
});

describe("Host header (DNS rebinding)", () => {
  test("IP literals and localhost pass; other names do not, unless listed", () => {
    const names = new Set(["localhost", "node1.example"]);
    for (const ok of ["127.0.0.1", "127.0.0.1:8008", "10.1.2.3:80", "[::1]:8008", "[fe80::1]", "localhost:8008", "LOCALHOST", "node1.example:8008", "node1.example."]) {
      expect([ok, hostAllowed(ok, names)]).toEqual([ok, true]);
    }
    for (const bad of ["evil.example", "evil.example:8008", "127.0.0.1.evil.example", "[::1", "[evil]:80", "node1.example.evil", "", "a:b:c", "127.0.0.1:8008:1"]) {
      expect([bad, hostAllowed(bad, names)]).toEqual([bad, false]);
    }
  });

  test("a request naming another host is refused before anything else, reads included", async () => {
    const s = setup();
    for (const [method, path] of [["GET", "/state"], ["GET", "/"], ["POST", "/switchover"]] as const) {
      const r = await s.call(method, path, { ...AUTH, Host: "rebind.evil.example:8008" });
      expect(r.status).toBe(403);
      expect(await r.text()).toContain("CONSUL_LEADER_HTTP_ALLOWED_HOSTS");
    }
    expect(s.reached).toEqual([]);
  });

  test("a listed name and the listen host's own name pass", async () => {
    const s = setup({ allowedHosts: ["redis-1.example"], listenHost: "status.local" });
    expect((await s.call("GET", "/state", { Host: "redis-1.example:8008" })).status).toBe(200);
    expect((await s.call("GET", "/state", { Host: "status.local:8008" })).status).toBe(200);
  });

  test("a refusal echoes at most 100 printable characters of the header", async () => {
    const s = setup();
    const r = await s.call("GET", "/", { Host: `${"a".repeat(300)}.example` });
    const body = await r.text();
    expect(body.length).toBeLessThan(300);
  });
});

describe("headers on every answer", () => {
  test("CSP without scripts and with frame-ancestors none, nosniff, DENY, no referrer, no-store: on a pass and a refusal alike", async () => {
    const s = setup();
    for (const r of [await s.call("GET", "/"), await s.call("POST", "/switchover")]) {
      const csp = r.headers.get("Content-Security-Policy") ?? "";
      expect(csp).toContain("default-src 'none'");
      expect(csp).toContain("frame-ancestors 'none'");
      expect(csp).not.toContain("script-src");
      expect(csp).not.toContain("unsafe-inline");
      expect(r.headers.get("X-Content-Type-Options")).toBe("nosniff");
      expect(r.headers.get("X-Frame-Options")).toBe("DENY");
      expect(r.headers.get("Referrer-Policy")).toBe("no-referrer");
      expect(r.headers.get("Cache-Control")).toBe("no-store");
    }
  });
});
