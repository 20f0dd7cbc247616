import { createServer, request as httpRequest, Agent, type Server } from 'node:http';
import { once } from 'node:events';

/**
 * A latency-injecting HTTP proxy between the edge and the origin: each request
 * waits RTT/2 before it is forwarded, and every chunk of the answer (including
 * each token line of a streamed /v1/generate) waits RTT/2 before it is relayed,
 * in order. So a verify round pays one RTT and an origin stream pays it once,
 * exactly as over a real link (bandwidth is not modelled: payloads are tiny).
 * The RTT and the upstream can change between suites without restarting the edge.
 */
export interface LatencyProxy {
  url: string;
  rttMs: number;
  upstream: string;
  close(): Promise<void>;
}

export async function startLatencyProxy(options: { port: number; upstream: string; rttMs?: number }): Promise<LatencyProxy> {
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const state = { rttMs: options.rttMs ?? 0, upstream: options.upstream };
  const later = (fn: () => void) => (state.rttMs > 0 ? setTimeout(fn, state.rttMs / 2) : fn());

  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () =>
      later(() => {
        const target = new URL(req.url ?? '/', state.upstream);
        const upstream = httpRequest(target, { method: req.method, headers: { ...req.headers, host: target.host }, agent }, (answer) => {
          // Headers travel with the first byte of the answer: delay them like a chunk.
          later(() => {
            res.writeHead(answer.statusCode ?? 502, answer.headers);
            res.flushHeaders();
          });
          answer.on('data', (c: Buffer) => later(() => res.write(c)));
          answer.on('end', () => later(() => res.end()));
          answer.on('error', () => later(() => res.destroy()));
        });
        upstream.on('error', (err) => later(() => {
          if (!res.headersSent) res.writeHead(502, { 'content-type': 'application/json' });
          res.end(JSON.stringify({ error: { message: `latency proxy: ${err.message}`, type: 'proxy_error' } }));
        }));
        upstream.end(Buffer.concat(chunks));
      }),
    );
  });
  server.listen(options.port, '127.0.0.1');
  await once(server, 'listening');
  return {
    url: `http://127.0.0.1:${options.port}`,
    get rttMs() {
      return state.rttMs;
    },
    set rttMs(v: number) {
      state.rttMs = v;
    },
    get upstream() {
      return state.upstream;
    },
    set upstream(v: string) {
      state.upstream = v;
    },
    async close() {
      server.closeAllConnections();
      server.close();
      agent.destroy();
    },
  };
}
