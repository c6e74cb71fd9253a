/**
 * Foreign data, checked before use: a tiny schema per JSON wire format that
 * other processes write into Consul (the lock value, member entries,
 * switchover requests). Anyone with KV write on the prefix can put anything
 * there, so every field is checked for its type, its size and, where it has
 * one, its shape.
 *
 * Guarantees: `parseRecord` returns either a value whose every declared field
 * has the declared type (optional ones absent or well-typed) or a one-line
 * problem naming the field, the rule and what was found. Fields the schema
 * does not declare are dropped, not rejected, so a newer version of this
 * sidecar can add fields during a rolling upgrade. Does not judge meaning
 * (an epoch that went backwards, an address nobody listens on).
 */

/** Longest string any field may hold: no legitimate value comes close. */
export const MAX_STRING = 512;
/** Longest JSON text accepted for one record. */
export const MAX_RECORD = 8192;

export type FieldSpec =
  | { type: "string"; optional?: boolean; pattern?: RegExp; oneOf?: readonly string[] }
  | { type: "number"; optional?: boolean; integer?: boolean; min?: number }
  | { type: "boolean"; optional?: boolean };

export type Schema = Readonly<Record<string, FieldSpec>>;

export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string };

/** Parses `text` as one JSON object of `schema`; `what` names it in the problem ("the lock value"). */
export function parseRecord<T>(text: string, schema: Schema, what: string): Parsed<T> {
  if (text.length > MAX_RECORD) return { ok: false, problem: `${what} is ${text.length} bytes, more than the ${MAX_RECORD} allowed` };
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { ok: false, problem: `${what} is not JSON: ${snippet(text)}` };
  }
  return checkRecord<T>(raw, schema, what);
}

/** Checks an already parsed value against `schema` (see parseRecord). */
export function checkRecord<T>(raw: unknown, schema: Schema, what: string): Parsed<T> {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return { ok: false, problem: `${what} is not a JSON object: ${snippet(JSON.stringify(raw) ?? String(raw))}` };
  const src = raw as Record<string, unknown>;
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(schema)) {
    const v = src[name];
    if (v === undefined || v === null) {
      if (spec.optional) continue;
      return { ok: false, problem: `${what} has no ${name}` };
    }
    const found = typeof v === "string" ? snippet(v) : (JSON.stringify(v) ?? String(v)).slice(0, 80);
    const bad = (rule: string) => ({ ok: false as const, problem: `${what}: ${name} must be ${rule}, got ${found}` });
    switch (spec.type) {
      case "string":
        if (typeof v !== "string") return bad("a string");
        if (v.length > MAX_STRING) return bad(`at most ${MAX_STRING} characters`);
        if (spec.oneOf && !spec.oneOf.includes(v)) return bad(`one of ${spec.oneOf.join(", ")}`);
        if (spec.pattern && !spec.pattern.test(v)) return bad(`like ${spec.pattern}`);
        break;
      case "number":
        if (typeof v !== "number" || !Number.isFinite(v)) return bad("a number");
        if (spec.integer && !Number.isSafeInteger(v)) return bad("a whole number");
        if (spec.min !== undefined && v < spec.min) return bad(`at least ${spec.min}`);
        break;
      case "boolean":
        if (typeof v !== "boolean") return bad("true or false");
        break;
    }
    out[name] = v;
  }
  return { ok: true, value: out as T };
}

/** At most 80 characters of foreign text, for a log line. */
export function snippet(text: string): string {
  const t = text.replace(/\s+/g, " ");
  return JSON.stringify(t.length > 80 ? `${t.slice(0, 77)}...` : t);
}
