/**
 * The systemd unit as shipped, without a running systemd (this machine has
 * none as PID 1, so `systemd-run` cannot start it): the binary run the way
 * the unit runs it. A non-root user (as DynamicUser= gives), the knobs of
 * .env.example (EnvironmentFile=) pointed at this test's Consul and Redis, and
 * the secrets as systemd hands them over: root-owned files the user cannot
 * read, copied into a credentials directory only that user can read
 * (LoadCredential=, $CREDENTIALS_DIRECTORY), or the unit's fallback for a
 * missing file (SetCredential=, a bare newline). Then what the unit's
 * Restart=always / RestartPreventExitStatus=78 rely on: a bad configuration
 * exits 78, SIGTERM exits 0. The unit's text itself is checked in
 * packaging.test.ts.
 */

import { expect } from "bun:test";
import { chmodSync, chownSync, copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parse as parseDotenv } from "dotenv";
import { type ConsulAgent, startDevAgent } from "../harness/consul.ts";
import { fileScope, freePort, Proc, ROOT, scenario, Scope, waitFor } from "../harness/proc.ts";
import { RedisServer } from "../harness/redis.ts";
import { BINARY } from "../harness/sidecar.ts";

/** DynamicUser= picks a free uid; nobody stands in for it here. */
const UID = 65534;
const TOKEN = crypto.randomUUID();
const PASSWORD = `pw-${crypto.randomUUID()}`;

let consul: ConsulAgent;
let n = 0;
fileScope("systemd.test.ts", async () => {
  consul = await startDevAgent({ acl: { enabled: true, default_policy: "deny", tokens: { initial_management: TOKEN, agent: TOKEN } } }, { token: TOKEN });
});

/**
 * A directory laid out as the unit sees the host: the binary at 0755, the
 * secrets root-owned at 0600 in etc/, and the credentials directory systemd
 * would make for the service (owned by its user, 0500; each credential 0400).
 */
function host(secrets: Record<string, string | undefined>): { dir: string; bin: string; creds: string; etc: string } {
  const dir = Scope.current!.tmpdir("systemd-");
  chmodSync(dir, 0o755);
  const bin = join(dir, "consul-leader");
  copyFileSync(BINARY, bin);
  chmodSync(bin, 0o755);
  const etc = join(dir, "etc");
  const creds = join(dir, "credentials");
  mkdirSync(etc, { mode: 0o700 });
  mkdirSync(creds, { mode: 0o500 });
  for (const id of ["consul-http-token", "redis-password"]) {
    const value = secrets[id];
    if (value !== undefined) writeFileSync(join(etc, id), value, { mode: 0o600 });
    // LoadCredential= copies the file; when it cannot be read, SetCredential= gives its bare newline.
    writeFileSync(join(creds, id), value ?? "\n", { mode: 0o400 });
    chownSync(join(creds, id), UID, UID);
  }
  chownSync(creds, UID, UID);
  return { dir, bin, creds, etc };
}

/** .env.example as EnvironmentFile= reads it, with `over` pointing it at this test's Consul and Redis. */
function envFile(over: Record<string, string>): Record<string, string> {
  return { ...parseDotenv(readFileSync(join(ROOT, ".env.example"))), ...over };
}

function asUser(name: string, cmd: string[], env: Record<string, string>, cwd: string): Proc {
  return new Proc(name, ["setpriv", `--reuid=${UID}`, `--regid=${UID}`, "--clear-groups", "--no-new-privs", "--", ...cmd], { env: { PATH: "/usr/bin:/bin", ...env }, cwd });
}

/** A token allowed what packaging/acl-policy.hcl allows, for `service` and its default key. */
async function tokenFor(service: string): Promise<string> {
  const key = `consul-leader/${service}/lock`;
  const rules = readFileSync(join(ROOT, "packaging", "acl-policy.hcl"), "utf8").replaceAll("consul-leader/redis/lock", key).replace(/service "redis(-consul-leader)?"/g, (_m, s: string | undefined) => `service "${service}${s ?? ""}"`);
  const name = `p-${crypto.randomUUID().slice(0, 8)}`;
  await consul.api("PUT", "/v1/acl/policy", { Name: name, Rules: rules });
  return (await consul.api<{ SecretID: string }>("PUT", "/v1/acl/token", { Policies: [{ Name: name }] })).SecretID;
}

