import { describe, expect, test } from "bun:test";
import type { Clock } from "../clock.ts";
import { ConsulError } from "../errors.ts";
import { silentLogger } from "../log.ts";
import type { Consul } from "./client.ts";
import { MAINTENANCE_POLL_MS, MAINTENANCE_WATCH_WAIT_MS, watchMaintenance } from "./maintenance.ts";

type Check = { CheckID: string; Status: string; ServiceID: string; Name: string; Notes?: string };
const MAINT: Check = { CheckID: "_node_maintenance", Status: "critical", ServiceID: "", Name: "Node Maintenance Mode", Notes: "drain" };

/** Runs the watch against scripted answers until they run out; returns the requests and the reports. */
async function run(answers: (() => { checks: Check[]; index: number } | Error)[], agent: Check[] = []) {
  const calls: string[] = [];
  const reports: boolean[] = [];
  const stop = new AbortController();
  let n = 0;
  const consul = {
    healthNode: (node: string, _filter: string, opts: { index?: number; waitMs?: number }) => {
      calls.push(`health ${node} index=${opts.index ?? 0} wait=${opts.waitMs ?? 0}`);
      const next = answers[n++];
      if (!next) {
        stop.abort();
        return Promise.reject(new Error("aborted"));
      }
      const r = next();
      return r instanceof Error ? Promise.reject(r) : Promise.resolve(r);
    },
    agentChecks: () => (calls.push("agent checks"), Promise.resolve(Object.fromEntries(agent.map((c) => [c.CheckID, c])))),
  } as unknown as Consul;
  const clock: Clock = { now: () => 0, monotonic: () => 0, sleep: (ms) => (calls.push(`sleep ${ms}`), Promise.resolve()), timer: () => ({ cancel: () => {} }) };
  await watchMaintenance(() => "redis-1", async () => "node1", (on) => reports.push(on), { consul, clock, log: silentLogger }, stop.signal);
  return { calls, reports };
}

describe("watchMaintenance", () => {
  test("blocks on the node's checks in the catalog: no request while nothing changes, a report the moment maintenance starts", async () => {
    const { calls, reports } = await run([() => ({ checks: [], index: 7 }), () => ({ checks: [MAINT], index: 9 })]);
    expect(calls).toEqual(["health node1 index=0 wait=0", `health node1 index=7 wait=${MAINTENANCE_WATCH_WAIT_MS}`, `health node1 index=9 wait=${MAINTENANCE_WATCH_WAIT_MS}`]);
    expect(reports).toEqual([false, true]);
  });

  test("while the catalog cannot be read, it asks the agent every MAINTENANCE_POLL_MS, as before", async () => {
    const denied = new ConsulError("CONSUL_SERVER_ERROR", "No cluster leader", { method: "GET", path: "/v1/health/node/node1", status: 500 });
    const { calls, reports } = await run([() => denied], [MAINT]);
    expect(calls.slice(0, 3)).toEqual(["health node1 index=0 wait=0", "agent checks", `sleep ${MAINTENANCE_POLL_MS}`]);
    expect(reports).toEqual([true]);
  });
});
