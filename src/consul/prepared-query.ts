/**
 * CONSUL_LEADER_PREPARED_QUERY: a prepared query that returns only the
 * passing instance tagged primary (plus any extra tags), so
 * `<name>.query.consul` resolves to the writer through Consul DNS without a
 * client needing tag-aware lookups. The master-election-tagger's feature.
 *
 * Every sidecar makes sure it exists and matches when it starts leading; the
 * definition depends only on the knobs, so whoever writes it writes the same.
 * Guarantees: after `ensure` resolves the query exists with this definition.
 */

import type { Consul, PreparedQuery } from "./client.ts";

export interface QueryOptions {
  name: string;
  service: string;
  primaryLabel: string;
  extraTags: readonly string[];
  /** DNS TTL of the answers; short, since the primary can move. */
  dnsTtl: string;
}

export function queryDefinition(o: QueryOptions): Omit<PreparedQuery, "ID"> {
  return {
    Name: o.name,
    Service: { Service: o.service, Tags: [o.primaryLabel, ...o.extraTags], OnlyPassing: true },
    DNS: { TTL: o.dnsTtl },
  };
}

/** Creates or updates the query; returns "created", "updated" or "unchanged". */
export async function ensureQuery(consul: Consul, o: QueryOptions): Promise<"created" | "updated" | "unchanged"> {
  const want = queryDefinition(o);
  const existing = (await consul.queryList()).find((q) => q.Name === o.name);
  if (!existing) {
    await consul.queryCreate(want);
    return "created";
  }
  const same = existing.Service?.Service === want.Service.Service &&
    JSON.stringify(existing.Service.Tags ?? []) === JSON.stringify(want.Service.Tags) &&
    existing.Service.OnlyPassing === true &&
    existing.DNS?.TTL === want.DNS?.TTL;
  if (same) return "unchanged";
  await consul.queryUpdate(existing.ID, want);
  return "updated";
}
