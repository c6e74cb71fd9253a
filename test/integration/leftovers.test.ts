/**
 * The check that ends npm test (test/harness/leftovers.ts) finds what a run
 * left behind: a process carrying the run's id that escaped its scope (as
 * Nomad's logmon did, reparented to init), the port it listens on, a temp
 * dir and a network namespace from the ledger; and finds nothing once they
 * are gone. Uses a run id of its own, so it never sees the real run's.
 */

import { expect } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { leftovers } from "../harness/leftovers.ts";
import { TEST_RUN_VAR } from "../harness/ledger.ts";
import { freePort, scenario, waitFor } from "../harness/proc.ts";

scenario("the end-of-suite check finds a process, its port and a temp dir the run left behind, and nothing once they are gone", async () => {
  const run = `leftover-check-${process.pid}`;
  const port = freePort();
  // Started outside any Scope, as an escaped grandchild would be.
  // redis-server sets its title, which overwrites the environment /proc shows: it is found by its working dir.
  const dir = mkdtempSync(join(tmpdir(), "cl-leftover-"));
  const escaped = Bun.spawn(["redis-server", "--port", String(port), "--save", "", "--appendonly", "no"], { env: { ...process.env, [TEST_RUN_VAR]: run }, cwd: dir, stdout: "ignore", stderr: "ignore" });
  // A plain child that keeps its environment, found by the run's id.
  const sleeper = Bun.spawn(["sleep", "600"], { env: { ...process.env, [TEST_RUN_VAR]: run }, stdout: "ignore", stderr: "ignore" });
  const ledger = `port ${port}\ndir ${dir}\n`;
  try {
    await waitFor(() => leftovers(run, ledger).some((f) => f.what.startsWith(`port ${port}`)), { timeoutMs: 5000, what: "the escaped process's port to be listening" });
    const found = leftovers(run, ledger).map((f) => f.what);
    expect(found).toContainEqual(expect.stringMatching(new RegExp(`^process ${escaped.pid}: redis-server`)));
    expect(found).toContain(`port ${port} still listened on by process ${escaped.pid}`);
    expect(found).toContain(`temp dir ${dir}`);
    expect(found).toContain(`process ${sleeper.pid}: sleep 600`);
    for (const f of leftovers(run, ledger)) f.clean();
    await escaped.exited;
    await sleeper.exited;
    expect(leftovers(run, ledger)).toEqual([]);
  } finally {
    escaped.kill("SIGKILL");
    sleeper.kill("SIGKILL");
    rmSync(dir, { recursive: true, force: true });
  }
});
