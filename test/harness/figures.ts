/**
 * Measurements the integration tests make along the way (takeover times and
 * the like). Printed as they happen and summarised (median, max) when the
 * test process exits, so the suite's output carries the figures. These are
 * reports, not assertions: the bounds tests assert are written in the tests.
 */

const figures = new Map<string, number[]>();

export function record(name: string, value: number): void {
  const list = figures.get(name) ?? [];
  list.push(value);
  figures.set(name, list);
  process.stdout.write(`figure: ${name} = ${Math.round(value)}\n`);
}

process.on("exit", () => {
  if (figures.size === 0) return;
  process.stdout.write("\nfigures measured by this run:\n");
  for (const [name, values] of figures) {
    const sorted = [...values].sort((a, b) => a - b);
    const median = sorted[Math.floor((sorted.length - 1) / 2)]!;
    process.stdout.write(`  ${name}: median ${Math.round(median)}, max ${Math.round(sorted.at(-1)!)}, n=${sorted.length}\n`);
  }
});
