import { expect, test } from "bun:test";
import { Scheduler } from "../../test/sim/scheduler.ts";
import type { RedisRole } from "../redis/role.ts";
import type { RedisView } from "./types.ts";
import { FAST_POLL_MS, UNSETTLED_POLL_MS, watchRedis } from "./watches.ts";

/** A Redis as watchRedis sees it: each poll records its time and answers with the current script. */
function fakeRedis(s: Scheduler, script: { error?: string; view?: Partial<RedisView> }) {
  const polls: number[] = [];
  let drop: (() => void) | undefined;
  const redis = {
    node: { link: { onDrop: (fn: () => void) => (drop = fn) } },
    poll: async () => {
      polls.push(s.now);
      return false;
    },
    view: (): RedisView => ({ up: !script.error, role: "master", loading: false, syncing: false, linkUp: false, masterAddr: null, offset: 0, replid: "", replid2: "", runId: "r", writable: true, stale: false, ...script.view }),
    get lastErrorCode() {
      return script.error;
    },
  } as unknown as RedisRole;
  return { redis, polls, drop: () => drop?.() };
}

async function gaps(script: { error?: string; view?: Partial<RedisView> }, pollMs = 1000, forMs = 5000): Promise<number[]> {
  const s = new Scheduler(1);
  const r = fakeRedis(s, script);
  const ac = new AbortController();
  void watchRedis(ac.signal, { redis: r.redis, clock: s.clock("w") }, pollMs, () => false, () => {});
  await s.runUntil(forMs);
  ac.abort();
  return r.polls.slice(1).map((t, i) => t - r.polls[i]!);
}

test("a steady primary, and a replica with its link up, are polled every REDIS_POLL", async () => {
  expect(new Set(await gaps({}))).toEqual(new Set([1000]));
  expect(new Set(await gaps({ view: { role: "replica", linkUp: true, writable: false } }))).toEqual(new Set([1000]));
});

test("unsettled (a failed poll, loading, syncing, a replica's link down): every UNSETTLED_POLL_MS", async () => {
  for (const script of [
    { error: "REDIS_TIMEOUT" },
    { view: { loading: true } },
    { view: { role: "replica" as const, linkUp: true, syncing: true } },
    { view: { role: "replica" as const, linkUp: false } },
    { view: { up: false } },
  ]) {
    expect(new Set(await gaps(script)), JSON.stringify(script)).toEqual(new Set([UNSETTLED_POLL_MS]));
  }
});

test("a refused port: every FAST_POLL_MS; and never slower than REDIS_POLL when that is shorter", async () => {
  expect(new Set(await gaps({ error: "REDIS_UNREACHABLE" }))).toEqual(new Set([FAST_POLL_MS]));
  expect(new Set(await gaps({ error: "REDIS_TIMEOUT" }, 100))).toEqual(new Set([100]));
  expect(new Set(await gaps({}, 100))).toEqual(new Set([100]));
});

test("a closed connection polls at once, not a REDIS_POLL later", async () => {
  const s = new Scheduler(1);
  const r = fakeRedis(s, {});
  const ac = new AbortController();
  void watchRedis(ac.signal, { redis: r.redis, clock: s.clock("w") }, 1000, () => false, () => {});
  await s.runUntil(1500);
  r.drop();
  await s.runUntil(1600);
  ac.abort();
  expect(r.polls).toEqual([0, 1000, 1500]);
});
