import type { MiddlewareHandler } from 'hono';
import { ApiError } from '../../shared/errors';
import type { DecoderConfig } from '../../shared/model';
import type { EdgeConfig } from '../config';
import type { EdgeEnv } from '../context';

/**
 * Per-isolate memory admission. A Worker isolate has 128 MB for everything it
 * holds (ARCHITECTURE.md: Platform facts, "Isolate limits"); past that the
 * runtime kills it, and with it every request it is serving. So before a
 * generation starts, this estimates what the isolate would hold with it
 * admitted and answers 503 `isolate_busy` with Retry-After instead when that
 * passes ISOLATE_MEMORY_BUDGET_MB (default 100: the other 28 MB are the
 * estimate's margin). A retry usually lands on another isolate, or on this one
 * once a generation has finished.
 *
 * What an isolate holds, measured in workerd with the shipped draft (a 3.4 MiB
 * int8 model: 4 layers, 4 query / 2 KV heads of 32, vocabulary 4096, context
 * 1024) through `/internal/isolate` and the V8 inspector:
 *
 * - JS heap: 7.5 MiB used of 11.7 MiB before the first generation, 9.1 of
 *   13.5 MiB after the draft loaded and ran: counted as `JS_BASE_BYTES`.
 * - ORT's WASM heap (`wasmHeapBytes`): 23.1 MiB once the session exists (16 MiB
 *   of it is the initial memory). It only grows, to fit the largest single run:
 *   a prefill of n tokens needs logits for every position (n × vocab × 4 bytes)
 *   and attention over n × n positions per head, and the heap measured 27.8,
 *   33.3, 48.0, 57.6 and 69.2 MiB after prefills of 256, 512, 768, 896 and 1000
 *   tokens (up to 78.7 MiB after more runs: Emscripten grows it ≥ 20% a step,
 *   and it fragments). `prefillBytes` = n·vocab·4 + 3·heads·n²·4 covers every
 *   measurement (61 MiB at n = 1000 against 55.6 measured). Runs are serial
 *   (one WASM thread), so the heap needs the largest prefill, not their sum.
 * - Per generation, in JS: the draft's fp32 KV cache (layers × 2 × kv_heads ×
 *   head_dim × 4 bytes per position: 2 KiB for the shipped draft, 2 MiB at the
 *   full context), twice, because a step's new arrays arrive while the old ones
 *   are still referenced; the prefill's logits copied out of the heap
 *   (n × vocab × 4 bytes: 15.6 MiB at n = 1000); the body and its parse.
 *
 * The estimate knows a request's size before the route parses it: a
 * completion's prompt is counted exactly (token ids, or its text tokenized),
 * any other body (chat messages) has at most as many tokens as bytes
 * (byte-level BPE: a token covers at least one byte); the generated part is
 * max_tokens (16 when a completion omits it), else the rest of the context.
 * Generous on purpose: it may refuse early, never late. The one generation an
 * idle isolate gets is always admitted, whatever its estimate: refusing it
 * would refuse it everywhere, and "busy" would be untrue. With the shipped
 * draft that is the case for a prompt near the full context (≈ 120 MiB
 * estimated, 100-110 MiB by the measurements above), because the whole prompt
 * is prefilled in one pass; prefilling in chunks would cut the heap term to a
 * few MiB (a 128-token chunk at context 1024: ≈ 8 MiB).
 *
 * How large a draft fits: ≈ JS 16 MiB + heap (16 MiB + ≈ 2× the model file,
 * as measured here: 23.1 MiB for 3.4 MiB; ONNX external data would avoid the
 * second copy of the weights) + the largest prefill + per generation KV and
 * logits must stay under the budget. At 100 MiB that is a model file of about
 * 25 MiB with short prompts and several generations at once; and a draft with
 * a larger vocabulary pays vocab × 4 bytes per prompt token twice.
 */

/** What the estimate counts for the JS side of an isolate: bundle code, Hono, zod schemas, tokenizer, caches. */
export const JS_BASE_BYTES = 16 * 2 ** 20;

/** The routes that start a generation in this isolate (POST). Jobs run theirs in the queue consumer, through the same `admitRequest`. */
const GENERATION_PATHS = new Set(['/v1/completions', '/v1/chat/completions']);

