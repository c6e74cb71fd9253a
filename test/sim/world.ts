/**
 * A whole consul-leader group in the simulator: three nodes, each with a
 * Consul agent, a Redis (or an exec command) and the production sidecar
 * built by src/sidecar.ts exactly as main.ts builds it, a writing client,
 * and a seeded schedule of faults. After every event it checks the
 * invariants; after the faults stop it checks that the group settles.
 *
 * Invariants (README "One writer"; design invariants 1, 6, 9, 10):
 * - at most one Redis would take a write (frozen ones count: they take the
 *   writes queued for them when they resume);
 * - at most one exec command runs;
 * - a new holder's fencing epoch is higher than every earlier holder's;
 * - no acknowledged write is lost, except one acknowledged by a Redis that
 *   crashed or restarted before it replicated it ("what had not replicated
 *   yet");
 * - a sidecar hands over only when a switchover was asked of it in its
 *   current tenure;
 * - while the group is paused (`consul-leader pause`), nobody acquires the
 *   lock and nobody hands over: no failover, no switchover;
 * - once faults stop: within the budget, exactly one writable Redis,
 *   discovery names exactly its service, and every sidecar agrees.
 *
 * Faults that no design survives, and that the README documents as such, are
 * not generated: a whole node frozen past the session TTL (its Redis runs the
 * writes it had queued before its sidecar's timer fences it), and both exec
 * keepers frozen by two separate SIGSTOPs.
 */

import { type Config, loadConfig } from "../../src/config/config.ts";
import type { ExecRunner as ExecRunnerType } from "../../src/exec/runner.ts";
import { ExecRunner } from "../../src/exec/runner.ts";
import type { RoleChange } from "../../src/election/types.ts";
import { createLogger } from "../../src/log.ts";
import { assembleSidecar, type Sidecar } from "../../src/sidecar.ts";
import { SimConsul } from "./consul.ts";
import { SimProcesses } from "./processes.ts";
import { SimRedis, type SimWriter } from "./redis.ts";
import { Scheduler } from "./scheduler.ts";

export type Mode = "redis" | "exec";

export type FaultKind =
  | "sidecar-kill"
  | "sidecar-term"
  | "sidecar-freeze"
  | "redis-crash"
  | "redis-freeze"
  | "redis-busy"
  | "redis-deny"
  | "agent-restart"
  | "partition"
  | "server-election"
  | "consul-errors"
  | "destroy-session"
  | "delete-key"
  | "garbage"
  | "switchover"
  | "switchover-then-loss"
  | "crash-mid-takeover"
  | "pause-mid-promotion"
  | "pause"
  | "twin"
  | "exec-group-stop"
  | "guard-kill"
  | "guard-stop"
  | "guard-group-stop";

export const REDIS_FAULTS: readonly FaultKind[] = [
  "sidecar-kill", "sidecar-term", "sidecar-freeze", "redis-crash", "redis-freeze", "redis-busy", "redis-deny",
  "agent-restart", "partition", "server-election", "consul-errors", "destroy-session", "delete-key", "garbage", "switchover", "pause", "twin",
  "switchover-then-loss", "crash-mid-takeover", "pause-mid-promotion",
];
export const EXEC_FAULTS: readonly FaultKind[] = [
  "sidecar-kill", "sidecar-term", "sidecar-freeze", "agent-restart", "partition", "server-election", "consul-errors",
  "destroy-session", "delete-key", "garbage", "pause", "twin", "exec-group-stop", "guard-kill", "guard-stop", "guard-group-stop",
];

export interface WorldOptions {
  seed: number;
  mode: Mode;
  nodes?: number;
  /** Simulated ms during which faults start. */
  chaosMs?: number;
  /** How many faults, at most. */
  faults?: number;
  kinds?: readonly FaultKind[];
  /** Extra knobs for every sidecar. */
  env?: Record<string, string>;
  /** Keep every log line (for --trace); otherwise only the last ones. */
  trace?: boolean;
  /**
   * A fourth member on the first host: a second Redis (port 6380) and its
   * sidecar, both with default identities. Undefined: drawn from the seed
   * (one seed in three).
   */
  colocated?: boolean;
}

export interface Violation {
  at: number;
  what: string;
}

export interface TraceLine {
  at: number;
  who: string;
  text: string;
}

