/**
 * Applies OpenAI `stop` strings to streamed text. Text that might be the start
 * of a stop string is held back until it is known not to be one, so a stop
 * string never leaks into the output, even split across chunks.
 */
export class StopMatcher {
  private held = '';
  private stopped = false;

  constructor(private readonly stops: readonly string[]) {}

  get hasStopped() {
    return this.stopped;
  }

  /** The text safe to emit now; after a stop string is seen, everything before it and nothing after. */
  push(delta: string): string {
    if (this.stopped) return '';
    const text = this.held + delta;
    let cut = -1;
    for (const stop of this.stops) {
      const at = text.indexOf(stop);
      if (at >= 0 && (cut < 0 || at < cut)) cut = at;
    }
    if (cut >= 0) {
      this.stopped = true;
      this.held = '';
      return text.slice(0, cut);
    }
    const keep = this.partialStopLength(text);
    this.held = text.slice(text.length - keep);
    return text.slice(0, text.length - keep);
  }

  /** Whatever was held back when generation ends without a stop string. */
  flush(): string {
    const rest = this.stopped ? '' : this.held;
    this.held = '';
    return rest;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
  private partialStopLength(text: string): number {
    let longest = 0;
    for (const stop of this.stops) {
      for (let len = Math.min(stop.length - 1, text.length); len > longest; len--) {
        if (text.endsWith(stop.slice(0, len))) {
          longest = len;
          break;
        }
      }
    }
    return longest;
  }
}
