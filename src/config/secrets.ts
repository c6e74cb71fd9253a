/**
 * Which environment variables carry a secret, and how a knob's value is shown
 * where people and other programs can see it (the start-up log, /state, the
 * environment of child processes).
 *
 * Guarantees: a child environment built by `childEnvironment` holds none of
 * `WITHHELD` unless asked to; `shownValue` never returns a secret knob's
 * value, the role-change hook's command line, or the user-info part of a URL.
 * Does not guarantee anything about secrets put into other variables: an
 * operator's own PASSWORD=... reaches children as it is.
 */

import { KNOBS, SECRET_KNOBS } from "./knobs.ts";

/** Variables a child process gets only when CONSUL_LEADER_EXEC_PASS_SECRETS asks (and a hook never). */
export const WITHHELD: ReadonlySet<string> = new Set([
  ...SECRET_KNOBS,
  // A file knob names where the secret is; a child of the same user could read it.
  "CONSUL_HTTP_TOKEN_FILE",
  "CONSUL_LEADER_REDIS_PASSWORD_FILE",
  "CONSUL_LEADER_HTTP_TOKEN_FILE",
  "CONSUL_LEADER_SENTINEL_PASSWORD_FILE",
  // The hook's command line may carry a credential of its own (see HIDDEN_WHOLE).
  "CONSUL_LEADER_ON_ROLE_CHANGE",
  // Other HashiCorp credentials a sidecar's environment often carries under Nomad.
  "CONSUL_HTTP_AUTH",
  "NOMAD_TOKEN",
  "VAULT_TOKEN",
]);

/**
 * The environment for a child process: `env` without the withheld variables,
 * and without user-info in the URLs of this program's own knobs, unless
 * `passSecrets`. The operator's other variables pass as they are.
 */
export function childEnvironment(env: Readonly<Record<string, string | undefined>>, passSecrets: boolean): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    if (passSecrets) out[k] = v;
    else if (!WITHHELD.has(k)) out[k] = KNOB_NAMES.has(k) ? withoutUserinfo(v) : v;
  }
  return out;
}

const KNOB_NAMES: ReadonlySet<string> = new Set(KNOBS.map((k) => k.name));

/** Knobs whose whole value is hidden although not secret by type: a shell command line may carry a credential. */
const HIDDEN_WHOLE: ReadonlySet<string> = new Set(["CONSUL_LEADER_ON_ROLE_CHANGE"]);

/** True when a knob's value is never shown at all (a secret, or a command line). */
export function hiddenWhole(name: string): boolean {
  return SECRET_KNOBS.has(name) || HIDDEN_WHOLE.has(name);
}

/** The value of a knob as logs and /state show it. */
export function shownValue(name: string, value: string): string {
  if (SECRET_KNOBS.has(name)) return "[redacted]";
  if (HIDDEN_WHOLE.has(name)) return `[redacted: a command line of ${value.length} characters]`;
  return withoutUserinfo(value);
}

/** `scheme://user:password@host` becomes `scheme://[redacted]@host`, anywhere in the text. */
export function withoutUserinfo(text: string): string {
  return text.replace(/\b([a-z][a-z0-9+.-]*:\/\/)[^/\s@?#]*@/gi, "$1[redacted]@");
}
