/**
 * Names in the environment that look like knobs but are not: a misspelled
 * knob (CONSUL_LEADR_TTL, CONSUL_LEADER_LOGLEVEL) is otherwise silently
 * ignored and its default used. Pure: the names come in, one warning per
 * suspicious name comes out, naming the closest real knob.
 *
 * Owns the spelling check only; config.ts decides where the warnings go.
 */

import { KNOBS } from "./knobs.ts";

/**
 * CONSUL_LEADER_* names that are not knobs but are ours all the same:
 * what role-change hooks and exec's command receive (a hook that runs
 * `consul-leader status` passes them back in), and what the scripts and
 * tests read. Never warned about.
 */
export const NOT_KNOBS: ReadonlySet<string> = new Set([
  // Given to role-change hooks (hooks.ts) and exec's command (exec/runner.ts).
  "CONSUL_LEADER_ROLE",
  "CONSUL_LEADER_PREVIOUS_ROLE",
  "CONSUL_LEADER_REASON",
  "CONSUL_LEADER_LEADER_ADDR",
  "CONSUL_LEADER_LEADER_INSTANCE",
  "CONSUL_LEADER_EPOCH",
  "CONSUL_LEADER_INSTANCE",
  "CONSUL_LEADER_SERVICE",
  "CONSUL_LEADER_FENCING_TOKEN",
  // Read by scripts/ (the build cache) and test/ (the binary under test).
  "CONSUL_LEADER_CACHE",
  "CONSUL_LEADER_BIN",
]);

/**
 * The Consul CLI's own variables that are not knobs of ours: never a typo
 * of one, whatever their spelling distance.
 */
const CONSUL_CLI_VARIABLES: ReadonlySet<string> = new Set([
  "CONSUL_HTTP_AUTH",
  "CONSUL_GRPC_ADDR",
  "CONSUL_GRPC_CACERT",
  "CONSUL_GRPC_CAPATH",
  "CONSUL_NAMESPACE",
  "CONSUL_PARTITION",
  "CONSUL_DATACENTER",
  "CONSUL_LICENSE",
  "CONSUL_LICENSE_PATH",
  "CONSUL_FORCE_COLOR",
]);

/** A name outside CONSUL_LEADER_* counts as a typo of a knob at most this many edits away. */
const TYPO_DISTANCE = 2;
/** A CONSUL_LEADER_* name further than this from every knob gets no suggestion, only the warning. */
const SUGGEST_DISTANCE = 6;

/** Levenshtein distance: insertions, deletions and substitutions, each costing 1. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length]!;
}

/** The knob whose name is closest to `name`, and how far; ties go to the first in the table. */
export function closestKnob(name: string): { knob: string; distance: number } {
  let best = { knob: KNOBS[0]!.name, distance: Infinity };
  for (const k of KNOBS) {
    const d = editDistance(name, k.name);
    if (d < best.distance) best = { knob: k.name, distance: d };
  }
  return best;
}

/**
 * One warning for every name in `names` that is not a knob but looks like
 * one: every unknown CONSUL_LEADER_* name, and any other CONSUL_* name within
 * two edits of a knob (CONSUL_LEADR_TTL), in name order. `where` says where
 * a name came from ("the environment", ".env"), for the message.
 */
export function unknownKnobWarnings(names: Iterable<string>, where: string | ((name: string) => string)): string[] {
  const from = typeof where === "string" ? () => where : where;
  const known = new Set(KNOBS.map((k) => k.name));
  const out: string[] = [];
  for (const name of [...new Set(names)].sort()) {
    if (known.has(name) || NOT_KNOBS.has(name) || CONSUL_CLI_VARIABLES.has(name) || !name.startsWith("CONSUL_")) continue;
    const { knob, distance } = closestKnob(name);
    const ours = name.startsWith("CONSUL_LEADER_");
    if (!ours && distance > TYPO_DISTANCE) continue;
    const hint = distance <= SUGGEST_DISTANCE ? `; did you mean ${knob}?` : "; consul-leader --help lists every knob";
    out.push(`${name} (in ${from(name)}) is not a knob and is ignored${hint}`);
  }
  return out;
}
