import { expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { digestsEqual, sha1Hex, sha256, sha256Base64 } from "./digest.ts";

test("the hashes are SHA-256 and SHA-1 as node:crypto computes them, text as UTF-8", () => {
  for (const t of ["", "token", "pässwörd ✓", "x".repeat(10_000)]) {
    expect(Buffer.from(sha256(t)).toString("hex")).toBe(createHash("sha256").update(t, "utf8").digest("hex"));
    expect(sha256Base64(t)).toBe(createHash("sha256").update(t, "utf8").digest("base64"));
    expect(sha1Hex(t)).toBe(createHash("sha1").update(t, "utf8").digest("hex"));
  }
  const bytes = new Uint8Array([0, 255, 10, 13]);
  expect(Buffer.from(sha256(bytes)).toString("hex")).toBe(createHash("sha256").update(bytes).digest("hex"));
});

test("digestsEqual: equal digests only; a difference in any byte, or in length, is unequal", () => {
  const a = sha256("the-status-token-0123");
  expect(digestsEqual(a, sha256("the-status-token-0123"))).toBe(true);
  for (let i = 0; i < 32; i++) {
    const b = Uint8Array.from(a); // a copy: Buffer.slice would share the bytes
    b[i] = b[i]! ^ 1;
    expect(digestsEqual(a, b)).toBe(false);
  }
  expect(digestsEqual(a, a.slice(0, 31))).toBe(false);
  expect(digestsEqual(sha256(""), sha256(" "))).toBe(false);
});
