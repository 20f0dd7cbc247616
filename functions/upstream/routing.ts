/**
 * Prefix-affinity routing: weighted rendezvous (highest-random-weight) hashing
 * of a prefix key over the origins, bounded by load. The same prompt prefix
 * lands on the same origin, where its target KV is already warm (the idea of
 * SGLang's cache-aware router), and when that origin leaves only its keys move
 * (rendezvous hashing: Thaler & Ravishankar 1998; weighted form: score =
 * -w / ln(u)). Load is bounded as in "Consistent Hashing with Bounded Loads"
 * (Mirrokni, Thorup, Zadimoghaddam 2018): walk the rendezvous order and take
 * the first origin whose in-flight count is under ceil((1 + ε) · (m + 1) · w / W),
 * m = requests in flight over the candidates, so a hot prefix spills over
 * instead of queueing behind itself. Every origin may hold MIN_CAPACITY calls
 * regardless, so at low load (where the formula would spill the second call)
 * affinity wins.
 */
export interface RoutingCandidate {
  id: string;
  weight: number;
  inflight: number;
}

/** Spill-over slack ε of bounded-load hashing: 0.25 lets an origin take 25% more than its share before the next in order is used. */
export const LOAD_SLACK = 0.25;
/** In-flight calls an origin always accepts for its own keys before the load bound applies. */
export const MIN_CAPACITY = 2;

/** Candidates in rendezvous order for `key`, best first. */
export function rendezvousOrder<C extends RoutingCandidate>(key: string, candidates: readonly C[]): C[] {
  return candidates
    .map((c) => ({ c, score: c.weight / -Math.log(unitHash(`${key}\u0000${c.id}`)) }))
    .sort((a, b) => b.score - a.score || (a.c.id < b.c.id ? -1 : 1))
    .map((s) => s.c);
}

/** The origin for `key` among `candidates` (all healthy), respecting the load bound. Null when there are none. */
export function chooseOrigin<C extends RoutingCandidate>(key: string, candidates: readonly C[], slack = LOAD_SLACK): C | null {
  if (candidates.length === 0) return null;
  const ordered = rendezvousOrder(key, candidates);
  const inflight = candidates.reduce((n, c) => n + c.inflight, 0);
  const totalWeight = candidates.reduce((n, c) => n + c.weight, 0);
  for (const c of ordered) {
    const capacity = Math.max(MIN_CAPACITY, Math.ceil(((1 + slack) * (inflight + 1) * c.weight) / totalWeight));
    if (c.inflight < capacity) return c;
  }
  // Unreachable: the capacities sum to more than the load. Kept for safety.
  return ordered[0];
}

/**
 * A uniform number in (0, 1) from a string: FNV-1a (32-bit) then the murmur3
 * finaliser for avalanche. Not cryptographic; only spreads keys evenly.
 */
export function unitHash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return ((h >>> 0) + 0.5) / 4294967296;
}
