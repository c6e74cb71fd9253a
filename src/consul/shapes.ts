/**
 * The shape of every Consul answer this program reads, as wire.ts schemas:
 * client.ts checks each answer against its shape once, at the boundary, and
 * throws CONSUL_BAD_RESPONSE naming the field when it does not fit. The
 * schemas are open (wire.ts): fields Consul adds later pass through.
 *
 * Guarantees: a value the client returns has every field declared here with
 * the declared type. Does not check what Consul is trusted to mean (that an
 * index grows, that a session ID names a session).
 */

import type { Schema } from "../wire.ts";

const INDEX = { type: "number", integer: true, min: 0 } as const;

export const KV_PAIR: Schema = {
  Key: { type: "string" },
  CreateIndex: INDEX,
  ModifyIndex: INDEX,
  LockIndex: INDEX,
  Flags: { type: "number", integer: true, min: 0 },
  Value: { type: "string", optional: true },
  Session: { type: "string", optional: true },
};

/** Only the ID is read; the rest is checked for type when present. */
export const SESSION: Schema = {
  ID: { type: "string" },
  Name: { type: "string", optional: true },
  Node: { type: "string", optional: true },
  LockDelay: { type: "number", optional: true, min: 0 },
  Behavior: { type: "string", optional: true },
  TTL: { type: "string", optional: true },
  NodeChecks: { type: "strings", optional: true },
  ServiceChecks: { type: "list", optional: true, schema: { ID: { type: "string" } } },
  CreateIndex: { ...INDEX, optional: true },
  ModifyIndex: { ...INDEX, optional: true },
};

const WEIGHTS: Schema = { Passing: { type: "number" }, Warning: { type: "number" } };

export const AGENT_SERVICE: Schema = {
  ID: { type: "string" },
  Service: { type: "string" },
  Tags: { type: "strings", optional: true },
  Meta: { type: "map", optional: true },
  Port: { type: "number", integer: true, min: 0 },
  Address: { type: "string" },
  EnableTagOverride: { type: "boolean", optional: true },
  Kind: { type: "string", optional: true },
  TaggedAddresses: { type: "any", optional: true },
  Weights: { type: "object", optional: true, schema: WEIGHTS },
  ContentHash: { type: "string", optional: true },
};

export const AGENT_CHECK: Schema = {
  CheckID: { type: "string" },
  Status: { type: "string" },
  ServiceID: { type: "string" },
  Name: { type: "string" },
  Notes: { type: "string", optional: true },
};

export const HEALTH_ENTRY: Schema = {
  Node: { type: "object", schema: { Node: { type: "string" }, Address: { type: "string" } } },
  Service: { type: "object", schema: AGENT_SERVICE },
  Checks: { type: "list", schema: { CheckID: { type: "string" }, Status: { type: "string" }, ServiceID: { type: "string" } } },
};

export const CATALOG_SERVICE: Schema = {
  Node: { type: "string" },
  Address: { type: "string" },
  ServiceID: { type: "string" },
  ServiceName: { type: "string" },
  ServiceTags: { type: "strings", optional: true },
  ServiceAddress: { type: "string" },
  ServicePort: { type: "number", integer: true, min: 0 },
  ServiceMeta: { type: "map", optional: true },
  ServiceEnableTagOverride: { type: "boolean", optional: true },
  ServiceTaggedAddresses: { type: "any", optional: true },
  ServiceWeights: { type: "object", optional: true, schema: WEIGHTS },
  ServiceKind: { type: "string", optional: true },
};

export const PREPARED_QUERY: Schema = {
  ID: { type: "string" },
  Name: { type: "string" },
  Service: { type: "object", schema: { Service: { type: "string" }, Tags: { type: "strings", optional: true }, OnlyPassing: { type: "boolean", optional: true } } },
};

/** PUT /v1/txn refused (409): which operation failed and why. */
export const TXN_REFUSED: Schema = {
  Errors: { type: "list", optional: true, schema: { OpIndex: { type: "number", integer: true, min: 0, optional: true }, What: { type: "string", optional: true } } },
};

/** POST /v1/query and PUT /v1/session/create answer `{"ID": ...}`. */
export const CREATED: Schema = { ID: { type: "string" } };

export const AGENT_SELF: Schema = {
  Config: { type: "object", schema: { NodeName: { type: "string" }, Datacenter: { type: "string", optional: true }, Version: { type: "string", optional: true } } },
  DebugConfig: { type: "object", optional: true, schema: { Experiments: { type: "strings", optional: true } } },
};
