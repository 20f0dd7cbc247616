import { z } from 'zod';
import { MAX_TOP_LOGPROBS } from './sampling/logprobs';

/**
 * The edge <-> origin wire protocol. Only token ids (and, for sampled drafts,
 * the draft's exact sparse proposal distribution q) cross the link; text never does.
 */

const tokenId = z.number().int().nonnegative();

/**
 * Largest RNG offset a call may carry. Draws are keyed by the position
 * offset + i (shared/sampling/rng.ts), which must stay a safe integer
 * (< 2^53) for every position the call decides; 2^52 leaves 2^52 positions of
 * headroom, far beyond any context, and no real generation comes near it.
 */
export const MAX_SAMPLING_OFFSET = 2 ** 52;

export const samplingSchema = z.object({
  temperature: z.number().min(0).max(2),
  top_p: z.number().gt(0).max(1),
  top_k: z.number().int().min(0),
  /** Seed of the counter-based RNG: a seeded request is reproducible. */
  seed: z.number().int().nonnegative().max(2 ** 32 - 1),
  /** Generation position of the first token this call decides (the RNG counter). */
  offset: z.number().int().nonnegative().max(MAX_SAMPLING_OFFSET),
});
export type WireSampling = z.infer<typeof samplingSchema>;

const cacheSaltSchema = z.string().max(256).optional();

/**
 * Present: the reply carries, for every token it emits, the target's raw
 * log-probability of it and this many most likely alternatives
 * (shared/sampling/logprobs.ts). Absent: no log-probabilities are computed.
 */
const logprobsRequestSchema = z.number().int().min(0).max(MAX_TOP_LOGPROBS).optional();

/** How far a sparse q's probabilities may sum from 1 (shared/sampling/distribution.ts, assertSparseDistribution). */
const Q_SUM_TOLERANCE = 1e-6;

export const draftTokenSchema = z
  .object({
    token: tokenId,
    /** Sparse [token, prob] pairs the draft sampled from; absent = deterministic proposal. */
    q: z.array(z.tuple([tokenId, z.number().min(0).max(1)])).max(4096).optional(),
  })
  .superRefine((draft, ctx) => {
    // What verification asserts of q (shared/sampling/verify.ts), checked here so a malformed q is
    // the caller's 400 and not a RangeError (500) in the middle of verification.
    if (!draft.q) return;
    const seen = new Set<number>();
    let total = 0;
    for (const [token, prob] of draft.q) {
      if (seen.has(token)) return void ctx.addIssue({ code: 'custom', path: ['q'], message: `token ${token} appears twice in q` });
      seen.add(token);
      total += prob;
    }
    if (!(Math.abs(total - 1) <= Q_SUM_TOLERANCE)) ctx.addIssue({ code: 'custom', path: ['q'], message: `q must sum to 1, sums to ${total}` });
    const own = draft.q.find(([token]) => token === draft.token);
    if (!own || !(own[1] > 0)) ctx.addIssue({ code: 'custom', path: ['q'], message: `the drafted token ${draft.token} must have positive probability under its own q` });
  });

/** The most nodes a draft tree may add beside the draft path (alternatives and their continuations; each row costs the target at most k tokens). */
export const MAX_DRAFT_BRANCHES = 48;

/**
 * An alternative drafted token: a draft tree is the `draft` path (node i's parent is node i − 1) plus these
 * nodes, numbered after it (branch j is node draft.length + j), each hanging from an earlier node (-1 = the
 * context). Its q is the distribution it was drawn from given its earlier siblings (shared/sampling/multipath.ts).
 */
export const draftBranchSchema = z.intersection(draftTokenSchema, z.object({ parent: z.number().int().min(-1).max(64 + MAX_DRAFT_BRANCHES) }));