interface Proc {
  node: number;
  owner: string;
  incarnation: number;
  sidecar: Sidecar;
  stop: AbortController;
  done: Promise<void>;
  exited: boolean;
  fatal?: string;
  role: string;
  session?: string | null;
  exec?: ExecRunnerType;
  twin: boolean;
  /** Handovers this process was asked for, by session. */
  asked: Set<string>;
  /**
   * The session it held when it last became leader: its tenure. A handover's
   * role change may come after the sidecar saw that session gone (an operator
   * destroyed it mid-handover), when its state shows no session any more.
   */
  tenure?: string;
}

const KEY = "service/redis/leader";
const PAUSE_KEY = `${KEY}/pause`;
const TRACE_KEEP = 400;

export class World {
  readonly o: Required<Omit<WorldOptions, "env" | "trace" | "colocated">> & { env: Record<string, string>; trace: boolean; colocated: boolean };
  readonly sched: Scheduler;
  readonly consul: SimConsul;
  readonly redis: SimRedis;
  readonly procs: SimProcesses;
  readonly trace: TraceLine[] = [];
  readonly violations: Violation[] = [];
  readonly faultLog: string[] = [];
  #sidecars: Proc[] = [];
  #incarnations = new Map<number, number>();
  #writer: SimWriter | undefined;
  /** Highest epoch any sidecar led with, and by which session. */
  #epochs: { epoch: number; session: string }[] = [];
  /** Writes acknowledged by a Redis that later crashed or restarted: allowed to be lost. */
  #crashedAt = new Map<string, number[]>();
  #redisOwners = new Map<number, number>();
  #partitioned = new Set<number>();
  #switchoverCheckedAt = -Infinity;
  /** Armed by the pause-mid-promotion fault: freeze the next member that acquires, this long after, for this long. */
  #pauseOnAcquire: { afterMs: number; forMs: number } | undefined;

  constructor(opts: WorldOptions) {
    this.o = {
      nodes: 3,
      chaosMs: 60_000,
      faults: 8,
      kinds: opts.mode === "exec" ? EXEC_FAULTS : REDIS_FAULTS,
      env: {},
      trace: false,
      ...opts,
      colocated: false,
    };
    this.sched = new Scheduler(opts.seed);
    this.o.colocated = opts.colocated ?? (opts.mode === "redis" && this.sched.rng.chance(1 / 3));
    const names = Array.from({ length: this.o.nodes }, (_, i) => `n${i + 1}`);
    this.consul = new SimConsul(this.sched, { nodes: names });
    this.redis = new SimRedis(this.sched);
    this.procs = new SimProcesses(this.sched);
    this.sched.afterEach = () => this.#check();
    this.procs.onChange = () => this.#checkExec();
  }

