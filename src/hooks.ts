/**
 * What the sidecar does for others when its role changes, without ever
 * blocking the election loop:
 *
 * - CONSUL_LEADER_ON_ROLE_CHANGE: a shell command run once per change, with
 *   the new role, the leader's address and the epoch in its environment. Runs
 *   are queued one after another; each is killed after the hook timeout. A
 *   failing or hanging hook is logged, nothing more.
 * - Nomad mode: `$NOMAD_ALLOC_DIR/$NOMAD_ALLOC_ID` exists while this
 *   allocation is primary (as the shell consul-leader did), and
 *   `$NOMAD_ALLOC_DIR/consul-leader.role` always holds the current role, for
 *   tasks of the same allocation to read.
 *
 * Guarantees: the hook's environment never carries a secret knob (tokens,
 * passwords). Does not guarantee a hook runs for every change when changes
 * come faster than hooks finish: at most one waits, the newest.
 */

import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { RoleChange } from "./election/types.ts";
import { childEnvironment } from "./config/secrets.ts";
import type { Logger } from "./log.ts";

export interface HookOptions {
  command?: string;
  timeoutMs: number;
  /** The sidecar's environment; secrets are removed before a hook sees it. */
  env: Record<string, string | undefined>;
  instance: string;
  service: string;
  nomad?: { allocId: string; allocDir: string };
}

export class RoleHooks {
  readonly #o: HookOptions;
  readonly #log: Logger;
  #running: Promise<void> = Promise.resolve();
  #next: RoleChange | undefined;
  #busy = false;

  constructor(o: HookOptions, log: Logger) {
    this.#o = o;
    this.#log = log;
  }

  /** For ElectorDeps.onRoleChange. Returns at once. */
  onRoleChange(c: RoleChange): void {
    this.#writeFiles(c);
    if (!this.#o.command) return;
    this.#next = c;
    if (!this.#busy) this.#running = this.#drain();
  }

  /** Resolves when no hook is running or queued (for shutdown and tests). */
  async idle(): Promise<void> {
    while (this.#busy) await this.#running;
  }

  async #drain(): Promise<void> {
    this.#busy = true;
    while (this.#next) {
      const c = this.#next;
      this.#next = undefined;
      await this.#run(c);
    }
    this.#busy = false;
  }

  async #run(c: RoleChange): Promise<void> {
    const env = childEnvironment(this.#o.env, false);
    Object.assign(env, {
      CONSUL_LEADER_ROLE: c.to,
      CONSUL_LEADER_PREVIOUS_ROLE: c.from,
      CONSUL_LEADER_REASON: c.reason,
      CONSUL_LEADER_LEADER_ADDR: c.leader?.address ?? "",
      CONSUL_LEADER_LEADER_INSTANCE: c.leader?.instance ?? "",
      CONSUL_LEADER_EPOCH: c.epoch !== undefined ? String(c.epoch) : String(c.leader?.epoch ?? ""),
      CONSUL_LEADER_INSTANCE: this.#o.instance,
      CONSUL_LEADER_SERVICE: this.#o.service,
    });
    const started = performance.now();
    let proc: ReturnType<typeof Bun.spawn>;
    try {
      proc = Bun.spawn(["/bin/sh", "-c", this.#o.command!], { env, stdio: ["ignore", "pipe", "pipe"], detached: true });
    } catch (err) {
      this.#log.warn("role-change hook could not start", { err });
      return;
    }
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-proc.pid, "SIGKILL");
      } catch {
        // already gone
      }
    }, this.#o.timeoutMs);
    const [out, errOut, code] = await Promise.all([
      new Response(proc.stdout as ReadableStream).text(),
      new Response(proc.stderr as ReadableStream).text(),
      proc.exited,
    ]);
    clearTimeout(timer);
    const fields = { role: c.to, code, ms: Math.round(performance.now() - started), stdout: tail(out), stderr: tail(errOut) };
    if (timedOut) this.#log.warn("role-change hook killed after the timeout", { ...fields, timeoutMs: this.#o.timeoutMs });
    else if (code !== 0) this.#log.warn("role-change hook failed", fields);
    else this.#log.info("role-change hook ran", fields);
  }

  #writeFiles(c: RoleChange): void {
    const n = this.#o.nomad;
    if (!n) return;
    try {
      mkdirSync(n.allocDir, { recursive: true });
      writeFileSync(join(n.allocDir, "consul-leader.role"), `${c.to}\n`);
      const marker = join(n.allocDir, n.allocId);
      if (c.to === "leader") writeFileSync(marker, `${c.epoch ?? ""}\n`);
      else rmSync(marker, { force: true });
    } catch (err) {
      this.#log.warn("could not write the role files in the allocation directory", { dir: n.allocDir, err });
    }
  }
}

function tail(s: string): string {
  const t = s.trim();
  return t.length > 500 ? `...${t.slice(-500)}` : t;
}
