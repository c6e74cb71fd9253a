/**
 * Invariant 3, "only the lock holder is tagged primary": the new leader takes
 * the primary tag off any other instance still carrying it (a sidecar that
 * died cannot do it itself) before tagging itself, through the catalog
 * (`PUT /v1/catalog/register` with SkipNodeUpdate on a node already in the
 * catalog, which Consul authorizes with service:write alone; a failure is
 * logged and the leader carries on).
 *
 * The owning agent keeps catalog tags for services with EnableTagOverride, but
 * may push its stale copy back once (consul#2174), so the catalog is read
 * again a few times until no other primary is left.
 */

import type { Clock } from "../clock.ts";
import type { CatalogService, Consul } from "./client.ts";
import { describeError } from "../errors.ts";
import type { Logger } from "../log.ts";

/** How many times the catalog is read (and stripped) before giving up; 20 ms apart. */
export const STRIP_ATTEMPTS = 5;
/** Server-side wait of the leader's watch on the primary-tagged instances: changes return at once; this bounds an idle leader's requests. */
export const PRIMARY_WATCH_WAIT_MS = 300_000;

export async function stripStalePrimaries(
  d: { consul: Consul; log: Logger; clock: Clock },
  o: { serviceName: string; primaryLabel: string; ownServiceId: string },
  signal: AbortSignal,
  /**
   * Still the leader, with a lease that has not run out: asked right before
   * every strip, so a leader that stalled (frozen, paused) and was replaced
   * meanwhile never takes the tag off its successor.
   */
  still: () => boolean,
): Promise<void> {
  for (let attempt = 0; attempt < STRIP_ATTEMPTS; attempt++) {
    let stale: CatalogService[];
    try {
      stale = (await d.consul.catalogService(o.serviceName, { tag: o.primaryLabel })).filter((s) => s.ServiceID !== o.ownServiceId);
    } catch (err) {
      d.log.debug("could not list primaries", { err: describeError(err) });
      return;
    }
    if (stale.length === 0) return;
    if (attempt > 0) await d.clock.sleep(20, signal);
    for (const s of stale) {
      if (!still()) return;
      await strip(d, s, o.primaryLabel);
    }
  }
}

async function strip(d: { consul: Consul; log: Logger }, s: CatalogService, primaryLabel: string): Promise<void> {
  try {
    await d.consul.catalogRegister({
      Node: s.Node,
      Address: s.Address,
      Service: {
        ID: s.ServiceID,
        Service: s.ServiceName,
        Tags: (s.ServiceTags ?? []).filter((t) => t !== primaryLabel),
        Address: s.ServiceAddress,
        Port: s.ServicePort,
        Meta: s.ServiceMeta ?? {},
        EnableTagOverride: s.ServiceEnableTagOverride,
        ...(s.ServiceTaggedAddresses ? { TaggedAddresses: s.ServiceTaggedAddresses } : {}),
        ...(s.ServiceWeights ? { Weights: s.ServiceWeights } : {}),
      },
    });
    d.log.warn("took the primary tag off a service that does not hold the lock", { service: s.ServiceID, node: s.Node });
  } catch (err) {
    d.log.warn("could not take a stale primary tag off another service", { service: s.ServiceID, node: s.Node, err });
  }
}

/**
 * While `leading()`, watches the service's primary-tagged instances with a
 * blocking query and strips any other one the moment the catalog shows it
 * (an owning agent pushing back its stale copy, consul#2174), so a new
 * leader's first strip is not the last. Costs an idle leader one request per
 * PRIMARY_WATCH_WAIT_MS; nothing while not leading.
 */
export async function watchStalePrimaries(
  d: { consul: Consul; log: Logger; clock: Clock },
  o: { serviceName: string; primaryLabel: string; ownServiceId: () => string },
  signal: AbortSignal,
  leading: () => boolean,
): Promise<void> {
  let index = 0;
  while (!signal.aborted) {
    if (!leading()) {
      index = 0;
      await d.clock.sleep(500, signal).catch(() => {});
      continue;
    }
    try {
      const r = await d.consul.catalogServiceIndexed(o.serviceName, { tag: o.primaryLabel, ...(index > 0 ? { index, waitMs: PRIMARY_WATCH_WAIT_MS } : {}), signal });
      index = r.index < index ? 0 : Math.max(1, r.index);
      const own = o.ownServiceId();
      if (leading() && r.services.some((s) => s.ServiceID !== own)) await stripStalePrimaries(d, { ...o, ownServiceId: own }, signal, leading);
    } catch (err) {
      if (signal.aborted) return;
      index = 0;
      d.log.debug("could not watch the primaries", { err: describeError(err) });
      await d.clock.sleep(1000, signal).catch(() => {});
    }
  }
}
