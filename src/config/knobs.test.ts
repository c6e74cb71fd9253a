import { describe, expect, test } from "bun:test";
import { parseDuration } from "./duration.ts";
import { knob, KNOBS, knobTableMarkdown, knobTableText, SECRET_KNOBS } from "./knobs.ts";

describe("KNOBS", () => {
  test("every knob name is unique", () => {
    const seen = new Set<string>();
    const dupes = KNOBS.map((k) => k.name).filter((n) => (seen.has(n) ? true : (seen.add(n), false)));
    expect(dupes).toEqual([]);
  });

  test("every knob is named like an environment variable of Consul's or ours", () => {
    expect(KNOBS.map((k) => k.name).filter((n) => !/^CONSUL_[A-Z0-9_]+$/.test(n))).toEqual([]);
  });

  for (const field of ["meaning", "why", "range", "unit"] as const) {
    test(`every knob has a non-empty ${field}`, () => {
      expect(KNOBS.filter((k) => k[field].trim() === "").map((k) => k.name)).toEqual([]);
    });
  }

  test("every meaning and why is a sentence ending with a full stop", () => {
    const bad = KNOBS.flatMap((k) => [k.meaning, k.why].filter((s) => !/[.)]$/.test(s.trim())).map((s) => `${k.name}: ${s}`));
    expect(bad).toEqual([]);
  });

  test("every duration knob's default is a valid duration", () => {
    const bad = KNOBS.filter((k) => k.unit.includes("duration") && k.default !== "" && k.default !== "never" && parseDuration(k.default) === undefined).map((k) => k.name);
    expect(bad).toEqual([]);
  });

  test("every bool knob's default is true or false", () => {
    expect(KNOBS.filter((k) => k.unit === "bool").map((k) => [k.name, k.default]).filter(([, d]) => d !== "true" && d !== "false")).toEqual([]);
  });

  test("knob() finds a knob by name", () => {
    expect(knob("CONSUL_LEADER_TTL").default).toBe("15s");
  });

  test("knob() throws on an unknown name so tables and code stay in step", () => {
    expect(() => knob("CONSUL_LEADER_TTLL")).toThrow("unknown knob CONSUL_LEADER_TTLL");
  });
});

describe("SECRET_KNOBS", () => {
  test("flags exactly the Consul token, the status token, the Redis password and the Sentinel endpoint's password as secret", () => {
    expect([...SECRET_KNOBS].sort()).toEqual(["CONSUL_HTTP_TOKEN", "CONSUL_LEADER_HTTP_TOKEN", "CONSUL_LEADER_REDIS_PASSWORD", "CONSUL_LEADER_SENTINEL_PASSWORD"]);
  });

  test("secret knobs have no default to print", () => {
    expect(KNOBS.filter((k) => k.secret && k.default !== "").map((k) => k.name)).toEqual([]);
  });

  test("file knobs holding secrets are not themselves secret (a path is not a secret)", () => {
    expect(SECRET_KNOBS.has("CONSUL_HTTP_TOKEN_FILE")).toBe(false);
    expect(SECRET_KNOBS.has("CONSUL_LEADER_REDIS_PASSWORD_FILE")).toBe(false);
  });
});

/** Splits a Markdown table row into cells on pipes that are not escaped. */
function cells(row: string): string[] {
  expect(row.startsWith("| ") && row.endsWith(" |")).toBe(true);
  return row.slice(1, -1).split(/(?<!\\)\|/).map((c) => c.trim());
}

describe("knobTableMarkdown", () => {
  const lines = knobTableMarkdown().split("\n");

  test("has a header, a separator and one row per knob", () => {
    expect(lines[0]).toBe("| Knob | Default | Unit | Range | Meaning, and why the default |");
    expect(lines[1]).toBe("|---|---|---|---|---|");
    expect(lines.length).toBe(KNOBS.length + 2);
  });

  test("lists the knobs in table order, one per row", () => {
    expect(lines.slice(2).map((l) => cells(l)[0])).toEqual(KNOBS.map((k) => `\`${k.name}\``));
  });

  test("prints each default in code, or (unset)", () => {
    const rows = lines.slice(2).map((l) => cells(l));
    expect(rows.map((r) => r[1])).toEqual(KNOBS.map((k) => (k.default === "" ? "(unset)" : `\`${k.default}\``)));
  });

  test("puts the meaning and the why of each knob in its last column", () => {
    const ttl = lines.find((l) => l.startsWith("| `CONSUL_LEADER_TTL` |"))!;
    expect(ttl).toContain(`${knob("CONSUL_LEADER_TTL").meaning} ${knob("CONSUL_LEADER_TTL").why} |`);
  });

  // Ranges such as "true|false|1|0" contain pipes; unescaped, they split the
  // cell and shift every later column of that row.
  test("every row has exactly five cells, even when a range contains '|'", () => {
    const bad = lines.slice(2).filter((l) => cells(l).length !== 5).map((l) => cells(l)[0]);
    expect(bad).toEqual([]);
  });
});

describe("knobTableText", () => {
  test("has one entry per knob, with its default and range", () => {
    const text = knobTableText();
    const names = text.split("\n").filter((l) => /^ {2}\S/.test(l)).map((l) => l.trim());
    expect(names).toEqual(KNOBS.map((k) => k.name));
    expect(text).toContain("  CONSUL_LEADER_TTL\n      default 15s; duration; 10s-24h\n");
    expect(text).toContain("  CONSUL_HTTP_TOKEN\n      default (unset); token; ACL token\n");
  });
});

describe("README", () => {
  test("README.md carries exactly the knob table generated from KNOBS (run bun scripts/readme-knobs.ts)", () => {
    const readme = require("node:fs").readFileSync(require("node:path").join(import.meta.dir, "..", "..", "README.md"), "utf8") as string;
    const begin = readme.indexOf("<!-- knobs:begin -->") + "<!-- knobs:begin -->".length;
    const end = readme.indexOf("<!-- knobs:end -->");
    expect(readme.slice(begin, end).trim()).toBe(knobTableMarkdown());
  });
});
