import { readFileSync } from 'node:fs';

/** Held-out benchmark prompts (whole packages never trained on), cut to their last `chars` characters. */
export function heldOutPrompts(count: number, chars = 240): string[] {
  const rows = readFileSync('models/corpus/bench_prompts.jsonl', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { prompt: string });
  if (rows.length < count) throw new Error(`need ${count} held-out prompts, models/corpus/bench_prompts.jsonl has ${rows.length}`);
  return rows.slice(0, count).map((r) => r.prompt.slice(-chars));
}
