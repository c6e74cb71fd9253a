/**
 * The Consul service whose tags say who is primary, and the sidecar's own
 * liveness check that the session is bound to.
 *
 * Two shapes, one interface:
 * - Nomad mode: the service belongs to Nomad (`_nomad-task-<alloc>-...`). We
 *   only change its Tags and Meta.session, by re-registering it through the
 *   agent with every other field copied, and we put them back whenever Nomad's
 *   sync resets them (Nomad resets Meta on its periodic sync, every 30 s, and
 *   tags on any non-periodic one). Nomad deletes foreign checks on its
 *   service, so the liveness check lives on a small companion service the
 *   sidecar owns (ID `consul-leader-<alloc>`, never `_nomad-task-`).
 * - Standalone: the sidecar registers its own service with the liveness check
 *   and a role check, and deregisters it on exit.
 *
 * The role check ("can this Redis serve the role its tags claim?", on the
 * companion in Nomad mode) carries the reason in its output. The agent sends
 * an output change that keeps the status to the servers only after
 * check_update_interval (5 min by default), so the catalog would show the
 * first output for minutes (empty, for a member that never passed); such a
 * change is also written to the catalog at once (service:write suffices).
 *
 * Guarantees: `ensure` changes only tags, Meta.session and (standalone) the
 * role check; it never passes replace-existing-checks. It sends nothing when
 * asked for what it applied last, unless the role check is due its refresh
 * or the watch saw the agent's definition differ from ours (or vanish). Does not guarantee the
 * tags stay put: `watch` reports every change so the elector re-asserts them.
 *
 * The agent has no compare-and-set for services, so `ensure` is a read then a
 * write, and Nomad can re-register in between (a job update changing static
 * tags): our write would put back the definition Nomad just replaced, and
 * Nomad's periodic sync ignores tags under enable_tag_override, so the new
 * tags would stay lost. The manager therefore remembers the newest definition
 * it saw that it did not write itself (from `ensure`'s reads and from every
 * `watch` answer) and builds on that one. It narrows the race to Nomad's write
 * and ours landing so close that the watch sees neither apart; it cannot close
 * it.
 */

import type { Clock } from "../clock.ts";
import type { Mode } from "../config/config.ts";
import type { AgentService, CheckRegistration, Consul, ServiceRegistration } from "./client.ts";
import { ConsulError, describeError, isConsulError, LeaderError } from "../errors.ts";
import { formatDuration } from "../config/duration.ts";
import type { Logger } from "../log.ts";

export interface Want {
  primary: boolean;
  replica: boolean;
  /** Session ID for Meta.session; null removes it. */
  session: string | null;
  /** Standalone: status of the role check ("can this Redis serve its role?"). */
  healthy: boolean;
  note: string;
}

export interface ServiceOptions {
  serviceName: string;
  /** The lock key, written beside the session in the service's Meta (`lock_key`), so `status` run with another key can name this one. */
  lockKey: string;
  primaryLabel: string;
  replicaLabel: string;
  checkTtlMs: number;
  /** Timeout of one heartbeat (Timing.checkTimeoutMs). */
  heartbeatTimeoutMs: number;
  mode: Mode;
  /** host:port to register in standalone mode when no explicit address is set. */
  announce?: { host: string; port: number };
}

export interface ServiceDeps {
  consul: Consul;
  clock: Clock;
  log: Logger;
}

export class ServiceManager {
  readonly #o: ServiceOptions;
  readonly #d: ServiceDeps;
  #serviceId: string | undefined;
  #lastWarnedEto = false;
  /** What we last registered: a definition equal to it is our own write. */
  #written: ServiceRegistration | undefined;
  /** The newest definition seen that we did not write: the base we add our tags to. */
  #foreign: AgentService | undefined;
  /** A foreign definition arrived after our last write. */
  #foreignSinceWrite = false;
  /** Nomad mode: the service had Nomad's checks when we found it. */
  #hadNomadChecks = false;
  /** The role check's status and output as the agent has them; the output as the catalog has it. */
  #role: { status: "passing" | "critical"; output: string; inCatalog: string } | undefined;
  /** The node this agent is in the catalog as, once looked up. */
  #node: { Node: string; Address: string } | undefined;
  /**
   * The last `want` `ensure` applied in full, and when (monotonic): a repeat
   * costs no request until the role check needs its refresh or something
   * shows the agent's copy may differ (the watch saw a foreign definition or
   * none, a repair).
   */
  #applied: { want: string; at: number } | undefined;
  /** Bumped by every sign that the agent's copy may differ: an `ensure` that started before one does not count as applied. */
  #drift = 0;

