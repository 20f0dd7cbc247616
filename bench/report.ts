import type { BenchRecord } from './records';

/** The Markdown BENCHMARKS.md shows, from one run's records. Suites it does not know get a generic table. */
export function renderMarkdown(run: { date: string; command: string; seconds: number; records: BenchRecord[] }): string {
  const lines = [`Run ${run.date} (${run.seconds} s): \`${run.command}\`. Plot: [bench/results/latest.svg](bench/results/latest.svg).`, ''];
  // Suites an --only run did not touch keep their earlier records (bench/run.ts), labelled with their run.
  const carried = new Map<string, Set<string>>();
  for (const r of run.records) {
    if (typeof r.carried_from !== 'string') continue;
    if (!carried.has(r.carried_from)) carried.set(r.carried_from, new Set());
    carried.get(r.carried_from)!.add(r.suite);
  }
  for (const [from, suites] of carried) lines.push(`${suites.size > 1 ? 'Suites' : 'Suite'} ${[...suites].map((s) => `\`${s}\``).join(', ')}: carried over from ${from}.`, '');
  const known = new Set(['draft-speed', 'speculation', 'block-verification', 'proposers', 'placement', 'session']);

  const speed = run.records.filter((r) => r.suite === 'draft-speed');
  if (speed.length) {
    lines.push('**Draft decode step** (same int8 model, one thread, interleaved repeats):', '');
    lines.push('| runtime | median ms/step | min ms/step | vs native (median) | vs native (min) |', '|---|---:|---:|---:|---:|');
    for (const r of speed) lines.push(`| ${r.mode} | ${r.draft_ms_per_token} | ${r.draft_ms_min ?? ''} | ${r.vs_native_median ?? ''}x | ${r.vs_native_min ?? ''}x |`);
    lines.push('');
  }

  const sweep = run.records.filter((r) => r.suite === 'speculation');
  for (const cost of [...new Set(sweep.map((r) => r.origin_cost))]) {
    const rows = sweep.filter((r) => r.origin_cost === cost);
    lines.push(`**Speculation vs origin-only, origin cost: ${cost}** (temperature ${rows[0]?.temperature ?? 0}, ${rows[0]?.prompts ?? '?'} prompts × ${rows[0] ? Math.round(Number(rows[0].tokens) / Number(rows[0].prompts)) : '?'} tokens per mode and RTT):`, '');
    lines.push('| RTT ms | mode | tokens/s | vs origin-only | TTFT ms | target passes/token | mean accepted/round | acceptance | draft ms/token | hand-over |', '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|');
    for (const r of rows) {
      const baseline = rows.find((b) => b.mode === 'origin-only' && b.rtt_ms === r.rtt_ms);
      const ratio = baseline ? (r.tokens_per_s / baseline.tokens_per_s).toFixed(2) + 'x' : '';
      lines.push(`| ${r.rtt_ms} | ${r.mode} | ${r.tokens_per_s} | ${ratio} | ${r.ttft_ms} | ${r.target_passes_per_token} | ${r.mean_accepted} | ${r.acceptance_rate ?? ''} | ${r.draft_ms_per_token || ''} | ${r.handover_fraction ? r.handover_fraction : ''} |`);
    }
    lines.push('');
  }

  const block = run.records.filter((r) => r.suite === 'block-verification');
  if (block.length) {
    lines.push(`**Block vs token-level verification** (same prompts and seeds, lockstep k = ${block[0].draft_length}, temperature ${block[0].temperature}, origin cost ${block[0].origin_cost}):`, '');
    lines.push('| method | mean accepted/round | acceptance | tokens/s | target passes/token |', '|---|---:|---:|---:|---:|');
    for (const r of block) lines.push(`| ${r.mode} | ${r.mean_accepted} | ${r.acceptance_rate ?? ''} | ${r.tokens_per_s} | ${r.target_passes_per_token} |`);
    lines.push('');
  }

  const proposers = run.records.filter((r) => r.suite === 'proposers');
  for (const workload of [...new Set(proposers.map((r) => String(r.workload)))]) {
    for (const cost of [...new Set(proposers.map((r) => r.origin_cost))]) {
      const rows = proposers.filter((r) => r.workload === workload && r.origin_cost === cost);
      if (!rows.length) continue;
      const measured = rows[0].prompts ?? '?';
      lines.push(`**Proposers, ${workload}, origin cost: ${cost}** (greedy, lockstep k = 4, ${measured} measured prompts × ${rows[0].max_tokens ?? '?'} tokens per mode and RTT; c = draft ms per drafted token / origin-only target ms per token in the same cell):`, '');
      lines.push('| RTT ms | mode | tokens/s | vs origin-only | vs draft-model | target passes/token | tokens/verify round | accepted drafts/round | accepted per round, by proposer (rounds) | c |', '|---:|---|---:|---:|---:|---:|---:|---:|---|---:|');
      for (const r of rows) {
        const by = Object.entries((r.proposers ?? {}) as Record<string, { rounds: number; accepted_per_round: number }>)
          .map(([name, p]) => `${name} ${p.accepted_per_round} (${p.rounds})`)
          .join(', ');
        lines.push(`| ${r.rtt_ms} | ${r.mode} | ${r.tokens_per_s} | ${r.vs_origin_only ?? ''}x | ${r.vs_draft_model ?? ''}x | ${r.target_passes_per_token} | ${r.mean_accepted} | ${r.accepted_per_round ?? ''} | ${by} | ${r.draft_target_cost_ratio ?? ''} |`);
      }
      lines.push('');
    }
  }

  const placement = run.records.filter((r) => r.suite === 'placement');
  for (const cost of [...new Set(placement.map((r) => r.origin_cost))]) {
    for (const temperature of [...new Set(placement.map((r) => Number(r.temperature ?? 0)))]) {
      const rows = placement.filter((r) => r.origin_cost === cost && Number(r.temperature ?? 0) === temperature);
      if (!rows.length) continue;
      lines.push(
        `**Speculation peers, origin cost ${cost}, temperature ${temperature}** (${rows[0].prompts} prompts × ${Math.round(Number(rows[0].tokens) / Number(rows[0].prompts))} tokens per peer and RTT; "vs best" is against the best of the other peers; c = draft ms per token / target ms per step):`,
        '',
        '| RTT ms | peer | tokens/s | vs origin-only | vs best | target passes/token | origin draft steps/token | mean accepted/round | on origin | branch hits | c edge | c origin |',
        '|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
      );
      for (const r of rows) {
        lines.push(`| ${r.rtt_ms} | ${r.mode} | ${r.tokens_per_s} | ${r.speedup_vs_origin_only}x | ${r.vs_best_peer}x | ${r.target_passes_per_token} | ${r.origin_draft_steps_per_token ?? ''} | ${r.mean_accepted} | ${r.origin_speculated_fraction || ''} | ${r.branch_hit_rate ?? ''} | ${r.c_edge ?? ''} | ${r.c_origin ?? ''} |`);
      }
      lines.push('');
    }
  }

  const session = run.records.filter((r) => r.suite === 'session');
  if (session.length) {
    lines.push(
      `**Session protocol vs HTTP per verify round** (bench/session.ts; greedy lockstep k = 4, draft-model proposer, ${session[0].prompts} prompts × ${Math.round(Number(session[0].tokens) / Number(session[0].prompts))} tokens, measured origin; overhead = verify wall ms − origin forward_ms − queue_ms per round; c = draft ms per token / target ms per verify pass):`,
      '',
      '| runtime transport | RTT ms | path | overhead ms/round (mean) | median | p90 | verify ms/round | forward ms/round | tokens/s | c |',
      '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|',
    );
    for (const r of session) lines.push(`| ${r.mode} | ${r.rtt_ms} | ${r.path} | ${r.per_round_overhead_ms} | ${r.per_round_overhead_median_ms} | ${r.per_round_overhead_p90_ms} | ${r.verify_ms_per_round} | ${r.forward_ms_per_round} | ${r.tokens_per_s} | ${r.draft_target_cost_ratio} |`);
    lines.push('');
  }

  for (const suite of [...new Set(run.records.map((r) => r.suite))].filter((s) => !known.has(s))) {
    const rows = run.records.filter((r) => r.suite === suite);
    lines.push(`**${suite}**:`, '', '| mode | RTT ms | origin cost | tokens/s | TTFT ms | target passes/token | mean accepted |', '|---|---:|---|---:|---:|---:|---:|');
    for (const r of rows) lines.push(`| ${r.mode} | ${r.rtt_ms} | ${r.origin_cost} | ${r.tokens_per_s} | ${r.ttft_ms} | ${r.target_passes_per_token} | ${r.mean_accepted} |`);
    lines.push('');
  }
  return lines.join('\n');
}

/** Replace the generated block of BENCHMARKS.md (between its markers) with the latest run. */
export function spliceBenchmarks(document: string, latest: string): string {
  const start = '<!-- bench:latest:start -->';
  const end = '<!-- bench:latest:end -->';
  const block = `${start}\n${latest.trim()}\n${end}`;
  const from = document.indexOf(start);
  const to = document.indexOf(end);
  if (from < 0 || to < 0) return `${document.trimEnd()}\n\n## Latest run\n\n${block}\n`;
  return document.slice(0, from) + block + document.slice(to + end.length);
}
