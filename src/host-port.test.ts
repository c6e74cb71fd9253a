import { expect, test } from "bun:test";
import { isIP } from "node:net";
import { ipVersion, parseHostPort } from "./host-port.ts";

test("ipVersion agrees with node:net isIP on chosen addresses", () => {
  const cases = [
    "0.0.0.0", "127.0.0.1", "255.255.255.255", "256.1.1.1", "01.2.3.4", "1.2.3", "1.2.3.4.5", "1..3.4", " 1.2.3.4", "1.2.3.4 ", "1.2.3.-4",
    "::", "::1", "1::", "1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7::", "::2:3:4:5:6:7:8", "1::8", "1:::8", "1::2::3", ":1", "1:",
    "::ffff:1.2.3.4", "::ffff:1.2.3", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:7:1.2.3.4", "1.2.3.4::", "fe80::1", "FE80::ABCD", "12345::", "g::1",
    "", ".", ":", "localhost", "example.com", "[::1]", "1.2.3.4:80",
  ];
  for (const c of cases) expect(ipVersion(c), JSON.stringify(c)).toBe(isIP(c) as 0 | 4 | 6);
});

test("ipVersion agrees with node:net isIP on 200,000 generated strings without a zone (fixed seed)", () => {
  let seed = 20261127;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
  const pick = <T>(xs: readonly T[]): T => xs[rnd(xs.length)]!;
  const octets = ["0", "1", "9", "00", "01", "10", "99", "100", "199", "200", "249", "250", "255", "256", "999", "", "a", " 1"];
  const hexes = ["0", "1", "a", "F", "ff", "fff", "ffff", "0000", "fffff", "abcd", "g", "", "12345", "1.2.3.4", "1.2.3"];
  const v4ish = () => Array.from({ length: rnd(3) === 0 ? 3 + rnd(3) : 4 }, () => pick(octets)).join(".");
  const v6ish = () => {
    const n = 1 + rnd(9);
    const gs = Array.from({ length: n }, () => pick(hexes));
    if (rnd(2) === 0) gs.push(v4ish());
    let s = gs.join(":");
    const cut = rnd(3); // none, one "::" or two
    for (let k = 0; k < cut; k++) {
      const at = rnd(s.length + 1);
      s = s.slice(0, at) + "::" + s.slice(at);
    }
    return s;
  };
  const garbage = () => Array.from({ length: 1 + rnd(8) }, () => pick([...octets, ...hexes, ":", "::", ".", "[", "]"])).join(pick(["", ".", ":"]));
  let v4 = 0;
  let v6 = 0;
  for (let i = 0; i < 200_000; i++) {
    const s = pick([v4ish, v6ish, garbage])();
    const want = isIP(s);
    if (want === 4) v4++;
    if (want === 6) v6++;
    if (ipVersion(s) !== want) throw new Error(`ipVersion(${JSON.stringify(s)}) = ${ipVersion(s)}, node:net says ${want}`);
  }
  // The generator reaches both kinds of address, not only garbage.
  expect(v4).toBeGreaterThan(1000);
  expect(v6).toBeGreaterThan(1000);
});

test("parseHostPort keeps rejecting URLs and credentials", () => {
  expect(parseHostPort("[::1]:6379")).toEqual({ host: "::1", port: 6379 });
  expect(parseHostPort("redis://h:1")).toBeUndefined();
  expect(parseHostPort("u@h:1")).toBeUndefined();
});