/** Completions' default max_tokens (functions/openai/request.ts); other routes default to the rest of the context. */
const COMPLETIONS_DEFAULT_MAX_TOKENS = 16;

export type DraftShape = Pick<DecoderConfig, 'numLayers' | 'numHeads' | 'numKvHeads' | 'headDim' | 'vocabSize' | 'maxPositions'>;

/** How large a generation is, as far as memory goes. */
export interface GenerationSize {
  /** Tokens the draft prefills in one pass (at most). */
  promptTokens: number;
  /** Tokens it may generate. */
  maxTokens: number;
  /** Bytes of the request body. */
  bodyBytes: number;
}

export interface GenerationEstimate {
  /** Positions the draft's KV cache may reach. */
  positions: number;
  /** The draft's fp32 KV cache at `positions`, twice (old and new arrays during a step). */
  kvBytes: number;
  /** The prefill's logits copied out of the WASM heap. */
  logitsBytes: number;
  /** Body text, its parse, the prompt's ids, the response text. */
  bufferBytes: number;
  /** What this generation holds in JS: kv + logits + buffers. */
  bytes: number;
  /** What its prefill needs inside ORT's WASM heap (shared: runs are serial). */
  prefillBytes: number;
}

/** fp32 KV bytes per position: layers × (K and V) × kv_heads × head_dim × 4. */
export function kvBytesPerPosition(shape: DraftShape): number {
  return shape.numLayers * 2 * shape.numKvHeads * shape.headDim * 4;
}

/** ORT's working set for a prefill of n tokens: every position's logits plus three n × n attention buffers per head. */
export function prefillBytes(shape: DraftShape, tokens: number): number {
  const n = Math.min(tokens, shape.maxPositions);
  return n * shape.vocabSize * 4 + 3 * shape.numHeads * n * n * 4;
}

export function estimateGeneration(shape: DraftShape, size: GenerationSize): GenerationEstimate {
  const prompt = Math.max(1, Math.min(size.promptTokens, shape.maxPositions));
  const positions = Math.min(shape.maxPositions, prompt + Math.max(0, size.maxTokens));
  const kvBytes = 2 * kvBytesPerPosition(shape) * positions;
  const logitsBytes = prompt * shape.vocabSize * 4;
  // The body as text and parsed (×3), the prompt's ids (8 bytes each as numbers), ≤ 32 bytes of text per generated token.
  const bufferBytes = 3 * size.bodyBytes + 8 * prompt + 32 * (positions - prompt);
  return { positions, kvBytes, logitsBytes, bufferBytes, bytes: kvBytes + logitsBytes + bufferBytes, prefillBytes: prefillBytes(shape, prompt) };
}

/** The isolate's state: what is admitted, and the heap it started from. */
interface Admitted {
  estimate: GenerationEstimate;
}
const admitted = new Set<Admitted>();
/** The WASM heap right after the draft engine loaded (the first reading), before any run grew it. */
let heapAtLoad: number | null = null;
/** Generations this isolate has refused (isolate_busy), HTTP and jobs alike; tests wait on it instead of sleeping. */
let refusals = 0;

export interface IsolateMemory {
  budgetBytes: number;
  jsBaseBytes: number;
  /** ORT's WASM heap now (null before the engine loaded). */
  wasmHeapBytes: number | null;
  wasmHeapAtLoadBytes: number | null;
  /** The heap the admitted generations may need: max(now, at load + their largest prefill). */
  projectedHeapBytes: number;
  inFlight: number;
  /** How many generations this isolate has refused so far. */
  refusals: number;
  /** Sum of the admitted generations' JS bytes. */
  reservedBytes: number;
  /** JS base + projected heap + reserved. */
  estimatedBytes: number;
}

