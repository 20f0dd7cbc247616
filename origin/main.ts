import { resolve } from 'node:path';
import type { Server } from 'node:http';
import { parseArgs } from 'node:util';
import { serve } from '@hono/node-server';
import * as ort from 'onnxruntime-node';
import { loadModel, type OrtRuntime } from '../shared/model';
import { folderFiles } from '../shared/model/node-files';
import { createOrigin } from './app';
import { parseOriginKeys } from './auth';
import { protocolBodyLimit } from './body-limit';
import { costModel, holdForwardPasses, type HoldStats } from './cost-model';
import { selectDevice } from './device';
import { DEFAULT_MAX_BATCH, ForwardQueue } from './queue';
import { DEFAULT_MAX_SESSIONS, DEFAULT_SESSION_IDLE_MS } from './session';
import { TargetModel } from './target';

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.ORIGIN_PORT ?? '8788' },
    host: { type: 'string', default: process.env.ORIGIN_HOST ?? '127.0.0.1' },
    model: { type: 'string', default: process.env.ORIGIN_MODEL ?? 'models/edgespec-target' },
    id: { type: 'string', default: process.env.ORIGIN_ID ?? 'origin-0' },
    threads: { type: 'string', default: process.env.ORIGIN_THREADS ?? '1' },
    device: { type: 'string', default: process.env.ORIGIN_DEVICE ?? 'cpu' },
    concurrency: { type: 'string', default: process.env.ORIGIN_CONCURRENCY ?? '1' },
    'max-queue': { type: 'string', default: process.env.ORIGIN_MAX_QUEUE ?? '256' },
    // Continuous batching (origin/queue.ts): passes waiting together run as one forward pass of up to this many sequences; 1 = one at a time.
    'max-batch': { type: 'string', default: process.env.ORIGIN_MAX_BATCH ?? String(DEFAULT_MAX_BATCH) },
    // How long a free model may wait for as many rows as its recent passes carried (0 = a few event-loop turns).
    'batch-wait-ms': { type: 'string', default: process.env.ORIGIN_BATCH_WAIT_MS ?? '0' },
    'allow-unauthenticated': { type: 'boolean', default: false },
    'kv-cache-mb': { type: 'string', default: process.env.ORIGIN_KV_CACHE_MB ?? '256' },
    'kv-block': { type: 'string', default: process.env.ORIGIN_KV_BLOCK ?? '16' },
    // Live sequences the target KV keeps besides its blocks (origin/target-kv-cache.ts): one per concurrent generation, or rounds re-run a partial block.
    'kv-sessions': { type: 'string', default: process.env.ORIGIN_KV_SESSIONS ?? '32' },
    // Empty = the largest valid request for the loaded target (origin/body-limit.ts), about 8.5 MiB.
    'max-body-mb': { type: 'string', default: process.env.ORIGIN_MAX_BODY_MB ?? '' },
    // Benchmarks: hold each forward pass to a modelled GPU duration (origin/cost-model.ts).
    'cost-model': { type: 'string', default: process.env.ORIGIN_COST_MODEL ?? '' },
    // A draft model folder to speculate with next to the target (speculation.placement "origin"; README: Draft placement).
    draft: { type: 'string', default: process.env.ORIGIN_DRAFT ?? '' },
    // WebSocket sessions on /v1/session (origin/session.ts): at most this many open, closed after this long idle.
    'max-sessions': { type: 'string', default: process.env.ORIGIN_MAX_SESSIONS ?? String(DEFAULT_MAX_SESSIONS) },
    'session-idle-s': { type: 'string', default: process.env.ORIGIN_SESSION_IDLE_S ?? String(DEFAULT_SESSION_IDLE_MS / 1000) },
  },
});
// Secrets come from the environment, never a flag: flags show up in `ps`. Errors name entries, never secrets.
const keys = (() => {
  try {
    return parseOriginKeys(process.env);
  } catch (err) {
    return fail((err as Error).message);
  }
})();

const port = Number(values.port);
const threads = Number(values.threads);
// 0 = any free port (tests); the listening line says which.
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`--port must be a TCP port, got "${values.port}"`);
if (!Number.isInteger(threads) || threads < 1) fail(`--threads must be a positive integer, got "${values.threads}"`);
const concurrency = Number(values.concurrency);
const maxQueue = Number(values['max-queue']);
if (!Number.isInteger(concurrency) || concurrency < 1) fail(`--concurrency must be a positive integer, got "${values.concurrency}"`);
if (!Number.isInteger(maxQueue) || maxQueue < 0) fail(`--max-queue must be a non-negative integer, got "${values['max-queue']}"`);
const maxBatch = Number(values['max-batch']);
if (!Number.isInteger(maxBatch) || maxBatch < 1) fail(`--max-batch must be a positive integer (1 = no batching), got "${values['max-batch']}"`);
const batchWaitMs = Number(values['batch-wait-ms']);
if (!(batchWaitMs >= 0)) fail(`--batch-wait-ms must be a non-negative number of ms, got "${values['batch-wait-ms']}"`);
if (values.device !== 'cpu' && values.device !== 'cuda') fail(`--device must be "cpu" or "cuda", got "${values.device}"`);
const kvCacheMb = Number(values['kv-cache-mb']);
const kvBlock = Number(values['kv-block']);
if (!(kvCacheMb >= 0)) fail(`--kv-cache-mb must be a non-negative number of MiB, got "${values['kv-cache-mb']}"`);
if (!Number.isInteger(kvBlock) || kvBlock < 1) fail(`--kv-block must be a positive integer (tokens per KV block), got "${values['kv-block']}"`);
const kvSessions = Number(values['kv-sessions']);
if (!Number.isInteger(kvSessions) || kvSessions < 0) fail(`--kv-sessions must be a non-negative integer (live sequences kept), got "${values['kv-sessions']}"`);
const maxSessions = Number(values['max-sessions']);
const sessionIdleS = Number(values['session-idle-s']);
if (!Number.isInteger(maxSessions) || maxSessions < 0) fail(`--max-sessions must be a non-negative integer (0 = no sessions), got "${values['max-sessions']}"`);
if (!(sessionIdleS > 0)) fail(`--session-idle-s must be a positive number of seconds, got "${values['session-idle-s']}"`);
const maxBodyMb = values['max-body-mb'] ? Number(values['max-body-mb']) : null;
if (maxBodyMb !== null && !(maxBodyMb > 0)) fail(`--max-body-mb must be a positive number of MiB, got "${values['max-body-mb']}"`);
const loopback = ['127.0.0.1', 'localhost', '::1'].includes(values.host!);
if (keys.size === 0 && !loopback && !values['allow-unauthenticated']) {
  fail(`refusing to serve the target on ${values.host} without authentication: set ORIGIN_SECRET (the edge's ORIGIN_SECRET) or ORIGIN_SECRETS, or pass --allow-unauthenticated`);
}

