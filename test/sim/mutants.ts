/**
 * Known holes, put back one at a time to show the simulator has teeth:
 * `npm run simulate -- --teeth` runs every mutant on a copy of src/ and
 * reports how many seeds the simulator needs to catch it. Each edit names a
 * piece of code that must still exist; a mutant that no longer applies
 * fails loudly instead of testing nothing.
 *
 * The first six are the classes of issue 10; the others are holes the
 * simulator itself found while the fixes were written.
 */

export interface Mutant {
  name: string;
  /** The hole, in one line. */
  hole: string;
  /** Where it can show. */
  modes: ("redis" | "exec")[];
  /** Extra world options that give it a chance to show (e.g. two sidecars on one host). */
  world?: { colocated?: boolean };
  edits: { file: string; find: string; replace: string }[];
}

export const MUTANTS: readonly Mutant[] = [
  {
    name: "twins-share-a-session",
    hole: "class 1: two sidecars on one host get one identity (<name>-<host>) and the second re-adopts the first one's live session",
    modes: ["redis"],
    world: { colocated: true },
    edits: [
      { file: "src/config/config.ts", find: "return `${serviceName}-${host}${redisHost}${port ? `-${port}` : \"\"}`;", replace: "return `${serviceName}-${host}`;" },
      { file: "src/consul/identity.ts", find: "if (!(await consul.kvPut(key, JSON.stringify(claim), { cas: pair.ModifyIndex }))) continue;", replace: "return { kind: \"adopt\", session: pair.Session, claimIndex: pair.ModifyIndex };" },
      { file: "src/consul/identity.ts", find: "if (m.incarnation && m.incarnation !== mine.incarnation) return \"superseded\";", replace: "" },
      { file: "src/consul/lease.ts", find: "m.incarnation !== incarnation || (m.claim && m.claim !== incarnation)", replace: "false" },
      { file: "src/election/membership.ts", find: "if (held?.incarnation && held.incarnation !== this.#o.incarnation && held.claim !== this.#o.incarnation) {", replace: "if (false) {" },
    ],
  },
  {
    name: "promote-over-silence",
    hole: "class 2: a successor takes a timeout or an error reply from the old primary as \"dead\" and promotes; a handover releases without its fence confirmed",
    modes: ["redis"],
    edits: [
      {
        file: "src/election/takeover.ts",
        find: "  const prev = c.previous;\n  const who",
        replace: "  if (p.kind === \"silent\" || p.kind === \"refused\") return { kind: \"promote\", mustCatchUp: false, reason: \"treated as dead (mutant)\" };\n  const prev = c.previous;\n  const who",
      },
      { file: "src/election/elector.ts", find: "if (released !== \"shutdown\") {", replace: "if (false) {" },
    ],
  },
  {
    name: "no-lease-proof",
    hole: "class 3: nothing re-checks the lease between acquiring and REPLICAOF NO ONE; the fence timer covers only the leader role",
    modes: ["redis"],
    edits: [
      { file: "src/election/promotion.ts", find: "const proof = await lease.prove(2 * r.timeoutMs, c.incarnation);", replace: "const proof = { ok: true as const, why: \"\", deadline: Infinity };" },
      { file: "src/election/promotion.ts", find: "await redis.promote(() => c.still() && clock.monotonic() + r.timeoutMs < proof.deadline);", replace: "await redis.promote(() => proof.deadline > 0);" },
      { file: "src/election/elector.ts", find: "this.#fenceTimer.arm(() => this.#holds(),", replace: "this.#fenceTimer.arm(() => this.#role === \"leader\"," },
    ],
  },
  {
    name: "exec-one-keeper",
    hole: "class 4: only the guard can stop the command: exec neither runs the deadline timer nor kills the group itself",
    modes: ["exec"],
    edits: [
      { file: "src/exec/runner.ts", find: "  #stopIn(pgid: number, termInMs: number): void {", replace: "  #stopIn(pgid: number, termInMs: number): void {\n    if (pgid > 0) return;" },
      { file: "src/exec/runner.ts", find: "while (this.#d.groupAlive(g.pid)) await this.#d.clock.sleep(GROUP_POLL_MS);", replace: "await g.exited;" },
      { file: "src/exec/runner.ts", find: "      this.#d.killGroup(guard.pid, \"SIGKILL\");", replace: "" },
    ],
  },
  {
    name: "slow-loss-reaction",
    hole: "class 5: a lock lost to an operator (session destroyed, key deleted) is acted on at the next tick, after any failure backoff, and the successor starts at once",
    modes: ["exec"],
    edits: [
      { file: "src/election/elector.ts", find: "      this.#fenceNow(`lost the lock: ${why}`);", replace: "" },
      { file: "src/election/takeover.ts", find: "return Math.max(t.requestTimeoutMs + c.exec.killGraceMs, (t.checkTtlMs || t.ttlMs) + t.lockDelayMs - t.fenceMarginMs);", replace: "return 0;" },
    ],
  },
  {
    name: "switchover-outlives-leadership",
    hole: "class 6: a pending switchover request survives the loss of leadership and fires in a later tenure",
    modes: ["redis"],
    edits: [{ file: "src/election/elector.ts", find: "    this.#acquiredAt = undefined;\n    this.#switchover = undefined;", replace: "    this.#acquiredAt = undefined;" }],
  },
  {
    name: "address-before-promote",
    hole: "found by the simulator: the holder publishes its Redis address when it acquires, so the old primary replicates from a successor still catching up",
    modes: ["redis"],
    edits: [{ file: "src/election/elector.ts", find: "redis && this.#announce && this.#primaryReady ? { address", replace: "redis && this.#announce ? { address" }],
  },
  {
    name: "restart-forgets-takeover",
    hole: "found by the simulator: a holder restarted mid-takeover re-adopts its session and promotes over the previous primary it forgot",
    modes: ["redis"],
    // Two things remember it: the first lock view, read before the session is
    // re-adopted, and #recallTenure after. Either alone closes the hole.
    edits: [
      { file: "src/election/elector.ts", find: "    this.#lastLeader = previousFrom(v);\n  }\n", replace: "  }\n" },
      {
        file: "src/election/elector.ts",
        find: "else if (view.value?.prevAddress && view.value.session !== this.#lease.session)",
        replace: "else if (view.value?.prevAddress && view.value.session !== this.#lease.session && view.value.instance !== this.#c.instanceId)",
      },
    ],
  },
  {
    name: "pause-ignored",
    hole: "a paused group still fails over: a candidate takes a free lock whatever the pause flag says",
    modes: ["redis", "exec"],
    edits: [
      { file: "src/election/decide.ts", find: "  if (o.paused) return { kind: \"wait\", reason: \"the lock is free but the group is paused: nobody takes it until consul-leader resume\" };\n", replace: "" },
      { file: "src/election/elector.ts", find: "      if (!this.#pauseReadable) throw new Error(\"the pause flag cannot be read\");", replace: "      this.#pauseReadable = false;\n      throw new Error(\"mutant: no pause check\");" },
    ],
  },
];
