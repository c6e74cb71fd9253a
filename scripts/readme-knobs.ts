/**
 * Rewrites the knob table in README.md from src/config/knobs.ts (between the
 * <!-- knobs:begin --> and <!-- knobs:end --> markers). A unit test fails when
 * the two differ, so run this after changing a knob: bun scripts/readme-knobs.ts
 */
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { knobTableMarkdown } from "../src/config/knobs.ts";

const path = join(import.meta.dir, "..", "README.md");
const text = readFileSync(path, "utf8");
const begin = "<!-- knobs:begin -->";
const end = "<!-- knobs:end -->";
const a = text.indexOf(begin);
const b = text.indexOf(end);
if (a < 0 || b < a) throw new Error("README.md has no knob table markers");
writeFileSync(path, `${text.slice(0, a + begin.length)}\n${knobTableMarkdown()}\n${text.slice(b)}`);
console.log("README.md knob table updated");
