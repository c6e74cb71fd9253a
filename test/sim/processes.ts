/**
 * Simulated processes for `consul-leader exec`: the guard, the command it
 * runs and the signals between them, on simulated time.
 *
 * The production ExecRunner and runGuard run unchanged on top of this: the
 * runner gets `spawnGuard`, `killGroup` and `groupAlive` from here, the guard
 * gets its spawn, kill, clock and channel. What is modelled:
 * - process groups: the guard leads its own (it runs in a session of its
 *   own), the command runs in it, exec's process is elsewhere;
 * - SIGTERM: the guard ignores it; the command exits after a drawn delay, or
 *   ignores it (a stubborn command) and waits for SIGKILL; SIGKILL ends any
 *   process at once, stopped or not; SIGSTOP/SIGCONT freeze and thaw it;
 * - the IPC channel: messages take a drawn latency; the guard sees the
 *   channel close when the exec process dies;
 * - Bun's no-orphans flag on the guard (on unless `noOrphans` is false): a
 *   guard whose parent died exits and kills its descendants, and a command
 *   whose guard died gets SIGKILL (the parent-death signal).
 * Not modelled: grandchildren, commands that leave their group.
 */

import type { FromGuard, ToGuard } from "../../src/exec/guard.ts";
import { runGuard } from "../../src/exec/guard.ts";
import type { ExecDeps, GuardProcess } from "../../src/exec/runner.ts";
import type { Scheduler } from "./scheduler.ts";

export type ProcState = "running" | "stopped" | "dead";

export interface SimProc {
  pid: number;
  pgid: number;
  /** The scheduler owner its events run as. */
  owner: string;
  kind: "guard" | "command";
  state: ProcState;
  /** For commands: the fencing token it was started with, and which node ran it. */
  token?: number;
  node: string;
  startedAt: number;
  diedAt?: number;
  onSignal: (sig: NodeJS.Signals) => void;
}

export interface ProcessOptions {
  /** Bun's no-orphans behaviour on the guard (production sets it). */
  noOrphans: boolean;
  /** Chance that a command ignores SIGTERM and has to be SIGKILLed. */
  stubbornRate: number;
  /** Chance per simulated second that a running command exits by itself. */
  exitRate: number;
}

export const DEFAULT_PROCESS_OPTIONS: ProcessOptions = { noOrphans: true, stubbornRate: 0.2, exitRate: 0.01 };

export class SimProcesses {
  readonly #sched: Scheduler;
  readonly #o: ProcessOptions;
  #nextPid = 1000;
  readonly procs = new Map<number, SimProc>();
  /** Every command ever started, for the invariant checker. */
  readonly commands: SimProc[] = [];
  /** Called on every state change of a command (after it happened). */
  onChange: (() => void) | undefined;

  constructor(sched: Scheduler, o: Partial<ProcessOptions> = {}) {
    this.#sched = sched;
    this.#o = { ...DEFAULT_PROCESS_OPTIONS, ...o };
  }

