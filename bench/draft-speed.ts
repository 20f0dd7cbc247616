import { parseArgs } from 'node:util';
import * as ortWeb from 'onnxruntime-web';
import { profileProposal } from '../functions/testing/draft-profile';
import type { CausalLM, OrtRuntime } from '../shared/model';
import { loadModel } from '../shared/model';
import { folderFiles } from '../shared/model/node-files';
import { loadTokenizer } from '../shared/tokenizer';
import { nodeOrt } from '../test/support/models';
import { heldOutPrompts } from '../test/support/prompts';
import type { BenchRecord } from './records';
import { postJson, type EdgeTarget } from './sse';

/**
 * Draft decode step, same model, three runtimes: onnxruntime-node (native),
 * onnxruntime-web in Node (the same WASM build workerd runs, V8 outside
 * workerd), and workerd itself through the edge's benchmark route. Runtimes
 * are interleaved repeat by repeat so they share the machine's load; on a
 * shared 2-core machine the minimum is the best estimate of the uncontended
 * step and the median shows what a loaded machine gives.
 *
 * Per runtime it also profiles a drafted token end to end as the proposer
 * makes it (`propose`: step + the work around it) and the work around the
 * step alone (`around`), for a greedy draft with the confidence check
 * (DRAFT_MIN_CONFIDENCE) and a sampled one (T 0.8, top-p 0.95, q of 32):
 * functions/testing/bench-routes.ts, profileProposal.
 */
export const PROFILES = {
  greedy: { temperature: 0, top_p: 1, top_k: 0, q_entries: 32, min_confidence: 1e-9 },
  sampled: { temperature: 0.8, top_p: 0.95, top_k: 0, q_entries: 32, min_confidence: 1e-9 },
} as const;
type ProfileName = keyof typeof PROFILES;

interface Sample {
  step: number;
  propose: Record<ProfileName, number>;
  around: Record<ProfileName, number>;
}

