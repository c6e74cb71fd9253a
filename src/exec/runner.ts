/**
 * `consul-leader exec [--] CMD [ARGS...]`: runs CMD only while this process
 * holds the lock.
 *
 * The command has two keepers, and either alone stops it in time:
 * - the guard (guard.ts), a process in a session of its own that is the
 *   command's parent and the leader of its process group. It gets the lease
 *   after every renew and heartbeat and kills the group on its own timer;
 * - this process, which knows the group (the guard's pid) from the start and
 *   runs the same timer, and kills the group at once when the guard dies.
 * So a frozen or killed exec process (Ctrl-Z, kill -STOP -PGID, kill -9), a
 * frozen or killed guard, or a frozen guard group (which freezes the command
 * too) never leaves the command running past the fencing deadline. Left open:
 * two SIGSTOPs aimed at both keepers' own PIDs; and a command that escapes
 * its process group (setsid, double fork) is not followed.
 *
 * The elector drives it: becoming leader starts the command (with
 * CONSUL_LEADER_FENCING_TOKEN = the lock's epoch and CONSUL_LOCK_HELD=true);
 * `lease` moves both timers; `stop` (fencing, losing the lock, shutting down)
 * kills the group and resolves once nothing of it is left, before the elector
 * releases the lock.
 */

import type { Clock } from "../clock.ts";
import type { GuardedWork, RoleChange } from "../election/types.ts";
import type { Logger } from "../log.ts";
import type { FromGuard, ToGuard } from "./guard.ts";

export interface ExecOptions {
  command: string[];
  killGraceMs: number;
  /** Start the command again when it exits while we still lead. */
  restart: boolean;
  /** The environment the command inherits (plus the two variables above). */
  env: Record<string, string | undefined>;
}

/** The guard as this process sees it. Its pid is also the command's process group. */
export interface GuardProcess {
  send(m: ToGuard): void;
  /** The guard's exit code (the command's, or 128+signal). */
  exited: Promise<number>;
  pid: number;
}

export interface ExecDeps {
  /** Starts a guard (in a session of its own) running `command` with `env`; messages from it go to `onMessage`. */
  spawnGuard: (command: string[], env: Record<string, string | undefined>, onMessage: (m: FromGuard) => void) => GuardProcess;
  /** Sends `sig` to every process of group `pgid`; an empty group is not an error. */
  killGroup: (pgid: number, sig: NodeJS.Signals) => void;
  /** True while any process of group `pgid` exists. */
  groupAlive: (pgid: number) => boolean;
  clock: Clock;
  log: Logger;
}

/** How often `stop` looks whether the group is gone. */
export const GROUP_POLL_MS = 10;

export class ExecRunner implements GuardedWork {
  readonly #o: ExecOptions;
  readonly #d: ExecDeps;
  #guard: GuardProcess | undefined;
  #leading = false;
  #exited: (code: number) => void = () => {};
  /** Resolves with the command's exit code when it ends on its own (not restarted, not stopped by us). */
  readonly done: Promise<number>;
  #stopping = false;
  #startedOnce = false;
  #term: { cancel(): void } | undefined;
  #kill: { cancel(): void } | undefined;
  /** Monotonic time the lease is proven until, as last told by the elector. */
  #leaseUntil = -Infinity;