  /** Commands that are executing right now: alive, not stopped, not on a frozen node. */
  runningCommands(): SimProc[] {
    return this.commands.filter((p) => p.state === "running" && !this.#sched.isFrozen(p.owner));
  }

  /**
   * What the exec process on `node` (scheduler owner `execOwner`) uses to
   * start and signal guards. `graceMs` is the guard's kill grace.
   */
  execDeps(node: string, execOwner: string, graceMs: number): Pick<ExecDeps, "spawnGuard" | "killGroup" | "groupAlive"> {
    return {
      spawnGuard: (command, env, onMessage) => this.#spawnGuard(node, execOwner, command, env, graceMs, onMessage),
      killGroup: (pgid, sig) => this.#killGroup(pgid, sig),
      groupAlive: (pgid) => [...this.procs.values()].some((p) => p.pgid === pgid && p.state !== "dead"),
    };
  }

  /** The exec process on `execOwner` died: guards it started see their channel close. */
  execDied(execOwner: string): void {
    for (const fn of this.#onParentDeath.get(execOwner) ?? []) fn();
    this.#onParentDeath.delete(execOwner);
  }

  /** A signal sent by a fault (an operator, a terminal) to one process. */
  signal(pid: number, sig: NodeJS.Signals): void {
    this.procs.get(pid)?.onSignal(sig);
  }

  /** A signal to a process group. */
  signalGroup(pgid: number, sig: NodeJS.Signals): void {
    this.#killGroup(pgid, sig);
  }

  readonly #onParentDeath = new Map<string, (() => void)[]>();

  #spawnGuard(
    node: string,
    execOwner: string,
    command: string[],
    env: Record<string, string | undefined>,
    graceMs: number,
    onMessage: (m: FromGuard) => void,
  ): GuardProcess {
    const sched = this.#sched;
    const latency = () => sched.rng.between(0.05, 1);
    const pid = this.#nextPid++;
    const owner = `${node}/guard#${pid}`;
    const toGuard: ((m: ToGuard) => void)[] = [];
    const disconnect: (() => void)[] = [];
    let exitResolve!: (code: number) => void;
    const exited = new Promise<number>((r) => (exitResolve = r));
    const killCommands = () => {
      for (const p of this.procs.values()) if (p.kind === "command" && p.pgid === pid) p.onSignal("SIGKILL");
    };
    const die = (code: number) => {
      if (guard.state === "dead") return;
      guard.state = "dead";
      guard.diedAt = sched.now;
      sched.thaw(owner);
      sched.kill(owner);
      // The command's parent died: the parent-death signal.
      if (this.#o.noOrphans) killCommands();
      sched.at(latency(), execOwner, () => exitResolve(code));
    };
    const guard: SimProc = {
      pid,
      pgid: pid,
      owner,
      kind: "guard",
      state: "running",
      node,
      startedAt: sched.now,
      onSignal: (sig) => {
        if (guard.state === "dead") return;
        if (sig === "SIGKILL") return die(137);
        if (sig === "SIGSTOP" || sig === "SIGTSTP") {
          guard.state = "stopped";
          sched.freeze(owner);
        } else if (sig === "SIGCONT") {
          guard.state = "running";
          sched.thaw(owner);
        }
        // Every other signal is ignored: the guard installs handlers for them.
      },
    };
    this.procs.set(pid, guard);
    const parentGone = () => {
      if (guard.state === "dead") return;
      if (this.#o.noOrphans) {
        // Bun exits the guard and kills its descendants, stopped or not.
        killCommands();
        die(0);
        return;
      }
      sched.at(latency(), owner, () => disconnect.forEach((fn) => fn()));
    };
    this.#onParentDeath.set(execOwner, [...(this.#onParentDeath.get(execOwner) ?? []), parentGone]);
    const token = Number(env["CONSUL_LEADER_FENCING_TOKEN"] ?? 0);

    void runGuard({ command, graceMs }, {
      spawn: () => this.#spawnCommand(node, pid, token),
      killGroup: (sig) => this.#killGroup(pid, sig),
      clock: sched.clock(owner),
      send: (m) => {
        if (guard.state !== "dead") sched.at(latency(), execOwner, () => onMessage(m));
      },
      onMessage: (fn) => toGuard.push(fn),
      onDisconnect: (fn) => disconnect.push(fn),
      stderr: () => {},
    }).then((code) => die(code)); // the guard returned: its process exits
    return {
      pid,
      exited,
      send: (m) => {
        if (guard.state !== "dead") sched.at(latency(), owner, () => toGuard.forEach((fn) => fn(m)));
      },
    };
  }

  #spawnCommand(node: string, pgid: number, token: number): { pid: number; exited: Promise<{ code: number; signal: string | null }> } {
    const sched = this.#sched;
    const pid = this.#nextPid++;
    const owner = `${node}/command#${pid}`;
    let resolve!: (v: { code: number; signal: string | null }) => void;
    const exited = new Promise<{ code: number; signal: string | null }>((r) => (resolve = r));
    const stubborn = sched.rng.chance(this.#o.stubbornRate);
    const guardOwner = `${node}/guard#${pgid}`;
    const cmd: SimProc = {
      pid,
      pgid,
      owner,
      kind: "command",
      state: "running",
      token,
      node,
      startedAt: sched.now,
      onSignal: (sig) => {
        if (cmd.state === "dead") return;
        if (sig === "SIGKILL") return end(137, "SIGKILL");
        if (sig === "SIGSTOP" || sig === "SIGTSTP") {
          cmd.state = "stopped";
          sched.freeze(owner);
          this.onChange?.();
          return;
        }
        if (sig === "SIGCONT") {
          cmd.state = "running";
          sched.thaw(owner);
          this.onChange?.();
          return;
        }
        if (sig === "SIGTERM" || sig === "SIGINT" || sig === "SIGHUP" || sig === "SIGQUIT") {
          if (stubborn) return;
          // Exits after cleaning up; a stopped command does so once continued (its events are held).
          sched.at(sched.rng.between(1, 50), owner, () => end(143, "SIGTERM"));
        }
      },
    };
    const end = (code: number, signal: string | null) => {
      if (cmd.state === "dead") return;
      cmd.state = "dead";
      cmd.diedAt = sched.now;
      sched.thaw(owner);
      sched.kill(owner);
      this.onChange?.();
      // The guard (its parent) learns through waitpid, as its own event.
      sched.at(0, guardOwner, () => resolve({ code, signal }));
    };
    this.procs.set(pid, cmd);
    this.commands.push(cmd);
    this.onChange?.();
    // Commands sometimes finish by themselves.
    const tick = () => {
      if (cmd.state !== "running") return;
      if (sched.rng.chance(this.#o.exitRate)) return end(0, null);
      sched.at(1000, owner, tick);
    };
    sched.at(1000, owner, tick);
    return { pid, exited };
  }

  #killGroup(pgid: number, sig: NodeJS.Signals): void {
    for (const p of [...this.procs.values()]) if (p.pgid === pgid) p.onSignal(sig);
  }
}