  /** Members: one per host, plus the colocated one (on host 1). */
  #nodes(): number[] {
    return Array.from({ length: this.o.nodes + (this.o.colocated ? 1 : 0) }, (_, i) => i + 1);
  }

  /** The host (Consul agent node) member `i` runs on. */
  #host(i: number): number {
    return i <= this.o.nodes ? i : 1;
  }

  /** "" for the first member on a host, "-b" for the colocated one: part of its process names. */
  #suffix(i: number): string {
    return i <= this.o.nodes ? "" : "-b";
  }

  redisAddr(i: number): string {
    return i <= this.o.nodes ? `10.0.0.${i}:6379` : `10.0.0.1:6380`;
  }

  #redisOwner(i: number): string {
    return `n${this.#host(i)}/redis${this.#suffix(i)}#${this.#redisOwners.get(i) ?? 1}`;
  }

  /** Runs the whole scenario: set up, faults, heal, settle. Returns the violations. */
  async run(): Promise<Violation[]> {
    const { sched } = this;
    if (this.o.mode === "redis") {
      for (const i of this.#nodes()) {
        this.#redisOwners.set(i, 1);
        this.redis.addServer(this.redisAddr(i), this.#redisOwner(i), { replicaOf: "127.0.0.1:1" });
      }
    }
    for (const i of this.#nodes()) this.#startSidecar(i);
    if (this.o.mode === "redis") {
      this.#writer = this.redis.writer({
        owner: "client/writer",
        target: () => {
          const p = this.consul.discoveredPrimaries("redis", "primary");
          return p.length === 1 ? `${p[0]!.address}:${p[0]!.port}` : undefined;
        },
        everyMs: 10,
        timeoutMs: 300,
      });
    }
    // Let the group form before the first fault.
    await sched.runUntil(5_000);
    this.#scheduleFaults();
    await sched.runUntil(5_000 + this.o.chaosMs);
    this.#healAll();
    const budget = 60_000;
    const settleBy = sched.now + budget;
    while (sched.now < settleBy && !this.violations.length) {
      await sched.runUntil(sched.now + 1000);
      if (this.#settled()) break;
    }
    if (!this.violations.length && !this.#settled()) this.#violate(`no single primary ${budget / 1000}s after the faults stopped: ${this.#summary()}`);
    this.#writer?.stop();
    await sched.runUntil(sched.now + 500);
    if (!this.violations.length) this.#checkLosses();
    return this.violations;
  }

  // ---------------------------------------------------------------- processes

  #config(i: number, twin = false): Config {
    const env: Record<string, string> = {
      CONSUL_HTTP_ADDR: "http://127.0.0.1:8500",
      CONSUL_LEADER_SERVICE_NAME: this.o.mode === "exec" ? "mailer" : "redis",
      CONSUL_LEADER_KEY: KEY,
      CONSUL_LEADER_REPLICA_LABEL: "replica",
      CONSUL_LEADER_LOG_LEVEL: "info",
      CONSUL_LEADER_LOG_FORMAT: "json",
      ...(this.o.mode === "redis" ? { CONSUL_LEADER_REDIS_ADDR: this.redisAddr(i) } : { CONSUL_LEADER_SERVICE_ID: `mailer-n${i}` }),
      ...this.o.env,
    };
    void twin;
    const r = loadConfig(env, {
      readFile: () => {
        throw new Error("no files in the simulator");
      },
      readDir: () => [],
      hostname: `n${this.#host(i)}`,
      randomId: () => this.sched.rng.hex(16),
    }, this.o.mode === "exec" ? "exec" : "sidecar");
    if (!r.ok) throw new Error(`simulator config is invalid: ${r.problems.join("; ")}`);
    return r.config;
  }

  #startSidecar(i: number, twin = false): Proc {
    const k = (this.#incarnations.get(i) ?? 0) + 1;
    this.#incarnations.set(i, k);
    const host = `n${this.#host(i)}`;
    const owner = `${host}/${twin ? "twin" : "sidecar"}${this.#suffix(i)}#${k}`;
    this.sched.revive(owner);
    const config = this.#config(i, twin);
    const clock = this.sched.clock(owner);
    const log = createLogger({
      level: (process.env.SIM_DEBUG ? "debug" : "info") as "info",
      format: "json",
      clock,
      write: (line) => this.#log(owner, line),
    });
    const p = { node: i, owner, incarnation: k, exited: false, role: "starting", twin, asked: new Set<string>() } as Proc;
    let exec: ExecRunnerType | undefined;
    if (this.o.mode === "exec") {
      exec = new ExecRunner(
        { command: ["send-emails"], killGraceMs: config.exec.killGraceMs, restart: true, env: {} },
        { ...this.procs.execDeps(host, owner, config.exec.killGraceMs), clock, log: log.child({ component: "exec" }) },
      );
      p.exec = exec;
    }
    const sidecar = assembleSidecar(config, log, {
      fetch: this.consul.fetchFor(owner, host),
      redis: this.redis.transportFor(owner),
      clock,
      randomId: () => this.sched.rng.hex(16),
      process: { host, pid: 100 + k },
    }, {
      onRoleChange: (c: RoleChange) => {
        p.role = c.to;
        exec?.onRoleChange(c);
        this.#onRoleChange(p, c);
      },
      ...(exec ? { guarded: exec } : {}),
    });
    p.sidecar = sidecar;
    p.stop = new AbortController();
    p.done = sidecar.run(p.stop.signal).then(
      () => {
        p.exited = true;
      },
      (err: unknown) => {
        p.exited = true;
        p.fatal = err instanceof Error ? err.message : String(err);
      },
    );
    if (exec) {
      void exec.done.then(() => {
        // The command exited by itself and exec stops: release and leave, as `consul-leader exec` does.
        if (!p.exited) p.stop.abort(new Error("command exited"));
      });
    }
    this.#sidecars.push(p);
    this.#trace(owner, `started${twin ? " (a twin)" : ""}`);
    return p;
  }

  #live(): Proc[] {
    return this.#sidecars.filter((p) => !p.exited && !this.sched.isDead(p.owner));
  }

  /** The node's sidecar process: the original, or a twin that outlived it. */
  #sidecarOf(i: number): Proc | undefined {
    const live = this.#live().filter((p) => p.node === i);
    return live.find((p) => !p.twin) ?? live[0];
  }

  #kill(p: Proc): void {
    this.sched.kill(p.owner);
    this.procs.execDied(p.owner);
    p.exited = true;
    this.#trace(p.owner, "killed (kill -9)");
  }

  #onRoleChange(p: Proc, c: RoleChange): void {
    this.#trace(p.owner, `role ${c.from} -> ${c.to}: ${c.reason}`);
    const st = p.sidecar.elector.state();
    p.session = st.session;
    // Paused: nobody takes the lock after the flag was written (the acquire checks it in the same transaction).
    const pause = this.consul.kvGet(PAUSE_KEY);
    if (c.to === "leader" && pause && (c.epoch ?? -1) > pause.CreateIndex) {
      this.#violate(`${p.owner} took the lock (epoch ${c.epoch}) while the group was paused (since index ${pause.CreateIndex})`);
    }
    if (c.from === "leader" && c.to === "candidate" && pause && /switchover|handing the lock over/.test(c.reason)) {
      this.#violate(`${p.owner} handed over (${c.reason}) while the group was paused`);
    }
    if (c.to === "leader") {
      const epoch = c.epoch ?? -1;
      const session = st.session ?? "";
      const earlier = this.#epochs.filter((e) => e.session !== session);
      const max = Math.max(-1, ...earlier.map((e) => e.epoch));
      if (epoch <= max && earlier.length) this.#violate(`${p.owner} leads with epoch ${epoch}, not above an earlier holder's ${max}`);
      this.#epochs.push({ epoch, session });
      p.tenure = session;
    }
    if (c.from === "leader" && c.to === "candidate" && /switchover|handing the lock over/.test(c.reason) && !/maintenance/.test(c.reason)) {
      if (!p.asked.has(p.tenure ?? "")) this.#violate(`${p.owner} handed over (${c.reason}) without a switchover asked of it in this tenure`);
    }
  }

  // ---------------------------------------------------------------- faults

  #scheduleFaults(): void {
    const { sched } = this;
    const rng = sched.rng;
    const n = rng.int(1, this.o.faults);
    for (let f = 0; f < n; f++) {
      const kind = rng.pick(this.o.kinds);
      const at = rng.between(0, this.o.chaosMs - 5000);
      const node = rng.pick(this.#nodes());
      const dur = rng.pick([200, 800, 2000, 4000, 7000, 12_000, 20_000]);
      sched.at(at, "world", () => this.#fault(kind, node, dur));
    }
  }

  /** The node whose sidecar leads now, if any. */
  #leaderNode(): number | undefined {
    return this.#live().find((p) => p.role === "leader")?.node;
  }

  #fault(kind: FaultKind, nodeArg: number, dur: number): void {
    const { sched, consul, redis } = this;
    // Most faults aim at the leader, or at a member in the middle of a takeover, where they hurt.
    const taking = this.#live().find((x) => x.sidecar.elector.state().waiting)?.node;
    const node = taking !== undefined && sched.rng.chance(0.4) ? taking : sched.rng.chance(0.7) ? this.#leaderNode() ?? nodeArg : nodeArg;
    const p = this.#sidecarOf(node);
    const note = (what: string) => {
      this.faultLog.push(`${Math.round(sched.now)}ms ${what}`);
      this.#trace("world", `fault: ${what}`);
    };
    const later = (ms: number, fn: () => void) => sched.at(ms, "world", fn);
    switch (kind) {
      case "sidecar-kill":
        if (!p) return;
        note(`kill -9 the sidecar on n${node}, restart in ${dur}ms`);
        this.#kill(p);
        later(dur, () => this.#restartSidecar(node));
        return;
      case "sidecar-term":
        if (!p) return;
        note(`SIGTERM the sidecar on n${node}, restart in ${dur}ms`);
        p.stop.abort(new Error("SIGTERM"));
        later(dur, () => {
          if (!p.exited) this.#kill(p); // a shutdown that hangs is killed, as a supervisor does
          this.#restartSidecar(node);
        });
        return;
      case "sidecar-freeze":
        if (!p) return;
        if (this.o.mode === "redis" && sched.isFrozen(this.#redisOwner(node))) return; // a whole node frozen: not generated
        if (this.o.mode === "exec" && this.#guardOf(node)?.state === "stopped") return; // both keepers frozen: not generated
        note(`SIGSTOP the sidecar on n${node} for ${dur}ms`);
        sched.freeze(p.owner);
        later(dur, () => sched.thaw(p.owner));
        return;
      case "redis-crash": {
        if (this.o.mode !== "redis") return;
        const addr = this.redisAddr(node);
        const empty = sched.rng.chance(0.5);
        note(`kill -9 Redis on n${node}, restart ${empty ? "empty" : "with its data"} in ${dur}ms`);
        this.#noteCrash(addr);
        redis.crash(addr);
        later(Math.min(dur, 5000), () => {
          this.#noteCrash(addr);
          redis.restart(addr, { empty, bootAsReplicaOfNowhere: true });
        });
        return;
      }
      case "redis-freeze": {
        if (this.o.mode !== "redis") return;
        const owner = this.#redisOwner(node);
        if (p && sched.isFrozen(p.owner)) return; // a whole node frozen: not generated
        note(`SIGSTOP Redis on n${node} for ${dur}ms`);
        sched.freeze(owner);
        later(dur, () => sched.thaw(owner));
        return;
      }
      case "redis-busy":
        if (this.o.mode !== "redis") return;
        note(`Redis on n${node} busy (a slow script) for ${dur}ms`);
        redis.busy(this.redisAddr(node), dur);
        return;
      case "redis-deny":
        if (this.o.mode !== "redis") return;
        note(`Redis on n${node} refuses CONFIG and REPLICAOF (NOPERM) for ${dur}ms`);
        redis.setUser(this.redisAddr(node), "default", { deny: ["config", "replicaof"] });
        later(dur, () => redis.setUser(this.redisAddr(node), "default", {}));
        return;
      case "agent-restart": {
        const keep = sched.rng.chance(0.7);
        const h = `n${this.#host(node)}`;
        note(`the Consul agent on ${h} down for ${Math.min(dur, 7000)}ms (${keep ? "keeps" : "loses"} its state)`);
        consul.agentDown(h);
        later(Math.min(dur, 7000), () => consul.agentUp(h, { keepState: keep }));
        return;
      }
      case "partition": {
        const h = this.#host(node);
        note(`n${h} cut off from the Consul servers for ${dur}ms`);
        consul.partition(`n${h}`);
        this.#partitioned.add(h);
        later(dur, () => {
          consul.heal(`n${h}`);
          this.#partitioned.delete(h);
        });
        return;
      }
      case "server-election":
        note(`Consul server election for ${Math.min(dur, 4000)}ms`);
        consul.serverElection(Math.min(dur, 4000));
        return;
      case "consul-errors":
        note(`10% of Consul server requests answer 500 for ${dur}ms`);
        consul.failRandomly({ rate: 0.1, statuses: [500], applyWritesFirst: 0.5 });
        later(dur, () => consul.failRandomly(undefined));
        return;
      case "destroy-session": {
        const holder = consul.kvGet(KEY)?.Session;
        if (!holder || this.#holderCutOff()) return;
        note(`an operator destroys the holder's session`);
        consul.destroySession(holder);
        return;
      }
      case "delete-key":
        if (this.#holderCutOff()) return;
        note(`an operator deletes the lock key`);
        consul.deleteKey(KEY);
        return;
      case "garbage": {
        const target = sched.rng.pick([`${KEY}/members/bogus`, `${KEY}/switchover`, `${KEY}/members/${this.#instanceOf(node)}`]);
        const text = sched.rng.pick(['{"instance":42}', "not json", '{"leader":' + "1".repeat(20) + "}", JSON.stringify({ instance: "x", offset: "9", eligible: "yes" })]);
        note(`someone writes ${JSON.stringify(text)} to ${target}`);
        consul.putKey(target, text);
        return;
      }
      case "switchover": {
        const leader = this.#live().find((x) => x.role === "leader");
        if (!leader) return;
        const freeze = sched.rng.chance(0.4) && dur >= 7000;
        note(`switchover asked of ${leader.owner}${freeze ? `, which freezes right after for ${dur}ms` : ""}`);
        leader.asked.add(leader.sidecar.elector.state().session ?? "");
        leader.sidecar.elector.requestSwitchover();
        if (freeze) {
          // Its lease lapses before it can act: the request must die with that tenure.
          sched.freeze(leader.owner);
          later(dur, () => sched.thaw(leader.owner));
        }
        return;
      }
      case "switchover-then-loss": {
        // Asked while its Consul writes fail (it backs off, so the request waits), then its session goes.
        const leader = this.#live().find((x) => x.role === "leader");
        if (!leader) return;
        note(`Consul answers 500 to every server request; switchover asked of ${leader.owner}; then an operator destroys its session`);
        consul.failRandomly({ rate: 1, statuses: [500], applyWritesFirst: 0 });
        later(1500, () => {
          leader.asked.add(leader.sidecar.elector.state().session ?? "");
          leader.sidecar.elector.requestSwitchover();
          const holder = consul.kvGet(KEY)?.Session;
          consul.failRandomly(undefined);
          if (holder) consul.destroySession(holder);
        });
        return;
      }
      case "crash-mid-takeover": {
        if (this.o.mode !== "redis") return;
        const leaderNode = this.#leaderNode();
        if (leaderNode === undefined) return;
        const owner = this.#redisOwner(leaderNode);
        if (this.#sidecarOf(leaderNode) && sched.isFrozen(this.#sidecarOf(leaderNode)!.owner)) return;
        // The primary's Redis freezes; once a successor waits for it, that successor crashes and comes
        // back, or is frozen past its session TTL while another member takes over.
        const freeze = sched.rng.chance(0.5);
        note(`SIGSTOP Redis on n${leaderNode} for ${Math.max(dur, 7000)}ms; the member taking over is ${freeze ? "frozen" : "killed and restarted"} mid-takeover`);
        sched.freeze(owner);
        later(Math.max(dur, 7000), () => sched.thaw(owner));
        later(3500, () => {
          const taker = this.#live().find((x) => x.sidecar.elector.state().waiting);
          if (!taker) return;
          if (freeze) {
            const ms = sched.rng.pick([12_000, 20_000]);
            this.#trace("world", `fault: SIGSTOP ${taker.owner} in the middle of its takeover for ${ms}ms`);
            sched.freeze(taker.owner);
            later(ms, () => sched.thaw(taker.owner));
            return;
          }
          this.#trace("world", `fault: kill -9 ${taker.owner} in the middle of its takeover`);
          this.#kill(taker);
          later(sched.rng.pick([200, 800, 2000]), () => this.#restartSidecar(taker.node));
        });
        return;
      }
      case "pause-mid-promotion": {
        // A VM pause between acquiring and REPLICAOF NO ONE, longer than the session TTL: by the
        // time the member runs again another one has taken over, and it must not promote.
        if (this.o.mode !== "redis") return;
        const leaderNode = this.#leaderNode();
        if (leaderNode === undefined) return;
        const addr = this.redisAddr(leaderNode);
        const pause = { afterMs: sched.rng.pick([0, 1, 3, 10, 30]), forMs: sched.rng.pick([17_000, 25_000]) };
        note(`kill -9 Redis on n${leaderNode}; the member that acquires next is frozen ${pause.afterMs}ms later, for ${pause.forMs}ms`);
        this.#pauseOnAcquire = pause;
        later(10_000, () => (this.#pauseOnAcquire = undefined));
        this.#noteCrash(addr);
        redis.crash(addr);
        later(Math.min(dur, 5000), () => {
          this.#noteCrash(addr);
          redis.restart(addr, { empty: false, bootAsReplicaOfNowhere: true });
        });
        return;
      }
      case "pause": {
        if (consul.kvGet(PAUSE_KEY)) return;
        note(`an operator pauses the group for ${dur}ms`);
        consul.putKey(PAUSE_KEY, JSON.stringify({ since: new Date(sched.now).toISOString(), by: "operator", reason: "simulated" }));
        later(dur, () => consul.deleteKey(PAUSE_KEY));
        return;
      }
      case "twin": {
        if (!p) return;
        note(`a second sidecar with the same identity starts on n${node} and runs ${dur}ms`);
        const t = this.#startSidecar(node, true);
        later(dur, () => {
          if (!t.exited) this.#kill(t);
        });
        return;
      }
      case "exec-group-stop":
        if (!p || this.#guardOf(node)?.state === "stopped") return; // both keepers frozen: not generated
        note(`Ctrl-Z / kill -STOP on exec's process group on n${node} for ${dur}ms`);
        sched.freeze(p.owner);
        later(dur, () => sched.thaw(p.owner));
        return;
      case "guard-kill": {
        const g = this.#guardOf(node);
        if (!g) return;
        note(`kill -9 the guard on n${node}`);
        this.procs.signal(g.pid, "SIGKILL");
        return;
      }
      case "guard-stop": {
        const g = this.#guardOf(node);
        if (!g || (p && sched.isFrozen(p.owner))) return; // both keepers frozen: not generated
        note(`SIGSTOP the guard on n${node} for ${dur}ms`);
        this.procs.signal(g.pid, "SIGSTOP");
        later(dur, () => this.procs.signal(g.pid, "SIGCONT"));
        return;
      }
      case "guard-group-stop": {
        const g = this.#guardOf(node);
        if (!g) return;
        note(`kill -STOP on the guard's process group on n${node} for ${dur}ms`);
        this.procs.signalGroup(g.pgid, "SIGSTOP");
        later(dur, () => this.procs.signalGroup(g.pgid, "SIGCONT"));
        return;
      }
    }
  }

  /**
   * Exec mode: the holder's node is cut off from the Consul servers. An
   * operator destroying its session (or deleting the key) then is not
   * generated: the README documents that double fault as open.
   */
  #holderCutOff(): boolean {
    if (this.o.mode !== "exec") return false;
    const n = this.#leaderNode();
    return n !== undefined && this.#partitioned.has(this.#host(n));
  }

  #instanceOf(node: number): string {
    return this.o.mode === "exec" ? `mailer-n${node}` : `redis-n${this.#host(node)}-${this.redisAddr(node).replace(":", "-")}`;
  }

  #guardOf(node: number) {
    return [...this.procs.procs.values()].find((x) => x.kind === "guard" && x.node === `n${this.#host(node)}` && x.state !== "dead");
  }

  #restartSidecar(node: number): void {
    if (this.#sidecarOf(node)) return;
    this.#startSidecar(node);
  }

  #noteCrash(addr: string): void {
    this.#crashedAt.set(addr, [...(this.#crashedAt.get(addr) ?? []), this.sched.now]);
  }

  /** Every fault ends: processes thawed and restarted, Consul healed, Redis back. */
  #healAll(): void {
    const { sched, consul, redis } = this;
    this.#trace("world", "faults stop; healing everything");
    consul.failRandomly(undefined);
    if (consul.kvGet(PAUSE_KEY)) consul.deleteKey(PAUSE_KEY);
    for (let h = 1; h <= this.o.nodes; h++) {
      consul.heal(`n${h}`);
      consul.agentUp(`n${h}`, { keepState: true });
    }
    for (const i of this.#nodes()) {
      if (this.o.mode === "redis") {
        sched.thaw(this.#redisOwner(i));
        redis.setUser(this.redisAddr(i), "default", {});
        if (!redis.server(this.redisAddr(i)).alive) redis.restart(this.redisAddr(i), { bootAsReplicaOfNowhere: true });
      }
    }
    for (const p of this.#live()) sched.thaw(p.owner);
    for (const x of this.procs.procs.values()) if (x.state === "stopped") this.procs.signal(x.pid, "SIGCONT");
    for (const i of this.#nodes()) if (!this.#sidecarOf(i)) this.#startSidecar(i);
  }

  // ---------------------------------------------------------------- invariants

  #violate(what: string): void {
    if (this.violations.length) return;
    this.violations.push({ at: this.sched.now, what });
    this.#trace("world", `VIOLATION: ${what}`);
  }

  #check(): void {
    if (this.o.mode === "redis") {
      const writable = this.redis.states().filter((s) => s.writable);
      if (writable.length > 1) this.#violate(`two Redis take writes at once: ${writable.map((s) => `${s.addr}${s.frozen ? " (frozen)" : ""}`).join(", ")}`);
    }
    this.#checkSwitchovers();
    this.#checkExec();
  }

  /** A switchover asked of a leader dies with that leader's tenure (checked once the lock has moved on). */
  #checkSwitchovers(): void {
    // A request that outlives its tenure stays: a look every 100 ms of simulated time finds it, cheaply.
    if (this.sched.now - this.#switchoverCheckedAt < 100) return;
    this.#switchoverCheckedAt = this.sched.now;
    for (const p of this.#live()) {
      if (this.sched.isFrozen(p.owner)) continue;
      const st = p.sidecar.elector.state();
      if (st.switchoverPending && st.lock && st.lock.holder !== st.session && st.role !== "leader") {
        this.#violate(`${p.owner} keeps a switchover request after losing the lock (role ${st.role})`);
      }
    }
  }

  #checkExec(): void {
    if (this.o.mode !== "exec") return;
    const running = this.procs.runningCommands();
    if (running.length > 1) this.#violate(`two exec commands run at once: ${running.map((c) => `${c.node} (token ${c.token})`).join(", ")}`);
  }

  /** Acknowledged writes missing from the final primary that no crash explains. */
  #checkLosses(): void {
    if (this.o.mode !== "redis") return;
    const primary = this.redis.states().find((s) => s.writable);
    if (!primary) return;
    const lost = this.redis.lostWrites(primary.addr).filter((w) => {
      const acker = w.acked?.server ?? w.origin;
      return !(this.#crashedAt.get(acker) ?? []).some((t) => t >= (w.acked?.at ?? w.at));
    });
    if (lost.length) this.#violate(`${lost.length} acknowledged write(s) lost without a crash to explain them, e.g. ${lost[0]!.key} acknowledged by ${lost[0]!.acked?.server ?? lost[0]!.origin} at ${Math.round(lost[0]!.acked?.at ?? 0)}ms`);
  }

  #settled(): boolean {
    const live = this.#live();
    const leaders = live.filter((p) => p.role === "leader");
    if (leaders.length !== 1 || live.filter((p) => p.role === "follower").length !== live.length - 1) return false;
    if (this.o.mode === "exec") return this.procs.runningCommands().length <= 1;
    const writable = this.redis.states().filter((s) => s.writable && !s.frozen);
    const disc = this.consul.discoveredPrimaries("redis", "primary");
    return writable.length === 1 && disc.length === 1 && writable[0]!.addr === `${disc[0]!.address}:${disc[0]!.port}`;
  }

  #summary(): string {
    const roles = this.#live().map((p) => `${p.owner}=${p.role}`).join(" ");
    const rs = this.o.mode === "redis" ? this.redis.states().map((s) => `${s.addr}:${s.role}${s.writable ? "+w" : ""}${s.fenced ? "+f" : ""}`).join(" ") : "";
    const disc = this.consul.discoveredPrimaries(this.o.mode === "exec" ? "mailer" : "redis", "primary").map((d) => d.id).join(",");
    return `roles ${roles}; redis ${rs}; discovery [${disc}]`;
  }

  // ---------------------------------------------------------------- trace

  #log(owner: string, line: string): void {
    let text = line.trim();
    try {
      const o = JSON.parse(text) as Record<string, unknown>;
      const { time: _t, level, msg, component, ...rest } = o;
      text = `${level} ${component ?? ""} ${msg} ${JSON.stringify(rest)}`;
    } catch {
      // not JSON: keep it
    }
    this.#trace(owner, text);
    const pause = this.#pauseOnAcquire;
    if (pause && text.includes("acquired the lock")) {
      this.#pauseOnAcquire = undefined;
      this.sched.at(pause.afterMs, "world", () => {
        this.#trace("world", `fault: SIGSTOP ${owner} mid-promotion for ${pause.forMs}ms`);
        this.sched.freeze(owner);
        this.sched.at(pause.forMs, "world", () => this.sched.thaw(owner));
      });
    }
  }

  #trace(who: string, text: string): void {
    this.trace.push({ at: this.sched.now, who, text });
    if (!this.o.trace && this.trace.length > TRACE_KEEP * 2) this.trace.splice(0, this.trace.length - TRACE_KEEP);
  }
}
