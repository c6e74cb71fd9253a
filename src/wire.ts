/**
 * Foreign data, checked before use: a tiny schema per JSON wire format that
 * other processes write into Consul (the lock value, member entries,
 * switchover requests) and per answer of Consul's HTTP API (consul/shapes.ts).
 * Anyone with KV write on the prefix can put anything there, so every field
 * is checked for its type, its size and, where it has one, its shape.
 *
 * Guarantees: `parseRecord` returns either a value whose every declared field
 * has the declared type (optional ones absent or well-typed) or a one-line
 * problem naming the field, the rule and what was found. Fields the schema
 * does not declare are dropped, not rejected, so a newer version of this
 * sidecar can add fields during a rolling upgrade. Does not judge meaning
 * (an epoch that went backwards, an address nobody listens on).
 */

/** Longest string a field of a closed record may hold: no legitimate value comes close. */
export const MAX_STRING = 512;
/** Longest JSON text accepted for one record. */
export const MAX_RECORD = 8192;
/** Longest string in an open record (Consul's own answers; a KV value is at most 512 KiB, base64 adds a third). */
export const MAX_OPEN_STRING = 1 << 20;
/** Most items in a list or entries in a map: a group has a handful of members, a service a few tags. */
export const MAX_ITEMS = 10_000;

export type FieldSpec =
  | { type: "string"; optional?: boolean; pattern?: RegExp; oneOf?: readonly string[] }
  | { type: "number"; optional?: boolean; integer?: boolean; min?: number }
  | { type: "boolean"; optional?: boolean }
  /** An array of strings (tags). */
  | { type: "strings"; optional?: boolean }
  /** An object of string values (service Meta). */
  | { type: "map"; optional?: boolean }
  | { type: "object"; schema: Schema; optional?: boolean }
  | { type: "list"; schema: Schema; optional?: boolean }
  /** Anything: passed through unexamined (Consul's Proxy, Connect), never read by this program. */
  | { type: "any"; optional?: boolean };

export type Schema = Readonly<Record<string, FieldSpec>>;

export type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string };

/**
 * closed (the default, for what other sidecars write): undeclared fields are
 * dropped and strings are short. open (for Consul's own answers): every field
 * is kept, declared ones are checked, strings may be long.
 */
export interface CheckOptions {
  open?: boolean;
}

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
export function checkRecord<T>(raw: unknown, schema: Schema, what: string, o: CheckOptions = {}): Parsed<T> {
  const problem = recordProblem(raw, schema, what, o);
  if (problem !== undefined) return { ok: false, problem };
  return { ok: true, value: (o.open ? raw : pick(raw as Record<string, unknown>, schema)) as T };
}

/** Checks a JSON array of records (Consul's list answers). */
export function checkList<T>(raw: unknown, schema: Schema, what: string, o: CheckOptions = {}): Parsed<T[]> {
  if (!Array.isArray(raw)) return { ok: false, problem: `${what} is not a JSON array: ${shown(raw)}` };
  if (raw.length > MAX_ITEMS) return { ok: false, problem: `${what} has ${raw.length} items, more than the ${MAX_ITEMS} allowed` };
  const out: T[] = [];
  for (let i = 0; i < raw.length; i++) {
    const r = checkRecord<T>(raw[i], schema, `${what}[${i}]`, o);
    if (!r.ok) return r;
    out.push(r.value);
  }
  return { ok: true, value: out };
}

function recordProblem(raw: unknown, schema: Schema, what: string, o: CheckOptions): string | undefined {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) return `${what} is not a JSON object: ${shown(raw)}`;
  const src = raw as Record<string, unknown>;
  const maxString = o.open ? MAX_OPEN_STRING : MAX_STRING;
  for (const [name, spec] of Object.entries(schema)) {
    const v = src[name];
    if (v === undefined || v === null) {
      if (spec.optional) continue;
      return `${what} has no ${name}`;
    }
    const bad = (rule: string) => `${what}: ${name} must be ${rule}, got ${shown(v)}`;
    switch (spec.type) {
      case "string":
        if (typeof v !== "string") return bad("a string");
        if (v.length > maxString) return bad(`at most ${maxString} characters`);
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
      case "strings":
        if (!Array.isArray(v) || v.length > MAX_ITEMS || v.some((x) => typeof x !== "string" || x.length > maxString)) return bad("a list of strings");
        break;
      case "map":
        if (typeof v !== "object" || Array.isArray(v)) return bad("an object of strings");
        {
          const entries = Object.entries(v as Record<string, unknown>);
          if (entries.length > MAX_ITEMS || entries.some(([, x]) => typeof x !== "string" || x.length > maxString)) return bad("an object of strings");
        }
        break;
      case "object": {
        const p = recordProblem(v, spec.schema, `${what}: ${name}`, o);
        if (p !== undefined) return p;
        break;
      }
      case "list":
        if (!Array.isArray(v) || v.length > MAX_ITEMS) return bad("a list");
        for (let i = 0; i < v.length; i++) {
          const p = recordProblem(v[i], spec.schema, `${what}: ${name}[${i}]`, o);
          if (p !== undefined) return p;
        }
        break;
      case "any":
        break;
    }
  }
  return undefined;
}

/** The declared fields of a checked closed record, nested records picked the same way. */
function pick(src: Record<string, unknown>, schema: Schema): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(schema)) {
    const v = src[name];
    if (v === undefined || v === null) continue;
    if (spec.type === "object") out[name] = pick(v as Record<string, unknown>, spec.schema);
    else if (spec.type === "list") out[name] = (v as Record<string, unknown>[]).map((x) => pick(x, spec.schema));
    else if (spec.type === "map") out[name] = { ...(v as Record<string, string>) };
    else if (spec.type === "strings") out[name] = [...(v as string[])];
    else out[name] = v;
  }
  return out;
}

/** A foreign value in a problem line: a bounded snippet. */
function shown(v: unknown): string {
  if (typeof v === "string") return snippet(v);
  let t: string;
  try {
    t = JSON.stringify(v) ?? String(v);
  } catch {
    t = String(v);
  }
  return t.length > 80 ? `${t.slice(0, 77)}...` : t;
}

/** At most 80 characters of foreign text, for a log line. */
export function snippet(text: string): string {
  const t = text.replace(/\s+/g, " ");
  return JSON.stringify(t.length > 80 ? `${t.slice(0, 77)}...` : t);
}
