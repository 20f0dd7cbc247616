import { loadChatTemplate, type ChatTemplate } from '../../shared/chat-template';
import { loadModel, type DecoderConfig, type CausalLM, type ModelFiles } from '../../shared/model';
import { loadTokenizer, type TextTokenizer } from '../../shared/tokenizer';
import { workerdOrt } from './ort-workerd';

/** The draft model and tokenizer, loaded once per isolate (session creation costs 0.5-1.3 s in workerd). */
export interface DraftEngine {
  lm: CausalLM;
  config: DecoderConfig;
  tokenizer: TextTokenizer;
  /** The model folder's chat template (tokenizer_config.json or chat_template.jinja), null when it has none: chat completions need it. */
  chatTemplate: ChatTemplate | null;
  loadMs: number;
  /**
   * Names these exact weights (folder + the R2 etags of the files read): the
   * prefix cache keys blocks by it, so replacing the model under the same
   * folder name never restores the old model's KV.
   */
  fingerprint: string;
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
  const etags: string[] = [];
  // Each file is fetched once, however many loaders read it (tokenizer and chat template share tokenizer_config.json).
  const reads = new Map<string, Promise<Uint8Array | null>>();
  const read = async (path: string) => {
    const object = await bucket.get(`${prefix}/${path}`);
    if (object) etags.push(`${path}:${object.etag}`);
    return object ? new Uint8Array(await object.arrayBuffer()) : null;
  };
  const files: ModelFiles = {
    read(path) {
      if (!reads.has(path)) reads.set(path, read(path));
      return reads.get(path)!;
    },
  };
  const [{ lm, config }, tokenizer, chatTemplate] = await Promise.all([
    loadModel(workerdOrt(), files, 'quantized', { executionProviders: ['wasm'] }),
    loadTokenizer(files),
    loadChatTemplate(files),
  ]);
  const digest = await crypto.subtle.digest('SHA-256', new TextEncoder().encode(etags.sort().join('\n')));
  const fingerprint = `${prefix}@${[...new Uint8Array(digest).slice(0, 8)].map((b) => b.toString(16).padStart(2, '0')).join('')}`;
  return { lm, config, tokenizer, chatTemplate, loadMs: Date.now() - started, fingerprint };
}