const modelDir = resolve(values.model!);
const files = folderFiles(modelDir);

const started = performance.now();
const sessionOptions = { intraOpNumThreads: threads, interOpNumThreads: 1 };
const { device, loaded } = await selectDevice(values.device as 'cpu' | 'cuda', (executionProviders) =>
  loadModel(ort as unknown as OrtRuntime, files, 'full', executionProviders ? { ...sessionOptions, executionProviders } : sessionOptions),
  (line) => console.warn(`[origin ${values.id}] ${line}`),
).catch((err: Error) => fail(`cannot load target model from ${values.model}: ${err.message}`));
const { lm, onnxPath, config } = loaded;
const modelName = modelDir.split(/[\\/]/).pop()!;
const queue = new ForwardQueue(concurrency, maxQueue, maxBatch, batchWaitMs);
const target = new TargetModel(lm, { modelId: modelName, maxBytes: kvCacheMb * 2 ** 20, blockTokens: kvBlock, maxSessions: kvSessions });
let costModelName: string | null = null;
let holdStats: HoldStats | null = null;
if (values['cost-model']) {
  const model = (() => {
    try {
      return costModel(values['cost-model']!);
    } catch (err) {
      return fail((err as Error).message);
    }
  })();
  const held = holdForwardPasses(target, model);
  holdStats = held;
  costModelName = model.name;
  console.log(`[origin ${values.id}] forward passes held to the GPU cost model ${model.describe}`);
  process.on('exit', () => console.log(`[origin ${values.id}] cost model: ${held.overruns} of ${held.passes} passes ran longer on this CPU than modelled`));
}
// The draft runs quantized, as in the Worker: the same acceptance, and it never changes the output.
const draft = values.draft
  ? await loadModel(ort as unknown as OrtRuntime, folderFiles(resolve(values.draft)), 'quantized', { intraOpNumThreads: 1, interOpNumThreads: 1 })
      .then(({ lm: draftLm, config: draftConfig }) => {
        if (draftConfig.vocabSize !== config.vocabSize) fail(`--draft ${values.draft} has vocabulary ${draftConfig.vocabSize} but the target has ${config.vocabSize}: they must share a tokenizer`);
        return { name: resolve(values.draft!).split(/[\\/]/).pop()!, lm: draftLm };
      })
      .catch((err: Error) => fail(`cannot load draft model from ${values.draft}: ${err.message}`))
  : null;
const maxBodyBytes = maxBodyMb !== null ? Math.floor(maxBodyMb * 2 ** 20) : protocolBodyLimit(config.maxPositions);
const { app, sessions } = createOrigin({
  id: values.id!,
  modelName,
  target,
  keys,
  queue,
  device,
  costModel: costModelName,
  holdStats,
  maxBodyBytes,
  draft,
  sessions: { maxSessions, idleTimeoutMs: sessionIdleS * 1000 },
});
if (draft) console.log(`[origin ${values.id}] speculates next to the target with the draft ${draft.name} when asked (speculate on /v1/generate)`);
if (keys.size === 0) console.warn(`[origin ${values.id}] no ORIGIN_SECRET: verify and generate accept unsigned requests (fine on loopback, never on a network)`);
// Key ids are names, not secrets: logging them lets an operator confirm a rotation step.
else console.log(`[origin ${values.id}] verify and generate require signatures by key id ${[...keys.keys()].join(', ')}`);

const server = serve({ fetch: app.fetch, port, hostname: values.host }, (info) => {
  console.log(
    `[origin ${values.id}] ${modelName} (${onnxPath}, ${config.numLayers} layers, vocab ${config.vocabSize}, context ${config.maxPositions}) ` +
      `on ${device}, loaded in ${Math.round(performance.now() - started)} ms; bodies up to ${(maxBodyBytes / 2 ** 20).toFixed(2)} MiB; batches up to ${maxBatch} sequences per pass${batchWaitMs ? ` (waits up to ${batchWaitMs} ms for them)` : ''}; listening on http://${values.host}:${info.port}`,
  );
});
server.on('error', (err) => fail(`cannot listen on ${values.host}:${port}: ${err.message}`));
// 0 sessions: /health does not advertise them and every upgrade is refused, so edges verify over HTTP.
if (maxSessions > 0) sessions.attach(server as Server);
// Open sessions would hold server.close() open: close them first (the edges continue over HTTP, on another origin).
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => {
  sessions.closeAll();
  server.close(() => process.exit(0));
});

function fail(message: string): never {
  console.error(`[origin] ${message}`);
  process.exit(1);
}
