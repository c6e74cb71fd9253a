/**
 * Structured logging: one event per line, as a JSON object or a logfmt line,
 * with a fixed `msg` and the data in fields (pino's shape: time, level, msg,
 * bindings, fields). Output goes to an injected `write` sink, so tests read
 * lines back and main.ts decides where they go.
 *
 * Guarantees: every non-empty string registered through `secrets` is
 * replaced by "[redacted]" in every line, whatever field or error message it
 * hides in (it is removed from the values before they are serialised, so
 * quoting cannot hide it). Does not guarantee delivery: a sink that throws
 * loses the line.
 */

import { type SerializedError, serializeError } from "./errors.ts";

export const LOG_LEVELS = ["error", "warn", "info", "debug"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ["text", "json"] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

export type Fields = Record<string, unknown>;

export interface Logger {
  error(msg: string, fields?: Fields): void;
  warn(msg: string, fields?: Fields): void;
  info(msg: string, fields?: Fields): void;
  debug(msg: string, fields?: Fields): void;
  /** Writes at any level; for state dumps that must appear whatever the level is. */
  always(msg: string, fields?: Fields): void;
  /**
   * Writes `doc` at any level as one event: in JSON as the field `name`; in
   * text as one `name.path=value` pair per value (`state.lock.holder=...`), so
   * a logfmt reader sees fields, not an escaped JSON string. Values that are
   * null or undefined (unknown, or not this role's) are left out.
   */
  dump(msg: string, name: string, doc: Record<string, unknown>): void;
  /** A logger whose lines carry `bindings` too. */
  child(bindings: Fields): Logger;
  isEnabled(level: LogLevel): boolean;
}

export interface LoggerOptions {
  level: LogLevel;
  format: LogFormat;
  write: (line: string) => void;
  clock: { now(): number };
  /** Values that must never be printed (tokens, passwords). Empty strings are ignored. */
  secrets?: readonly string[];
}

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };

export function createLogger(opts: LoggerOptions, bindings: Fields = {}): Logger {
  const secrets = (opts.secrets ?? []).filter((s) => s.length > 0);
  const scrub = (v: unknown, depth = 0): unknown => {
    if (typeof v === "string") return secrets.reduce((acc, s) => acc.split(s).join("[redacted]"), v);
    if (v instanceof Error) return scrub(serializeError(v), depth);
    if (Array.isArray(v)) return depth > 8 ? v : v.map((x) => scrub(x, depth + 1));
    if (v && typeof v === "object") {
      if (depth > 8) return v;
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, scrub(x, depth + 1)]));
    }
    return v;
  };
  const emit = (level: string, msg: string, fields?: Fields) => {
    const record: Fields = { time: new Date(opts.clock.now()).toISOString(), level, ...bindings, msg };
    if (fields) {
      for (const [k, v] of Object.entries(fields)) {
        if (k === "time" || k === "level" || k === "msg") continue;
        record[k] = v instanceof Error ? serializeError(v) : v;
      }
    }
    const clean = secrets.length ? (scrub(record) as Fields) : record;
    const line = opts.format === "json" ? JSON.stringify(clean, jsonReplacer) : logfmt(clean);
    try {
      opts.write(line + "\n");
    } catch {
      // A broken stdout must not take the election loop down with it.
    }
  };
  const at = (level: LogLevel) => (msg: string, fields?: Fields) => {
    if (RANK[level] <= RANK[opts.level]) emit(level, msg, fields);
  };
  return {
    error: at("error"),
    warn: at("warn"),
    info: at("info"),
    debug: at("debug"),
    always: (msg, fields) => emit("info", msg, fields),
    dump: (msg, name, doc) => emit("info", msg, opts.format === "json" ? { [name]: withoutNulls(doc) } : flattenFields(doc, name)),
    child: (more) => createLogger(opts, { ...bindings, ...more }),
    isEnabled: (level) => RANK[level] <= RANK[opts.level],
  };
}

/** A logger that drops everything; for code paths that must not print (tests, `--help`). */
export const silentLogger: Logger = {
  error() {},
  warn() {},
  info() {},
  debug() {},
  always() {},
  dump() {},
  child: () => silentLogger,
  isEnabled: () => false,
};

/**
 * `doc` as dotted keys under `prefix`, one per scalar (array items by
 * index); nulls and undefined left out, an empty object or array kept as {}
 * or [] so its presence shows.
 */
export function flattenFields(doc: unknown, prefix: string): Fields {
  const out: Fields = {};
  const walk = (v: unknown, key: string) => {
    if (v === null || v === undefined) return;
    if (Array.isArray(v)) {
      if (v.length === 0) out[key] = "[]";
      v.forEach((x, i) => walk(x, `${key}.${i}`));
      return;
    }
    if (typeof v === "object" && !(v instanceof Error)) {
      const entries = Object.entries(v as Record<string, unknown>);
      if (entries.length === 0) out[key] = "{}";
      for (const [k, x] of entries) walk(x, `${key}.${k}`);
      return;
    }
    out[key] = v;
  };
  walk(doc, prefix);
  return out;
}

/** `doc` without its null and undefined values, at every depth (arrays keep their length). */
function withoutNulls(doc: unknown): unknown {
  if (Array.isArray(doc)) return doc.map(withoutNulls);
  if (doc && typeof doc === "object" && !(doc instanceof Error)) {
    return Object.fromEntries(Object.entries(doc).filter(([, v]) => v !== null && v !== undefined).map(([k, v]) => [k, withoutNulls(v)]));
  }
  return doc;
}

function jsonReplacer(_key: string, value: unknown): unknown {
  if (typeof value === "bigint") return value.toString();
  if (value instanceof Error) return serializeError(value);
  return value;
}

function logfmt(record: Fields): string {
  const parts: string[] = [];
  const push = (key: string, value: unknown) => {
    if (value === undefined) return;
    if (value !== null && typeof value === "object") {
      if (isSerializedError(value)) {
        push(`${key}.code`, value.code);
        push(`${key}.message`, value.message);
        if (value.cause) push(`${key}.cause`, value.cause.message);
        return;
      }
      parts.push(`${key}=${quote(JSON.stringify(value, jsonReplacer))}`);
      return;
    }
    parts.push(`${key}=${quote(String(value))}`);
  };
  for (const [k, v] of Object.entries(record)) push(k, v);
  return parts.join(" ");
}

function isSerializedError(v: object): v is SerializedError {
  return "message" in v && "type" in v;
}

function quote(s: string): string {
  return s === "" || /[\s"=\\]/.test(s) ? JSON.stringify(s) : s;
}
