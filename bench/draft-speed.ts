import * as ortWeb from 'onnxruntime-web';
import type { CausalLM, OrtRuntime } from '../shared/model';
import { loadModel } from '../shared/model';
import { folderFiles } from '../shared/model/node-files';
import { nodeOrt } from '../test/support/models';
import type { BenchRecord } from './records';
import { postJson, type EdgeTarget } from './sse';

/**
 * Draft decode step, same model, three runtimes: onnxruntime-node (native),
 * onnxruntime-web in Node (the same WASM build workerd runs, V8 outside
 * workerd), and workerd itself through the edge's benchmark route. Runtimes
 * are interleaved repeat by repeat so they share the machine's load; on a
 * shared 2-core machine the minimum is the best estimate of the uncontended
 * step and the median shows what a loaded machine gives.
 */
export async function draftSpeed(options: { draftDir: string; edge: EdgeTarget; context: number; steps: number; repeats: number; log: (l: string) => void }): Promise<BenchRecord[]> {
  const base = { suite: 'draft-speed', rtt_ms: 0, tokens_per_s: 0, ttft_ms: 0, target_passes_per_token: 0, mean_accepted: 0, origin_cost: 'measured' } as const;
  ortWeb.env.wasm.numThreads = 1;
  const local: Array<[string, CausalLM]> = [];
  for (const [mode, ort] of [['onnxruntime-node', nodeOrt], ['onnxruntime-web-node', ortWeb as unknown as OrtRuntime]] as const) {
    const { lm } = await loadModel(ort, folderFiles(options.draftDir), 'quantized', mode === 'onnxruntime-node' ? { intraOpNumThreads: 1 } : {});
    local.push([mode, lm]);
  }
  const prompt = (vocab: number) => Array.from({ length: options.context }, (_, i) => (i * 31 + 7) % vocab);
  const timeLocal = async (lm: CausalLM) => {
    const vocab = lm.config.vocabSize;
    let result = await lm.forward(prompt(vocab), lm.emptyCache());
    const started = performance.now();
    for (let i = 0; i < options.steps; i++) result = await lm.forward([(i * 13 + 5) % vocab], result.cache);
    return (performance.now() - started) / options.steps;
  };
  // workerd: decode time measured inside the isolate (local workerd's clock runs during computation, 1 ms resolution).
  const call = async (steps: number) => {
    const response = await postJson(options.edge, '/internal/bench/draft', { context: options.context, steps });
    if (!response.ok) throw new Error(`bench route: ${response.status} ${await response.text()}`);
    return ((await response.json()) as { decode_ms: number }).decode_ms;
  };
  const timeWorkerd = async () => (await call(options.steps)) / options.steps;
  await call(1); // load the session
  const times = new Map<string, number[]>([...local.map(([m]) => [m, []] as [string, number[]]), ['workerd', []]]);
  for (let r = 0; r < options.repeats; r++) {
    for (const [mode, lm] of local) times.get(mode)!.push(await timeLocal(lm));
    times.get('workerd')!.push(await timeWorkerd());
  }
  const nativeMin = Math.min(...times.get('onnxruntime-node')!);
  const nativeMedian = median(times.get('onnxruntime-node')!);
  return [...times].map(([mode, ts]) => {
    const record: BenchRecord = {
      ...base,
      mode,
      draft_ms_per_token: round(median(ts)),
      draft_ms_min: round(Math.min(...ts)),
      vs_native_median: round(median(ts) / nativeMedian),
      vs_native_min: round(Math.min(...ts) / nativeMin),
      context: options.context,
    };
    options.log(`draft step ${mode}: median ${record.draft_ms_per_token} ms, min ${record.draft_ms_min} ms (context ${options.context}); vs native ${record.vs_native_median}x median, ${record.vs_native_min}x min`);
    return record;
  });
}

export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const round = (v: number) => Math.round(v * 1000) / 1000;