/** The isolate's estimate with `extra` admitted too (nothing extra: as it stands); `heap` = functions/draft/ort-workerd's `wasmHeapBytes()`. */
export function isolateMemory(budgetBytes: number, heap: number | null, extra?: GenerationEstimate): IsolateMemory {
  if (heap !== null) heapAtLoad ??= heap;
  const estimates = [...admitted].map((a) => a.estimate).concat(extra ? [extra] : []);
  const largestPrefill = Math.max(0, ...estimates.map((e) => e.prefillBytes));
  const projectedHeapBytes = Math.max(heap ?? 0, (heapAtLoad ?? 0) + (estimates.length ? largestPrefill : 0));
  const reservedBytes = estimates.reduce((sum, e) => sum + e.bytes, 0);
  return {
    budgetBytes,
    jsBaseBytes: JS_BASE_BYTES,
    wasmHeapBytes: heap,
    wasmHeapAtLoadBytes: heapAtLoad,
    projectedHeapBytes,
    inFlight: estimates.length,
    refusals,
    reservedBytes,
    estimatedBytes: JS_BASE_BYTES + projectedHeapBytes + reservedBytes,
  };
}

/** A slot for one generation; `release` exactly once when it is over (idempotent). */
export interface AdmissionTicket {
  estimate: GenerationEstimate;
  release(): void;
}

/**
 * Admit a generation of `size` into this isolate, or throw 503 isolate_busy
 * (with Retry-After); release the ticket when the generation has finished.
 * Entry points call it through `admitRequest`, which sizes a request body.
 */
export function admitGeneration(shape: DraftShape, size: GenerationSize, budgetBytes: number, heapBytes: number | null): AdmissionTicket {
  const estimate = estimateGeneration(shape, size);
  const memory = isolateMemory(budgetBytes, heapBytes, estimate);
  if (admitted.size > 0 && memory.estimatedBytes > budgetBytes) {
    refusals++;
    throw isolateBusy(memory, estimate);
  }
  if (memory.estimatedBytes > budgetBytes) {
    console.warn(`[edge] admitting a generation alone although its estimate (${mib(memory.estimatedBytes)} MiB) passes the isolate budget (${mib(budgetBytes)} MiB)`);
  }
  const slot: Admitted = { estimate };
  admitted.add(slot);
  return { estimate, release: () => void admitted.delete(slot) };
}

/** Seconds a refused client should wait: generations here take seconds; a retry mostly lands on another isolate anyway. */
const RETRY_AFTER_S = 1;

function isolateBusy(memory: IsolateMemory, estimate: GenerationEstimate): ApiError {
  console.warn(
    `[edge] isolate_busy: ${memory.inFlight - 1} generation(s) in flight; with this one (${mib(estimate.bytes)} MiB, prefill ${mib(estimate.prefillBytes)} MiB) ` +
      `the estimate is ${mib(memory.estimatedBytes)} MiB of a ${mib(memory.budgetBytes)} MiB budget (heap ${mib(memory.wasmHeapBytes ?? 0)} MiB)`,
  );
  const error = new ApiError(
    503,
    'This server instance is at its memory budget with the generations it is running; retry after the Retry-After delay (another instance, or this one once a generation finishes, will take it).',
    null,
    'isolate_busy',
  );
  error.headers = { 'retry-after': String(RETRY_AFTER_S) };
  return error;
}

const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);

/**
 * The size of a generation request from its body, before the route parses it
 * (see the top of this file). `countTokens` tokenizes a completion's text
 * prompt: exact, at the price of tokenizing twice (the route does it again;
 * ≈ 0.6 ms per KB of code, measured in Node). Without it, or past the bytes
 * the context can hold (the route then answers 413), a text prompt counts one
 * token per UTF-8 byte.
 */
export function generationSize(path: string, bodyText: string, maxPositions: number, countTokens?: { maxBytes: number; count(text: string): number }): GenerationSize {
  const encoder = new TextEncoder();
  const bodyBytes = encoder.encode(bodyText).length;
  let body: Record<string, unknown> | null = null;
  try {
    const parsed: unknown = JSON.parse(bodyText);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
  } catch {
    /* the route answers 400; the estimate takes the worst case meanwhile */
  }
  const prompt = path === '/v1/completions' ? body?.prompt : undefined;
  let promptTokens = bodyBytes;
  if (Array.isArray(prompt)) promptTokens = prompt.length;
  else if (typeof prompt === 'string') {
    const bytes = encoder.encode(prompt).length;
    promptTokens = countTokens && bytes <= countTokens.maxBytes ? countTokens.count(prompt) : bytes;
  }
  const asked = [body?.max_completion_tokens, body?.max_tokens].find((v) => typeof v === 'number' && Number.isFinite(v)) as number | undefined;
  const fallback = path === '/v1/completions' ? COMPLETIONS_DEFAULT_MAX_TOKENS : maxPositions;
  return { promptTokens: Math.min(promptTokens, maxPositions), maxTokens: Math.min(asked ?? fallback, maxPositions), bodyBytes };
}

