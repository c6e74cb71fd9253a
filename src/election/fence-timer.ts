/**
 * The leader's fencing timer: runs `onDue` once the lease's deadline has
 * passed on the monotonic clock, however the timer underneath behaves.
 *
 * Guarantees: `onDue` never runs before the deadline it reads at that moment
 * (a renew that moved the deadline later is honoured), and never runs later
 * than the platform timer's own lateness: a wake-up that comes early, as
 * setTimeout's can by a fraction of a millisecond against performance.now(),
 * arms again for what is left instead of giving up. Does not decide whether
 * fencing is still wanted: `active()` is asked at every wake-up.
 */

import type { Clock } from "../clock.ts";

export class FenceTimer {
  readonly #clock: Clock;
  readonly #deadline: () => number | undefined;
  #timer: { cancel(): void } | undefined;

  /** `deadline`: monotonic ms of the fencing deadline, undefined without a lease. */
  constructor(clock: Clock, deadline: () => number | undefined) {
    this.#clock = clock;
    this.#deadline = deadline;
  }

  /** Arms (again) for the current deadline; `onDue` runs once, if `active()` still says so. */
  arm(active: () => boolean, onDue: () => void): void {
    this.cancel();
    const wake = () => {
      this.#timer = undefined;
      const due = this.#deadline();
      if (due === undefined || !active()) return;
      const left = due - this.#clock.monotonic();
      if (left > 0) {
        this.#timer = this.#clock.timer(left, wake);
        return;
      }
      onDue();
    };
    const at = this.#deadline();
    if (at === undefined) return;
    this.#timer = this.#clock.timer(at - this.#clock.monotonic(), wake);
  }

  cancel(): void {
    this.#timer?.cancel();
    this.#timer = undefined;
  }
}
