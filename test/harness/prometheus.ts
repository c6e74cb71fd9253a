/**
 * A strict reader of Prometheus's text exposition format, for tests: the unit
 * tests of src/status/metrics.ts and the integration test that scrapes /metrics.
 */

/**
 * Every line must be a HELP, a TYPE (after its HELP), or a sample of the
 * metric the last TYPE named; returns the samples with their labels
 * unescaped. Throws on anything else, so a test that parses has checked the
 * format.
 */
export function parseExposition(text: string): { types: Map<string, string>; help: Map<string, string>; samples: { name: string; labels: Record<string, string>; value: number }[] } {
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  const samples: { name: string; labels: Record<string, string>; value: number }[] = [];
  if (!text.endsWith("\n")) throw new Error("the exposition must end with a newline");
  let current: string | undefined;
  for (const line of text.slice(0, -1).split("\n")) {
    let m: RegExpExecArray | null;
    if ((m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line))) {
      help.set(m[1]!, m[2]!);
    } else if ((m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram|summary|untyped)$/.exec(line))) {
      if (types.has(m[1]!)) throw new Error(`second TYPE for ${m[1]}`);
      if (!help.has(m[1]!)) throw new Error(`TYPE before HELP for ${m[1]}`);
      types.set(m[1]!, m[2]!);
      current = m[1]!;
    } else if ((m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$/.exec(line))) {
      const name = m[1]!;
      const base = types.get(name) === undefined ? name.replace(/_(bucket|sum|count)$/, "") : name;
      if (base !== current) throw new Error(`sample ${name} outside its metric's block (current ${current})`);
      const labels: Record<string, string> = {};
      const body = m[3] ?? "";
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\[\\"n])*)"(,|$)/y;
      let pos = 0;
      while (pos < body.length) {
        re.lastIndex = pos;
        const l = re.exec(body);
        if (!l) throw new Error(`bad labels in: ${line}`);
        labels[l[1]!] = l[2]!.replace(/\\(["\\n])/g, (_, c: string) => (c === "n" ? "\n" : c));
        pos = re.lastIndex;
      }
      const v = m[4]!;
      const value = v === "+Inf" ? Infinity : v === "-Inf" ? -Infinity : v === "NaN" ? NaN : Number(v);
      if (Number.isNaN(value) && v !== "NaN") throw new Error(`bad value in: ${line}`);
      samples.push({ name, labels, value });
    } else {
      throw new Error(`not an exposition line: ${JSON.stringify(line)}`);
    }
  }
  return { types, help, samples };
}
