/**
 * The guard: a small process between `consul-leader exec` and the command it
 * runs, started as `consul-leader __exec-guard -- CMD...` in a session of its
 * own, with an IPC channel to its parent. It is one of the command's two
 * keepers (the exec process is the other, see runner.ts); either one alone
 * stops the command in time, so freezing or killing one of them does not let
 * the command outlive the lease:
 *
 * - the parent sends `{ leaseMs }` after every renew or heartbeat: how long
 *   until its fencing deadline. The guard keeps its own monotonic timer and
 *   stops the command (SIGTERM to its process group, SIGKILL `graceMs` later)
 *   so that it is dead by then. A frozen parent (SIGSTOP, or Ctrl-Z, which
 *   stops the parent's process group but not the guard's session) sends
 *   nothing more, so the timer runs out;
 * - the channel closing means the parent died (kill -9): stop at once;
 * - `{ stop: true }` stops the command; `{ signal }` forwards one to it.
 *
 * The guard leads a process group of its own (its session), and the command
 * runs in it, so SIGTERM/SIGKILL to the group reach the command's children
 * too, and the exec process can kill the group by the guard's pid without
 * waiting to hear the command's. The guard ignores every catchable signal, so
 * SIGTERM to the group stops only the command; SIGKILL ends the guard too.
 * When the command exits, the guard reports `{ exit }` and exits with the same
 * code; the exec process then kills whatever is left of the group.
 *
 * Pure of process globals: the composition root (main.ts) passes the real
 * spawn, kill, clock and channel; the simulator passes simulated ones.
 */

import type { Clock } from "../clock.ts";

export type ToGuard = { leaseMs: number } | { stop: true } | { signal: NodeJS.Signals };
export type FromGuard = { started: number } | { exit: number; signal: string | null };

export interface GuardOptions {
  command: string[];
  graceMs: number;
}

/** The command, started in the guard's process group. */
export interface ChildProcess {
  pid: number;
  /** Exit code and the signal that ended it, if one did. */
  exited: Promise<{ code: number; signal: string | null }>;
}

export interface GuardDeps {
  /** Starts the command in the guard's own process group; throws when it cannot be started. */
  spawn(command: string[]): ChildProcess;
  /** Sends `sig` to the guard's process group (the command and its children; SIGKILL ends the guard too). */
  killGroup(sig: NodeJS.Signals): void;
  clock: Clock;
  /** Tells the parent; a parent that is gone is not an error. */
  send(m: FromGuard): void;
  onMessage(fn: (m: ToGuard) => void): void;
  /** `fn` runs when the channel to the parent closes. */
  onDisconnect(fn: () => void): void;
  /** For a command that cannot be started. */
  stderr(text: string): void;
}

/** Runs the guard until the command is gone; returns the exit code to exit with. */
export async function runGuard(o: GuardOptions, d: GuardDeps): Promise<number> {
  let child: ChildProcess;
  try {
    child = d.spawn(o.command);
  } catch (err) {
    d.stderr(`consul-leader exec: cannot start ${o.command[0]}: ${err instanceof Error ? err.message : String(err)}\n`);
    d.send({ exit: 127, signal: null });
    return 127;
  }
  d.send({ started: child.pid });

  let term: { cancel(): void } | undefined;
  let kill: { cancel(): void } | undefined;
  let stopping = false;
  /** SIGTERM now (or at `termInMs`), SIGKILL `graceMs` after that. */
  const stopIn = (termInMs: number) => {
    term?.cancel();
    kill?.cancel();
    term = d.clock.timer(Math.max(0, termInMs), () => {
      stopping = true;
      d.killGroup("SIGTERM");
    });
    kill = d.clock.timer(Math.max(0, termInMs) + o.graceMs, () => d.killGroup("SIGKILL"));
  };

  d.onMessage((m) => {
    if ("leaseMs" in m) {
      if (!stopping) stopIn(m.leaseMs - o.graceMs);
    } else if ("stop" in m) {
      if (!stopping) stopIn(0);
    } else if ("signal" in m) {
      d.killGroup(m.signal);
    }
  });
  d.onDisconnect(() => {
    if (!stopping) stopIn(0);
  });

  const { code, signal } = await child.exited;
  term?.cancel();
  kill?.cancel();
  // What is left of the group (the command's children) dies with the guard:
  // the exec process kills the group once the guard has exited.
  d.send({ exit: code, signal });
  return signal ? 128 + (signalNumber(signal) ?? 0) : code;
}

function signalNumber(sig: string): number | undefined {
  const n: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGUSR1: 10, SIGUSR2: 12, SIGTERM: 15 };
  return n[sig];
}
