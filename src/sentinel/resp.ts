/**
 * The Redis protocol (RESP2 and RESP3) as the Sentinel-compatible endpoint
 * speaks it: an incremental parser of client requests and an encoder of
 * replies. Written here rather than taken from a library so that it runs the
 * same inside the compiled binary and has no runtime dependency.
 *
 * Guarantees: the parser never holds more than `limits.maxBuffered` bytes of
 * one unfinished request, never accepts a bulk string longer than
 * `limits.maxBulk` or an array longer than `limits.maxArgs`, and turns
 * anything that is not RESP (or an inline command) into a `protocol` error
 * naming what was wrong, after which the connection must be closed (Redis
 * does the same). Pipelined requests come out one by one, in order; a request
 * split across reads waits for its remaining bytes. Does not interpret
 * commands.
 */

export interface RespLimits {
  /** Longest bulk string (one argument), in bytes. */
  readonly maxBulk: number;
  /** Most arguments in one request. */
  readonly maxArgs: number;
  /** Most bytes held for requests not yet complete (also the longest inline command). */
  readonly maxBuffered: number;
}

/**
 * Nothing a Sentinel client sends comes near these: the longest argument is a
 * password or a client name, the longest request HELLO with AUTH and SETNAME.
 */
export const DEFAULT_LIMITS: RespLimits = { maxBulk: 64 * 1024, maxArgs: 64, maxBuffered: 256 * 1024 };

export type Parsed =
  | { kind: "request"; args: Buffer[] }
  | { kind: "protocol"; message: string };

const CR = 13;
const LF = 10;

/**
 * Feeds bytes in, takes whole requests out. `push` returns every request
 * completed by the new bytes, and at most one protocol error, always last.
 */
export class RequestParser {
  #buf: Buffer = Buffer.alloc(0);
  #failed = false;

  constructor(private readonly limits: RespLimits = DEFAULT_LIMITS) {}

  /** Bytes received but not yet part of a whole request. */
  get buffered(): number {
    return this.#buf.length;
  }

  push(chunk: Uint8Array): Parsed[] {
    if (this.#failed) return [];
    this.#buf = this.#buf.length === 0 ? Buffer.from(chunk) : Buffer.concat([this.#buf, chunk]);
    const out: Parsed[] = [];
    let pos = 0;
    while (pos < this.#buf.length) {
      const r = this.#parseOne(pos);
      if (r === undefined) break;
      if ("message" in r) {
        this.#failed = true;
        this.#buf = Buffer.alloc(0);
        out.push({ kind: "protocol", message: r.message });
        return out;
      }
      pos = r.next;
      if (r.args.length > 0) out.push({ kind: "request", args: r.args });
    }
    this.#buf = pos === this.#buf.length ? Buffer.alloc(0) : this.#buf.subarray(pos);
    if (this.#buf.length > this.limits.maxBuffered) {
      this.#failed = true;
      this.#buf = Buffer.alloc(0);
      out.push({ kind: "protocol", message: `Protocol error: request longer than ${this.limits.maxBuffered} bytes` });
    }
    return out;
  }

  /** One request from `pos`: undefined when incomplete; empty args for a blank inline line. */
  #parseOne(pos: number): { args: Buffer[]; next: number } | { message: string } | undefined {
    const b = this.#buf;
    if (b[pos] !== 0x2a /* '*' */) return this.#inline(pos);
    const head = this.#line(pos + 1);
    if (head === undefined) return this.#tooLongLine(pos);
    const n = parseInteger(head.text);
    if (n === undefined || n > this.limits.maxArgs) {
      return { message: n === undefined ? "Protocol error: invalid multibulk length" : `Protocol error: more than ${this.limits.maxArgs} arguments` };
    }
    let p = head.next;
    const args: Buffer[] = [];
    for (let i = 0; i < n; i++) {
      if (p >= b.length) return undefined;
      if (b[p] !== 0x24 /* '$' */) return { message: `Protocol error: expected '$', got '${printable(b[p]!)}'` };
      const lenLine = this.#line(p + 1);
      if (lenLine === undefined) return this.#tooLongLine(p);
      const len = parseInteger(lenLine.text);
      if (len === undefined || len > this.limits.maxBulk) return { message: "Protocol error: invalid bulk length" };
      const start = lenLine.next;
      if (b.length < start + len + 2) return undefined;
      if (b[start + len] !== CR || b[start + len + 1] !== LF) return { message: "Protocol error: bulk string not followed by CRLF" };
      args.push(Buffer.from(b.subarray(start, start + len)));
      p = start + len + 2;
    }
    return { args, next: p };
  }

