import type { GenerationDeps } from '../generation';
import type { statsToJson } from '../speculation/stats';
import { writeGenerationPoint } from './analytics';
import { flushSoon } from './flush';
import { isolateMetrics } from './registry';

/** What the generation pipeline knows when a generation is over (its `finish`). */
export interface FinishedGeneration {
  promptTokens: number;
  completionTokens: number;
  /** The response's `speculation` object: functions/speculation/stats.ts `statsToJson(stats, completionTokens)`. */
  speculation: ReturnType<typeof statsToJson>;
  /** The draft answered (part of) it alone: no origin could serve. */
  draftOnly: boolean;
}

/**
 * One finished generation: completed, or cut short (client gone, an error
 * after the first round, a cancel). Counted in this isolate, written to
 * Analytics Engine, and flushed to the Metrics object with the rest.
 */
export function recordGeneration(generation: FinishedGeneration, completed: boolean, deps: Pick<GenerationDeps, 'env' | 'waitUntil'>): void {
  const { promptTokens, completionTokens, speculation: spec } = generation;
  // Counters only go up: a missing or odd number counts as nothing rather than failing the generation's finish.
  const num = (value: unknown) => (typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 0);
  const outcome = completed ? 'completed' : 'cut_short';
  const mode = spec.mode === 'origin' ? 'origin' : 'speculative';
  const fallback = generation.draftOnly ? 'draft' : 'none';
  const drafted = num(spec.drafted);
  const accepted = num(spec.accepted);
  const targetPasses = num(spec.target_passes);
  const draftMs = num(spec.draft_ms);
  const verifyMs = num(spec.verify_ms);
  const originForwardMs = num(spec.origin_forward_ms);

  const m = isolateMetrics;
  m.generations.inc({ outcome, mode, fallback });
  m.promptTokens.inc({}, num(promptTokens));
  m.completionTokens.inc({}, num(completionTokens));
  m.draftedTokens.inc({}, drafted);
  m.acceptedTokens.inc({}, accepted);
  m.targetPasses.inc({}, targetPasses);
  m.verifyMs.inc({}, verifyMs);
  m.originForwardMs.inc({}, originForwardMs);
  if (drafted > 0) m.acceptanceRate.observe({}, accepted / drafted);
  if (completionTokens > 0) m.passesPerToken.observe({}, targetPasses / completionTokens);
  if (mode === 'speculative') m.draftMs.observe({}, draftMs);
  if (targetPasses > 0) m.originLatencyMs.observe({}, verifyMs / targetPasses);

  writeGenerationPoint(deps.env, { outcome, mode, fallback, promptTokens, completionTokens, drafted, accepted, targetPasses, draftMs, verifyMs, originForwardMs });
  flushSoon(deps.env, deps.waitUntil);
}
