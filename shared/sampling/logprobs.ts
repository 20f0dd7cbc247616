/**
 * Log-probabilities as OpenAI reports them (`logprobs`): of the model's raw
 * distribution, log-softmax of the logits at temperature 1 with no top-k or
 * top-p, whatever the request samples with. OpenAI's logprobs do not move with
 * temperature, and vLLM's default (`logprobs_mode: raw_logprobs`) is the same;
 * so a token that top-p cut can still have a finite logprob, and a greedy
 * request gets the same numbers as a sampled one.
 */

/** Most alternatives per position (OpenAI's chat `top_logprobs` allows 20). */
export const MAX_TOP_LOGPROBS = 20;

export interface TokenLogprob {
  /** log p(token) under the raw distribution. */
  logprob: number;
  /** The `top` most likely tokens as [token, logprob], most likely first, lower id first on ties. */
  top: Array<[number, number]>;
}

/** The token's log-probability and the `top` most likely alternatives at one position, from its logits. */
export function tokenLogprob(logits: ArrayLike<number>, token: number, top: number): TokenLogprob {
  if (!Number.isInteger(token) || token < 0 || token >= logits.length) throw new RangeError(`token ${token} is outside the vocabulary (${logits.length})`);
  const logZ = logSumExp(logits);
  const best = topIndices(logits, Math.min(top, logits.length));
  return { logprob: logits[token] - logZ, top: best.map((i) => [i, logits[i] - logZ]) };
}

/** log Σ exp(x), shifted by the maximum so no term overflows. */
function logSumExp(values: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) if (values[i] > max) max = values[i];
  if (max === -Infinity) return -Infinity;
  let sum = 0;
  for (let i = 0; i < values.length; i++) sum += Math.exp(values[i] - max);
  return max + Math.log(sum);
}

/** Indices of the n largest values, largest first, lower index first on ties; one pass with a small sorted list (n ≤ 20). */
function topIndices(values: ArrayLike<number>, n: number): number[] {
  const best: number[] = [];
  if (n <= 0) return best;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (best.length === n && !(v > values[best[n - 1]])) continue;
    let at = best.length;
    while (at > 0 && v > values[best[at - 1]]) at--;
    best.splice(at, 0, i);
    if (best.length > n) best.pop();
  }
  return best;
}
