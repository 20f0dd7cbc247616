// The playground: one streamed /v1/completions request with `speculation.record`, drawn as it arrives.
// Each chunk's `speculation_record` lists the new tokens (id, text, source, round) and rounds (drafted,
// accepted, draft/verify/forward ms); the page colours every token by its source and draws each round.
// Plain browser JavaScript with no build step, served by the Worker as a static asset.

const $ = (id) => document.getElementById(id);
let controller = null;

$('request').addEventListener('submit', (event) => {
  event.preventDefault();
  void generate();
});
$('stop').addEventListener('click', () => controller?.abort());
$('placement').addEventListener('change', () => {
  const placement = $('placement').value;
  // The origin drafts with its own draft model (and the prediction); only k applies there.
  for (const id of ['proposer', 'mode']) $(id).disabled = placement !== 'edge' && placement !== 'auto';
  $('draft-length').disabled = placement === 'none';
});

/** The request the form describes (README: API). */
function requestBody() {
  const number = (id) => ($(id).value === '' ? undefined : Number($(id).value));
  const placement = $('placement').value;
  const speculation =
    placement === 'edge' || placement === 'auto'
      ? { record: true, placement, proposer: $('proposer').value, mode: $('mode').value, draft_length: number('draft-length') }
      : placement === 'origin'
        ? { record: true, placement: 'origin', draft_length: number('draft-length') }
        : { record: true, draft_length: 0 };
  const body = {
    prompt: $('prompt').value,
    max_tokens: number('max-tokens'),
    temperature: number('temperature'),
    top_p: number('top-p'),
    seed: number('seed'),
    stream: true,
    stream_options: { include_usage: true },
    speculation,
  };
  if ($('prediction').value) body.prediction = { type: 'content', content: $('prediction').value };
  return body;
}

async function generate() {
  const view = newView();
  controller = new AbortController();
  setRunning(true);
  view.status('Generating…');
  const started = performance.now();
  try {
    const response = await fetch('/v1/completions', {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${$('key').value.trim()}` },
      body: JSON.stringify(requestBody()),
      signal: controller.signal,
    });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      throw new Error(body?.error?.message ?? `HTTP ${response.status}`);
    }
    for await (const data of sseData(response.body)) {
      if (data === '[DONE]') break;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.speculation_record) view.add(chunk.speculation_record, performance.now() - started);
      if (chunk.speculation) view.finish(chunk.speculation, chunk.usage);
    }
    view.status(`Done in ${Math.round(performance.now() - started)} ms.`, 'done');
  } catch (err) {
    view.status(err.name === 'AbortError' ? 'Stopped.' : `Error: ${err.message}`, err.name === 'AbortError' ? 'done' : 'error');
  } finally {
    setRunning(false);
  }
}

function setRunning(running) {
  $('run').disabled = running;
  $('stop').disabled = !running;
}

/** The data payloads of a server-sent event stream. */
async function* sseData(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value;
    let end;
    while ((end = buffered.indexOf('\n\n')) >= 0) {
      const event = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = event
        .split('\n')
        .filter((line) => line.startsWith('data:'))
        .map((line) => line.slice(5).trimStart())
        .join('\n');
      if (data) yield data;
    }
  }
}

/** The result area: the coloured text, the round timeline and the running numbers. */
function newView() {
  const output = $('output');
  const timeline = $('timeline');
  output.replaceChildren(Object.assign(document.createElement('span'), { className: 'prompt', textContent: $('prompt').value }));
  timeline.replaceChildren();
  const rounds = [];
  let tokens = 0;
  let drafted = 0;
  let accepted = 0;
  const scale = { max: 1 };

  const set = (id, text) => ($(id).textContent = text);
  return {
    status(text, state = 'running') {
      $('status').textContent = text;
      $('status').dataset.state = state;
    },
    add(record, elapsedMs) {
      for (const round of record.rounds) {
        rounds[round.index] = round;
        drafted += round.drafted.length;
        accepted += round.accepted;
        timeline.append(roundBar(round, scale));
      }
      for (const token of record.tokens) {
        const round = rounds[token.round];
        const span = document.createElement('span');
        span.className = `token ${token.source}`;
        span.dataset.source = token.source;
        span.dataset.id = String(token.id);
        span.dataset.round = String(token.round);
        span.textContent = token.text;
        span.title = tokenTitle(token, round);
        output.append(span);
        tokens++;
      }
      rescale(timeline, scale);
      set('stat-tokens', String(tokens));
      set('stat-rounds', String(rounds.filter(Boolean).length));
      set('stat-acceptance', drafted ? `${((100 * accepted) / drafted).toFixed(0)}% (${accepted}/${drafted})` : '–');
      set('stat-per-pass', rounds.length ? (tokens / rounds.filter(Boolean).length).toFixed(2) : '–');
      set('stat-rate', elapsedMs > 0 ? (tokens / (elapsedMs / 1000)).toFixed(1) : '–');
    },
    finish(speculation) {
      // The server's own count of target passes includes discarded pipelined rounds.
      if (speculation.target_passes) set('stat-per-pass', (tokens / speculation.target_passes).toFixed(2));
    },
  };
}

function tokenTitle(token, round) {
  const where = `round ${token.round}${round?.proposer ? `, drafted by ${round.proposer}` : ''}`;
  if (token.source === 'target-correction' && round) return `${token.source} (${where}): the draft wanted ${JSON.stringify(round.rejected_text)}`;
  return `${token.source} (${where})`;
}

/** One round as a bar: draft, link (verify wall time minus the target's forward time), forward. */
function roundBar(round, scale) {
  const item = document.createElement('li');
  item.dataset.round = String(round.index);
  const link = Math.max(0, round.verify_ms - round.forward_ms);
  const parts = [
    ['draft', round.draft_ms],
    ['link', link],
    ['forward', round.forward_ms],
  ];
  const bar = document.createElement('span');
  bar.className = 'bar';
  for (const [kind, ms] of parts) {
    const piece = document.createElement('span');
    piece.className = `piece ${kind}`;
    piece.dataset.ms = String(ms);
    piece.title = `${kind} ${ms.toFixed(1)} ms`;
    bar.append(piece);
  }
  const total = round.draft_ms + link + round.forward_ms;
  scale.max = Math.max(scale.max, total);
  const label = document.createElement('span');
  label.className = 'label';
  label.textContent =
    round.kind === 'origin'
      ? `origin stream token · ${total.toFixed(1)} ms`
      : `${round.proposer} ${round.accepted}/${round.drafted.length} accepted · ${total.toFixed(1)} ms`;
  item.append(bar, label);
  return item;
}

/** Bars share one ms scale: the longest round so far fills the width. */
function rescale(timeline, scale) {
  for (const piece of timeline.querySelectorAll('.piece')) piece.style.width = `${(100 * Number(piece.dataset.ms)) / scale.max}%`;
}