/** A refusal of `admitRequest` / `admitGeneration`: 503 isolate_busy, with its Retry-After. */
export function isIsolateBusy(err: unknown): err is ApiError {
  return err instanceof ApiError && err.code === 'isolate_busy';
}

/** The Retry-After of an isolate_busy refusal, in ms. */
export const busyRetryAfterMs = (err: ApiError) => 1000 * (Number(err.headers?.['retry-after']) || RETRY_AFTER_S);

/**
 * The admission check of one generation request, for every entry point that
 * starts generations in this isolate: the HTTP middleware below (the body of
 * a POST to a generation route) and the job consumer (a job's stored request
 * body, as `/v1/completions`), so a queue batch cannot run past the budget the
 * HTTP path keeps. Loads the draft engine (one per isolate: it gives the
 * draft's shape and puts its heap in place; loading it is the first
 * generation's job anyway) and admits the request's size, or throws 503
 * isolate_busy. Null when the engine does not load: the caller's own path
 * reports that (503 draft_unavailable).
 */
export async function admitRequest(env: { MODELS: R2Bucket }, config: Pick<EdgeConfig, 'draftModel' | 'isolateMemoryBudgetBytes'>, path: string, bodyText: string): Promise<AdmissionTicket | null> {
  // Imported here, not at the top: the estimate above is plain arithmetic that Node tests import without ORT's WASM.
  const [{ draftEngine }, { wasmHeapBytes }] = await Promise.all([import('../draft/engine'), import('../draft/ort-workerd')]);
  const engine = await draftEngine(env.MODELS, config.draftModel).catch(() => null);
  if (!engine) return null;
  const { maxPositions } = engine.config;
  const size = generationSize(path, bodyText, maxPositions, {
    maxBytes: maxPositions * engine.tokenizer.maxBytesPerToken,
    count: (text) => engine.tokenizer.encode(text).length,
  });
  return admitGeneration(engine.config, size, config.isolateMemoryBudgetBytes, wasmHeapBytes());
}

/**
 * The middleware (functions/app.ts, after auth and the body limit): admits a
 * POST to a generation route or answers 503 isolate_busy in OpenAI's shape,
 * and releases the slot when the response is over: at once for a JSON answer
 * (the generation has finished when it is built), when the stream ends or is
 * cancelled for SSE, or when the client goes away.
 */
export const memoryAdmission: MiddlewareHandler<EdgeEnv> = async (c, next) => {
  if (c.req.method !== 'POST' || !GENERATION_PATHS.has(c.req.path)) return next();
  let ticket: AdmissionTicket | null;
  try {
    // A copy of the body (already bounded by MAX_BODY_KB): the route reads the request itself.
    ticket = await admitRequest(c.env, c.var.config, c.req.path, await c.req.raw.clone().text());
  } catch (err) {
    if (!isIsolateBusy(err)) throw err;
    return c.json(err.toBody(), 503, err.headers);
  }
  // No engine: withDraftEngine answers for it.
  if (!ticket) return next();
  c.req.raw.signal.addEventListener('abort', ticket.release, { once: true });
  try {
    await next();
  } catch (err) {
    ticket.release();
    throw err;
  }
  const body = c.res.body;
  if (!body || !c.res.headers.get('content-type')?.startsWith('text/event-stream')) {
    ticket.release();
    return;
  }
  c.res = new Response(releasingStream(body, ticket.release), c.res);
};

/** `body` as it is, calling `release` when it has been read to the end, failed or been cancelled. */
function releasingStream(body: ReadableStream<Uint8Array>, release: () => void): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        const { done, value } = await reader.read();
        if (done) {
          release();
          controller.close();
        } else controller.enqueue(value);
      } catch (err) {
        release();
        controller.error(err);
      }
    },
    async cancel(reason) {
      release();
      await reader.cancel(reason);
    },
  });
}
