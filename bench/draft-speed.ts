import * as ortWeb from 'onnxruntime-web';
import type { OrtRuntime } from '../shared/model';
import { loadModel } from '../shared/model';
import { folderFiles } from '../shared/model/node-files';
import { nodeOrt } from '../test/support/models';
import type { BenchRecord } from './records';

/**
 * Draft decode step, same model, three runtimes: onnxruntime-node (native),
 * onnxruntime-web in Node (the same WASM build workerd runs, V8 outside
 * workerd), and workerd itself through the edge's benchmark route.
 */
export async function draftSpeed(options: { draftDir: string; edgeUrl: string; context: number; steps: number; repeats: number; log: (l: string) => void }): Promise<BenchRecord[]> {
  const records: BenchRecord[] = [];
  const base = { suite: 'draft-speed', rtt_ms: 0, tokens_per_s: 0, ttft_ms: 0, target_passes_per_token: 0, mean_accepted: 0, origin_cost: 'measured' } as const;

  const web = ortWeb as unknown as OrtRuntime;
  ortWeb.env.wasm.numThreads = 1;
  for (const [mode, ort] of [['onnxruntime-node', nodeOrt], ['onnxruntime-web-node', web]] as const) {
    const { lm, config } = await loadModel(ort, folderFiles(options.draftDir), 'quantized', mode === 'onnxruntime-node' ? { intraOpNumThreads: 1 } : {});
    const prompt = Array.from({ length: options.context }, (_, i) => (i * 31 + 7) % config.vocabSize);
    const times: number[] = [];
    for (let r = 0; r < options.repeats; r++) {
      let result = await lm.forward(prompt, lm.emptyCache());
      const started = performance.now();
      for (let i = 0; i < options.steps; i++) result = await lm.forward([(i * 13 + 5) % config.vocabSize], result.cache);
      times.push((performance.now() - started) / options.steps);
    }
    const ms = median(times);
    options.log(`draft step ${mode}: ${ms.toFixed(2)} ms/token (context ${options.context})`);
    records.push({ ...base, mode, draft_ms_per_token: round(ms) });
  }

  // workerd: time from outside (its clock stops during computation), minus a zero-step request.
  const call = async (steps: number) => {
    const started = performance.now();
    const response = await fetch(`${options.edgeUrl}/internal/bench/draft`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ context: options.context, steps }),
    });
    if (!response.ok) throw new Error(`bench route: ${response.status} ${await response.text()}`);
    await response.json();
    return performance.now() - started;
  };
  await call(1); // load the session
  const times: number[] = [];
  for (let r = 0; r < options.repeats; r++) {
    const zero = await call(0);
    const full = await call(options.steps);
    times.push((full - zero) / options.steps);
  }
  const ms = median(times);
  options.log(`draft step workerd: ${ms.toFixed(2)} ms/token (context ${options.context})`);
  records.push({ ...base, mode: 'workerd', draft_ms_per_token: round(ms) });
  return records;
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const round = (v: number) => Math.round(v * 1000) / 1000;