export const verifyRequestSchema = z
  .object({
    model: z.string().optional(),
    /** Every token before the draft: prompt plus tokens generated so far. */
    context: z.array(tokenId).min(1),
    draft: z.array(draftTokenSchema).max(64),
    /** Multi-path drafts: alternative nodes beside the draft path, scored in the same pass (ARCHITECTURE.md: Multi-path drafts). */
    branches: z.array(draftBranchSchema).max(MAX_DRAFT_BRANCHES).optional(),
    sampling: samplingSchema,
    method: z.enum(['token', 'block']).default('token'),
    /** The tenant's prefix-cache salt: target KV is only reused within one salt (shared/prefix-cache). */
    cache_salt: cacheSaltSchema,
    logprobs: logprobsRequestSchema,
  })
  .superRefine((request, ctx) => {
    const problem = draftTreeProblem(request.draft.length, request.branches);
    if (problem) ctx.addIssue({ code: 'custom', path: ['branches'], message: problem });
  });
export type VerifyRequest = z.infer<typeof verifyRequestSchema>;

/*
 * Replies. The edge parses every origin reply with these schemas (functions/upstream/client.ts)
 * and checks it against its request (verifyReplyProblem, generateEventProblem): a reply that is
 * not JSON, has the wrong shape or contradicts the request is the origin's failure, never data.
 * Objects are not strict: an origin may add fields, which the edge drops.
 */
const count = z.number().int().nonnegative();
const millis = z.number().nonnegative();

export const originStatsSchema = z.object({
  /** Which origin answered (its configured id). */
  id: z.string().max(256),
  /** Time in the target's forward pass for this call. */
  forward_ms: millis,
  /** Context tokens whose target KV was already held, so not recomputed. */
  cached_tokens: count,
  /** Time this call waited for the origin's forward-pass queue (reference origin). */
  queue_ms: millis.optional(),
});
export type OriginStats = z.infer<typeof originStatsSchema>;

/** One emitted token's log-probability and its alternatives ([token, logprob], most likely first), when the request asked. */
export const tokenLogprobSchema = z.object({
  logprob: z.number().max(0),
  top: z.array(z.tuple([tokenId, z.number().max(0)])).max(MAX_TOP_LOGPROBS),
});
export type WireTokenLogprob = z.infer<typeof tokenLogprobSchema>;

export const verifyResponseSchema = z.object({
  /** Drafted tokens accepted. */
  accepted: count.max(64),
  /** The accepted drafts followed by exactly one token from the target (correction or bonus). */
  tokens: z.array(tokenId).min(1).max(65),
  /** With the request's `logprobs`: one entry per token of `tokens`. */
  logprobs: z.array(tokenLogprobSchema).max(65).optional(),
  /** With the request's `branches`: the accepted nodes of the tree (draft path first, then branches), root first. */
  path: z.array(count.max(64 + MAX_DRAFT_BRANCHES)).max(64).optional(),
  origin: originStatsSchema,
});
export type VerifyResponse = z.infer<typeof verifyResponseSchema>;

/**
 * What happened to an emitted token (the response's `speculation.record`): a
 * draft the target accepted (named by who drafted it: the draft model,
 * the request's prediction, prompt lookup as vLLM's "ngram", the suffix
 * index), the target's own token after a rejection or after a fully
 * accepted round, a token the origin decoded alone, or the draft model's
 * alone when no origin could serve.
 */
export const TOKEN_SOURCES = ['draft-accepted', 'prediction', 'ngram', 'suffix', 'target-correction', 'bonus', 'origin', 'draft-only'] as const;
export type TokenSource = (typeof TOKEN_SOURCES)[number];

/**
 * Speculation at the origin (`/v1/generate` with `speculate`): an origin that
 * hosts a draft (the reference origin's `--draft`) runs the same loop and
 * verification rules next to its target and streams the verified tokens, so
 * the link carries one stream instead of a round trip per round. An origin
 * without a draft (or an SGLang/vLLM engine) ignores it and decodes alone:
 * the output is the same either way, only the speed differs.
 */
export const originSpeculationSchema = z.object({
  draft_length: z.number().int().min(1).max(16),
  method: z.enum(['token', 'block']).default('token'),
  /** The caller's predicted output from the generation's start (OpenAI's Predicted Outputs), tried before the draft model. */
  prediction: z.array(tokenId).max(4096).optional(),
  /** hybrid (default): suffix matches over the context, else the draft model; draft-model: the draft model alone (what a request asking for it drafts at the edge). */
  proposer: z.enum(['hybrid', 'draft-model']).optional(),
  /**
   * The origin chooses k per round (up to draft_length) from its own measurements and hands over to plain
   * decoding when speculating is predicted to lose (the edge's adaptive mode, run at the origin); like it,
   * not bit-reproducible for a seed. Absent: lockstep with k = draft_length.
   */
  adaptive: z.boolean().optional(),
});
export type OriginSpeculation = z.infer<typeof originSpeculationSchema>;

