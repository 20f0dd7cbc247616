import { createServer, request as httpRequest, Agent, type IncomingMessage, type Server } from 'node:http';
import { once } from 'node:events';
import { connect, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';

/**
 * A latency-injecting HTTP proxy between the edge and the origin: each request
 * waits RTT/2 before it is forwarded, and every chunk of the answer (including
 * each token line of a streamed /v1/generate) waits RTT/2 before it is relayed,
 * in order. So a verify round pays one RTT and an origin stream pays it once,
 * exactly as over a real link (bandwidth is not modelled: payloads are tiny).
 * WebSocket upgrades (origin sessions, /v1/session) pass through as bytes:
 * the handshake waits RTT/2 each way, then every chunk (a frame, for the
 * protocol's small messages) waits RTT/2 in its direction, so a session round
 * pays one RTT too.
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
  const tunnels = new Set<Socket | Duplex>();
  server.on('upgrade', (req: IncomingMessage, client: Duplex, head: Buffer) => {
    tunnels.add(client);
    client.on('error', () => client.destroy());
    client.on('close', () => tunnels.delete(client));
    // Frames may follow the handshake at once: hold them until the upstream is connected.
    client.pause();
    later(() => {
      const target = new URL(req.url ?? '/', state.upstream);
      const upstream = connect(Number(target.port || 80), target.hostname);
      tunnels.add(upstream);
      upstream.setNoDelay(true);
      (client as Socket).setNoDelay?.(true);
      upstream.on('connect', () => {
        const lines = [`${req.method} ${req.url} HTTP/1.1`];
        for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i].toLowerCase() === 'host' ? target.host : req.rawHeaders[i + 1]}`);
        upstream.write(lines.join('\r\n') + '\r\n\r\n');
        if (head.length) upstream.write(head);
        client.on('data', (c: Buffer) => later(() => upstream.write(c)));
        client.resume();
      });
      upstream.on('data', (c: Buffer) => later(() => client.write(c)));
      upstream.on('end', () => later(() => client.end()));
      client.on('end', () => later(() => upstream.end()));
      upstream.on('error', () => later(() => client.destroy()));
      upstream.on('close', () => tunnels.delete(upstream));
      client.on('close', () => upstream.destroy());
    });
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
      for (const socket of tunnels) socket.destroy();
      server.closeAllConnections();
      server.close();
      agent.destroy();
    },
  };
}
