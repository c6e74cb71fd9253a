/**
 * Whether the Redis user this sidecar logs in as may run every command a
 * failover needs, found out at start instead of in the middle of one.
 *
 * Two ways to ask, without changing anything:
 * - `ACL DRYRUN <user> <command>` (Redis 7+), when the user may run it;
 * - otherwise each command is sent with an argument Redis rejects only after
 *   its ACL check (a port that is not a number, a client ID of 0, a value
 *   that is not an integer): NOPERM means not allowed, any other answer means
 *   allowed, and nothing is changed either way.
 *
 * Guarantees: `checkPermissions` changes no Redis setting and kills no
 * client; it reports every missing command, not the first. Does not
 * guarantee the other members' Redis grant the same (a take-over fences the
 * old primary with the same user): every member runs this check on its own.
 */

import { isRedisError, RedisError } from "../errors.ts";
import type { RedisLink } from "./link.ts";

export interface NeededCommand {
  /** As an ACL rule names it: `config|set`. */
  acl: string;
  /** What the sidecar uses it for, for the error message. */
  why: string;
  /** ACL DRYRUN arguments: the call the sidecar really makes. */
  dryRun: string[];
  /**
   * A call Redis refuses after its ACL check, so it changes nothing. Absent
   * when no such call exists (PSYNC from a client starts a sync): then only
   * ACL DRYRUN can tell, and without it the command is not checked.
   */
  harmless?: string[];
}

/** Every command the sidecar sends to a Redis (its own, and an old primary it fences). */
export const NEEDED: readonly NeededCommand[] = [
  { acl: "info", why: "read the replication state", dryRun: ["INFO", "replication"], harmless: ["INFO", "replication"] },
  { acl: "config|get", why: "read whether the fence is up", dryRun: ["CONFIG", "GET", "min-replicas-to-write"], harmless: ["CONFIG", "GET", "min-replicas-to-write"] },
  {
    acl: "config|set",
    why: "fence and unfence (min-replicas-to-write) and set masterauth",
    dryRun: ["CONFIG", "SET", "min-replicas-to-write", "0"],
    harmless: ["CONFIG", "SET", "min-replicas-to-write", "not-a-number"],
  },
  { acl: "client|kill", why: "drop the clients of a fenced primary", dryRun: ["CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"], harmless: ["CLIENT", "KILL", "ID", "0"] },
  { acl: "replicaof", why: "promote, follow and park", dryRun: ["REPLICAOF", "NO", "ONE"], harmless: ["REPLICAOF", "127.0.0.1", "not-a-port"] },
  // The replicas sync as this user too (the sidecar sets masteruser/masterauth to its own credentials).
  { acl: "psync", why: "let replicas sync as this user (masteruser)", dryRun: ["PSYNC", "?", "-1"] },
  { acl: "replconf", why: "let replicas sync as this user (masteruser)", dryRun: ["REPLCONF", "listening-port", "6379"], harmless: ["REPLCONF", "no-such-option", "x"] },
  { acl: "ping", why: "let replicas sync as this user (masteruser)", dryRun: ["PING"], harmless: ["PING"] },
];

/** The ACL rule that grants everything in NEEDED, for messages and the README. */
export const MINIMAL_ACL_RULE = `+${NEEDED.map((n) => n.acl).join(" +")}`;

export interface PermissionReport {
  /** The user Redis says we are (ACL WHOAMI), else the one we logged in as. */
  user: string;
  method: "dryrun" | "harmless-call";
  missing: NeededCommand[];
}

/**
 * Asks Redis over `link`. Rejects with the RedisError of a Redis that does
 * not answer (the caller asks again later); resolves with the missing ones.
 */
export async function checkPermissions(link: RedisLink): Promise<PermissionReport> {
  const user = await reply(link, ["ACL", "WHOAMI"]);
  if (user.ok && typeof user.value === "string") {
    const missing: NeededCommand[] = [];
    let usable = true;
    for (const n of NEEDED) {
      const r = await reply(link, ["ACL", "DRYRUN", user.value, ...n.dryRun]);
      if (!r.ok && (/^NOPERM|unknown subcommand|unknown command/i.test(r.error))) {
        usable = false; // we may not use DRYRUN itself, or this Redis is older than 7.0
        break;
      }
      if (!r.ok) throw new RedisError("REDIS_COMMAND", `ACL DRYRUN ${n.acl}: ${r.error}`);
      // DRYRUN answers OK, or a bulk string saying why the user may not run it.
      if (String(r.value) !== "OK") missing.push(n);
    }
    if (usable) return { user: user.value, method: "dryrun", missing };
  }
  const missing: NeededCommand[] = [];
  for (const n of NEEDED) {
    if (!n.harmless) continue;
    const r = await reply(link, n.harmless);
    if (!r.ok && /^NOPERM/.test(r.error)) missing.push(n);
  }
  // A user that may not even ask who it is: the name it logged in with (no name: Redis's "default").
  const name = user.ok && typeof user.value === "string" ? user.value : link.auth.username ?? "default";
  return { user: name, method: "harmless-call", missing };
}

/** The sentence a failed check stops the sidecar with: what is missing, for what, and the rule that fixes it. */
export function permissionProblem(r: PermissionReport, where: string): string {
  const who = `the Redis user "${r.user}"`;
  const list = r.missing.map((n) => `${n.acl} (to ${n.why})`).join(", ");
  const grant = r.missing.map((n) => `+${n.acl}`).join(" ");
  return `${who} at ${where} may not run ${list}; grant them (ACL SETUSER ${r.user} ${grant}, or the whole rule ${MINIMAL_ACL_RULE}) or set CONSUL_LEADER_REDIS_USERNAME to a user that may`;
}

type Reply = { ok: true; value: unknown } | { ok: false; error: string };

/** One command's answer: an error reply is a value here; silence and a lost connection still reject. */
async function reply(link: RedisLink, args: string[]): Promise<Reply> {
  try {
    return { ok: true, value: await link.cmd(args[0]!, args.slice(1)) };
  } catch (err) {
    if (isRedisError(err) && (err.code === "REDIS_COMMAND" || err.code === "REDIS_AUTH")) {
      // "CONFIG to host:port: NOPERM this user has no permissions..." -> "NOPERM this user..."
      return { ok: false, error: err.message.replace(/^[^:]*:\d+: /, "") };
    }
    throw err;
  }
}