async function holder(key: string): Promise<string | undefined> {
  const res = await fetch(`${consul.url}/v1/kv/${key}`, { headers: { "X-Consul-Token": TOKEN } });
  if (res.status === 404) return undefined;
  const [pair] = (await res.json()) as { Session?: string; Value?: string }[];
  return pair?.Session ? (JSON.parse(Buffer.from(pair.Value ?? "", "base64").toString()) as { instance: string }).instance : undefined;
}

scenario("as the unit runs it: a non-root user reads the ACL token and the Redis password from its credentials, not from the root-owned files, and leads", async () => {
  const service = `sysd${++n}-${process.pid}`;
  const token = await tokenFor(service);
  const redis = await RedisServer.start({ password: PASSWORD });
  const h = host({ "consul-http-token": `${token}\n`, "redis-password": `${PASSWORD}\n` });
  // The user cannot read the files the unit points LoadCredential= at: only systemd (root) can.
  const peek = asUser("cat", ["cat", join(h.etc, "consul-http-token")], {}, h.dir);
  expect(await peek.exited).not.toBe(0);

  const http = freePort();
  const env = envFile({
    CONSUL_HTTP_ADDR: consul.addr,
    CONSUL_LEADER_SERVICE_NAME: service,
    CONSUL_LEADER_REDIS_ADDR: redis.addr,
    CONSUL_LEADER_ANNOUNCE_ADDR: redis.addr,
    CONSUL_LEADER_SERVICE_ADDRESS: "127.0.0.1",
    CONSUL_LEADER_SERVICE_PORT: String(redis.port),
    CONSUL_LEADER_HTTP_ADDR: `127.0.0.1:${http}`,
    CREDENTIALS_DIRECTORY: h.creds,
  });
  expect(env["CONSUL_HTTP_TOKEN"] ?? env["CONSUL_HTTP_TOKEN_FILE"]).toBeUndefined();
  const s = asUser("consul-leader", [h.bin], env, h.dir);
  await waitFor(async () => (await holder(`consul-leader/${service}/lock`)) !== undefined, { timeoutMs: 20_000, what: "the sidecar to hold the lock" });
  // It leads with a writable Redis: the password came through too.
  await waitFor(async () => (await fetch(`http://127.0.0.1:${http}/primary`)).status === 200, { timeoutMs: 10_000, what: "/primary 200" });
  expect(String(await redis.cmd("ROLE"))).toStartWith("master");
  // Nothing it printed carries a secret.
  expect(s.lines.join("\n")).not.toContain(token);
  expect(s.lines.join("\n")).not.toContain(PASSWORD);
  // KillSignal=SIGTERM: a clean stop, exit 0 (Restart=always would restart anything else).
  expect(await s.stop("SIGTERM", 10_000)).toBe(0);
  expect(await holder(`consul-leader/${service}/lock`)).toBeUndefined();
}, 60_000);

scenario("as the unit runs it without ACLs or a password: the credentials' fallback is no token, and a bad configuration exits 78, which the unit does not restart", async () => {
  const service = `sysd${++n}-${process.pid}`;
  const redis = await RedisServer.start();
  const h = host({});
  const env = envFile({
    CONSUL_HTTP_ADDR: consul.addr,
    CONSUL_LEADER_SERVICE_NAME: service,
    CONSUL_LEADER_REDIS_ADDR: redis.addr,
    CONSUL_LEADER_ANNOUNCE_ADDR: redis.addr,
    CONSUL_LEADER_HTTP_ADDR: `127.0.0.1:${freePort()}`,
    CREDENTIALS_DIRECTORY: h.creds,
  });
  // No token: this ACL agent refuses it, and says so by name (not a config error about an empty file).
  const s = asUser("consul-leader", [h.bin], env, h.dir);
  await s.waitForLine((l) => /403|ACL/.test(l), 15_000, "Consul refusing the anonymous token");
  expect(s.running).toBe(true);
  await s.stop("SIGTERM", 10_000);

  const bad = asUser("consul-leader-bad", [h.bin], { ...env, CONSUL_LEADER_TTL: "1s" }, h.dir);
  expect(await bad.exited).toBe(78);
  expect(bad.lines.join("\n")).toContain('CONSUL_LEADER_TTL="1s": must be between 10s and 24h');
});