export const generateRequestSchema = z.object({
  model: z.string().optional(),
  context: z.array(tokenId).min(1),
  max_tokens: z.number().int().positive(),
  sampling: samplingSchema,
  /** Generation stops after emitting any of these (end-of-text). */
  stop_token_ids: z.array(tokenId).default([]),
  /** The tenant's prefix-cache salt: target KV is only reused within one salt (shared/prefix-cache). */
  cache_salt: cacheSaltSchema,
  logprobs: logprobsRequestSchema,
  speculate: originSpeculationSchema.optional(),
});
export type GenerateRequest = z.infer<typeof generateRequestSchema>;

/** One line of the origin's newline-delimited JSON stream for /v1/generate. */
export const generateEventSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('token'),
    token: tokenId,
    forward_ms: millis,
    logprob: tokenLogprobSchema.optional(),
    /** Speculating at the origin: what happened to this token (absent: the origin decoded it alone). */
    source: z.enum(TOKEN_SOURCES).optional(),
  }),
  z.object({
    type: z.literal('done'),
    finish_reason: z.enum(['stop', 'length']),
    origin: originStatsSchema,
    /** Speculating at the origin: its verify rounds (target passes), drafted and accepted tokens, and drafting time. */
    // draft_steps: tokens the origin's draft model drafted, one model step each (matches cost none): the drafting work at the origin.
    speculation: z.object({ rounds: count, drafted: count, accepted: count, draft_ms: millis, draft_steps: count.optional() }).optional(),
  }),
  /** The origin failed mid-stream; `message` is the origin's own text (logged by the edge, never shown to clients). */
  z.object({ type: z.literal('error'), message: z.string() }),
]);
export type GenerateEvent = z.infer<typeof generateEventSchema>;

export const originHealthSchema = z.object({
  status: z.literal('ok'),
  id: z.string().max(256),
  model: z.string().max(1024),
  vocab_size: z.number().int().positive(),
  max_positions: z.number().int().positive(),
  /** Reference origin: execution provider in use ("cpu", "cuda"). */
  device: z.string().max(256).optional(),
  /** Reference origin: "hmac-sha256" when verify/generate require signatures, "none" otherwise. */
  auth: z.string().max(256).optional(),
  /** Reference origin: forward-pass queue (concurrency, running, waiting, served, mean_queue_ms). */
  queue: z.object({ concurrency: count, running: count, waiting: count, served: count, mean_queue_ms: millis }).optional(),
  /** Reference origin: the GPU cost model forward passes are held to (benchmarks), or null for measured timing. */
  cost_model: z.string().max(256).nullable().optional(),
  /** Reference origin with `--draft`: the draft it speculates with (`speculate` on /v1/generate), else absent. */
  draft: z.string().max(1024).nullable().optional(),
  /** Reference origin serving WebSocket sessions on /v1/session (shared/session-protocol.ts): true, else absent. */
  session: z.boolean().optional(),
});
export type OriginHealth = z.infer<typeof originHealthSchema>;

/**
 * What is wrong with a (schema-valid) verify reply given its request, or null:
 * `accepted` is at most the number of drafts, `tokens` is the accepted drafts
 * themselves plus exactly one more, and every token is inside the vocabulary
 * (checked when `vocabSize` is known). Pure; the edge treats any answer as a
 * malformed reply from that origin.
 */