export async function draftSpeed(options: {
  draftDir: string;
  edge: EdgeTarget;
  context: number;
  steps: number;
  repeats: number;
  log: (l: string) => void;
  /**
   * More draft folders (e.g. trimmed ones) timed in the same run, interleaved with the main one and seeded in the
   * edge's MODELS bucket under their folder names; ratios are against the main draft's native step.
   */
  alsoDirs?: string[];
}): Promise<BenchRecord[]> {
  const base = { suite: 'draft-speed', rtt_ms: 0, tokens_per_s: 0, ttft_ms: 0, target_passes_per_token: 0, mean_accepted: 0, origin_cost: 'measured' } as const;
  ortWeb.env.wasm.numThreads = 1;
  const drafts = [options.draftDir, ...(options.alsoDirs ?? [])].map((dir, i) => ({ dir, label: i === 0 ? '' : ` ${folderName(dir)}`, r2: i === 0 ? undefined : folderName(dir) }));
  const local: Array<[string, CausalLM]> = [];
  for (const draft of drafts) {
    for (const [mode, ort] of [['onnxruntime-node', nodeOrt], ['onnxruntime-web-node', ortWeb as unknown as OrtRuntime]] as const) {
      const { lm } = await loadModel(ort, folderFiles(draft.dir), 'quantized', mode === 'onnxruntime-node' ? { intraOpNumThreads: 1 } : {});
      local.push([mode + draft.label, lm]);
    }
  }
  // A held-out prompt (real text: how peaked the draft is decides the sampled work around the step).
  const tokenizer = await loadTokenizer(folderFiles(options.draftDir));
  const realPrompt = tokenizer.encode(heldOutPrompts(1, 4000)[0]).slice(-options.context);
  if (realPrompt.length < options.context) throw new Error(`the held-out prompt has only ${realPrompt.length} tokens`);
  const timeLocal = async (lm: CausalLM): Promise<Sample> => {
    const vocab = lm.config.vocabSize;
    let result = await lm.forward(realPrompt, lm.emptyCache());
    const started = performance.now();
    for (let i = 0; i < options.steps; i++) result = await lm.forward([(i * 13 + 5) % vocab], result.cache);
    const step = (performance.now() - started) / options.steps;
    const sample: Sample = { step, propose: { greedy: 0, sampled: 0 }, around: { greedy: 0, sampled: 0 } };
    for (const name of Object.keys(PROFILES) as ProfileName[]) {
      const p = await profileProposal(lm, realPrompt, options.steps, PROFILES[name]);
      sample.propose[name] = p.propose_ms / p.drafted;
      sample.around[name] = p.around_ms_per_token;
    }
    return sample;
  };
  // workerd: decode time measured inside the isolate (local workerd's clock runs during computation, 1 ms resolution).
  const call = async (r2: string | undefined, steps: number, profile?: (typeof PROFILES)[ProfileName]) => {
    const body = { context: options.context, steps, prompt_ids: realPrompt, ...(r2 ? { draft_model: r2 } : {}), ...(profile ? { profile } : {}) };
    const response = await postJson(options.edge, '/internal/bench/draft', body);
    if (!response.ok) throw new Error(`bench route: ${response.status} ${await response.text()}`);
    return (await response.json()) as { decode_ms: number; propose_ms: number; drafted: number; around_ms_per_token: number };
  };
  const timeWorkerd = async (r2: string | undefined): Promise<Sample> => {
    const sample: Sample = { step: 0, propose: { greedy: 0, sampled: 0 }, around: { greedy: 0, sampled: 0 } };
    for (const name of Object.keys(PROFILES) as ProfileName[]) {
      const r = await call(r2, options.steps, PROFILES[name]);
      // Both profiles time the plain step: keep the first, as the Node runtimes do.
      if (name === 'greedy') sample.step = r.decode_ms / options.steps;
      sample.propose[name] = r.propose_ms / r.drafted;
      sample.around[name] = r.around_ms_per_token;
    }
    return sample;
  };
  for (const draft of drafts) await call(draft.r2, 1); // load the sessions
  const samples = new Map<string, Sample[]>();
  const add = (mode: string, sample: Sample) => samples.set(mode, [...(samples.get(mode) ?? []), sample]);
  for (let r = 0; r < options.repeats; r++) {
    // Rotate the drafts' order repeat by repeat, so none always runs first.
    for (let d = 0; d < drafts.length; d++) {
      const draft = drafts[(d + r) % drafts.length];
      for (const [mode, lm] of local) if (mode.endsWith(draft.label) && (draft.label || !mode.includes(' '))) add(mode, await timeLocal(lm));
      add('workerd' + draft.label, await timeWorkerd(draft.r2));
    }
  }
  const nativeSteps = samples.get('onnxruntime-node')!.map((s) => s.step);
  const nativeMin = Math.min(...nativeSteps);
  const nativeMedian = median(nativeSteps);
  return [...samples].map(([mode, ss]) => {
    const ts = ss.map((s) => s.step);
    const med = (pick: (s: Sample) => number) => round(median(ss.map(pick)));
    const min = (pick: (s: Sample) => number) => round(Math.min(...ss.map(pick)));
    const record: BenchRecord = {
      ...base,
      mode,
      draft_ms_per_token: round(median(ts)),
      draft_ms_min: round(Math.min(...ts)),
      vs_native_median: round(median(ts) / nativeMedian),
      vs_native_min: round(Math.min(...ts) / nativeMin),
      context: options.context,
      // A drafted token as the proposer makes it, all costs included, and the work around the step alone (median, min).
      greedy_token_ms: med((s) => s.propose.greedy),
      greedy_token_min: min((s) => s.propose.greedy),
      greedy_around_ms: med((s) => s.around.greedy),
      greedy_around_min: min((s) => s.around.greedy),
      sampled_token_ms: med((s) => s.propose.sampled),
      sampled_token_min: min((s) => s.propose.sampled),
      sampled_around_ms: med((s) => s.around.sampled),
      sampled_around_min: min((s) => s.around.sampled),
      greedy_token_vs_native_step_min: round(Math.min(...ss.map((s) => s.propose.greedy)) / nativeMin),
      sampled_token_vs_native_step_min: round(Math.min(...ss.map((s) => s.propose.sampled)) / nativeMin),
    };
    options.log(
      `draft step ${mode}: median ${record.draft_ms_per_token} ms, min ${record.draft_ms_min} ms (context ${options.context}); vs native ${record.vs_native_median}x median, ${record.vs_native_min}x min; ` +
        `drafted token greedy ${record.greedy_token_ms} ms (min ${record.greedy_token_min}; around the step ${record.greedy_around_ms}, min ${record.greedy_around_min}), ` +
        `sampled ${record.sampled_token_ms} ms (min ${record.sampled_token_min}; around ${record.sampled_around_ms}, min ${record.sampled_around_min}); ` +
        `token vs native step (minima): greedy ${record.greedy_token_vs_native_step_min}x, sampled ${record.sampled_token_vs_native_step_min}x`,
    );
    return record;
  });
}

const folderName = (dir: string) => dir.split(/[\\/]/).filter(Boolean).pop()!;

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const round = (v: number) => Math.round(v * 1000) / 1000;

/**
 * `npx tsx bench/draft-speed.ts [--draft models/edgespec-draft] [--also dirA,dirB] [--context 128] [--steps 64] [--repeats 7]`:
 * this suite alone, on its own test edge (workerd, `wrangler dev --env test`) with the given draft folder seeded
 * into its local R2; no origin is needed (the route only runs the draft). Prints the records as JSON.
 */
async function main() {
  const { values } = parseArgs({
    options: {
      draft: { type: 'string', default: 'models/edgespec-draft' },
      context: { type: 'string', default: '128' },
      steps: { type: 'string', default: '64' },
      repeats: { type: 'string', default: '7' },
      port: { type: 'string', default: '28797' },
      also: { type: 'string' },
    },
  });
  const { startEdge } = await import('../scripts/stack');
  const { seedModels } = await import('../scripts/seed-models');
  const port = Number(values.port);
  const alsoDirs = values.also ? values.also.split(',') : [];
  const persistTo = `.wrangler/draft-speed-${port}`;
  if (alsoDirs.length) await seedModels({ persistTo, modelDirs: alsoDirs, log: (l) => console.error(l) });
  const edge = await startEdge({ port, originUrl: 'http://127.0.0.1:9', draftDir: values.draft, persistTo, log: (l) => console.error(l) });
  try {
    const records = await draftSpeed({ draftDir: values.draft!, alsoDirs, edge, context: Number(values.context), steps: Number(values.steps), repeats: Number(values.repeats), log: (l) => console.error(l) });
    console.log(JSON.stringify(records, null, 2));
  } finally {
    await edge.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
