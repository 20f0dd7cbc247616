import { Hono } from 'hono';
import { z } from 'zod';
import { ApiError } from '../../shared/errors';
import { parseRequest, readJsonBody } from '../../shared/validation';
import type { EdgeEnv } from '../context';
import { draftEngine } from '../draft/engine';
import { profileProposal } from './draft-profile';

/**
 * Benchmark route, in the test Worker only (functions/testing/entry.ts): runs
 * the draft model for `steps` decode steps after a `context`-token prefill and
 * returns the decode time measured inside the isolate. Local workerd
 * (wrangler dev) advances performance.now() during computation, at 1 ms
 * resolution; deployed Workers freeze it between I/O events (a Spectre
 * mitigation), so there only an outside timing works.
 *
 * With `profile`, it also times a drafted token end to end the way the
 * proposer makes it (functions/proposers/draft-model.ts: step, logits
 * processing, softmax, sparse q, copies), in one `steps`-token proposal, and
 * the work around the step alone: the same proposal replayed over the
 * recorded logits with the model step taken out, repeated until the total is
 * far above the clock's 1 ms resolution (BENCHMARKS.md: Draft speed and
 * vocabulary trimming).
 */
export const benchRoutes = new Hono<EdgeEnv>();

const draftBenchSchema = z.strictObject({
  context: z.number().int().min(1).max(4096),
  steps: z.number().int().min(0).max(1024),
  /** A real prompt's token ids (its last `context`): the work around the step depends on how peaked the draft is. Default: a synthetic one. */
  prompt_ids: z.array(z.number().int().nonnegative()).max(4096).optional(),
  /** Another draft folder in the MODELS bucket (its R2 prefix), loaded once per isolate like the configured one: drafts compared in one run. */
  draft_model: z
    .string()
    .regex(/^[\w.-]+$/)
    .optional(),
  profile: z
    .strictObject({
      temperature: z.number().min(0).max(2),
      top_p: z.number().gt(0).max(1),
      top_k: z.number().int().min(0),
      q_entries: z.number().int().min(1).max(256),
      min_confidence: z.number().min(0).max(1).default(0),
    })
    .optional(),
});

benchRoutes.post('/internal/bench/draft', async (c) => {
  const { context, steps, profile, prompt_ids, draft_model } = parseRequest(draftBenchSchema, await readJsonBody(c.req.raw));
  const { lm, config } = draft_model ? await draftEngine(c.env.MODELS, draft_model) : c.var.draftEngine;
  if (context + steps > config.maxPositions) throw new ApiError(413, `context + steps exceeds the draft context of ${config.maxPositions}`);
  if (prompt_ids && (prompt_ids.length < context || prompt_ids.some((t) => t >= config.vocabSize))) throw new ApiError(400, 'prompt_ids: at least `context` ids inside the vocabulary');
  const prompt = prompt_ids ? prompt_ids.slice(-context) : Array.from({ length: context }, (_, i) => (i * 31 + 7) % config.vocabSize);
  let result = await lm.forward(prompt, lm.emptyCache());
  const started = performance.now();
  for (let i = 0; i < steps; i++) result = await lm.forward([(i * 13 + 5) % config.vocabSize], result.cache);
  const decodeMs = performance.now() - started;
  if (!profile || steps === 0) return c.json({ context, steps, cache_length: result.cache.length, decode_ms: decodeMs });
  const timed = await profileProposal(lm, prompt, steps, profile);
  return c.json({ context, steps, cache_length: result.cache.length, decode_ms: decodeMs, ...timed });
});
