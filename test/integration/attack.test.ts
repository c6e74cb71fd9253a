/**
 * The attack surface, attacked from outside with the real binary, an
 * ACL-enabled Consul and password-protected Redis (issue 11):
 *
 * - the status API as a hostile web page or network neighbour would use it:
 *   the CSRF matrix (no Origin, Origin null, cross-site, simple and
 *   non-simple body types), missing, wrong and right tokens, a preflight,
 *   DNS rebinding through the Host header; the primary moves only for the
 *   right token;
 * - markup planted in every field of member entries that reaches the HTML,
 *   and entries of the wrong shape;
 * - a Redis user without the commands a failover needs: exit 78 naming them,
 *   by ACL DRYRUN and by harmless calls, and the README's minimal rule works;
 * - every configured secret searched for in logs, /state, /metrics, the HTML,
 *   process command lines, and the environment of hooks and exec's command.
 */

import { expect } from "bun:test";
import { readdirSync, readFileSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";
import { type ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { RedisGroup } from "../harness/group.ts";
import { fileScope, freePort, Proc, scenario, Scope, waitFor } from "../harness/proc.ts";
import { BINARY, Sidecar } from "../harness/sidecar.ts";

/** Distinctive values: finding any of them anywhere is a leak. */
const CONSUL_TOKEN = "1f3c5a7e-attack-consul-mgmt-9d2b";
const REDIS_PASSWORD = "attack-redis-pw-6e4f0c";
const STATUS_TOKEN = "attack-status-token-b8a1d7e3";
const BASIC_PASSWORD = "attack-basic-pw-3a9c";
const HOOK_SECRET = "attack-hook-secret-52ef";
const SENTINEL_PASSWORD = "attack-sentinel-pw-81d7";

let consul: ConsulAgent;
fileScope("attack.test.ts", async () => {
  consul = await startDevAgent({ acl: { enabled: true, default_policy: "deny", tokens: { initial_management: CONSUL_TOKEN } } }, { token: CONSUL_TOKEN });
}, 60_000);

interface Raw {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** One HTTP/1.1 request written byte for byte (fetch would fix the Host and Origin headers). */
function raw(port: number, method: string, path: string, headers: Record<string, string>): Promise<Raw> {
  return new Promise((resolve, reject) => {
    const s = connect(port, "127.0.0.1");
    let data = "";
    s.setTimeout(5000, () => s.destroy(new Error("no answer")));
    s.on("connect", () => {
      const lines = [`${method} ${path} HTTP/1.1`, ...Object.entries({ Host: `127.0.0.1:${port}`, Connection: "close", ...headers }).map(([k, v]) => `${k}: ${v}`)];
      s.write(`${lines.join("\r\n")}\r\n\r\n`);
    });
    s.on("data", (d) => (data += d.toString("utf8")));
    s.on("error", reject);
    s.on("close", () => {
      const [head = "", ...rest] = data.split("\r\n\r\n");
      const [statusLine = "", ...hs] = head.split("\r\n");
      const headersOut: Record<string, string> = {};
      for (const h of hs) {
        const i = h.indexOf(":");
        if (i > 0) headersOut[h.slice(0, i).toLowerCase()] = h.slice(i + 1).trim();
      }
      let body = rest.join("\r\n\r\n");
      if (headersOut["transfer-encoding"] === "chunked") body = unchunk(body);
      resolve({ status: Number(statusLine.split(" ")[1] ?? 0), headers: headersOut, body });
    });
  });
}

function unchunk(b: string): string {
  let out = "";
  let rest = b;
  for (;;) {
    const i = rest.indexOf("\r\n");
    const n = parseInt(rest.slice(0, i), 16);
    if (!n) return out;
    out += rest.slice(i + 2, i + 2 + n);
    rest = rest.slice(i + 2 + n + 2);
  }
}

async function holder(key: string): Promise<string | null> {
  const kv = await consul.api<{ Session?: string }[]>("GET", `/v1/kv/${key}`).catch(() => []);
  return kv[0]?.Session ?? null;
}

/** Tags the overview template writes; any other tag in the page came from data. */
const TEMPLATE_TAGS = new Set(["html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "p", "code", "main", "div", "section", "table", "thead", "tbody", "tr", "th", "td", "span", "b", "ul", "li", "footer", "a"]);

function onlyTemplateMarkup(html: string): void {
  for (const m of html.matchAll(/<\/?([a-zA-Z][a-zA-Z0-9-]*)([^>]*)>/g)) {
    expect(TEMPLATE_TAGS.has(m[1]!.toLowerCase()), `<${m[1]}${m[2]}> in the page`).toBe(true);
    expect(/\son[a-z]+\s*=|javascript:/i.test(m[2]!), `<${m[1]}${m[2]}> in the page`).toBe(false);
  }
}

const XSS = ["<script>alert('x1')</script>", "\"><img src=x onerror=alert('x2')>", "'><svg onload=alert('x3')>", "</td></tr></table><iframe src=//evil.example>"];

scenario("the status API: the CSRF matrix, tokens, preflight and DNS rebinding on the real server; the primary moves only for the right token", async (scope) => {
  const ports = [freePort(), freePort(), freePort()];
  const sentinelPorts = [freePort(), freePort(), freePort()];
  const hookDir = scope.tmpdir("hooks-");
  const g = await RedisGroup.start(consul, {
    redis: { password: REDIS_PASSWORD },
    env: (i) => ({
      CONSUL_HTTP_TOKEN: CONSUL_TOKEN,
      // user-info in the Consul address: dropped by the client, and never shown.
      ...(i === 0 ? { CONSUL_HTTP_ADDR: `http://ops:${BASIC_PASSWORD}@${consul.addr}` } : {}),
      CONSUL_LEADER_HTTP_ADDR: `127.0.0.1:${ports[i]}`,
      CONSUL_LEADER_HTTP_TOKEN: STATUS_TOKEN,
      // The Sentinel endpoint, with its password (refused AUTHs below must not echo it either).
      CONSUL_LEADER_SENTINEL_ADDR: `127.0.0.1:${sentinelPorts[i]}`,
      CONSUL_LEADER_SENTINEL_PASSWORD: SENTINEL_PASSWORD,
      // A hook whose command line carries a credential of its own, and that records its environment.
      CONSUL_LEADER_ON_ROLE_CHANGE: `HOOK_PW=${HOOK_SECRET}; env > ${hookDir}/env.$$`,
    }),
  });
  const p = await g.converged();
  const port = ports[p.index]!;
  const before = await holder(g.key);
  expect(before).not.toBeNull();

  const AUTH = { Authorization: `Bearer ${STATUS_TOKEN}` };
  const refused: [string, Record<string, string>, number][] = [
    ["no token", {}, 401],
    ["a wrong token", { Authorization: `Bearer ${STATUS_TOKEN}0` }, 401],
    ["the token as Basic", { Authorization: `Basic ${btoa(`x:${STATUS_TOKEN}`)}` }, 401],
    ["Origin null with text/plain (a sandboxed iframe)", { Origin: "null", "Content-Type": "text/plain", ...AUTH }, 403],
    ["a cross-site Origin", { Origin: "http://evil.example", ...AUTH }, 403],
    ["same host, another port", { Origin: "http://127.0.0.1:1", ...AUTH }, 403],
    ["Sec-Fetch-Site cross-site", { "Sec-Fetch-Site": "cross-site", ...AUTH }, 403],
    ["a form body", { "Content-Type": "application/x-www-form-urlencoded", ...AUTH }, 415],
    ["text/plain without Origin", { "Content-Type": "text/plain", ...AUTH }, 415],
    ["a multipart body", { "Content-Type": "multipart/form-data; boundary=b", ...AUTH }, 415],
    ["a rebinding Host", { Host: `rebind.evil.example:${port}`, ...AUTH }, 403],
  ];
  for (const [name, headers, status] of refused) {
    const r = await raw(port, "POST", "/switchover", { "Content-Length": "0", ...headers });
    expect([name, r.status]).toEqual([name, status]);
    expect(r.body).not.toContain(STATUS_TOKEN);
    expect(r.headers["access-control-allow-origin"]).toBeUndefined();
  }
  const preflight = await raw(port, "OPTIONS", "/switchover", { Origin: "http://evil.example", "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization" });
  expect(preflight.status).toBe(405);
  expect(Object.keys(preflight.headers).filter((h) => h.startsWith("access-control"))).toEqual([]);
  // Reads through a rebinding name are refused too; through an IP they are open.
  expect((await raw(port, "GET", "/state", { Host: `rebind.evil.example:${port}` })).status).toBe(403);
  const page = await raw(port, "GET", "/", {});
  expect(page.status).toBe(200);
  expect(page.headers["content-security-policy"]).toContain("frame-ancestors 'none'");
  expect(page.headers["content-security-policy"]).not.toContain("script-src");
  expect(page.headers["x-content-type-options"]).toBe("nosniff");
  expect(page.headers["x-frame-options"]).toBe("DENY");

  // Nothing moved through any of that.
  await Bun.sleep(500);
  expect(await holder(g.key)).toBe(before);
  expect(await g.discoveredPrimaries()).toEqual([p.id]);
  // Refusals are logged, without the token.
  const warned = p.sidecar.logs().filter((l) => l.msg === "refused a status request");
  expect(warned.length).toBeGreaterThan(0);

  // The right token, same-origin, JSON: 202, and the primary moves.
  const ok = await raw(port, "POST", "/switchover", { ...AUTH, Origin: `http://127.0.0.1:${port}`, "Content-Type": "application/json", "Content-Length": "0" });
  expect(ok.status).toBe(202);
  const { member: next } = await g.newWritablePrimary(p.id);
  expect(next.id).not.toBe(p.id);

  // ---- markup in member entries, as anyone with KV write on the prefix could plant it
  const planted = {
    instance: XSS[0], service: XSS[1], node: XSS[2], address: XSS[3], role: XSS[0], eligible: true, redisUp: true, priority: 1, offset: 1,
    // A fresh publication time, or the leader's clean-up takes the entry away as left behind before the page shows it.
    replid: XSS[1], replid2: XSS[2], updated: new Date().toISOString(), host: XSS[0], incarnation: XSS[1], ineligible: XSS[2],
  };
  await consul.api("PUT", `/v1/kv/${g.key}/members/xss-1`, planted);
  await consul.api("PUT", `/v1/kv/${g.key}/members/xss-2`, { ...planted, updated: XSS[3] });
  // Held by a session of their own, so the new leader's clean-up (which deletes malformed entries
  // nobody holds, a second after it starts leading) leaves them for every status server to read.
  const { ID: planter } = await consul.api<{ ID: string }>("PUT", "/v1/session/create", { Name: "planter", TTL: "60s" });
  await consul.api("PUT", `/v1/kv/${g.key}/members/wrong-types?acquire=${planter}`, { ...planted, offset: "9", eligible: "yes", priority: { $gt: 0 } });
  await consul.api("PUT", `/v1/kv/${g.key}/members/not-json?acquire=${planter}`, "<script>alert('x4')</script>");
  for (const m of g.members) {
    const r = await raw(ports[m.index]!, "GET", "/", {});
    expect(r.status).toBe(200);
    onlyTemplateMarkup(r.body);
    expect(r.body).toContain("&lt;script&gt;alert(&#39;x1&#39;)&lt;/script&gt;");
  }
  // Each status server warned once about each malformed entry, naming it; a reload does not repeat it.
  await raw(ports[0]!, "GET", "/", {});
  for (const m of g.members) {
    const warned = m.sidecar.logs().filter((l) => l.msg === "ignoring a malformed member entry" && l["component"] === "status");
    expect(warned.filter((l) => String(l["key"]).endsWith("/members/wrong-types")).length).toBe(1);
    expect(warned.filter((l) => String(l["key"]).endsWith("/members/not-json")).length).toBe(1);
  }

  // ---- every secret, everywhere it could show
  const texts: [string, string][] = [];
  for (const m of g.members) {
    const port = ports[m.index]!;
    for (const path of ["/", "/state", "/metrics", "/health", "/primary", "/replica", "/readiness", "/liveness", "/nope"]) {
      texts.push([`${m.id} ${path}`, (await raw(port, "GET", path, {})).body]);
    }
    // A wrong password and a right one at the endpoint: neither may come back or reach a log.
    texts.push([`${m.id} sentinel endpoint`, await sentinelExchange(sentinelPorts[m.index]!, `*2\r\n$4\r\nAUTH\r\n$${SENTINEL_PASSWORD.length + 1}\r\n${SENTINEL_PASSWORD}x\r\n*2\r\n$4\r\nAUTH\r\n$${SENTINEL_PASSWORD.length}\r\n${SENTINEL_PASSWORD}\r\n*1\r\n$4\r\nINFO\r\n`)]);
    texts.push([`${m.id} logs`, m.sidecar.proc.lines.join("\n")]);
    texts.push([`${m.id} argv`, readFileSync(`/proc/${m.sidecar.pid}/cmdline`, "utf8")]);
  }
  const hookEnvs = readdirSync(hookDir);
  expect(hookEnvs.length).toBeGreaterThan(0);
  for (const f of hookEnvs) texts.push([`hook env ${f}`, readFileSync(join(hookDir, f), "utf8")]);
  for (const [where, t] of texts) {
    for (const secret of [CONSUL_TOKEN, REDIS_PASSWORD, STATUS_TOKEN, BASIC_PASSWORD, HOOK_SECRET, SENTINEL_PASSWORD, encodeURIComponent(REDIS_PASSWORD)]) {
      expect(t.includes(secret), `${secret} in ${where}`).toBe(false);
    }
  }
  // The knobs still say what is set, without the values.
  const st = JSON.parse((await raw(ports[0]!, "GET", "/state", {})).body) as { knobs: Record<string, string> };
  expect(st.knobs["CONSUL_LEADER_HTTP_TOKEN"]).toBe("[redacted]");
  expect(st.knobs["CONSUL_LEADER_SENTINEL_PASSWORD"]).toBe("[redacted]");
  expect(st.knobs["CONSUL_HTTP_ADDR"]).toBe(`http://[redacted]@${consul.addr}`);
  expect(st.knobs["CONSUL_LEADER_ON_ROLE_CHANGE"]).toMatch(/^\[redacted: a command line of \d+ characters\]$/);
}, 120_000);

scenario("without CONSUL_LEADER_HTTP_TOKEN, POST is off (405 with the reason) and the reads stay open", async () => {
  const port = freePort();
  const g = await RedisGroup.start(consul, { size: 1, env: { CONSUL_HTTP_TOKEN: CONSUL_TOKEN, CONSUL_LEADER_HTTP_ADDR: `127.0.0.1:${port}` } });
  const p = await g.converged();
  const r = await raw(port, "POST", "/switchover", { Authorization: "Bearer anything-at-all-123456", "Content-Length": "0" });
  expect(r.status).toBe(405);
  expect(r.body).toContain("no CONSUL_LEADER_HTTP_TOKEN is set");
  expect((await raw(port, "GET", "/primary", {})).status).toBe(200);
  expect(await g.discoveredPrimaries()).toEqual([p.id]);
  const listening = p.sidecar.logs().find((l) => l.msg === "status server listening");
  expect(listening?.["writes"]).toBe("off");
}, 60_000);

scenario("CONSUL_LEADER_HTTP_AUTH=all over HTTPS: every route needs the token", async (scope) => {
  const dir = scope.tmpdir("tls-");
  const gen = Bun.spawnSync(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem")], { stderr: "pipe" });
  expect(gen.exitCode).toBe(0);
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, `${STATUS_TOKEN}\n`);
  const port = freePort();
  const g = await RedisGroup.start(consul, {
    size: 1,
    env: {
      CONSUL_HTTP_TOKEN: CONSUL_TOKEN,
      CONSUL_LEADER_HTTP_ADDR: `127.0.0.1:${port}`,
      CONSUL_LEADER_HTTP_TOKEN_FILE: tokenFile,
      CONSUL_LEADER_HTTP_AUTH: "all",
      CONSUL_LEADER_HTTP_TLS_CERT: join(dir, "cert.pem"),
      CONSUL_LEADER_HTTP_TLS_KEY: join(dir, "key.pem"),
    },
  });
  await g.converged();
  const ca = readFileSync(join(dir, "cert.pem"), "utf8");
  const get = (path: string, headers: Record<string, string> = {}) => fetch(`https://127.0.0.1:${port}${path}`, { headers, tls: { ca } } as RequestInit);
  expect((await get("/primary")).status).toBe(401);
  expect((await get("/metrics")).status).toBe(401);
  const authed = await get("/primary", { Authorization: `Bearer ${STATUS_TOKEN}` });
  expect(authed.status).toBe(200);
  // Plain HTTP on the same port gets no answer a client could use.
  const plain = await fetch(`http://127.0.0.1:${port}/primary`).then((r) => r.status, () => 0);
  expect(plain).not.toBe(200);
}, 60_000);

// ---------------------------------------------------------------- a restricted Redis user

/** A single sidecar whose Redis has `user`; resolves with its exit code and output. */
async function restricted(userRule: string, username: string): Promise<{ code: number; out: string; session: boolean; sidecar: Sidecar }> {
  const name = `acl${freePort()}`;
  const g = await RedisGroup.start(consul, {
    name,
    size: 1,
    redis: { password: REDIS_PASSWORD, conf: [`user ${username} on >${REDIS_PASSWORD} ${userRule}`] },
    env: { CONSUL_HTTP_TOKEN: CONSUL_TOKEN, CONSUL_LEADER_REDIS_USERNAME: username },
  });
  const s = g.members[0]!.sidecar;
  const code = await Promise.race([s.proc.exited, Bun.sleep(15_000).then(() => -1)]);
  const sessions = await consul.api<{ Name: string }[]>("GET", "/v1/session/list");
  return { code, out: s.proc.lines.join("\n"), session: sessions.some((x) => x.Name.includes(name)), sidecar: s };
}

scenario("a Redis user without CONFIG SET and CLIENT KILL (ACL DRYRUN answers): exit 78 naming both and the ACL line, no session left", async () => {
  const r = await restricted("~* &* +@all -config|set -client|kill", "ops");
  expect(r.code).toBe(78);
  expect(r.out).toContain(`the Redis user \\"ops\\"`);
  expect(r.out).toContain("config|set (to fence and unfence");
  expect(r.out).toContain("client|kill (to drop the clients of a fenced primary)");
  expect(r.out).toContain("ACL SETUSER ops +config|set +client|kill");
  expect(r.out).not.toContain("replicaof (to");
  const line = r.sidecar.logs().find((l) => l.msg === "redis user lacks permissions");
  expect(line?.["method"]).toBe("dryrun");
  expect(r.session).toBe(false);
}, 60_000);

scenario("a Redis user that may not use ACL DRYRUN and lacks REPLICAOF: found by harmless calls, exit 78, nothing changed in Redis", async () => {
  const r = await restricted("-@all +info +config|get +config|set +client|kill", "narrow");
  expect(r.code).toBe(78);
  expect(r.out).toContain("replicaof (to promote, follow and park)");
  expect(r.out).not.toContain("config|set (to");
  const line = r.sidecar.logs().find((l) => l.msg === "redis user lacks permissions");
  expect(line?.["method"]).toBe("harmless-call");
  expect(r.session).toBe(false);
}, 60_000);

scenario("the README's minimal Redis ACL rule is enough: the sidecar checks it, leads, fences and hands over", async () => {
  const rule = "-@all +info +config|get +config|set +client|kill +replicaof +psync +replconf +ping";
  const readme = readFileSync(join(import.meta.dir, "..", "..", "README.md"), "utf8");
  expect(readme).toContain(rule);
  const g = await RedisGroup.start(consul, {
    redis: { password: REDIS_PASSWORD, conf: [`user sidecar on >${REDIS_PASSWORD} ${rule}`] },
    env: { CONSUL_HTTP_TOKEN: CONSUL_TOKEN, CONSUL_LEADER_REDIS_USERNAME: "sidecar" },
  });
  const p = await g.converged();
  for (const m of g.members) {
    const l = await m.sidecar.waitForLog((x) => x.msg === "redis user may run every command a failover needs", 10_000);
    expect(l["method"]).toBe("harmless-call");
  }
  await g.takeoverReady(p.id);
  const sw = new Proc("switchover", [BINARY, "switchover", "--timeout", "10s"], { env: { PATH: process.env.PATH ?? "", CONSUL_HTTP_ADDR: consul.addr, CONSUL_HTTP_TOKEN: CONSUL_TOKEN, CONSUL_LEADER_KEY: g.key } });
  expect(await sw.exited).toBe(0);
  const { member } = await g.newWritablePrimary(p.id);
  expect(member.id).not.toBe(p.id);
  // The old primary syncs from the new one as the restricted user (masteruser).
  await waitFor(async () => String(await p.redis.cmd("INFO", ["replication"])).includes("master_link_status:up"), { what: "the old primary replicating from the new one", timeoutMs: 15_000 });
}, 90_000);

// ---------------------------------------------------------------- exec's command

scenario("exec's command gets no Consul token, Redis password or status token, unless CONSUL_LEADER_EXEC_PASS_SECRETS=true", async (scope) => {
  const dir = scope.tmpdir("exec-env-");
  const run = async (pass: boolean) => {
    const out = join(dir, `env-${pass}`);
    const p = new Proc(`exec-${pass}`, [BINARY, "exec", "--", "sh", "-c", `env > ${out}; sleep 30`], {
      env: {
        PATH: process.env.PATH ?? "",
        CONSUL_HTTP_ADDR: consul.addr,
        CONSUL_HTTP_TOKEN: CONSUL_TOKEN,
        CONSUL_LEADER_REDIS_PASSWORD: REDIS_PASSWORD,
        CONSUL_LEADER_HTTP_TOKEN: STATUS_TOKEN,
        CONSUL_LEADER_SERVICE_NAME: `mailer${pass ? "p" : "n"}`,
        CONSUL_LEADER_EXEC_PASS_SECRETS: String(pass),
        CONSUL_LEADER_LOG_FORMAT: "json",
      },
    });
    const env = await waitFor(() => {
      try {
        const t = readFileSync(out, "utf8");
        return t.includes("CONSUL_LOCK_HELD") ? t : undefined;
      } catch {
        return undefined;
      }
    }, { what: "the command's environment", timeoutMs: 20_000 });
    await p.stop("SIGTERM", 5000);
    return env;
  };
  const withheld = await run(false);
  for (const s of [CONSUL_TOKEN, REDIS_PASSWORD, STATUS_TOKEN]) expect(withheld).not.toContain(s);
  expect(withheld).toContain("CONSUL_LEADER_FENCING_TOKEN=");
  const passed = await run(true);
  expect(passed).toContain(`CONSUL_HTTP_TOKEN=${CONSUL_TOKEN}`);
  expect(passed).toContain(`CONSUL_LEADER_REDIS_PASSWORD=${REDIS_PASSWORD}`);
}, 90_000);

void Scope;

/** What the Sentinel endpoint on `port` answers to `bytes` within 300 ms. */
async function sentinelExchange(port: number, bytes: string): Promise<string> {
  let got = "";
  const s = await Bun.connect({ hostname: "127.0.0.1", port, socket: { data(_s, d) { got += Buffer.from(d).toString(); } } });
  s.write(bytes);
  await Bun.sleep(300);
  s.end();
  if (!got.includes("-WRONGPASS") || !got.includes("redis_mode:sentinel")) throw new Error(`unexpected endpoint answer: ${got.slice(0, 200)}`);
  return got;
}
