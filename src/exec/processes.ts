/**
 * The real processes behind `consul-leader exec`: starting the guard in a
 * session of its own, starting the command in the guard's process group, and
 * signalling a process group. The simulator replaces all of this.
 *
 * Both the guard and the command are started with Bun's "no orphans"
 * behaviour on the guard (BUN_FEATURE_FLAG_NO_ORPHANS): a guard whose parent
 * dies exits and kills its descendants, and a command whose guard is killed
 * gets SIGKILL from the kernel (parent-death signal), so even a kill -9 of
 * both keepers at once leaves no command behind. The variable is removed
 * from the command's own environment.
 */

import { existsSync } from "node:fs";
import type { ChildProcess, FromGuard, ToGuard } from "./guard.ts";
import type { GuardProcess } from "./runner.ts";

/** The hidden subcommand exec runs its command under (guard.ts). */
export const GUARD_COMMAND = "__exec-guard";

const NO_ORPHANS = "BUN_FEATURE_FLAG_NO_ORPHANS";

/** Starts this same program as the guard of `command`, in a new session, with an IPC channel. */
export function spawnGuard(command: string[], env: Record<string, string | undefined>, graceMs: number, onMessage: (m: FromGuard) => void): GuardProcess {
  // Compiled, Bun.main is inside the binary's virtual filesystem; from source it is this file.
  // /proc/self/exe still runs this very binary after a package upgrade replaced the file on disk.
  const exe = existsSync("/proc/self/exe") ? "/proc/self/exe" : process.execPath;
  const self = Bun.main.startsWith("/$bunfs/") ? [exe] : [exe, Bun.main];
  const child = Bun.spawn([...self, GUARD_COMMAND, "--grace", String(graceMs), "--", ...command], {
    env: { ...env, [NO_ORPHANS]: "1" },
    stdio: ["inherit", "inherit", "inherit"],
    // setsid: Ctrl-Z or a signal to exec's process group does not reach the guard.
    detached: true,
    // ps shows the program's own path, not /proc/self/exe.
    argv0: process.execPath,
    ipc: (m: FromGuard) => onMessage(m),
  });
  return {
    pid: child.pid,
    exited: child.exited.then(() => child.exitCode ?? 128 + (child.signalCode ? 9 : 0)),
    send: (m: ToGuard) => {
      try {
        child.send(m);
      } catch {
        // the guard is gone; its exit is reported through `exited`
      }
    },
  };
}

/** The guard's command, in the guard's process group, without the no-orphans flag. */
export function spawnCommand(command: string[], env: Record<string, string | undefined>): ChildProcess {
  const { [NO_ORPHANS]: _, ...childEnv } = env;
  const child = Bun.spawn(command, { env: childEnv, stdio: ["inherit", "inherit", "inherit"] });
  return {
    pid: child.pid,
    exited: child.exited.then((code) => ({ code, signal: child.signalCode ? String(child.signalCode) : null })),
  };
}

/** kill(-pgid, sig); an empty group is not an error. */
export function killGroup(pgid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(-pgid, sig);
  } catch {
    // the group is already empty
  }
}

/** True while any process of group `pgid` exists (kill(-pgid, 0)). */
export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch (err) {
    return (err as { code?: unknown })?.code === "EPERM";
  }
}
