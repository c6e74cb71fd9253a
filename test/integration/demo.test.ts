/**
 * The quick start as a new operator meets it: `npm run demo` on a fresh clone
 * sets up only what the demo runs (npm dependencies, redis-server, Consul:
 * no Nomad, no test tools), fails over, and prints the exact `consul-leader
 * status` command for its group and every status page's URL, which work as
 * printed. The clone reuses this checkout's npm dependencies and Consul
 * binary (CONSUL_BIN), so the test costs seconds; the full cost from an empty
 * cache is measured by scripts/quickstart-time.sh.
 */

import { expect } from "bun:test";
import { symlinkSync } from "node:fs";
import { join } from "node:path";
import { consulBinary } from "../harness/consul.ts";
import { record } from "../harness/figures.ts";
import { Proc, ROOT, scenario, Scope } from "../harness/proc.ts";

/** `sh scripts/bootstrap.sh --needs PURPOSE`: what the purpose sets up. */
function needs(purpose: string): string[] {
  const r = Bun.spawnSync(["sh", join(ROOT, "scripts", "bootstrap.sh"), "--needs", purpose]);
  expect(r.exitCode).toBe(0);
  return r.stdout.toString().trim().split("\n");
}

scenario("the demo sets up only what it runs; the test suite sets up the rest", async () => {
  expect(needs("demo")).toEqual(["debian: redis-server", "build: consul"]);
  expect(needs("bench")).toEqual(["debian: redis-server", "build: consul", "debian: redis-sentinel", "build: go-failover"]);
  expect(needs("test")).toEqual([
    "debian: redis-server", "build: consul", "debian: shellcheck", "debian: dnsutils", "debian: chromium", "debian: python3-redis", "build: nomad", "build: go-failover",
  ]);
  expect(needs("npm")).toEqual([""]);
});

scenario("npm run demo on a fresh clone: a failover, the exact status command for its group, its status pages; no Nomad built", async () => {
  const dir = Scope.current!.tmpdir("democlone-");
  const clone = join(dir, "consul-leader");
  const git = Bun.spawnSync(["git", "clone", "-q", ROOT, clone]);
  expect(git.exitCode, git.stderr.toString()).toBe(0);
  symlinkSync(join(ROOT, "node_modules"), join(clone, "node_modules"));
  const t0 = performance.now();
  const demo = new Proc("demo", ["sh", "scripts/demo.sh", "--keep"], {
    cwd: clone,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? "/root", CONSUL_BIN: consulBinary(), CONSUL_LEADER_CACHE: Scope.current!.tmpdir("democache-") },
  });
  const failover = await demo.waitForLine((l) => / new primary: demo-\d, writable and tagged in Consul \d+ ms after the kill$/.test(l), 120_000, "the failover");
  record("demo on a fresh clone (npm deps and Consul at hand): start -> first failover, ms", performance.now() - t0);
  expect(failover).toBeTruthy();
  const statusLine = await demo.waitForLine((l) => / the group as consul-leader sees it: /.test(l), 5000, "the status command");
  const command = statusLine.slice(statusLine.indexOf(": CONSUL_HTTP_ADDR=") + 2);
  expect(command).toMatch(/^CONSUL_HTTP_ADDR=127\.0\.0\.1:\d+ CONSUL_LEADER_SERVICE_NAME=demo dist\/consul-leader status$/);
  await demo.waitForLine((l) => l.includes("--keep: everything stays up"), 30_000, "the group left running");

  // The status command works as printed, from the clone: the group is healthy, with the new primary.
  const status = new Proc("status", ["sh", "-c", command], { cwd: clone, env: { PATH: process.env.PATH ?? "" } });
  expect(await status.exited).toBe(0);
  const text = status.stdoutLines.join("\n");
  expect(text).toContain("group consul-leader/demo/lock (service demo)");
  expect(text).toMatch(/^healthy: one primary \(demo-\d\)$/m);
  expect(text).not.toContain("nobody holds");
  // Every status page the demo printed answers.
  const pages = demo.lines.flatMap((l) => [...l.matchAll(/status page (http:\/\/127\.0\.0\.1:\d+\/)/g)].map((m) => m[1]!));
  expect(pages).toHaveLength(3);
  for (const url of pages) {
    const res = await fetch(url);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain("<title>demo: demo-");
  }
  // What it set up: the npm dependencies and Consul were at hand, so nothing was installed, and Nomad was never built.
  expect(demo.lines.filter((l) => /^bootstrap: installing|build-hashicorp: building/.test(l))).toEqual([]);
  expect(demo.lines.join("\n")).not.toMatch(/nomad/i);

  demo.signal("SIGINT");
  expect(await demo.exited).toBe(0);
}, 180_000);
