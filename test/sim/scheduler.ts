/**
 * The simulator's one source of time and order: a seeded event queue that
 * every simulated process, network and timer goes through.
 *
 * Time advances only between events: an event fires, every promise
 * continuation it released runs to completion (one macrotask boundary), and
 * only then does the next event fire. Events due at the same moment fire in an
 * order drawn from the seed, so one seed replays exactly.
 *
 * Every event has an owner, a simulated process ("n1/sidecar", "n2/redis",
 * "consul"). Freezing an owner (SIGSTOP) holds its events until it is thawed;
 * killing it drops them. The production code never sees this: it gets a
 * `Clock` per process whose sleeps and timers are events of that process.
 */

import type { Clock } from "../../src/clock.ts";

/** Small, fast, seedable (mulberry32); good enough to pick orders and faults. */
export class Rng {
  #s: number;
  constructor(seed: number) {
    this.#s = seed >>> 0 || 0x9e3779b9;
  }
  /** Uniform in [0, 1). */
  next(): number {
    let t = (this.#s = (this.#s + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** Integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** Uniform in [lo, hi). */
  between(lo: number, hi: number): number {
    return lo + this.next() * (hi - lo);
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
  pick<T>(xs: readonly T[]): T {
    if (xs.length === 0) throw new RangeError("pick from an empty list");
    return xs[Math.floor(this.next() * xs.length)]!;
  }
  /** A hex id of `len` characters. */
  hex(len: number): string {
    let s = "";
    while (s.length < len) s += Math.floor(this.next() * 0x100000000).toString(16).padStart(8, "0");
    return s.slice(0, len);
  }
  /** A UUID-shaped id, as Consul hands out for sessions. */
  uuid(): string {
    const h = this.hex(32);
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }
}

interface Event {
  at: number;
  order: number;
  seq: number;
  owner: string;
  fn: () => void;
  cancelled: boolean;
}

export interface Handle {
  cancel(): void;
}

/** Wall time at simulated monotonic 0: 2026-01-01T00:00:00Z. */
export const WALL_EPOCH = Date.UTC(2026, 0, 1);

export class Scheduler {
  readonly rng: Rng;
  #now = 0;
  #seq = 0;
  #heap: Event[] = [];
  #frozen = new Map<string, Event[]>();
  #dead = new Set<string>();
  /** Called after every event, once its continuations ran; throws to stop the run. */
  afterEach: (() => void) | undefined;
  /** Events fired so far. */
  fired = 0;

  constructor(seed: number) {
    this.rng = new Rng(seed);
  }

  get now(): number {
    return this.#now;
  }

  /** Runs `fn` as `owner` after `delayMs` (at least 0). */
  at(delayMs: number, owner: string, fn: () => void): Handle {
    const e: Event = { at: this.#now + Math.max(0, delayMs), order: this.rng.next(), seq: this.#seq++, owner, fn, cancelled: false };
    if (this.#dead.has(owner)) e.cancelled = true;
    else this.#push(e);
    return { cancel: () => (e.cancelled = true) };
  }

  /** A Clock for the production code of `owner`: its sleeps and timers are this process's events. */
  clock(owner: string): Clock {
    return {
      now: () => WALL_EPOCH + this.#now,
      monotonic: () => this.#now,
      sleep: (ms, signal) =>
        new Promise<void>((resolve, reject) => {
          if (signal?.aborted) return reject(signal.reason);
          const h = this.at(ms, owner, () => {
            signal?.removeEventListener("abort", onAbort);
            resolve();
          });
          const onAbort = () => {
            h.cancel();
            reject(signal!.reason);
          };
          signal?.addEventListener("abort", onAbort, { once: true });
        }),
      timer: (ms, fn) => this.at(ms, owner, fn),
    };
  }

  /** SIGSTOP: hold every event of `owner` (and of owners under `owner/`) until `thaw`. */
  freeze(owner: string): void {
    if (this.#frozen.has(owner)) return;
    this.#frozen.set(owner, []);
  }

  thaw(owner: string): void {
    const held = this.#frozen.get(owner);
    if (!held) return;
    this.#frozen.delete(owner);
    // Everything that came due while frozen runs now, in the order it was due
    // (kept: their times are in the past, so they sort first, oldest first).
    for (const e of held) this.#push(e);
  }

  isFrozen(owner: string): boolean {
    return this.#frozenRoot(owner) !== undefined;
  }

  /** kill -9: drop every pending and future event of `owner` (and of owners under it). */
  kill(owner: string): void {
    this.#dead.add(owner);
    for (const [k, held] of this.#frozen) if (k === owner || k.startsWith(owner + "/")) for (const e of held) e.cancelled = true;
    for (const e of this.#heap) if (this.#owns(owner, e.owner)) e.cancelled = true;
  }

  /** A process started again under a name that was killed. */
  revive(owner: string): void {
    this.#dead.delete(owner);
  }

  isDead(owner: string): boolean {
    for (const d of this.#dead) if (this.#owns(d, owner)) return true;
    return false;
  }

  /**
   * Fires the next event and lets everything it released run. Returns false
   * when nothing is left to fire before `until`.
   */
  async step(until = Infinity): Promise<boolean> {
    for (;;) {
      const e = this.#heap[0];
      if (!e || e.at > until) return false;
      this.#pop();
      if (e.cancelled) continue;
      if (this.isDead(e.owner)) continue;
      const root = this.#frozenRoot(e.owner);
      if (root !== undefined) {
        this.#frozen.get(root)!.push(e);
        continue;
      }
      this.#now = Math.max(this.#now, e.at);
      this.fired++;
      e.fn();
      await drain();
      this.afterEach?.();
      return true;
    }
  }

  /** Runs until simulated time `until` (monotonic ms), then sets the clock there. */
  async runUntil(until: number): Promise<void> {
    // Work the caller started outside an event arms its timers first.
    await drain();
    while (await this.step(until)) {
      // each step checks the invariants through afterEach
    }
    this.#now = Math.max(this.#now, until);
  }

  #owns(owner: string, eventOwner: string): boolean {
    return eventOwner === owner || eventOwner.startsWith(owner + "/");
  }

  #frozenRoot(owner: string): string | undefined {
    for (const k of this.#frozen.keys()) if (this.#owns(k, owner)) return k;
    return undefined;
  }

  #less(a: Event, b: Event): boolean {
    return a.at < b.at || (a.at === b.at && (a.order < b.order || (a.order === b.order && a.seq < b.seq)));
  }

  #push(e: Event): void {
    const h = this.#heap;
    h.push(e);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.#less(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  #pop(): Event | undefined {
    const h = this.#heap;
    const top = h[0];
    const last = h.pop();
    if (h.length > 0 && last) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && this.#less(h[l]!, h[m]!)) m = l;
        if (r < h.length && this.#less(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

/**
 * Lets every pending promise continuation run: microtasks are drained before
 * the next macrotask, and nothing in a simulation schedules a real one.
 */
function drain(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
