/**
 * Builds one sidecar from its configuration and a platform: the Consul
 * client, the service manager, the Redis role and the elector, wired
 * together, plus the maintenance watch. The composition root (main.ts) gives
 * it the real platform (fetch, Bun's Redis transport, the real clock); the
 * deterministic simulator gives it simulated ones, so both run this same
 * wiring.
 *
 * Owns no process concerns: no signals, no servers, no exit codes.
 */

import type { Clock } from "./clock.ts";
import type { Config } from "./config/config.ts";
import { Consul, type FetchLike, type RequestEvent } from "./consul/client.ts";
import { watchMaintenance } from "./consul/maintenance.ts";
import { ensureQuery } from "./consul/prepared-query.ts";
import { ServiceManager } from "./consul/service.ts";
import { Elector, type ElectorDeps } from "./election/elector.ts";
import type { RoleChange } from "./election/types.ts";
import type { HostPort } from "./host-port.ts";
import type { Logger } from "./log.ts";
import { RedisLink } from "./redis/link.ts";
import { RedisNode } from "./redis/node.ts";
import { RedisRole } from "./redis/role.ts";
import type { RedisTransport } from "./redis/transport.ts";

/** Everything outside the process that the sidecar talks to, and its sources of time and chance. */
export interface Platform {
  fetch: FetchLike;
  redis: RedisTransport;
  clock: Clock;
  /** A fresh random identifier (hex); tells one run of the process from the next. */
  randomId: () => string;
  /** This process's host name and pid, shown to a twin that collides with it. */
  process?: { host: string; pid: number };
}

/** Optional listeners and guarded work from the composition root (metrics, hooks, exec). */
export interface SidecarHooks {
  onRoleChange?: (c: RoleChange) => void;
  /** The lock view or the role changed (the Sentinel endpoint re-derives what it answers). */
  onLockChange?: () => void;
  onConsulRequest?: (e: RequestEvent) => void;
  onRenew?: (ms: number, ok: boolean) => void;
  /** Work that must stop before the lock can pass on (exec mode's command). */
  guarded?: ElectorDeps["guarded"];
}

export interface Sidecar {
  consul: Consul;
  elector: Elector;
  service: ServiceManager;
  redis: RedisRole | undefined;
  /** Runs the elector and the maintenance watch until `signal` aborts and the shutdown is done. */
  run(signal: AbortSignal): Promise<void>;
}

export function assembleSidecar(config: Config, log: Logger, platform: Platform, hooks: SidecarHooks = {}): Sidecar {
  const { clock } = platform;
  const consul = new Consul(
    config.consul,
    { fetch: platform.fetch, clock, log: log.child({ component: "consul" }), ...(hooks.onConsulRequest ? { observe: hooks.onConsulRequest } : {}) },
    config.timing.requestTimeoutMs,
  );
  const service = new ServiceManager(
    {
      serviceName: config.serviceName,
      lockKey: config.key,
      primaryLabel: config.primaryLabel,
      replicaLabel: config.replicaLabel,
      checkTtlMs: config.timing.checkTtlMs,
      heartbeatTimeoutMs: config.timing.checkTimeoutMs,
      mode: config.mode,
      ...(config.redis ? { announce: config.redis.announce ?? config.redis.addr } : {}),
    },
    { consul, clock, log: log.child({ component: "service" }) },
  );
  let redis: RedisRole | undefined;
  let nudge = () => {};
  if (config.redis) {
    const r = config.redis;
    const rlog = log.child({ component: "redis" });
    const nodeFor = (addr: HostPort) =>
      new RedisNode(new RedisLink(addr, r.auth, r.timeoutMs, { transport: platform.redis, clock, log: rlog }), { minReplicas: r.minReplicas, minReplicasMaxLagS: r.minReplicasMaxLagS });
    redis = new RedisRole(r, { node: nodeFor(r.addr), connect: nodeFor, clock, log: rlog, onChange: () => nudge() });
  }
  const query = config.preparedQuery;
  const onRoleChange = (c: RoleChange) => {
    hooks.onRoleChange?.(c);
    if (query && c.to === "leader") {
      ensureQuery(consul, { name: query.name, service: config.serviceName, primaryLabel: config.primaryLabel, extraTags: query.extraTags, dnsTtl: "1s" })
        .then((r) => r !== "unchanged" && log.info("prepared query", { name: query.name, result: r }))
        .catch((err: unknown) => log.warn("could not create or update the prepared query", { name: query.name, err }));
    }
  };
  const elector = new Elector(config, {
    consul,
    clock,
    log: log.child({ component: "election" }),
    service,
    randomId: platform.randomId,
    ...(platform.process ? { process: platform.process } : {}),
    ...(redis ? { redis } : {}),
    ...(hooks.onRenew ? { onRenew: hooks.onRenew } : {}),
    onRoleChange,
    ...(hooks.onLockChange ? { onLockChange: hooks.onLockChange } : {}),
    ...(hooks.guarded ? { guarded: hooks.guarded } : {}),
  });
  nudge = () => elector.nudge();
  return {
    consul,
    elector,
    service,
    redis,
    async run(signal) {
      // The watch stops with the elector, also when the elector fails.
      const watching = new AbortController();
      const maintenance = watchMaintenance(
        () => elector.state().service,
        async () => (await service.catalogNode())?.Node,
        (on) => elector.setMaintenance(on),
        { consul, clock, log: log.child({ component: "maintenance" }) },
        AbortSignal.any([signal, watching.signal]),
      );
      try {
        await elector.run(signal);
      } finally {
        watching.abort();
        await maintenance;
      }
    },
  };
}
