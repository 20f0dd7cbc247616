/** One benchmark measurement, as written to bench/results/latest.json. */
export interface BenchRecord {
  suite: string;
  mode: string;
  rtt_ms: number;
  tokens_per_s: number;
  ttft_ms: number;
  target_passes_per_token: number;
  mean_accepted: number;
  draft_ms_per_token: number;
  /** "measured" (everything real on this machine) or a named GPU cost model. */
  origin_cost: string;
  [extra: string]: unknown;
}
