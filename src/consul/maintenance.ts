/**
 * Follows `consul maint` for this sidecar: node maintenance
 * (`_node_maintenance`) or maintenance of the service it tags
 * (`_service_maintenance:<id>`) puts the elector in maintenance, so a leader
 * hands over and a follower stops competing; leaving maintenance rejoins.
 *
 * Watches the node's checks in the catalog with a blocking query (the
 * agent's own checks endpoint cannot block): the agent syncs a maintenance
 * check to the servers the moment it is set, and the query returns then, so
 * an idle sidecar costs one request per MAINTENANCE_WATCH_WAIT_MS. While the
 * catalog cannot be read (the servers out of reach, the node not synced yet,
 * an ACL without node:read), it asks the agent directly every
 * MAINTENANCE_POLL_MS instead, as it always did.
 *
 * Guarantees: reports a change as soon as the catalog has it, or within one
 * poll while it falls back. Does not guarantee anything while neither the
 * catalog nor the agent answers (the state stays as last seen).
 */

import type { Clock } from "../clock.ts";
import type { Consul } from "./client.ts";
import type { Logger } from "../log.ts";

/** Server-side wait of the blocking query: changes return at once; this only bounds an idle sidecar's requests. */
export const MAINTENANCE_WATCH_WAIT_MS = 300_000;
/** While the catalog cannot be read: how often the agent is asked; a maintenance window starts within this. */
export const MAINTENANCE_POLL_MS = 2000;

export async function watchMaintenance(
  serviceId: () => string | undefined,
  node: () => Promise<string | undefined>,
  onChange: (inMaintenance: boolean, why: string) => void,
  deps: { consul: Consul; clock: Clock; log: Logger },
  signal: AbortSignal,
): Promise<void> {
  const { consul, clock, log } = deps;
  let last: boolean | undefined;
  let index = 0;
  while (!signal.aborted) {
    const id = serviceId();
    // The service's ID is known once it is set up; until then nothing competes anyway.
    if (!id) {
      await clock.sleep(200, signal).catch(() => {});
      continue;
    }
    const filter = `CheckID == "_node_maintenance" or CheckID == "_service_maintenance:${id}"`;
    let checks: { CheckID: string; Status: string; Notes?: string }[];
    try {
      const name = await node();
      if (!name) throw new Error("this node is not in the catalog yet");
      const r = await consul.healthNode(name, filter, { ...(index > 0 ? { index, waitMs: MAINTENANCE_WATCH_WAIT_MS } : {}), signal });
      index = r.index < index ? 0 : Math.max(1, r.index);
      checks = r.checks;
    } catch (err) {
      if (signal.aborted) return;
      index = 0;
      log.debug("cannot watch the catalog for maintenance; asking the agent", { err });
      try {
        checks = Object.values(await consul.agentChecks(filter));
      } catch (e) {
        log.debug("could not read maintenance checks", { err: e });
        await clock.sleep(MAINTENANCE_POLL_MS, signal).catch(() => {});
        continue;
      }
      report(checks);
      await clock.sleep(MAINTENANCE_POLL_MS, signal).catch(() => {});
      continue;
    }
    report(checks);
  }

  function report(checks: { CheckID: string; Status: string; Notes?: string }[]): void {
    const on = checks.filter((c) => c.Status === "critical");
    const now = on.length > 0;
    if (now === last) return;
    const why = now ? on.map((c) => `${c.CheckID}${c.Notes ? ` (${c.Notes})` : ""}`).join(", ") : "maintenance ended";
    if (last !== undefined || now) log.info(now ? "maintenance on" : "maintenance off", { why });
    onChange(now, why);
    last = now;
  }
}
