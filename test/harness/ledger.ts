/**
 * What a test run created, for the check that ends `npm test`
 * (test/harness/leftovers.ts): scripts/test.sh gives the run an id
 * (CL_TEST_RUN), which every process the harness starts carries in its
 * environment, and a ledger file (CL_TEST_LEDGER), to which the harness
 * appends every process it starts (pid and start time), every port it hands
 * out, every temp dir and every network namespace it makes. Outside test.sh (one file run by hand) both are unset and nothing
 * is recorded.
 */

import { appendFileSync } from "node:fs";

/** This run's id, or undefined outside scripts/test.sh. */
export const TEST_RUN = process.env["CL_TEST_RUN"] || undefined;

/** The variable that carries it. */
export const TEST_RUN_VAR = "CL_TEST_RUN";

export type LedgerKind = "port" | "dir" | "netns" | "pid";

/** Appends `kind value` to the ledger, when there is one. */
export function record(kind: LedgerKind, value: string | number): void {
  const ledger = process.env["CL_TEST_LEDGER"];
  if (ledger) appendFileSync(ledger, `${kind} ${value}\n`);
}

/** `env` plus this run's id, so the process and its children can be found afterwards. */
export function marked(env: Record<string, string | undefined>): Record<string, string | undefined> {
  return TEST_RUN ? { ...env, [TEST_RUN_VAR]: TEST_RUN } : env;
}
