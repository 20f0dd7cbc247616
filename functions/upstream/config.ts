import { z } from 'zod';

/**
 * The origins the edge may use. ORIGINS (a JSON array, as a wrangler var or
 * `--var ORIGINS:'[...]'`) lists them; without it ORIGIN_URL is the single
 * reference origin, so a one-origin deployment needs no new configuration.
 *
 *   [{"id": "gpu-a", "url": "https://a.example", "weight": 2},
 *    {"id": "sgl-1", "url": "https://b.example", "kind": "sglang", "vocab_size": 4096, "max_positions": 1024}]
 *
 * Secrets stay out of this list: ORIGIN_SECRET (signs requests to reference
 * origins) and ORIGIN_API_KEY (bearer token for engines started with
 * --api-key) are wrangler secrets.
 */
export interface OriginSpec {
  id: string;
  url: string;
  kind: 'reference' | 'sglang' | 'vllm';
  /** Relative share of load and of rendezvous keys. */
  weight: number;
  /** Engines: the served model name (vLLM requires it). */
  model?: string;
  /** Engines do not report the tokenizer: state it, and it is checked against the draft's. */
  vocabSize?: number;
  maxPositions?: number;
  /** Engines: log-probabilities requested per position at most (vLLM caps them with --max-logprobs, 20 by default). */
  topLogprobs: number;
}

const originSpecSchema = z
  .strictObject({
    id: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'id: letters, digits, ".", "_" or "-" (at most 64)').optional(),
    url: z.url('url must be an http(s) base URL'),
    kind: z.enum(['reference', 'sglang', 'vllm']).default('reference'),
    weight: z.number().positive().max(1000).default(1),
    model: z.string().min(1).optional(),
    vocab_size: z.number().int().positive().optional(),
    max_positions: z.number().int().positive().optional(),
    top_logprobs: z.number().int().min(1).max(1000).default(20),
  })
  .superRefine((spec, ctx) => {
    if (spec.kind === 'reference') return;
    for (const field of ['vocab_size', 'max_positions'] as const) {
      if (spec[field] === undefined) ctx.addIssue({ code: 'custom', path: [field], message: `${field} is required for a ${spec.kind} origin (engines do not report it)` });
    }
    if (spec.kind === 'vllm' && !spec.model) ctx.addIssue({ code: 'custom', path: ['model'], message: 'model (the served model name) is required for a vllm origin' });
  });

const originsSchema = z.array(originSpecSchema).min(1, 'ORIGINS must list at least one origin');

/** The origin list from ORIGINS (JSON string or array) or, when it is unset or empty, ORIGIN_URL. Throws with a message naming the bad field. */
export function parseOrigins(originsVar: unknown, originUrl: string): OriginSpec[] {
  let raw = originsVar;
  if (typeof raw === 'string') {
    if (!raw.trim()) raw = undefined;
    else {
      try {
        raw = JSON.parse(raw);
      } catch (err) {
        throw new Error(`ORIGINS is not valid JSON (${(err as Error).message}); expected e.g. [{"url": "http://127.0.0.1:8788"}]`);
      }
    }
  }
  if (raw === undefined || raw === null) return [{ id: 'origin-0', url: trimSlash(originUrl), kind: 'reference', weight: 1, topLogprobs: 20 }];
  const parsed = originsSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`ORIGINS: ${z.prettifyError(parsed.error)}`);
  const specs = parsed.data.map((s, i) => ({
    id: s.id ?? `origin-${i}`,
    url: trimSlash(s.url),
    kind: s.kind,
    weight: s.weight,
    model: s.model,
    vocabSize: s.vocab_size,
    maxPositions: s.max_positions,
    topLogprobs: s.top_logprobs,
  }));
  const ids = specs.map((s) => s.id);
  const duplicate = ids.find((id, i) => ids.indexOf(id) !== i);
  if (duplicate) throw new Error(`ORIGINS: id "${duplicate}" appears twice; ids must be unique`);
  return specs;
}

const trimSlash = (url: string) => url.replace(/\/+$/, '');
