import { describe, expect, test } from "bun:test";
import { ConsulError } from "../errors.ts";
import { describeLeaseTrouble } from "./lease.ts";

const SINCE = Date.parse("2025-01-01T00:00:02.000Z");
const err = (code: ConstructorParameters<typeof ConsulError>[0], message: string) =>
  new ConsulError(code, message, { method: "PUT", path: "/v1/session/renew/s1", status: code === "CONSUL_SERVER_ERROR" ? 500 : 0 });

describe("describeLeaseTrouble", () => {
  const rows: [story: string, e: unknown, sentence: string][] = [
    [
      "the local agent refuses connections",
      err("CONSUL_UNREACHABLE", "cannot reach the Consul agent at http://127.0.0.1:8500"),
      "cannot renew the lease: Consul agent unreachable since 2025-01-01T00:00:02.000Z; writes blocked until it answers",
    ],
    [
      "the local agent does not answer in time",
      err("CONSUL_TIMEOUT", "PUT /v1/session/renew/s1: no answer within 1250ms"),
      "cannot renew the lease: Consul agent unreachable since 2025-01-01T00:00:02.000Z; writes blocked until it answers",
    ],
    [
      "the agent answers but the servers do not",
      err("CONSUL_SERVER_ERROR", "No cluster leader"),
      "cannot renew the lease: the Consul servers do not answer the agent (No cluster leader) since 2025-01-01T00:00:02.000Z; writes blocked until they answer",
    ],
  ];
  for (const [story, e, sentence] of rows) {
    test(`names what fails and since when: ${story}`, () => {
      expect(describeLeaseTrouble({ since: SINCE, err: e })).toBe(sentence);
    });
  }
});
