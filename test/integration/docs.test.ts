/**
 * The README and docs/ as a new operator reads them: the README leads with
 * what consul-leader is, its terms, the two commands and how to run it under
 * Nomad, docker and systemd; it defines fence, epoch and lock-delay before
 * using them; the design, the timing model, the benchmark and the simulator
 * live in docs/ with a summary left in the README; every relative link points
 * at a file inside the repository. (The knob table's match with
 * src/config/knobs.ts is tested in src/config/knobs.test.ts.)
 */

import { describe, expect, test } from "bun:test";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { ROOT } from "../harness/proc.ts";

const README = readFileSync(join(ROOT, "README.md"), "utf8");
const DOCS = readdirSync(join(ROOT, "docs")).filter((f) => f.endsWith(".md")).map((f) => join(ROOT, "docs", f));

/** Headings of `level` (2: `## `), in order. */
function headings(text: string, level: number): string[] {
  return text.split("\n").filter((l) => l.startsWith(`${"#".repeat(level)} `)).map((l) => l.slice(level + 1).trim());
}

describe("the README", () => {
  test("leads with what it is, its terms, the two commands, and running it under Nomad, docker and systemd", () => {
    const h2 = headings(README, 2);
    expect(h2.slice(0, 3)).toEqual(["Terms", "Quick start", "Running it"]);
    const running = README.slice(README.indexOf("## Running it"), README.indexOf("\n## ", README.indexOf("## Running it") + 1));
    expect(headings(running, 3).slice(0, 3)).toEqual(["Nomad", "docker run, docker compose", "systemd"]);
    const quick = README.slice(README.indexOf("## Quick start"), README.indexOf("## Running it"));
    expect(quick).toContain("npm run demo ");
    expect(quick).toContain("npm test ");
    // The first paragraph says what it is.
    expect(README.split("\n\n")[1]).toMatch(/^A leader-election sidecar for Consul and Nomad that keeps exactly one Redis\nprimary\./);
  });

  test("states the real prerequisites: Node.js and npm, Go, a C compiler for Nomad only, root for apt", () => {
    const quick = README.slice(README.indexOf("## Quick start"), README.indexOf("## Running it"));
    expect(quick).toMatch(/Node\.js \d+ or newer, with npm/);
    expect(quick).toMatch(/Go 1\.\d+ or newer, to build Consul/);
    expect(quick).toMatch(/A C compiler \(`gcc`\), for `npm test` only: Nomad/);
    expect(quick).toMatch(/Root with `apt-get`/);
    expect(README).not.toContain("Node.js and npm are all it needs");
  });

  const terms: [name: string, use: RegExp][] = [
    ["Fence", /\bfenc(e|ed|es|ing)\b/i],
    ["Epoch", /\bepochs?\b/i],
    ["Lock-delay", /\block-delay\b/i],
  ];
  for (const [name, use] of terms) {
    test(`defines ${name.toLowerCase()} before it uses the word`, () => {
      const definition = README.indexOf(`- **${name}**`);
      expect(definition).toBeGreaterThan(0);
      expect(use.exec(README)!.index).toBeGreaterThanOrEqual(definition);
    });
  }

  test("keeps a summary of how it works and links the documents that hold the rest", () => {
    const summary = README.slice(README.indexOf("## How it works, in short"));
    for (const doc of ["docs/design.md", "docs/timing.md", "docs/benchmark.md", "docs/simulator.md"]) expect(summary).toContain(`](${doc})`);
    // The full benchmark dump is no longer in the README.
    expect(README).not.toContain("-----------------------------  --------------------------------------");
  });

  test("says why blocking writes during a Consul agent outage is the safe choice", () => {
    const s = README.slice(README.indexOf("### When the local Consul agent stops answering"));
    expect(s).toContain("CHECK_TTL −\nFENCE_MARGIN");
    expect(s).toContain("Blocking writes is the safe choice");
  });

  test("maps resec's knobs to consul-leader's", () => {
    const s = README.slice(README.indexOf("### From resec"));
    for (const v of ["REDIS_ADDR", "REDIS_PASSWORD", "ANNOUNCE_ADDR", "CONSUL_SERVICE_NAME", "CONSUL_SERVICE_PREFIX", "MASTER_TAGS", "SLAVE_TAGS", "CONSUL_LOCK_KEY", "CONSUL_LOCK_TTL", "CONSUL_LOCK_SESSION_NAME", "CONSUL_DEREGISTER_SERVICE_AFTER", "HEALTHCHECK_INTERVAL", "STATE_SERVER", "LOG_LEVEL", "LOG_FORMAT"]) {
      expect(s).toMatch(new RegExp(`^\\| \`${v}\``, "m"));
    }
  });
});

describe("docs/", () => {
  test("holds the design (with one writer and identity), the timing model, the benchmark and the simulator", () => {
    const names = DOCS.map((d) => relative(ROOT, d)).sort();
    expect(names).toEqual(["docs/benchmark.md", "docs/design.md", "docs/simulator.md", "docs/timing.md"]);
    const design = readFileSync(join(ROOT, "docs", "design.md"), "utf8");
    expect(headings(design, 2)).toEqual(["The election", "One writer", "Identity"]);
    expect(readFileSync(join(ROOT, "docs", "benchmark.md"), "utf8")).toContain("consul-leader                  graceful handover");
  });

  test("every relative link in the README and docs/ points at a file inside the repository", () => {
    for (const file of [join(ROOT, "README.md"), ...DOCS]) {
      const text = readFileSync(file, "utf8");
      expect(text).not.toContain("../shared");
      for (const m of text.matchAll(/\]\(([^)#\s]+)(#[^)]*)?\)/g)) {
        const target = m[1]!;
        if (/^[a-z]+:/.test(target)) continue; // a URL
        const path = resolve(dirname(file), target);
        expect(path.startsWith(ROOT + "/"), `${relative(ROOT, file)} links outside the repository: ${target}`).toBe(true);
        expect(existsSync(path), `${relative(ROOT, file)} links to a missing file: ${target}`).toBe(true);
      }
    }
  });
});
