import { describe, expect, test } from "bun:test";
import { KNOBS } from "./knobs.ts";
import { closestKnob, editDistance, NOT_KNOBS, unknownKnobWarnings } from "./spelling.ts";

describe("editDistance", () => {
  const rows: [string, string, number][] = [
    ["", "", 0],
    ["abc", "abc", 0],
    ["abc", "", 3],
    ["kitten", "sitting", 3],
    ["CONSUL_LEADR_TTL", "CONSUL_LEADER_TTL", 1],
    ["CONSUL_LEADER_LOGLEVEL", "CONSUL_LEADER_LOG_LEVEL", 1],
  ];
  for (const [a, b, d] of rows) {
    test(`editDistance(${JSON.stringify(a)}, ${JSON.stringify(b)}) is ${d}, both ways`, () => {
      expect(editDistance(a, b)).toBe(d);
      expect(editDistance(b, a)).toBe(d);
    });
  }
});

describe("closestKnob", () => {
  test("finds the knob a typo came from", () => {
    expect(closestKnob("CONSUL_LEADER_REDIS_ADRR")).toEqual({ knob: "CONSUL_LEADER_REDIS_ADDR", distance: 1 });
    expect(closestKnob("CONSUL_HTTP_TOKE")).toEqual({ knob: "CONSUL_HTTP_TOKEN", distance: 1 });
  });
});

describe("unknownKnobWarnings", () => {
  test("says nothing about real knobs or names outside CONSUL_", () => {
    expect(unknownKnobWarnings([...KNOBS.map((k) => k.name), "PATH", "NOMAD_ALLOC_ID", "HOME"], "the environment")).toEqual([]);
  });

  test("says nothing about the names hooks, exec, the scripts and the tests use", () => {
    expect(unknownKnobWarnings(NOT_KNOBS, "the environment")).toEqual([]);
  });

  test("a CONSUL_ name close to a knob is a typo; one far from every knob is some other tool's", () => {
    expect(unknownKnobWarnings(["CONSUL_HTTP_SSL_VERIF", "CONSUL_SOMETOOL_SETTING"], ".env")).toEqual([
      "CONSUL_HTTP_SSL_VERIF (in .env) is not a knob and is ignored; did you mean CONSUL_HTTP_SSL_VERIFY?",
    ]);
  });

  test("each name is warned about once, in name order", () => {
    expect(unknownKnobWarnings(["CONSUL_LEADER_TTLL", "CONSUL_LEADER_KEYY", "CONSUL_LEADER_TTLL"], "the environment")).toEqual([
      "CONSUL_LEADER_KEYY (in the environment) is not a knob and is ignored; did you mean CONSUL_LEADER_KEY?",
      "CONSUL_LEADER_TTLL (in the environment) is not a knob and is ignored; did you mean CONSUL_LEADER_TTL?",
    ]);
  });
});