  constructor(opts: ServiceOptions, deps: ServiceDeps) {
    this.#o = opts;
    this.#d = deps;
  }

  /** The ID of the service whose tags we manage; known after `setup`. */
  get serviceId(): string {
    if (!this.#serviceId) throw new Error("ServiceManager.setup() has not run");
    return this.#serviceId;
  }

  /** The liveness check the session is bound to; undefined when CONSUL_LEADER_CHECK_TTL is 0. */
  get aliveCheckId(): string | undefined {
    if (!this.#o.checkTtlMs) return undefined;
    return `${this.#ownServiceId()}:alive`;
  }

  /** "Can this Redis serve the role its tags claim", with the reason: on our service, or on the companion in Nomad mode. */
  get roleCheckId(): string {
    return `${this.#ownServiceId()}:role`;
  }

  /**
   * Finds (Nomad) or registers (standalone) the service, and registers the
   * liveness check, passing. Nomad mode waits up to CONSUL_LEADER_SERVICE_WAIT
   * for Nomad to register the task's service.
   */
  async setup(signal: AbortSignal): Promise<void> {
    const mode = this.#o.mode;
    if (mode.kind === "nomad") {
      this.#serviceId = await this.#findNomadService(mode.allocId, mode.serviceWaitMs, signal);
      this.#hadNomadChecks = ((await this.#nomadCheckCount(this.#serviceId)) ?? 0) > 0;
      await this.#registerCompanion(mode.allocId);
    } else {
      this.#serviceId = mode.serviceId;
      await this.#registerStandalone();
    }
    await this.heartbeat();
  }

  /** Re-registers the checks after the agent lost them (agent restart without state). */
  async repair(): Promise<void> {
    this.#drifted();
    const mode = this.#o.mode;
    if (mode.kind === "nomad") await this.#registerCompanion(mode.allocId);
    else await this.#registerStandalone();
  }

  /** Passes the liveness check; resets its TTL clock on the agent. */
  async heartbeat(): Promise<void> {
    const id = this.aliveCheckId;
    if (id) await this.#d.consul.agentCheckUpdate(id, "passing", "consul-leader is running", this.#o.heartbeatTimeoutMs);
  }

  /**
   * Makes tags, Meta.session and the role check match `want`. Returns true
   * when it had to re-register (something had drifted).
   */
  async ensure(want: Want): Promise<boolean> {
    const { consul, clock } = this.#d;
    const id = this.serviceId;
    const key = JSON.stringify(want);
    const started = clock.monotonic();
    if (this.#applied?.want === key && started - this.#applied.at < roleTtlMs(this.#o.checkTtlMs) / 3) return false;
    this.#applied = undefined;
    let drift = this.#drift;
    const svc = await consul.agentService(id);
    const done = (changed: boolean) => {
      // A foreign write the watch saw meanwhile may have landed under ours: look again next time.
      if (this.#drift === drift) this.#applied = { want: key, at: started };
      return changed;
    };
    if (!svc) {
      if (this.#o.mode.kind === "standalone") {
        await this.#registerStandalone(want);
        return done(true);
      }
      throw new ConsulError("CONSUL_NOT_FOUND", `the Nomad service ${id} is gone from the agent`, { method: "GET", path: `/v1/agent/service/${id}`, status: 404 });
    }
    if (this.#o.mode.kind === "nomad" && !svc.EnableTagOverride && !this.#lastWarnedEto) {
      this.#lastWarnedEto = true;
      this.#d.log.warn("service lacks enable_tag_override; Nomad will remove the role tags on every sync", {
        service: id,
        fix: "set enable_tag_override = true in the jobspec's service block",
      });
    }
    this.#observe(svc);
    // What we just read is what we build on; only what the watch sees from now on is drift.
    drift = this.#drift;
    const base = this.#foreign ?? svc;
    const tags = desiredTags(base.Tags ?? [], want, this.#o);
    const meta = { ...(base.Meta ?? {}) };
    if (want.session) {
      meta["session"] = want.session;
      meta["lock_key"] = this.#o.lockKey;
    } else {
      delete meta["session"];
      delete meta["lock_key"];
    }
    // The role check and the tags go side by side: a new primary is discoverable one round trip sooner.
    const role = this.#setRole(want);
    const reg = { ...copyRegistration(base), Tags: tags, Meta: meta };
    if (sameDefinition(reg, svc)) {
      await role;
      return done(false);
    }
    if (this.#foreignSinceWrite && base !== svc) {
      // The agent holds our last write, yet someone re-registered after it:
      // our write landed on top of theirs.
      this.#d.log.info("put back a service definition our last write had overwritten", { service: id, tags });
    }
    // Recorded before the write: the watch may see it land before the PUT answers,
    // and a foreign write seen while ours is in flight must still count.
    this.#written = reg;
    this.#foreignSinceWrite = false;
    await Promise.all([role, consul.agentServiceRegister(reg)]);
    this.#d.log.debug("service re-registered", { service: id, tags });
    return done(true);
  }

  /** Remembers `svc` as the base to build on unless it is exactly what we last wrote. */
  #observe(svc: AgentService): void {
    if (this.#written && sameDefinition(this.#written, svc)) return;
    this.#foreign = svc;
    this.#foreignSinceWrite = true;
    this.#drifted();
  }

  /** The agent's copy may differ from what we applied: the next `ensure` reads and writes in full. */
  #drifted(): void {
    this.#applied = undefined;
    this.#drift++;
  }

  /**
   * Blocks until the service definition changes (hash-based blocking query)
   * or `waitMs` passes; resolves either way. Throws on Consul errors.
   */
  async watch(hash: string | undefined, waitMs: number, signal: AbortSignal): Promise<string | undefined> {
    let svc: AgentService | null;
    try {
      svc = await this.#d.consul.agentService(this.serviceId, { ...(hash ? { hash } : {}), waitMs, signal });
    } catch (err) {
      // The agent may have restarted meanwhile: the next ensure reads it again.
      this.#drifted();
      throw err;
    }
    if (svc) this.#observe(svc);
    else this.#drifted();
    return svc?.ContentHash;
  }

  /**
   * On exit: standalone deregisters its service (and checks); Nomad mode takes
   * the role tags and Meta.session off Nomad's service and deregisters the
   * companion. Best effort; the caller logs failures.
   */
  async teardown(): Promise<void> {
    const { consul } = this.#d;
    const mode = this.#o.mode;
    if (mode.kind === "standalone") {
      await consul.agentServiceDeregister(mode.serviceId);
      return;
    }
    if (this.#serviceId) {
      const id = this.#serviceId;
      const checked = ((await this.#nomadCheckCount(id)) ?? 0) > 0 || this.#hadNomadChecks;
      const present = await this.ensure({ primary: false, replica: false, session: null, healthy: false, note: "stopped" }).then(() => true, (err: unknown) => {
        if (!isConsulError(err, "CONSUL_NOT_FOUND")) throw err;
        return false;
      });
      // Nomad deregisters the service (with its checks) as the allocation
      // stops; a write of ours in flight at that moment re-creates it without
      // checks, and Nomad leaves that copy for up to a minute after its own
      // start (deregistration probation). A service that had Nomad's checks
      // and has none now is such a copy: remove it.
      if (present && checked && (await this.#nomadCheckCount(id)) === 0) {
        await consul.agentServiceDeregister(id);
        this.#d.log.info("removed a copy of the Nomad service that our write re-created after Nomad deregistered it", { service: id });
      }
    }
    await consul.agentServiceDeregister(this.#ownServiceId());
  }

  /** How many checks the agent has on the Nomad service (Nomad's own); undefined when it cannot tell. */
  async #nomadCheckCount(id: string): Promise<number | undefined> {
    try {
      return Object.keys(await this.#d.consul.agentChecks(`ServiceID == "${id}"`)).length;
    } catch (err) {
      this.#d.log.debug("could not list the service's checks", { service: id, err: describeError(err) });
      return undefined;
    }
  }

  #ownServiceId(): string {
    const mode = this.#o.mode;
    return mode.kind === "nomad" ? `consul-leader-${mode.allocId}` : mode.serviceId;
  }

  async #findNomadService(allocId: string, waitMs: number, signal: AbortSignal): Promise<string> {
    const { consul, clock, log } = this.#d;
    const prefix = `_nomad-task-${allocId}-`;
    const deadline = clock.monotonic() + waitMs;
    let delay = 250;
    for (let attempt = 1;; attempt++) {
      const found = Object.values(await consul.agentServices(`ID matches "^${escapeRegex(prefix)}"`))
        .filter((s) => !s.ID.endsWith("-sidecar-proxy"));
      const named = found.filter((s) => s.Service === this.#o.serviceName);
      const pick = named.length === 1 ? named[0] : found.length === 1 ? found[0] : undefined;
      if (pick) {
        log.info("found the Nomad service", { service: pick.ID, name: pick.Service, attempt });
        return pick.ID;
      }
      if (found.length > 1) {
        throw new LeaderError("SERVICE_NOT_FOUND", `several Nomad services in allocation ${allocId} (${found.map((s) => s.Service).join(", ")}) and none is named ${this.#o.serviceName}; set CONSUL_LEADER_SERVICE_NAME to the one to tag`);
      }
      if (clock.monotonic() >= deadline) {
        throw new LeaderError("SERVICE_NOT_FOUND", `no Consul service with an ID starting ${prefix} appeared on the local agent within CONSUL_LEADER_SERVICE_WAIT=${formatDuration(waitMs)}; is the service registered by this allocation's group or tasks, with provider = "consul"?`);
      }
      log.info("waiting for Nomad to register the service", { prefix, attempt });
      await clock.sleep(delay, signal);
      delay = Math.min(delay * 2, 5000);
    }
  }

  async #registerCompanion(allocId: string): Promise<void> {
    const id = this.#ownServiceId();
    await this.#d.consul.agentServiceRegister({
      ID: id,
      Name: `${this.#o.serviceName}-consul-leader`,
      Meta: { alloc: allocId, service: this.#serviceId ?? "" },
      Checks: [...(this.aliveCheckId ? [this.#aliveCheck(id, "10m")] : []), this.#roleCheck(id, "10m", undefined)],
    });
  }

  async #registerStandalone(want?: Want): Promise<void> {
    const mode = this.#o.mode;
    if (mode.kind !== "standalone") return;
    const deregister = formatDuration(mode.deregisterAfterMs);
    const role = want ? desiredTags([], want, this.#o) : [];
    const reg: ServiceRegistration = {
      ID: mode.serviceId,
      Name: this.#o.serviceName,
      Tags: [...mode.tags, ...role],
      Address: mode.address || this.#o.announce?.host || "",
      Port: mode.port || this.#o.announce?.port || 0,
      Meta: want?.session ? { session: want.session, lock_key: this.#o.lockKey } : {},
    };
    await this.#d.consul.agentServiceRegister(reg);
    if (this.aliveCheckId) await this.#d.consul.agentCheckRegister({ ...this.#aliveCheck(mode.serviceId, deregister), ServiceID: mode.serviceId });
    await this.#d.consul.agentCheckRegister(this.#roleCheck(mode.serviceId, deregister, want));
  }

  /** The role check as registered: its output starts empty (the agent takes none at registration). */
  #roleCheck(serviceId: string, deregister: string, want: Want | undefined): CheckRegistration {
    const status = want?.healthy ? "passing" : "critical";
    this.#role = { status, output: "", inCatalog: "" };
    return {
      CheckID: this.roleCheckId,
      Name: "consul-leader role",
      Notes: "passing when this Redis can serve the role its tags claim; the output says why not",
      TTL: formatDuration(roleTtlMs(this.#o.checkTtlMs)),
      Status: status,
      ServiceID: serviceId,
      DeregisterCriticalServiceAfter: deregister,
    };
  }

  #aliveCheck(serviceId: string, deregister: string): CheckRegistration {
    return {
      CheckID: this.aliveCheckId!,
      Name: "consul-leader alive",
      Notes: "the session is bound to this check: a dead or frozen sidecar loses the lock when it lapses",
      TTL: formatDuration(this.#o.checkTtlMs),
      Status: "passing",
      ServiceID: serviceId,
      DeregisterCriticalServiceAfter: deregister,
    };
  }

  async #setRole(want: Want): Promise<void> {
    const status = want.healthy ? "passing" : "critical";
    const before = this.#role;
    await this.#d.consul.agentCheckUpdate(this.roleCheckId, status, want.note);
    // A new status reaches the servers at once, with its output; a new output alone would not (see the module comment).
    this.#role = { status, output: want.note, inCatalog: before && before.status === status ? before.inCatalog : want.note };
    if (this.#role.inCatalog !== want.note) await this.#writeOutputToCatalog(status, want.note);
  }

  /**
   * The node this agent is in the catalog as, found through our own service
   * there (no agent:read needed); undefined until the agent has synced it.
   * Throws on Consul errors.
   */
  async catalogNode(): Promise<{ Node: string; Address: string } | undefined> {
    if (this.#node) return this.#node;
    const serviceId = this.#ownServiceId();
    const mine = (await this.#d.consul.catalogService(this.#o.mode.kind === "nomad" ? `${this.#o.serviceName}-consul-leader` : this.#o.serviceName)).find((s) => s.ServiceID === serviceId);
    if (mine) this.#node = { Node: mine.Node, Address: mine.Address };
    return this.#node;
  }

  /** Puts the role check's output into the catalog now (best effort: the agent syncs it later anyway). */
  async #writeOutputToCatalog(status: "passing" | "critical", output: string): Promise<void> {
    const { consul, log } = this.#d;
    const serviceId = this.#ownServiceId();
    try {
      const node = await this.catalogNode();
      // Not synced to the catalog yet: the registration's own sync will carry the output.
      if (!node) return;
      await consul.catalogRegister({
        ...node,
        Check: { Node: node.Node, CheckID: this.roleCheckId, Name: "consul-leader role", Status: status, Output: output, ServiceID: serviceId, Type: "ttl" },
      });
      if (this.#role?.output === output) this.#role.inCatalog = output;
    } catch (err) {
      log.debug("could not write the role check's output to the catalog", { check: this.roleCheckId, err: describeError(err) });
    }
  }
}

/**
 * The role check's TTL. Beside the liveness check (CHECK_TTL set), which
 * makes a dead sidecar's service critical within CHECK_TTL, it only has to
 * outlast its own refreshes (every third of it): 10 minutes, so an idle
 * sidecar refreshes it every 3 min 20 s. Without one, it is what marks a
 * dead sidecar: 30 s.
 */
export function roleTtlMs(checkTtlMs: number): number {
  return checkTtlMs ? 600_000 : 30_000;
}

/** Current tags minus both role labels, plus the wanted ones; order kept, no duplicates. */
export function desiredTags(current: readonly string[], want: Pick<Want, "primary" | "replica">, o: Pick<ServiceOptions, "primaryLabel" | "replicaLabel">): string[] {
  const labels = new Set([o.primaryLabel, o.replicaLabel].filter(Boolean));
  const out = current.filter((t) => !labels.has(t));
  if (want.primary) out.push(o.primaryLabel);
  else if (want.replica && o.replicaLabel) out.push(o.replicaLabel);
  return [...new Set(out)];
}

/** Every field of an agent service that registration accepts, unchanged. */
export function copyRegistration(s: AgentService): ServiceRegistration {
  const reg: ServiceRegistration = {
    ID: s.ID,
    Name: s.Service,
    Tags: s.Tags ?? [],
    Address: s.Address,
    Port: s.Port,
    Meta: s.Meta ?? {},
    EnableTagOverride: s.EnableTagOverride,
  };
  if (s.Kind) reg.Kind = s.Kind;
  if (s.TaggedAddresses && Object.keys(s.TaggedAddresses).length) reg.TaggedAddresses = s.TaggedAddresses;
  if (s.Weights) reg.Weights = s.Weights;
  if (s.Proxy && Object.keys(s.Proxy).length) reg.Proxy = s.Proxy;
  if (s.Connect && Object.keys(s.Connect).length) reg.Connect = s.Connect;
  if (s.Namespace) reg.Namespace = s.Namespace;
  if (s.Partition) reg.Partition = s.Partition;
  return reg;
}

/** Same tags (as a set), Meta, address and port: what `ensure` writes or a re-registration changes. */
function sameDefinition(reg: ServiceRegistration, svc: AgentService): boolean {
  return sameSet(reg.Tags ?? [], svc.Tags ?? []) && sameMeta(reg.Meta ?? {}, svc.Meta ?? {}) &&
    (reg.Address ?? "") === (svc.Address ?? "") && (reg.Port ?? 0) === (svc.Port ?? 0);
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  const sa = new Set(a);
  const sb = new Set(b);
  return sa.size === sb.size && [...sa].every((x) => sb.has(x));
}

function sameMeta(a: Record<string, string>, b: Record<string, string>): boolean {
  const ka = Object.keys(a);
  return ka.length === Object.keys(b).length && ka.every((k) => a[k] === b[k]);
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
