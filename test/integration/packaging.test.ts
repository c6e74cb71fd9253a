/**
 * What can be proven about the packaging without a Docker engine or a
 * running systemd: the Dockerfile's stages, user, entrypoint and health
 * check; that the musl binary needs exactly the loader and libraries the
 * image installs (readelf); shellcheck on every script; the systemd unit
 * parsed (systemd-analyze) and read; the compose file's shape. The unit run
 * as shipped (a non-root user, its credentials) is in systemd.test.ts; the
 * jobspecs on a real Nomad in nomad.test.ts.
 */

import { describe, expect, test } from "bun:test";
import { copyFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { freePort, ROOT } from "../harness/proc.ts";

interface Instruction {
  op: string;
  args: string;
}

/** Dockerfile instructions, with continuation lines joined and comments dropped. */
function dockerfile(): Instruction[] {
  const text = readFileSync(join(ROOT, "Dockerfile"), "utf8").replace(/\\\n/g, " ");
  return text.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#")).map((l) => {
    const i = l.indexOf(" ");
    return { op: l.slice(0, i).toUpperCase(), args: l.slice(i + 1).trim() };
  });
}

/** Shared libraries and the Alpine package that provides each in the image. */
const PROVIDED_BY: Record<string, string> = {
  "libstdc++.so.6": "libstdc++",
  "libgcc_s.so.1": "libgcc",
  "libc.musl-x86_64.so.1": "musl",
};

describe("Dockerfile", () => {
  const ins = dockerfile();
  const froms = ins.filter((i) => i.op === "FROM");
  const finalStage = ins.slice(ins.lastIndexOf(froms.at(-1)!));

  test("builds in the official Bun Alpine image and runs on plain Alpine", () => {
    expect(froms).toHaveLength(2);
    expect(froms[0]!.args).toMatch(/^oven\/bun:\$\{BUN_VERSION\}-alpine AS build$/);
    expect(froms[1]!.args).toMatch(/^alpine:/);
    const buildRun = ins.filter((i) => i.op === "RUN").map((i) => i.args).join("\n");
    expect(buildRun).toContain("bun build --compile");
    expect(finalStage.some((i) => i.op === "COPY" && /^--from=build \/out\/consul-leader /.test(i.args))).toBe(true);
  });

  test("the runtime stage installs only libstdc++, libgcc and tini", () => {
    const apk = finalStage.filter((i) => i.op === "RUN").map((i) => i.args).join(" ");
    const pkgs = /apk add --no-cache ([^&]+)/.exec(apk)![1]!.trim().split(/\s+/);
    expect(pkgs.sort()).toEqual(["libgcc", "libstdc++", "tini"]);
  });

  test("runs as a non-root user, under tini, with a health check on /liveness and OCI labels", () => {
    const user = finalStage.find((i) => i.op === "USER")!.args;
    expect(user).not.toMatch(/^(0|root)(:|$)/);
    expect(JSON.parse(finalStage.find((i) => i.op === "ENTRYPOINT")!.args)).toEqual(["/sbin/tini", "--", "/usr/local/bin/consul-leader"]);
    expect(finalStage.find((i) => i.op === "HEALTHCHECK")!.args).toContain("/liveness");
    const labels = finalStage.filter((i) => i.op === "LABEL").map((i) => i.args).join(" ");
    for (const l of ["title", "description", "version", "licenses", "source"]) expect(labels).toContain(`org.opencontainers.image.${l}=`);
  });

  test(".dockerignore sends only what the build needs", () => {
    const lines = readFileSync(join(ROOT, ".dockerignore"), "utf8").split("\n").filter((l) => l && !l.startsWith("#"));
    expect(lines[0]).toBe("*");
    expect(lines).toContain("!src/");
    expect(lines).toContain("!package-lock.json");
  });

  test("the musl binary needs exactly the loader and libraries the image provides (readelf)", () => {
    const bin = join(ROOT, "dist", "consul-leader-musl");
    expect(existsSync(bin)).toBe(true);
    const program = Bun.spawnSync(["readelf", "-l", bin]).stdout.toString();
    expect(/Requesting program interpreter: ([^\]]+)\]/.exec(program)![1]).toBe("/lib/ld-musl-x86_64.so.1");
    const needed = [...Bun.spawnSync(["readelf", "-d", bin]).stdout.toString().matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]!);
    expect(needed.length).toBeGreaterThan(0);
    const apk = finalStage.filter((i) => i.op === "RUN").map((i) => i.args).join(" ");
    for (const lib of needed) {
      const pkg = PROVIDED_BY[lib];
      expect(pkg, `${lib} is not provided by any package the image installs`).toBeDefined();
      if (pkg !== "musl") expect(apk).toContain(pkg!);
    }
  });
});

