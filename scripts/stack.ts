import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { seedModels } from './seed-models';

/**
 * The local stack: a reference origin (Node, onnxruntime-node) and the edge
 * Worker under `wrangler dev` (workerd), wired together. `npm start`, the
 * tests and the benchmarks all start it through here, so they run the same thing.
 */
export interface Service {
  url: string;
  process: ChildProcess;
  stop(): Promise<void>;
  /** Recent output, for failure messages. */
  output(): string;
}

interface ProcessOptions {
  log?: (line: string) => void;
  /** Forward the process output to this terminal (npm start) instead of only keeping it for error messages. */
  inheritOutput?: boolean;
}

export interface OriginOptions extends ProcessOptions {
  port: number;
  /** Target model folder. */
  targetDir?: string;
  id?: string;
  threads?: number;
  /** Extra origin flags, e.g. ['--cost-model', 'h100-llama-3.1-8b'] (benchmarks). */
  args?: string[];
  /** Shared secret (ORIGIN_SECRET): the origin then refuses unsigned verify/generate. Unset = unsigned. */
  secret?: string;
}

export interface EdgeOptions extends ProcessOptions {
  port: number;
  originUrl: string;
  /** Draft model folder, seeded into the local R2 bucket. */
  draftDir?: string;
  /** Extra wrangler vars, e.g. { DRAFT_LENGTH: '6' }. */
  vars?: Record<string, string>;
  /** Where wrangler keeps local R2/DO state. */
  persistTo?: string;
  /** ORIGIN_SECRET for signing origin calls (a wrangler secret in production; a --var locally). */
  secret?: string;
}

export async function startOrigin(options: OriginOptions): Promise<Service> {
  const targetDir = options.targetDir ?? 'models/edgespec-target';
  const url = `http://127.0.0.1:${options.port}`;
  options.log?.(`starting origin on ${url} (${targetDir})`);
  const args = ['--import', 'tsx', 'origin/main.ts', '--port', String(options.port), '--model', targetDir, '--threads', String(options.threads ?? 1)];
  if (options.id) args.push('--id', options.id);
  if (options.args) args.push(...options.args);
  // The secret travels in the environment, never argv; an ORIGIN_SECRET of the parent is not inherited by accident.
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ORIGIN_SECRET: options.secret ?? '' } });
  return await supervise(child, `${url}/health`, url, '[origin]', 60_000, options);
}

export async function startEdge(options: EdgeOptions): Promise<Service> {
  const draftDir = options.draftDir ?? 'models/edgespec-draft';
  const persistTo = options.persistTo ?? '.wrangler/state';
  const url = `http://127.0.0.1:${options.port}`;
  await seedModels({ persistTo, modelDirs: [draftDir], log: options.log });
  const draftName = draftDir.split(/[\\/]/).filter(Boolean).pop()!;
  const vars: Record<string, string> = { ORIGIN_URL: options.originUrl, DRAFT_MODEL: draftName, ...options.vars };
  if (options.secret) vars.ORIGIN_SECRET = options.secret;
  options.log?.(`starting edge (wrangler dev, workerd) on ${url}`);
  const child = spawn(
    process.execPath,
    [
      'node_modules/wrangler/bin/wrangler.js', 'dev',
      '--ip', '127.0.0.1', '--port', String(options.port),
      '--persist-to', persistTo,
      '--inspector-port', '0',
      '--show-interactive-dev-session=false',
      ...Object.entries(vars).flatMap(([k, v]) => ['--var', `${k}:${v}`]),
    ],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
      // Local only: no metrics, no fetch of a real Request.cf object (the placeholder is fine here).
      env: { ...process.env, WRANGLER_SEND_METRICS: 'false', CLOUDFLARE_CF_FETCH_ENABLED: 'false', WRANGLER_LOG: process.env.WRANGLER_LOG ?? 'warn' },
    },
  );
  return await supervise(child, `${url}/health`, url, '[edge]', 120_000, options);
}

export interface Stack {
  originUrl: string;
  edgeUrl: string;
  origin: Service;
  edge: Service;
  stop(): Promise<void>;
}

export async function startStack(options: { originPort: number; edgePort: number } & Omit<OriginOptions, 'port'> & Omit<EdgeOptions, 'port' | 'originUrl'>): Promise<Stack> {
  const origin = await startOrigin({ ...options, port: options.originPort });
  const edge = await startEdge({ ...options, port: options.edgePort, originUrl: origin.url }).catch(async (err) => {
    await origin.stop();
    throw err;
  });
  return {
    originUrl: origin.url,
    edgeUrl: edge.url,
    origin,
    edge,
    async stop() {
      await edge.stop();
      await origin.stop();
    },
  };
}

async function supervise(child: ChildProcess, healthUrl: string, url: string, tag: string, timeoutMs: number, options: ProcessOptions): Promise<Service> {
  const recent: string[] = [];
  const capture = (chunk: Buffer) => {
    const text = chunk.toString();
    if (options.inheritOutput) process.stdout.write(text.replace(/^(?=.)/gm, `${tag} `));
    recent.push(...text.split('\n').map((l) => `${tag} ${l}`));
    if (recent.length > 200) recent.splice(0, recent.length - 200);
  };
  child.stdout!.on('data', capture);
  child.stderr!.on('data', capture);
  const output = () => recent.join('\n');
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  };
  try {
    await waitFor(healthUrl, child, timeoutMs, output);
  } catch (err) {
    await stop();
    throw err;
  }
  options.log?.(`${tag.slice(1, -1)} is up at ${url}`);
  return { url, process: child, stop, output };
}

async function waitFor(url: string, child: ChildProcess, timeoutMs: number, output: () => string) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`process for ${url} exited with code ${child.exitCode}:\n${output()}`);
    try {
      const response = await fetch(url, { signal: AbortSignal.timeout(2000) });
      if (response.ok) return;
    } catch {
      /* not listening yet */
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${url} did not come up within ${timeoutMs / 1000} s:\n${output()}`);
}
