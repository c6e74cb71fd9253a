/**
 * What clients see: a poller that records, at every instant it looks, which
 * instances Consul tags primary; and helpers that register services exactly
 * the way Nomad does (ID format, Meta, EnableTagOverride, its own checks).
 */

import type { ConsulAgent } from "./consul.ts";

export interface Sample {
  t: number;
  tagged: string[];
  passing: string[];
}

/** Polls /v1/health/service/<name>?tag=<label> every `everyMs` until stopped. */
export class PrimaryObserver {
  readonly samples: Sample[] = [];
  #running = true;
  #done: Promise<void>;

  constructor(readonly agent: ConsulAgent, readonly service: string, readonly label = "primary", everyMs = 10) {
    this.#done = this.#loop(everyMs);
  }

  async #loop(everyMs: number): Promise<void> {
    while (this.#running) {
      try {
        const entries = await this.agent.api<{ Service: { ID: string }; Checks: { Status: string }[] }[]>("GET", `/v1/health/service/${this.service}?tag=${this.label}`);
        this.samples.push({
          t: performance.now(),
          tagged: entries.map((e) => e.Service.ID).sort(),
          passing: entries.filter((e) => e.Checks.every((c) => c.Status === "passing")).map((e) => e.Service.ID).sort(),
        });
      } catch {
        // Consul restarting; skip this instant
      }
      await Bun.sleep(everyMs);
    }
  }

  /** The most instances tagged primary at any one sample. */
  maxTagged(): number {
    return Math.max(0, ...this.samples.map((s) => s.tagged.length));
  }

  /** The samples with more than one instance tagged, for failure messages. */
  doubles(): string {
    const t0 = this.samples[0]?.t ?? 0;
    return JSON.stringify(this.samples.filter((s) => s.tagged.length > 1).map((s) => ({ atMs: Math.round(s.t - t0), tagged: s.tagged })));
  }

  maxPassing(): number {
    return Math.max(0, ...this.samples.map((s) => s.passing.length));
  }

  /** First sample time at or after `since` where exactly `id` (or any one instance) is tagged. */
  firstSingle(since: number, id?: string): number | undefined {
    return this.samples.find((s) => s.t >= since && s.tagged.length === 1 && (!id || s.tagged[0] === id))?.t;
  }

  current(): string[] {
    return this.samples.at(-1)?.tagged ?? [];
  }

  async stop(): Promise<void> {
    this.#running = false;
    await this.#done;
  }
}

export interface NomadService {
  id: string;
  allocId: string;
  name: string;
  port: number;
}

/** Registers a service as Nomad v1.9 does for task `task` of allocation `allocId`. */
export async function registerLikeNomad(agent: ConsulAgent, opts: { allocId: string; name: string; port: number; task?: string; tags?: string[]; eto?: boolean }): Promise<NomadService> {
  const task = opts.task ?? "redis";
  const id = `_nomad-task-${opts.allocId}-${task}-${opts.name}-db`;
  await agent.api("PUT", "/v1/agent/service/register?replace-existing-checks=true", nomadDefinition(id, opts));
  return { id, allocId: opts.allocId, name: opts.name, port: opts.port };
}

/** What Nomad's sync re-registers: the job's tags and meta, dropping anything added from outside. */
export async function nomadResync(agent: ConsulAgent, svc: NomadService, tags: string[] = ["v1"]): Promise<void> {
  await agent.api("PUT", "/v1/agent/service/register?replace-existing-checks=true", nomadDefinition(svc.id, { ...svc, tags }));
}

function nomadDefinition(id: string, o: { allocId: string; name: string; port: number; tags?: string[]; eto?: boolean }) {
  return {
    ID: id,
    Name: o.name,
    Tags: o.tags ?? ["v1"],
    Address: "127.0.0.1",
    Port: o.port,
    Meta: { "external-source": "nomad" },
    EnableTagOverride: o.eto ?? true,
    Checks: [{
      CheckID: `_nomad-check-${Bun.hash(id).toString(16)}`,
      Name: "service: \"" + o.name + "\" check",
      TCP: `127.0.0.1:${o.port}`,
      Interval: "1s",
      Timeout: "1s",
    }],
  };
}

export function randomAllocId(): string {
  return crypto.randomUUID();
}