test("shellcheck passes on every shell script", () => {
  expect(Bun.which("shellcheck"), "shellcheck is missing (npm test installs it from Debian as root)").toBeTruthy();
  const scripts = [...readdirSync(join(ROOT, "scripts")).filter((f) => f.endsWith(".sh")).map((f) => join("scripts", f)), ".ci/run"];
  const r = Bun.spawnSync(["shellcheck", "-x", ...scripts], { cwd: ROOT });
  expect(r.stdout.toString() + r.stderr.toString()).toBe("");
  expect(r.exitCode).toBe(0);
});

/** The unit's directives, `Key=value` per line, comments and sections left out; a key may repeat. */
function unitDirectives(text: string): [string, string][] {
  return text.split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#") && !l.startsWith("[")).map((l) => [l.slice(0, l.indexOf("=")), l.slice(l.indexOf("=") + 1)]);
}

describe("the systemd unit", () => {
  const text = readFileSync(join(ROOT, "packaging", "consul-leader.service"), "utf8");
  const d = unitDirectives(text);
  const values = (k: string) => d.filter(([key]) => key === k).map(([, v]) => v);

  test.if(!!Bun.which("systemd-analyze"))("verifies (systemd-analyze verify): every directive parses", () => {
    const dir = mkdtempSync(join(tmpdir(), "unit-"));
    try {
      const bin = join(dir, "consul-leader");
      copyFileSync(join(ROOT, "dist", "consul-leader"), bin);
      writeFileSync(join(dir, "consul-leader.service"), text.replace(/^ExecStart=\/usr\/local\/bin\/consul-leader$/m, `ExecStart=${bin}`));
      const r = Bun.spawnSync(["systemd-analyze", "verify", join(dir, "consul-leader.service")]);
      expect(r.stderr.toString().trim()).toBe("");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("hands the root-owned secrets to its dynamic user as credentials, with a fallback when a file is missing", () => {
    expect(values("DynamicUser")).toEqual(["yes"]);
    expect(values("LoadCredential")).toEqual(["consul-http-token:/etc/consul-leader/consul-http-token", "redis-password:/etc/consul-leader/redis-password", "status-token:/etc/consul-leader/status-token"]);
    // systemd uses SetCredential= when LoadCredential='s file cannot be read: a bare newline, which consul-leader reads as none.
    expect(values("SetCredential")).toEqual(["consul-http-token:\\n", "redis-password:\\n", "status-token:\\n"]);
    expect(values("EnvironmentFile")).toEqual(["-/etc/consul-leader/env"]);
  });

  test("does not restart-loop on a bad configuration (exit 78); restarts on anything else; stops with SIGTERM", () => {
    expect(values("RestartPreventExitStatus")).toEqual(["78"]);
    expect(values("Restart")).toEqual(["always"]);
    expect(values("KillSignal")).toEqual(["SIGTERM"]);
    expect(values("ExecStart")).toEqual(["/usr/local/bin/consul-leader"]);
  });
});

test("docker-compose.yml: Consul, three Redis, three sidecars each sharing its Redis's network", () => {
  const y = Bun.YAML.parse(readFileSync(join(ROOT, "docker-compose.yml"), "utf8")) as { services: Record<string, { network_mode?: string; environment?: Record<string, string>; build?: string }> };
  const s = y.services;
  expect(Object.keys(s).sort()).toEqual(["consul", "leader1", "leader2", "leader3", "redis1", "redis2", "redis3"]);
  for (const i of [1, 2, 3]) {
    const l = s[`leader${i}`]!;
    expect(l.network_mode).toBe(`service:redis${i}`);
    expect(l.environment!["CONSUL_LEADER_ANNOUNCE_ADDR"]).toBe(`redis${i}:6379`);
    expect(l.environment!["CONSUL_LEADER_SERVICE_ID"]).toBe(`redis-${i}`);
  }
  const ids = new Set([1, 2, 3].map((i) => s[`leader${i}`]!.environment!["CONSUL_LEADER_SERVICE_ID"]));
  expect(ids.size).toBe(3);
});

interface ComposeFile {
  services: Record<string, { command?: string[]; secrets?: string[]; environment?: Record<string, string> }>;
  secrets: Record<string, { file: string }>;
}

test("docker-compose.yml: the Redis password and the status token are Docker secrets, read from files, never in an environment or a command", () => {
  const y = Bun.YAML.parse(readFileSync(join(ROOT, "docker-compose.yml"), "utf8")) as ComposeFile;
  expect(y.secrets).toEqual({ redis_password: { file: "./secrets/redis-password" }, status_token: { file: "./secrets/status-token" } });
  expect(readFileSync(join(ROOT, ".gitignore"), "utf8").split("\n")).toContain("/secrets/");
  for (const i of [1, 2, 3]) {
    const l = y.services[`leader${i}`]!;
    expect(l.secrets).toEqual(["redis_password", "status_token"]);
    expect(l.environment!["CONSUL_LEADER_REDIS_PASSWORD_FILE"]).toBe("/run/secrets/redis_password");
    expect(l.environment!["CONSUL_LEADER_HTTP_TOKEN_FILE"]).toBe("/run/secrets/status_token");
    for (const name of Object.keys(l.environment!)) expect(name).not.toMatch(/^(CONSUL_LEADER_REDIS_PASSWORD|CONSUL_LEADER_HTTP_TOKEN|CONSUL_HTTP_TOKEN)$/);
    const r = y.services[`redis${i}`]!;
    expect(r.secrets).toEqual(["redis_password"]);
    expect(r.command!.join(" ")).not.toMatch(/--requirepass|--masterauth/);
  }
});

test("docker-compose.yml: the Redis start script, run as shipped against a real redis-server, requires the password and keeps it off the command line", async () => {
  const y = Bun.YAML.parse(readFileSync(join(ROOT, "docker-compose.yml"), "utf8")) as ComposeFile;
  const [shell, flag, script] = y.services["redis1"]!.command!;
  expect([shell, flag]).toEqual(["sh", "-c"]);
  const dir = mkdtempSync(join(tmpdir(), "compose-redis-"));
  try {
    const password = "c0mp0se-secret-" + Math.random().toString(36).slice(2);
    writeFileSync(join(dir, "redis_password"), password + "\n");
    const port = freePort();
    // What differs outside the container: the paths, no redis user to chown to, and the image's
    // entrypoint (which only drops to that user) replaced by redis-server itself, on a free port.
    const local = script!
      .replaceAll("$$", "$")
      .replaceAll("/run/secrets/", `${dir}/`)
      .replaceAll("/run/redis/", `${dir}/`)
      .replace(/^chown .*$/m, ":")
      .replace("exec docker-entrypoint.sh redis-server", "exec redis-server")
      .replace(/redis\.conf\s*$/, `redis.conf --port ${port} --bind 127.0.0.1`);
    const p = Bun.spawn(["sh", "-c", local], { stdout: "pipe", stderr: "pipe" });
    try {
      const client = () => new Bun.RedisClient(`redis://:${password}@127.0.0.1:${port}`, { autoReconnect: false, connectionTimeout: 1000 });
      let info = "";
      let exited = false;
      void p.exited.then(() => (exited = true));
      let lastError = "";
      for (let i = 0; i < 100 && !info && !exited; i++) {
        const c = client();
        info = await c.connect().then(() => c.send("INFO", ["replication"])).then(String, (e: unknown) => ((lastError = String(e)), ""));
        c.close();
        if (!info) await Bun.sleep(100);
      }
      if (!info) {
        // Say why: the script's own output, whether it is still running, and the client's last error.
        if (!exited) p.kill("SIGKILL");
        await p.exited;
        const said = (await new Response(p.stdout).text()) + (await new Response(p.stderr).text());
        throw new Error(`Redis from the compose start script never answered INFO on port ${port} (exit ${exited ? p.exitCode : "none, still running"}; last client error: ${lastError}); it printed:\n${said}`);
      }
      expect(info).toContain("role:slave"); // booted as a replica of nothing
      // redis-cli, not Bun's client: that one gives up on the connection (its HELLO fails) without the reply.
      expect(Bun.spawnSync(["redis-cli", "-p", String(port), "PING"]).stdout.toString()).toMatch(/NOAUTH/);
      expect(readFileSync(`/proc/${p.pid}/cmdline`, "latin1")).not.toContain(password);
      expect(statSync(join(dir, "redis.conf")).mode & 0o077).toBe(0);
    } finally {
      p.kill("SIGKILL");
      await p.exited;
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test(".env.example names only real knobs", async () => {
  const { KNOBS } = await import("../../src/config/knobs.ts");
  const names = new Set(KNOBS.map((k) => k.name));
  const used = readFileSync(join(ROOT, ".env.example"), "utf8").split("\n").map((l) => l.replace(/^#\s*/, "")).filter((l) => /^[A-Z_]+=/.test(l)).map((l) => l.split("=")[0]!);
  expect(used.length).toBeGreaterThan(5);
  for (const n of used) expect(names.has(n), `${n} is not a knob`).toBe(true);
});
