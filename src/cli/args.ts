/**
 * The command line's flags, parsed: pure functions main.ts calls, so that a
 * typo is a usage error (exit 2) before any configuration is read.
 *
 * Owns parsing only; which flags each command takes is main.ts's table.
 */

import { parseDuration } from "../config/duration.ts";

/** `--name value` or `--name=value` pairs (or bare `switches`), only the allowed names; a string is the problem. */
export function parseFlags(args: readonly string[], allowed: readonly string[], switches: readonly string[] = []): Record<string, string> | string {
  const out: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    const [name, inline] = a.includes("=") ? [a.slice(0, a.indexOf("=")), a.slice(a.indexOf("=") + 1)] : [a, undefined];
    if (!allowed.includes(name)) return `unknown flag: ${name}`;
    if (switches.includes(name)) {
      out[name] = "true";
      continue;
    }
    const value = inline ?? args[++i];
    if (value === undefined) return `${name} needs a value`;
    out[name] = value;
  }
  return out;
}

/**
 * `exec [--try DUR | --timeout DUR] [--] CMD [ARGS...]`: exec's own flags
 * come before the command; everything from `--` or from the first word that
 * is not one of them belongs to the command. `--try` and `--timeout` are the
 * same (consul lock's -timeout, and its older name -try): give up, without
 * running CMD, when the lock is not held within DUR.
 */
export function parseExecArgs(args: readonly string[]): { command: string[]; tryMs?: number } | string {
  let tryMs: number | undefined;
  let i = 0;
  for (; i < args.length; i++) {
    const a = args[i]!;
    if (a === "--") {
      i++;
      break;
    }
    const m = /^(--try|--timeout)(?:=(.*))?$/.exec(a);
    if (!m) break;
    const text = m[2] ?? args[++i];
    if (text === undefined) return `${m[1]} needs a duration, e.g. ${m[1]} 10s`;
    const ms = parseDuration(text);
    if (ms === undefined || ms <= 0) return `${m[1]} ${text}: not a duration; write e.g. 10s, 500ms or 1m`;
    tryMs = ms;
  }
  const command = args.slice(i);
  if (command.length === 0) return "exec needs a command: consul-leader exec [--try DUR] [--] CMD [ARGS...]";
  return { command, ...(tryMs !== undefined ? { tryMs } : {}) };
}