  constructor(o: ExecOptions, d: ExecDeps) {
    this.#o = o;
    this.#d = d;
    this.done = new Promise((resolve) => (this.#exited = resolve));
  }

  get running(): boolean {
    return this.#guard !== undefined;
  }

  /** The command has been started at least once (exec --try gives up only before that). */
  get started(): boolean {
    return this.#startedOnce;
  }

  /** For ElectorDeps.onRoleChange: start on becoming leader. */
  onRoleChange(c: RoleChange): void {
    this.#leading = c.to === "leader";
    if (this.#leading && !this.#guard) this.#start(c.epoch);
  }

  /** GuardedWork: the lease is proven for `msLeft`; both keepers re-arm. */
  lease(msLeft: number): void {
    this.#leaseUntil = this.#d.clock.monotonic() + msLeft;
    const g = this.#guard;
    if (!g) return;
    const ms = Math.max(0, Math.floor(msLeft));
    g.send({ leaseMs: ms });
    if (!this.#stopping) this.#stopIn(g.pid, ms - this.#o.killGraceMs);
  }

  /** GuardedWork: kill the command's group and resolve once nothing of it is left. */
  async stop(): Promise<void> {
    this.#leading = false;
    this.#leaseUntil = -Infinity;
    const g = this.#guard;
    if (!g) return;
    this.#stopping = true;
    g.send({ stop: true });
    this.#stopIn(g.pid, 0);
    // Not `await g.exited` alone: a frozen guard never exits, but its group dies.
    while (this.#d.groupAlive(g.pid)) await this.#d.clock.sleep(GROUP_POLL_MS);
    this.#cancelTimers();
    this.#stopping = false;
  }

  /** Forwards a signal to the command's process group; false when none runs. */
  forward(sig: NodeJS.Signals): boolean {
    const g = this.#guard;
    if (!g) return false;
    this.#d.killGroup(g.pid, sig);
    return true;
  }

  /** SIGTERM to the group in `termInMs`, SIGKILL a grace later: this process's own copy of the guard's timer. */
  #stopIn(pgid: number, termInMs: number): void {
    this.#cancelTimers();
    const { clock, killGroup } = this.#d;
    this.#term = clock.timer(Math.max(0, termInMs), () => {
      // The lease ran out before anyone told us to stop: this is us stopping it, not a crash.
      this.#stopping = true;
      this.#d.log.warn("the lease runs out: stopping the command", { pgid });
      killGroup(pgid, "SIGTERM");
    });
    this.#kill = clock.timer(Math.max(0, termInMs) + this.#o.killGraceMs, () => killGroup(pgid, "SIGKILL"));
  }

  #cancelTimers(): void {
    this.#term?.cancel();
    this.#kill?.cancel();
    this.#term = this.#kill = undefined;
  }

  #start(epoch: number | undefined): void {
    const { log, clock } = this.#d;
    // Only with a lease proven for longer than the kill grace: a restart timer
    // that fires after this process was frozen must not start a command the
    // lease no longer covers (the elector fences and stops us right after).
    const leftMs = this.#leaseUntil - clock.monotonic();
    if (leftMs <= this.#o.killGraceMs) {
      log.warn("not starting the command: the lease is not proven long enough", { leaseLeftMs: Math.round(leftMs), killGraceMs: this.#o.killGraceMs });
      return;
    }
    const env = { ...this.#o.env, CONSUL_LOCK_HELD: "true", CONSUL_LEADER_FENCING_TOKEN: String(epoch ?? 0) };
    const guard = this.#d.spawnGuard(this.#o.command, env, (m) => {
      if ("started" in m) log.info("command started", { pid: m.started, fencingToken: epoch ?? null });
    });
    this.#guard = guard;
    this.#startedOnce = true;
    // Both keepers get the deadline from the first moment.
    guard.send({ leaseMs: Math.floor(leftMs) });
    this.#stopIn(guard.pid, leftMs - this.#o.killGraceMs);
    void guard.exited.then((code) => {
      // Whatever ended the guard (the command's exit, or kill -9), nothing of its group may outlive it.
      this.#d.killGroup(guard.pid, "SIGKILL");
      if (this.#guard === guard) {
        this.#guard = undefined;
        this.#cancelTimers();
      }
      const byUs = this.#stopping;
      this.#stopping = false;
      log.info("command exited", { code, stoppedByUs: byUs });
      if (byUs) return;
      if (this.#o.restart && this.#leading) {
        log.info("restarting the command while leadership lasts", { afterMs: 1000 });
        void this.#d.clock.sleep(1000).then(() => {
          if (this.#leading && !this.#guard) this.#start(epoch);
        });
        return;
      }
      this.#exited(code);
    });
  }
}
