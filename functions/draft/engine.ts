import { loadModel, type DecoderConfig, type CausalLM, type ModelFiles } from '../../shared/model';
import { loadTokenizer, type TextTokenizer } from '../../shared/tokenizer';
import { workerdOrt } from './ort-workerd';

/** The draft model and tokenizer, loaded once per isolate (session creation costs 0.5-1.3 s in workerd). */
export interface DraftEngine {
  lm: CausalLM;
  config: DecoderConfig;
  tokenizer: TextTokenizer;
  loadMs: number;
}

const engines = new Map<string, Promise<DraftEngine>>();

export function draftEngine(bucket: R2Bucket, prefix: string): Promise<DraftEngine> {
  let engine = engines.get(prefix);
  if (!engine) {
    engine = loadDraftEngine(bucket, prefix);
    // A failed load (missing files, R2 hiccup) must not poison the isolate: retry on the next request.
    engine.catch(() => engines.delete(prefix));
    engines.set(prefix, engine);
  }
  return engine;
}

async function loadDraftEngine(bucket: R2Bucket, prefix: string): Promise<DraftEngine> {
  const started = Date.now();
  const files: ModelFiles = {
    async read(path) {
      const object = await bucket.get(`${prefix}/${path}`);
      return object ? new Uint8Array(await object.arrayBuffer()) : null;
    },
  };
  const [{ lm, config }, tokenizer] = await Promise.all([
    loadModel(workerdOrt(), files, 'quantized', { executionProviders: ['wasm'] }),
    loadTokenizer(files),
  ]);
  return { lm, config, tokenizer, loadMs: Date.now() - started };
}
