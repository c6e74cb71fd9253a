/**
 * The guard: a small process between `consul-leader exec` and the command it
 * runs, started as `consul-leader __exec-guard -- CMD...` with an IPC channel
 * to its parent. It owns the command's lifetime so that the command can never
 * outlive the lease, even when the parent cannot act:
 *
 * - the parent sends `{ leaseMs }` after every renew or heartbeat: how long
 *   until its fencing deadline. The guard keeps its own monotonic timer and
 *   stops the command (SIGTERM to its process group, SIGKILL `graceMs` later)
 *   so that it is dead by then. A frozen parent (SIGSTOP) sends nothing more,
 *   so the timer runs out;
 * - the channel closing means the parent died (kill -9): stop at once;
 * - `{ stop: true }` stops the command; `{ signal }` forwards one to it.
 *
 * The command runs in its own process group, so SIGTERM/SIGKILL reach its
 * children too. When it exits, the guard kills what is left of the group,
 * reports `{ exit }` and exits with the same code.
 */

export type ToGuard = { leaseMs: number } | { stop: true } | { signal: NodeJS.Signals };
export type FromGuard = { started: number } | { exit: number; signal: string | null };

export interface GuardOptions {
  command: string[];
  graceMs: number;
  env: Record<string, string | undefined>;
}

/** Runs the guard until the command is gone; returns the exit code to exit with. */
export async function runGuard(o: GuardOptions): Promise<number> {
  const send = (m: FromGuard) => {
    try {
      process.send?.(m);
    } catch {
      // the parent is gone; nothing to tell
    }
  };
  let child: ReturnType<typeof Bun.spawn>;
  try {
    child = Bun.spawn(o.command, { env: o.env, stdio: ["inherit", "inherit", "inherit"], detached: true });
  } catch (err) {
    process.stderr.write(`consul-leader exec: cannot start ${o.command[0]}: ${err instanceof Error ? err.message : String(err)}\n`);
    send({ exit: 127, signal: null });
    return 127;
  }
  const pgid = child.pid;
  send({ started: pgid });

  const group = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pgid, sig);
    } catch {
      // the group is already empty
    }
  };
  let term: ReturnType<typeof setTimeout> | undefined;
  let kill: ReturnType<typeof setTimeout> | undefined;
  let stopping = false;
  /** SIGTERM now (or at `termInMs`), SIGKILL `graceMs` after that. */
  const stopIn = (termInMs: number) => {
    clearTimeout(term);
    clearTimeout(kill);
    term = setTimeout(() => {
      stopping = true;
      group("SIGTERM");
    }, Math.max(0, termInMs));
    kill = setTimeout(() => group("SIGKILL"), Math.max(0, termInMs) + o.graceMs);
  };

  process.on("message", (m: ToGuard) => {
    if ("leaseMs" in m) {
      if (!stopping) stopIn(m.leaseMs - o.graceMs);
    } else if ("stop" in m) {
      if (!stopping) stopIn(0);
    } else if ("signal" in m) {
      group(m.signal);
    }
  });
  process.on("disconnect", () => {
    if (!stopping) stopIn(0);
  });
  // The guard itself ignores terminal signals: the parent decides, through the channel.
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"] as const) process.on(sig, () => {});

  const code = await child.exited;
  clearTimeout(term);
  clearTimeout(kill);
  group("SIGKILL"); // nothing of the group survives its leader
  const signal = child.signalCode ? String(child.signalCode) : null;
  send({ exit: code, signal });
  return signal ? 128 + (signalNumber(signal) ?? 0) : code;
}

function signalNumber(sig: string): number | undefined {
  const n: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGUSR1: 10, SIGUSR2: 12, SIGTERM: 15 };
  return n[sig];
}
