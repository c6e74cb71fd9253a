import { describe, expect, test } from "bun:test";
import { encode, R, RequestParser } from "./resp.ts";

const args = (p: ReturnType<RequestParser["push"]>) => p.map((x) => (x.kind === "request" ? x.args.map((a) => a.toString()) : `ERR ${x.message}`));

describe("RequestParser", () => {
  test("reads pipelined requests in order", () => {
    const p = new RequestParser();
    expect(args(p.push(Buffer.from("*1\r\n$4\r\nPING\r\n*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n$3\r\nmym\r\n")))).toEqual([
      ["PING"],
      ["SENTINEL", "get-master-addr-by-name", "mym"],
    ]);
    expect(p.buffered).toBe(0);
  });

  test("a request split at every byte comes out once, whole", () => {
    const p = new RequestParser();
    const bytes = Buffer.from("*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n");
    const out: string[][] = [];
    for (let i = 0; i < bytes.length; i++) out.push(...(args(p.push(bytes.subarray(i, i + 1))) as string[][]));
    expect(out).toEqual([["AUTH", "secret"]]);
  });

  test("bulk strings are binary-safe (CRLF inside)", () => {
    const p = new RequestParser();
    expect(args(p.push(Buffer.from("*2\r\n$4\r\nECHO\r\n$4\r\na\r\nb\r\n")))).toEqual([["ECHO", "a\r\nb"]]);
  });

  test("inline commands, as telnet sends them", () => {
    const p = new RequestParser();
    expect(args(p.push(Buffer.from("PING\r\nSENTINEL  masters\n\r\n")))).toEqual([["PING"], ["SENTINEL", "masters"]]);
  });

  test("garbage ends in one protocol error, after the requests before it", () => {
    const p = new RequestParser();
    expect(args(p.push(Buffer.from("*1\r\n$4\r\nPING\r\n*1\r\n$-5\r\n")))).toEqual([["PING"], "ERR Protocol error: invalid bulk length"]);
    expect(p.push(Buffer.from("*1\r\n$4\r\nPING\r\n"))).toEqual([]);
  });

  test("a bulk string that does not end in CRLF is an error", () => {
    expect(args(new RequestParser().push(Buffer.from("*1\r\n$2\r\nabcd\r\n")))).toEqual(["ERR Protocol error: bulk string not followed by CRLF"]);
  });

  test("an element that is not a bulk string is an error", () => {
    expect(args(new RequestParser().push(Buffer.from("*1\r\n:1\r\n")))).toEqual(["ERR Protocol error: expected '$', got ':'"]);
  });

  test("lengths past the limits are refused before anything is buffered", () => {
    const p = new RequestParser({ maxBulk: 10, maxArgs: 3, maxBuffered: 100 });
    expect(args(p.push(Buffer.from("*1\r\n$11\r\n")))).toEqual(["ERR Protocol error: invalid bulk length"]);
    expect(args(new RequestParser({ maxBulk: 10, maxArgs: 3, maxBuffered: 100 }).push(Buffer.from("*4\r\n")))).toEqual(["ERR Protocol error: more than 3 arguments"]);
    expect(args(new RequestParser().push(Buffer.from("*1\r\n$99999999999\r\n")))).toEqual(["ERR Protocol error: invalid bulk length"]);
  });

  test("an unfinished request may not grow past maxBuffered", () => {
    const p = new RequestParser({ maxBulk: 1000, maxArgs: 3, maxBuffered: 100 });
    expect(args(p.push(Buffer.from("*1\r\n$1000\r\n" + "x".repeat(200))))).toEqual(["ERR Protocol error: request longer than 100 bytes"]);
    const q = new RequestParser({ maxBulk: 1000, maxArgs: 3, maxBuffered: 100 });
    expect(args(q.push(Buffer.from("x".repeat(150))))).toEqual(["ERR Protocol error: too big inline request"]);
  });

  test("control bytes in an inline command are garbage", () => {
    expect(args(new RequestParser().push(Buffer.from("\x16\x03\x01\x02\x00\r\n")))).toEqual(["ERR Protocol error: unexpected bytes in an inline command"]);
  });
});

describe("encode", () => {
  const text = (r: Parameters<typeof encode>[0], proto: 2 | 3) => encode(r, proto).toString();

  test("simple strings, errors, integers, bulk strings", () => {
    expect(text(R.ok, 2)).toBe("+OK\r\n");
    expect(text(R.error("ERR x\r\ny"), 2)).toBe("-ERR x y\r\n");
    expect(text(R.int(42), 3)).toBe(":42\r\n");
    expect(text(R.bulk("héllo"), 2)).toBe("$6\r\nhéllo\r\n");
  });

  test("nulls differ between RESP2 and RESP3", () => {
    expect(text(R.null, 2)).toBe("$-1\r\n");
    expect(text(R.nullArray, 2)).toBe("*-1\r\n");
    expect(text(R.null, 3)).toBe("_\r\n");
    expect(text(R.nullArray, 3)).toBe("_\r\n");
  });

  test("maps are flat arrays in RESP2 and maps in RESP3", () => {
    const m = R.fields([["ip", "127.0.0.1"], ["port", "6379"]]);
    expect(text(m, 2)).toBe("*4\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n$4\r\n6379\r\n");
    expect(text(m, 3)).toBe("%2\r\n$2\r\nip\r\n$9\r\n127.0.0.1\r\n$4\r\nport\r\n$4\r\n6379\r\n");
  });

  test("pushes are arrays in RESP2", () => {
    const p = R.push([R.bulk("message"), R.bulk("+switch-master"), R.bulk("m 1 2 3 4")]);
    expect(text(p, 2).startsWith("*3\r\n")).toBe(true);
    expect(text(p, 3).startsWith(">3\r\n")).toBe(true);
  });
});
