import { describe, expect, test } from "bun:test";
import { parseExecArgs, parseFlags } from "./args.ts";

describe("parseExecArgs", () => {
  const rows: [args: string[], parsed: ReturnType<typeof parseExecArgs>][] = [
    [["./send"], { command: ["./send"] }],
    [["--", "./send", "--try", "1s"], { command: ["./send", "--try", "1s"] }],
    [["--try", "10s", "./send"], { command: ["./send"], tryMs: 10_000 }],
    [["--timeout=1m", "--", "./send", "-x"], { command: ["./send", "-x"], tryMs: 60_000 }],
    [["./send", "--try", "10s"], { command: ["./send", "--try", "10s"] }],
    [["--try"], "--try needs a duration, e.g. --try 10s"],
    [["--try", "soon", "./send"], "--try soon: not a duration; write e.g. 10s, 500ms or 1m"],
    [["--try", "0s", "./send"], "--try 0s: not a duration; write e.g. 10s, 500ms or 1m"],
    [["--try", "5s"], "exec needs a command: consul-leader exec [--try DUR] [--] CMD [ARGS...]"],
    [[], "exec needs a command: consul-leader exec [--try DUR] [--] CMD [ARGS...]"],
  ];
  for (const [args, parsed] of rows) {
    test(`exec ${args.join(" ")} -> ${JSON.stringify(parsed)}`, () => {
      expect(parseExecArgs(args)).toEqual(parsed);
    });
  }
});

describe("parseFlags", () => {
  test("takes --name value, --name=value and switches; refuses unknown names and a missing value", () => {
    expect(parseFlags(["--to", "a", "--json", "--timeout=5s"], ["--to", "--timeout", "--json"], ["--json"])).toEqual({ "--to": "a", "--json": "true", "--timeout": "5s" });
    expect(parseFlags(["--nope"], ["--to"])).toBe("unknown flag: --nope");
    expect(parseFlags(["--to"], ["--to"])).toBe("--to needs a value");
  });
});
