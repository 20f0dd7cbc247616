import type { BenchRecord } from './records';

/**
 * An SVG plot of the RTT sweep: tokens/s relative to origin-only decoding (same
 * run, same RTT, same origin cost) against round-trip time, one line per mode,
 * one panel per origin cost. Dependency-free: the harness writes it as text.
 */
const COLORS: Record<string, string> = { 'origin-only': '#777777', lockstep: '#1f77b4', pipelined: '#2ca02c', adaptive: '#d62728' };

export function renderSvg(records: BenchRecord[], suite = 'speculation'): string {
  const sweep = records.filter((r) => r.suite === suite);
  const costs = [...new Set(sweep.map((r) => r.origin_cost))];
  const rtts = [...new Set(sweep.map((r) => r.rtt_ms))].sort((a, b) => a - b);
  const modes = [...new Set(sweep.map((r) => r.mode))];
  const ratio = (r: BenchRecord) => {
    const base = sweep.find((b) => b.mode === 'origin-only' && b.rtt_ms === r.rtt_ms && b.origin_cost === r.origin_cost);
    return base ? r.tokens_per_s / base.tokens_per_s : NaN;
  };
  const maxRatio = Math.max(2.2, ...sweep.map(ratio).filter(Number.isFinite));
  const W = 420;
  const H = 300;
  const pad = { l: 50, r: 15, t: 30, b: 45 };
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W * costs.length}" height="${H + 30}" font-family="sans-serif" font-size="11">`);
  out.push(`<rect width="100%" height="100%" fill="white"/>`);
  costs.forEach((cost, p) => {
    const x0 = p * W;
    const xs = (i: number) => x0 + pad.l + (rtts.length > 1 ? (i / (rtts.length - 1)) * (W - pad.l - pad.r) : 0);
    const ys = (v: number) => pad.t + (1 - v / maxRatio) * (H - pad.t - pad.b);
    out.push(`<text x="${x0 + W / 2}" y="16" text-anchor="middle" font-weight="bold">origin cost: ${esc(cost)}</text>`);
    out.push(`<line x1="${x0 + pad.l}" y1="${ys(0)}" x2="${x0 + W - pad.r}" y2="${ys(0)}" stroke="black"/>`);
    out.push(`<line x1="${x0 + pad.l}" y1="${ys(0)}" x2="${x0 + pad.l}" y2="${ys(maxRatio)}" stroke="black"/>`);
    for (let v = 0; v <= maxRatio + 1e-9; v += 0.5) {
      out.push(`<line x1="${x0 + pad.l}" y1="${ys(v)}" x2="${x0 + W - pad.r}" y2="${ys(v)}" stroke="${v === 1 ? '#999' : '#eee'}" ${v === 1 ? 'stroke-dasharray="4 3"' : ''}/>`);
      out.push(`<text x="${x0 + pad.l - 6}" y="${ys(v) + 4}" text-anchor="end">${v.toFixed(1)}x</text>`);
    }
    rtts.forEach((rtt, i) => out.push(`<text x="${xs(i)}" y="${H - pad.b + 16}" text-anchor="middle">${rtt}</text>`));
    out.push(`<text x="${x0 + W / 2}" y="${H - 8}" text-anchor="middle">round-trip time edge-origin (ms)</text>`);
    out.push(`<text x="${x0 + 12}" y="${H / 2}" text-anchor="middle" transform="rotate(-90 ${x0 + 12} ${H / 2})">tokens/s vs origin-only</text>`);
    for (const mode of modes) {
      const points = rtts
        .map((rtt, i) => {
          const r = sweep.find((x) => x.mode === mode && x.rtt_ms === rtt && x.origin_cost === cost);
          return r && Number.isFinite(ratio(r)) ? [xs(i), ys(ratio(r))] : null;
        })
        .filter((pt): pt is number[] => pt !== null);
      const color = COLORS[mode] ?? '#9467bd';
      out.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${points.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(' ')}"/>`);
      for (const [x, y] of points) out.push(`<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="3" fill="${color}"/>`);
    }
  });
  modes.forEach((mode, i) => {
    const x = 60 + i * 110;
    out.push(`<rect x="${x}" y="${H + 12}" width="12" height="4" fill="${COLORS[mode] ?? '#9467bd'}"/><text x="${x + 16}" y="${H + 18}">${esc(mode)}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

const esc = (s: string) => s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]!);
