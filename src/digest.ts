/**
 * Hashes and the constant-time comparison of secrets, on Bun's native
 * hasher. Not node:crypto: importing it loads Bun's Node compatibility
 * layer (streams, events): 4.7 MiB of resident memory in a compiled test
 * program that differs only in this import; in the sidecar, together with
 * node:net, 0.7-0.9 MiB (part of that layer loads anyway).
 */

/** SHA-256 of `data` (text as UTF-8), 32 bytes. */
export function sha256(data: string | Uint8Array): Uint8Array {
  return new Bun.CryptoHasher("sha256").update(data).digest() as Uint8Array;
}

/** SHA-256 of `text` (UTF-8), base64: what a Content-Security-Policy hash source takes. */
export function sha256Base64(text: string): string {
  return new Bun.CryptoHasher("sha256").update(text).digest("base64");
}

/** SHA-1 of `text` (UTF-8), 40 lowercase hex digits. For ids, never for secrets. */
export function sha1Hex(text: string): string {
  return new Bun.CryptoHasher("sha1").update(text).digest("hex");
}

/**
 * True when two digests (`sha256()` results) are equal, in a time that does
 * not depend on where they differ: every byte pair is compared, without an
 * early exit. Hash both secrets first, so their lengths do not show either.
 */
export function digestsEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
