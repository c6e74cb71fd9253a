/**
 * `consul-leader exec [--] CMD [ARGS...]`: runs CMD only while this process
 * holds the lock, through a guard process (exec/guard.ts) that kills it at
 * the fencing deadline even if this process is frozen or killed.
 *
 * The elector drives it: becoming leader starts the command (with
 * CONSUL_LEADER_FENCING_TOKEN = the lock's epoch and CONSUL_LOCK_HELD=true);
 * every renew or heartbeat forwards the time left on the lease to the guard;
 * fencing, losing the lock or shutting down stops it (SIGTERM to its process
 * group, SIGKILL after the grace) before the elector releases the lock.
 *
 * Guarantees: the command is started only by a leader, and is dead before the
 * earliest moment another holder could acquire (the timing rule includes the
 * kill grace; README "Instead of consul lock"). Does not guarantee a command
 * that escapes its process group (setsid, double fork) is stopped.
 */

import type { Clock } from "../clock.ts";
import type { RoleChange } from "../election/elector.ts";
import type { FromGuard, ToGuard } from "./guard.ts";
import type { Logger } from "../log.ts";

export interface ExecOptions {
  command: string[];
  killGraceMs: number;
  /** Start the command again when it exits while we still lead. */
  restart: boolean;
  /** The environment the command inherits (the guard adds nothing). */
  env: Record<string, string | undefined>;
}

export interface GuardProcess {
  send(m: ToGuard): void;
  /** The guard's exit code (the command's, or 128+signal). */
  exited: Promise<number>;
  pid: number;
}

export interface ExecDeps {
  /** Starts a guard running `command` with `env`; messages from it go to `onMessage`. */
  spawnGuard: (command: string[], env: Record<string, string | undefined>, onMessage: (m: FromGuard) => void) => GuardProcess;
  clock: Clock;
  log: Logger;
}

export class ExecRunner {
  readonly #o: ExecOptions;
  readonly #d: ExecDeps;
  #guard: GuardProcess | undefined;
  #leading = false;
  #exited: (code: number) => void = () => {};
  /** Resolves with the command's exit code when it ends on its own (not restarted, not stopped by us). */
  readonly done: Promise<number>;
  #stopping = false;

  constructor(o: ExecOptions, d: ExecDeps) {
    this.#o = o;
    this.#d = d;
    this.done = new Promise((resolve) => (this.#exited = resolve));
  }

  get running(): boolean {
    return this.#guard !== undefined;
  }

  /** For ElectorDeps.onRoleChange: start on becoming leader. */
  onRoleChange(c: RoleChange): void {
    this.#leading = c.to === "leader";
    if (this.#leading && !this.#guard) this.#start(c.epoch);
  }

  /** For ElectorDeps.onLease: how long until the fencing deadline. */
  onLease(msLeft: number): void {
    this.#guard?.send({ leaseMs: Math.max(0, Math.floor(msLeft)) });
  }

  /** For ElectorDeps.onFence: stop the command and wait until it (and its group) is gone. */
  async onFence(): Promise<void> {
    this.#leading = false;
    const g = this.#guard;
    if (!g) return;
    this.#stopping = true;
    g.send({ stop: true });
    await g.exited;
    this.#stopping = false;
  }

  /** Forwards a signal to the command's process group; false when none runs. */
  forward(sig: NodeJS.Signals): boolean {
    if (!this.#guard) return false;
    this.#guard.send({ signal: sig });
    return true;
  }

  #start(epoch: number | undefined): void {
    const { log } = this.#d;
    const env = { ...this.#o.env, CONSUL_LOCK_HELD: "true", CONSUL_LEADER_FENCING_TOKEN: String(epoch ?? 0) };
    const guard = this.#d.spawnGuard(this.#o.command, env, (m) => {
      if ("started" in m) log.info("command started", { pid: m.started, fencingToken: epoch ?? null });
    });
    this.#guard = guard;
    void guard.exited.then((code) => {
      if (this.#guard === guard) this.#guard = undefined;
      log.info("command exited", { code, stoppedByUs: this.#stopping });
      if (this.#stopping) return;
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