export function verifyReplyProblem(
  request: { draft: ReadonlyArray<{ token: number }>; branches?: ReadonlyArray<{ token: number; parent: number }>; logprobs?: number },
  reply: Pick<VerifyResponse, 'accepted' | 'tokens' | 'logprobs' | 'path'>,
  vocabSize?: number,
): string | null {
  const k = request.draft.length;
  const { accepted, tokens } = reply;
  if (!Number.isInteger(accepted) || accepted < 0 || accepted > k) return `accepted ${accepted} is not an integer in 0..${k} (the draft length)`;
  if (tokens.length !== accepted + 1) return `${tokens.length} tokens for ${accepted} accepted (expected accepted + 1 = ${accepted + 1})`;
  if (request.branches?.length && reply.path) {
    // A tree: the accepted tokens are those of a path from the root, which the reply names node by node. A reply
    // without a path verified the draft path alone (an engine, or an origin that predates trees): lossless too.
    const nodes = [...request.draft.map((d, i) => ({ token: d.token, parent: i - 1 })), ...request.branches];
    if (reply.path.length !== accepted) return `a path of ${reply.path.length} nodes for ${accepted} accepted`;
    for (let i = 0; i < accepted; i++) {
      const node = nodes[reply.path[i]];
      if (!node || node.parent !== (i === 0 ? -1 : reply.path[i - 1])) return `path node ${i} is not a child of the one before it`;
      if (tokens[i] !== node.token) return `token ${i} is not the accepted node's token`;
    }
  } else {
    for (let i = 0; i < accepted; i++) {
      if (tokens[i] !== request.draft[i].token) return `token ${i} is not the accepted draft token`;
    }
  }
  if (request.logprobs !== undefined) {
    if (reply.logprobs?.length !== tokens.length) return `${reply.logprobs?.length ?? 'no'} log-probability entries for ${tokens.length} tokens`;
    for (const entry of reply.logprobs) {
      const problem = logprobProblem(entry, request.logprobs, vocabSize);
      if (problem) return problem;
    }
  }
  return tokensProblem(tokens, vocabSize);
}

/**
 * What is wrong with a draft tree's shape, or null: every branch hangs from an earlier node (-1 = the context),
 * and no node sits deeper than the draft path, so every row the target scores fits where the path does.
 */
export function draftTreeProblem(pathLength: number, branches: ReadonlyArray<{ parent: number }> | undefined): string | null {
  if (!branches?.length) return null;
  if (pathLength === 0) return 'branches need a draft path to hang from';
  const depth: number[] = Array.from({ length: pathLength }, (_, i) => i);
  for (const [j, { parent }] of branches.entries()) {
    const index = pathLength + j;
    if (parent >= index) return `branch ${j} (node ${index}) hangs from node ${parent}, which does not come before it`;
    const at = parent < 0 ? 0 : depth[parent] + 1;
    if (at >= pathLength) return `branch ${j} (node ${index}) would sit at depth ${at + 1}, deeper than the draft path (${pathLength})`;
    depth.push(at);
  }
  return null;
}

/** What is wrong with a (schema-valid) generate event, or null: a token must be inside the vocabulary (when `vocabSize` is known). */
export function generateEventProblem(event: GenerateEvent, vocabSize?: number, logprobs?: number): string | null {
  if (event.type !== 'token') return null;
  if (logprobs !== undefined) {
    if (!event.logprob) return 'a token event without the log-probability the request asked for';
    const problem = logprobProblem(event.logprob, logprobs, vocabSize);
    if (problem) return problem;
  }
  return tokensProblem([event.token], vocabSize);
}

/** Exactly the alternatives asked for (the vocabulary permitting), most likely first, inside the vocabulary. */
function logprobProblem(entry: WireTokenLogprob, top: number, vocabSize: number | undefined): string | null {
  if (entry.top.length !== Math.min(top, vocabSize ?? top)) return `${entry.top.length} alternatives where ${top} were asked for`;
  for (let i = 1; i < entry.top.length; i++) if (entry.top[i][1] > entry.top[i - 1][1]) return 'alternatives are not sorted most likely first';
  return tokensProblem(entry.top.map(([token]) => token), vocabSize);
}

function tokensProblem(tokens: readonly number[], vocabSize: number | undefined): string | null {
  if (vocabSize === undefined) return null;
  const index = tokens.findIndex((t) => !Number.isInteger(t) || t < 0 || t >= vocabSize);
  return index < 0 ? null : `token ${tokens[index]} is outside the vocabulary (${vocabSize})`;
}
