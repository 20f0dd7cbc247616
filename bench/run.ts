import { mkdir, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { startStack } from '../scripts/stack';
import { heldOutPrompts } from '../test/support/prompts';
import { draftSpeed } from './draft-speed';
import type { BenchRecord } from './records';
import { renderMarkdown } from './report';
import { speculationSuite } from './speculation';

/**
 * `npm run bench [-- --quick]`: starts the local stack (origin + workerd edge)
 * and runs every suite, side by side in one run. Writes
 * bench/results/latest.json, a timestamped copy, and bench/results/latest.md.
 */
const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false } } });
const quick = values.quick!;
const log = (line: string) => console.log(`[bench] ${line}`);
const started = Date.now();

const stack = await startStack({
  originPort: 28788,
  edgePort: 28787,
  persistTo: '.wrangler/bench-state',
  vars: { BENCH_ROUTES: 'on' },
  log,
});

const records: BenchRecord[] = [];
try {
  log('suite draft-speed');
  records.push(...(await draftSpeed({ draftDir: 'models/edgespec-draft', edgeUrl: stack.edgeUrl, context: 128, steps: quick ? 16 : 64, repeats: quick ? 3 : 7, log })));
  log('suite speculation (round trip 0 ms: edge and origin on this machine)');
  records.push(
    ...(await speculationSuite({
      edgeUrl: stack.edgeUrl,
      prompts: heldOutPrompts(quick ? 6 : 30, 400),
      maxTokens: quick ? 32 : 64,
      temperatures: [0, 0.8],
      draftLength: 4,
      rttMs: 0,
      log,
    })),
  );
} finally {
  await stack.stop();
}

const run = { date: new Date().toISOString(), quick, seconds: Math.round((Date.now() - started) / 1000), command: `npm run bench${quick ? ' -- --quick' : ''}`, records };
await mkdir('bench/results/runs', { recursive: true });
await writeFile('bench/results/latest.json', JSON.stringify(records, null, 2) + '\n');
await writeFile(`bench/results/runs/${run.date.replaceAll(':', '-')}.json`, JSON.stringify(run, null, 2) + '\n');
await writeFile('bench/results/latest.md', renderMarkdown(run));
log(`done in ${run.seconds} s: bench/results/latest.json, bench/results/latest.md`);
