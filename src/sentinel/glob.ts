/**
 * Redis's glob matching (PSUBSCRIBE patterns): `*`, `?`, `[abc]`, `[^a-z]`,
 * `\x`. Iterative with one backtracking point per `*`, so a hostile pattern
 * costs at most pattern x subject steps; the endpoint bounds both lengths.
 */

export function globMatch(pattern: string, subject: string): boolean {
  let p = 0;
  let s = 0;
  let starP = -1;
  let starS = 0;
  while (s < subject.length) {
    if (p < pattern.length) {
      const c = pattern[p]!;
      if (c === "*") {
        starP = p++;
        starS = s;
        continue;
      }
      if (c === "?") {
        p++;
        s++;
        continue;
      }
      if (c === "[") {
        const m = matchClass(pattern, p, subject[s]!);
        if (m.matched) {
          p = m.next;
          s++;
          continue;
        }
      } else if (c === "\\" && p + 1 < pattern.length) {
        if (pattern[p + 1] === subject[s]) {
          p += 2;
          s++;
          continue;
        }
      } else if (c === subject[s]) {
        p++;
        s++;
        continue;
      }
    }
    if (starP < 0) return false;
    p = starP + 1;
    s = ++starS;
  }
  while (p < pattern.length && pattern[p] === "*") p++;
  return p === pattern.length;
}

/** A `[...]` class at `p`: whether `ch` is in it, and where the pattern goes on after it. */
function matchClass(pattern: string, p: number, ch: string): { matched: boolean; next: number } {
  let i = p + 1;
  const not = pattern[i] === "^";
  if (not) i++;
  let matched = false;
  while (i < pattern.length && pattern[i] !== "]") {
    if (pattern[i] === "\\" && i + 1 < pattern.length) {
      if (pattern[i + 1] === ch) matched = true;
      i += 2;
    } else if (i + 2 < pattern.length && pattern[i + 1] === "-" && pattern[i + 2] !== "]") {
      let lo = pattern[i]!;
      let hi = pattern[i + 2]!;
      if (lo > hi) [lo, hi] = [hi, lo];
      if (ch >= lo && ch <= hi) matched = true;
      i += 3;
    } else {
      if (pattern[i] === ch) matched = true;
      i++;
    }
  }
  // An unterminated class ends the pattern, as in Redis.
  const next = i < pattern.length ? i + 1 : i;
  return { matched: not ? !matched : matched, next };
}