  /** An inline command (telnet, `redis-cli` never): arguments separated by spaces, one line. */
  #inline(pos: number): { args: Buffer[]; next: number } | { message: string } | undefined {
    const line = this.#line(pos);
    if (line === undefined) return this.#tooLongLine(pos);
    if (/[\x00-\x08\x0b-\x1f\x7f]/.test(line.text)) return { message: "Protocol error: unexpected bytes in an inline command" };
    const words = line.text.split(/[ \t]+/).filter(Boolean);
    return { args: words.map((w) => Buffer.from(w, "latin1")), next: line.next };
  }

  /** The text up to the next CRLF (a bare LF ends inline lines too) from `pos`, and where the next line starts. */
  #line(pos: number): { text: string; next: number } | undefined {
    const b = this.#buf;
    const lf = b.indexOf(LF, pos);
    if (lf < 0) return undefined;
    const end = lf > pos && b[lf - 1] === CR ? lf - 1 : lf;
    return { text: b.toString("latin1", pos, end), next: lf + 1 };
  }

  /** A line without its end: fine while it could still be a header, else garbage. */
  #tooLongLine(pos: number): { message: string } | undefined {
    return this.#buf.length - pos > this.limits.maxBuffered ? { message: "Protocol error: too big inline request" } : undefined;
  }
}

function parseInteger(text: string): number | undefined {
  if (!/^-?\d{1,18}$/.test(text)) return undefined;
  const n = Number(text);
  return n < 0 ? undefined : n;
}

function printable(byte: number): string {
  return byte >= 0x20 && byte < 0x7f ? String.fromCharCode(byte) : `\\x${byte.toString(16).padStart(2, "0")}`;
}

// ---------------------------------------------------------------- replies

/** A reply, independent of the protocol version it is sent in. */
export type Reply =
  | { t: "simple"; v: string }
  | { t: "error"; v: string }
  | { t: "int"; v: number }
  | { t: "bulk"; v: string | Buffer }
  | { t: "null" }
  | { t: "nullArray" }
  | { t: "array"; v: Reply[] }
  /** A map in RESP3; a flat array of key, value, key, value... in RESP2. */
  | { t: "map"; v: [string, Reply][] }
  /** Out-of-band data (pub/sub messages): a push in RESP3, an array in RESP2. */
  | { t: "push"; v: Reply[] };

export const R = {
  ok: { t: "simple", v: "OK" } as Reply,
  simple: (v: string): Reply => ({ t: "simple", v }),
  error: (v: string): Reply => ({ t: "error", v }),
  int: (v: number): Reply => ({ t: "int", v }),
  bulk: (v: string | Buffer): Reply => ({ t: "bulk", v }),
  null: { t: "null" } as Reply,
  nullArray: { t: "nullArray" } as Reply,
  array: (v: Reply[]): Reply => ({ t: "array", v }),
  strings: (v: string[]): Reply => ({ t: "array", v: v.map((s) => ({ t: "bulk", v: s })) }),
  map: (v: [string, Reply][]): Reply => ({ t: "map", v }),
  /** A map whose values are all strings (Sentinel's instance descriptions). */
  fields: (v: [string, string][]): Reply => ({ t: "map", v: v.map(([k, s]) => [k, { t: "bulk", v: s }]) }),
  push: (v: Reply[]): Reply => ({ t: "push", v }),
};

/** The bytes of `r` in protocol version `proto` (2 or 3). */
export function encode(r: Reply, proto: 2 | 3): Buffer {
  const parts: Buffer[] = [];
  write(r, proto, parts);
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}

function write(r: Reply, proto: 2 | 3, out: Buffer[]): void {
  switch (r.t) {
    case "simple":
      out.push(Buffer.from(`+${oneLine(r.v)}\r\n`));
      return;
    case "error":
      out.push(Buffer.from(`-${oneLine(r.v)}\r\n`));
      return;
    case "int":
      out.push(Buffer.from(`:${Math.trunc(r.v)}\r\n`));
      return;
    case "bulk": {
      const body = typeof r.v === "string" ? Buffer.from(r.v) : r.v;
      out.push(Buffer.from(`$${body.length}\r\n`), body, Buffer.from("\r\n"));
      return;
    }
    case "null":
      out.push(Buffer.from(proto === 3 ? "_\r\n" : "$-1\r\n"));
      return;
    case "nullArray":
      out.push(Buffer.from(proto === 3 ? "_\r\n" : "*-1\r\n"));
      return;
    case "array":
    case "push":
      out.push(Buffer.from(`${r.t === "push" && proto === 3 ? ">" : "*"}${r.v.length}\r\n`));
      for (const x of r.v) write(x, proto, out);
      return;
    case "map":
      out.push(Buffer.from(proto === 3 ? `%${r.v.length}\r\n` : `*${r.v.length * 2}\r\n`));
      for (const [k, v] of r.v) {
        write({ t: "bulk", v: k }, proto, out);
        write(v, proto, out);
      }
      return;
  }
}

/** Simple strings and errors cannot hold a line break: a client would read the rest as the next reply. */
function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, " ");
}
