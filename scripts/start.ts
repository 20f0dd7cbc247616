import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { startStack } from './stack';

/**
 * `npm start`: the embedded default. A local origin verifying with the shipped
 * target model and the edge Worker drafting with the shipped int8 draft in
 * workerd, no accounts and no GPU. Prints the URL and a first request.
 */
const { values } = parseArgs({
  options: {
    port: { type: 'string', default: process.env.PORT ?? '8787' },
    'origin-port': { type: 'string', default: process.env.ORIGIN_PORT ?? '8788' },
    target: { type: 'string', default: 'models/edgespec-target' },
    draft: { type: 'string', default: 'models/edgespec-draft' },
  },
});

for (const dir of [values.target!, values.draft!]) {
  if (!existsSync(`${dir}/config.json`)) {
    console.error(`[start] no model in ${dir}: the shipped models are committed under models/ (see models/README.md)`);
    process.exit(1);
  }
}

const stack = await startStack({
  originPort: Number(values['origin-port']),
  edgePort: Number(values.port),
  targetDir: values.target,
  draftDir: values.draft,
  inheritOutput: true,
  // Edge -> origin calls are signed even locally: a fresh secret per run unless ORIGIN_SECRET is set.
  secret: process.env.ORIGIN_SECRET || randomBytes(32).toString('hex'),
  log: (line) => console.log(`[start] ${line}`),
}).catch((err: Error) => {
  console.error(`[start] ${err.message}`);
  process.exit(1);
});

console.log(`
edgespec is running.
  edge (OpenAI-compatible): ${stack.edgeUrl}/v1
  origin verifier:          ${stack.originUrl}

Try:
  curl -s ${stack.edgeUrl}/v1/completions -H 'content-type: application/json' \\
    -d '{"prompt": "function add(a, b) {", "max_tokens": 32, "temperature": 0}'

Streaming with the openai client: see README.md. Ctrl-C stops both processes.
`);

let stopping = false;
const shutdown = async (code: number) => {
  if (stopping) return;
  stopping = true;
  await stack.stop();
  process.exit(code);
};
process.on('SIGINT', () => void shutdown(0));
process.on('SIGTERM', () => void shutdown(0));
for (const child of [stack.origin.process, stack.edge.process]) {
  child.on('exit', (code) => {
    if (!stopping) {
      console.error(`[start] a process exited (code ${code}); stopping`);
      void shutdown(1);
    }
  });
}
