/**
 * The benchmark's chart as a self-contained SVG, written by hand: one line per
 * system and fault, one dot per trial on a log time axis. Filled dots are
 * failover times; hollow dots are the longest write gap of a trial where no
 * failover was expected and none happened; a red ring marks a trial with a
 * split-brain window; a cross at the right edge a failover that never came.
 * A black tick is the median (at the right edge when more than half never
 * came), a dashed green tick the target.
 */

import { completed, failovers, median, type Row, TIME_TARGETS } from "./report.ts";
import { FAULTS } from "./systems.ts";

const LABEL_W = 460;
const PLOT_W = 560;
const ROW_H = 24;
const TOP = 58;
const LEGEND_H = 86;

const COLORS: Record<string, string> = { "consul-leader": "#1f77b4", "sentinel-1000": "#ff7f0e", "sentinel-5000": "#8c564b" };

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}

function tickLabel(ms: number): string {
  return ms >= 1000 ? `${ms / 1000} s` : `${ms} ms`;
}

export function renderChart(rows: Row[], title: string): string {
  const shown = rows.filter((r) => completed(r).length > 0);
  const values = shown.flatMap((r) => completed(r).map((t) => (r.moves || t.primaryChanged ? t.failoverMs : t.writeGapMs) ?? 0));
  const lo = 10;
  const hi = Math.max(10_000, 10 ** Math.ceil(Math.log10(Math.max(...values, 1))));
  const x = (v: number) => LABEL_W + (PLOT_W * (Math.log10(Math.min(Math.max(v, lo), hi)) - Math.log10(lo))) / (Math.log10(hi) - Math.log10(lo));
  const height = TOP + shown.length * ROW_H + 30 + LEGEND_H;
  const width = LABEL_W + PLOT_W + 30;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="22" font-size="15" font-weight="bold">${esc(title)}</text>`,
    `<text x="10" y="42" fill="#555">failover time per trial: fault to the first write a discovery client had acknowledged by the new primary (log scale)</text>`,
  ];
  const bottom = TOP + shown.length * ROW_H;
  for (let d = lo; d <= hi; d *= 10) {
    for (const m of [1, 2, 5]) {
      const v = d * m;
      if (v > hi) break;
      out.push(`<line x1="${x(v)}" y1="${TOP}" x2="${x(v)}" y2="${bottom}" stroke="${m === 1 ? "#ccc" : "#eee"}"/>`);
      out.push(`<text x="${x(v)}" y="${bottom + 16}" text-anchor="middle" fill="#555">${tickLabel(v)}</text>`);
    }
  }
  shown.forEach((r, i) => {
    const y = TOP + i * ROW_H + ROW_H / 2;
    const color = COLORS[r.system] ?? "#333";
    const title = FAULTS.find((f) => f.id === r.fault)!.title;
    if (i > 0 && shown[i - 1]!.fault !== r.fault) out.push(`<line x1="10" y1="${y - ROW_H / 2}" x2="${width - 10}" y2="${y - ROW_H / 2}" stroke="#999"/>`);
    if (i === 0 || shown[i - 1]!.fault !== r.fault) out.push(`<text x="10" y="${y + 4}" font-weight="bold">${esc(title)}</text>`);
    out.push(`<text x="${LABEL_W - 8}" y="${y + 4}" text-anchor="end" fill="${color}">${esc(r.label)}</text>`);
    completed(r).forEach((t, k) => {
      const dy = ((k % 5) - 2) * 2;
      const failover = r.moves || t.primaryChanged;
      const v = failover ? t.failoverMs : t.writeGapMs;
      if (v === null) {
        out.push(`<text x="${LABEL_W + PLOT_W + 6}" y="${y + 4}" fill="${color}" font-weight="bold">x</text>`);
        return;
      }
      out.push(`<circle cx="${x(v).toFixed(1)}" cy="${y + dy}" r="3.5" fill="${failover ? color : "white"}" stroke="${color}" fill-opacity="0.7"/>`);
      if ((t.splitBrainMs ?? 0) > 0) out.push(`<circle cx="${x(v).toFixed(1)}" cy="${y + dy}" r="7" fill="none" stroke="#d62728" stroke-width="1.5"/>`);
    });
    const fo = failovers(r);
    if (fo.length) {
      const m = x(median(fo));
      out.push(`<line x1="${m}" y1="${y - 9}" x2="${m}" y2="${y + 9}" stroke="black" stroke-width="2"/>`);
    }
    const target = r.system === "consul-leader" ? TIME_TARGETS[r.fault] : undefined;
    if (target) out.push(`<line x1="${x(target.ms)}" y1="${y - 11}" x2="${x(target.ms)}" y2="${y + 11}" stroke="#2ca02c" stroke-width="2" stroke-dasharray="3,2"/>`);
  });
  const ly = bottom + 38;
  const legend: [string, string][] = [
    [`<circle cx="16" cy="0" r="3.5" fill="#1f77b4"/>`, "failover time (one trial)"],
    [`<circle cx="16" cy="0" r="3.5" fill="white" stroke="#1f77b4"/>`, "longest write gap where no failover was expected (one trial)"],
    [`<circle cx="16" cy="0" r="7" fill="none" stroke="#d62728" stroke-width="1.5"/>`, "trial with a split-brain window > 0"],
    [`<line x1="16" y1="-9" x2="16" y2="9" stroke="black" stroke-width="2"/>`, "median failover time"],
    [`<line x1="16" y1="-9" x2="16" y2="9" stroke="#2ca02c" stroke-width="2" stroke-dasharray="3,2"/>`, "issue's target (median for handover and crash, every trial for sidecar faults)"],
    [`<text x="12" y="4" font-weight="bold">x</text>`, "a failover that never came (right edge)"],
  ];
  legend.forEach(([mark, text], i) => {
    const lx = 10 + (i % 2) * 480;
    const yy = ly + Math.floor(i / 2) * 20;
    out.push(`<g transform="translate(${lx},${yy})">${mark}<text x="30" y="4">${esc(text)}</text></g>`);
  });
  out.push("</svg>");
  return out.join("\n") + "\n";
}
