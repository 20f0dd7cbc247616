import type { BenchRecord } from './records';

/** The Markdown tables BENCHMARKS.md shows, from one run's records. */
export function renderMarkdown(run: { date: string; command: string; seconds: number; records: BenchRecord[] }): string {
  const lines = [`Run ${run.date} (${run.seconds} s), \`${run.command}\`, origin cost: measured (2-core CPU machine, edge and origin sharing it).`, ''];
  const speed = run.records.filter((r) => r.suite === 'draft-speed');
  if (speed.length) {
    const native = speed.find((r) => r.mode === 'onnxruntime-node')?.draft_ms_per_token ?? NaN;
    lines.push('| draft runtime | ms per decode step | vs native |', '|---|---:|---:|');
    for (const r of speed) lines.push(`| ${r.mode} | ${r.draft_ms_per_token} | ${(r.draft_ms_per_token / native).toFixed(2)}x |`);
    lines.push('');
  }
  const spec = run.records.filter((r) => r.suite === 'speculation');
  if (spec.length) {
    lines.push('| temperature | mode | k | RTT ms | tokens/s | vs origin-only | TTFT ms | target passes/token | mean accepted/round | acceptance |', '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of spec) {
      const baseline = spec.find((b) => b.mode === 'origin-only' && b.temperature === r.temperature && b.rtt_ms === r.rtt_ms);
      const ratio = baseline ? (r.tokens_per_s / baseline.tokens_per_s).toFixed(2) + 'x' : '';
      lines.push(`| ${r.temperature} | ${r.mode} | ${r.draft_length} | ${r.rtt_ms} | ${r.tokens_per_s} | ${ratio} | ${r.ttft_ms} | ${r.target_passes_per_token} | ${r.mean_accepted} | ${r.acceptance_rate ?? ''} |`);
    }
    lines.push('');
  }
  return lines.join('\n');
}
