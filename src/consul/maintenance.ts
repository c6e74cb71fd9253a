/**
 * Follows `consul maint` for this sidecar: node maintenance
 * (`_node_maintenance`) or maintenance of the service it tags
 * (`_service_maintenance:<id>`) puts the elector in maintenance, so a leader
 * hands over and a follower stops competing; leaving maintenance rejoins.
 *
 * Polls the local agent (the checks endpoint has no blocking query); agent
 * reads are local and cheap. Guarantees: reports a change within one poll.
 * Does not guarantee anything while the agent does not answer (the state
 * stays as last seen).
 */

import type { Clock } from "../clock.ts";
import type { Consul } from "./client.ts";
import type { Logger } from "../log.ts";

/** How often the agent is asked; a maintenance window starts within this. */
export const MAINTENANCE_POLL_MS = 2000;

export async function watchMaintenance(
  serviceId: () => string | undefined,
  onChange: (inMaintenance: boolean, why: string) => void,
  deps: { consul: Consul; clock: Clock; log: Logger },
  signal: AbortSignal,
): Promise<void> {
  const { consul, clock, log } = deps;
  let last: boolean | undefined;
  while (!signal.aborted) {
    const id = serviceId();
    try {
      const filter = `CheckID == "_node_maintenance"${id ? ` or CheckID == "_service_maintenance:${id}"` : ""}`;
      const checks = Object.values(await consul.agentChecks(filter)).filter((c) => c.Status === "critical");
      const now = checks.length > 0;
      if (now !== last) {
        const why = now ? checks.map((c) => `${c.CheckID}${c.Notes ? ` (${c.Notes})` : ""}`).join(", ") : "maintenance ended";
        if (last !== undefined || now) log.info(now ? "maintenance on" : "maintenance off", { why });
        onChange(now, why);
        last = now;
      }
    } catch (err) {
      log.debug("could not read maintenance checks", { err });
    }
    await clock.sleep(MAINTENANCE_POLL_MS, signal).catch(() => {});
  }
}
