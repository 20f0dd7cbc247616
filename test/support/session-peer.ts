import { once } from 'node:events';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { createOrigin, type OriginOptions } from '../../origin/app';
import { signRequest } from '../../shared/origin-auth';
import { SESSION_OPEN_METHOD, SESSION_PATH, type SessionOpen } from '../../shared/session-protocol';

/**
 * Session-protocol test helpers: a reference origin in process behind a real
 * listening socket with its sessions attached (as origin/main.ts serves it),
 * and a raw WebSocket peer (Node's global WebSocket) that reads the origin's
 * messages and close frame.
 */
export interface ListeningOrigin {
  url: string;
  sessions: ReturnType<typeof createOrigin>['sessions'];
  close(): Promise<void>;
}

export async function listenOrigin(options: OriginOptions, attachSessions = true): Promise<ListeningOrigin> {
  const { app, sessions } = createOrigin(options);
  const server = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }) as Server;
  if (attachSessions) sessions.attach(server);
  await once(server, 'listening');
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    sessions,
    close: () =>
      new Promise<void>((resolve) => {
        sessions.closeAll();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface Peer {
  socket: WebSocket;
  /** The next message from the origin, parsed (fails after `timeoutMs`). */
  next(timeoutMs?: number): Promise<any>;
  send(message: unknown): void;
  /** Resolves with the close frame's code and reason. */
  closed: Promise<{ code: number; reason: string }>;
}

export async function connectPeer(url: string): Promise<Peer> {
  const socket = new WebSocket(url.replace(/^http/, 'ws') + SESSION_PATH);
  const inbox: any[] = [];
  const waiters: Array<(message: any) => void> = [];
  socket.addEventListener('message', (event) => {
    const message = JSON.parse(String(event.data));
    const waiter = waiters.shift();
    if (waiter) waiter(message);
    else inbox.push(message);
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) => socket.addEventListener('close', (event) => resolve({ code: event.code, reason: event.reason })));
  await new Promise<void>((resolve, reject) => {
    socket.addEventListener('open', () => resolve(), { once: true });
    socket.addEventListener('error', () => reject(new Error('the session upgrade failed')), { once: true });
  });
  return {
    socket,
    closed,
    send: (message) => socket.send(typeof message === 'string' ? message : JSON.stringify(message)),
    next: (timeoutMs = 10_000) =>
      inbox.length
        ? Promise.resolve(inbox.shift())
        : new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`no session message within ${timeoutMs} ms`)), timeoutMs);
            waiters.push((message) => {
              clearTimeout(timer);
              resolve(message);
            });
          }),
  };
}

/** An open message for these params, signed with `secret` (unsigned without one). */
export async function openMessage(params: Record<string, unknown>, secret?: string, nowMs = Date.now()): Promise<SessionOpen> {
  const text = JSON.stringify(params);
  if (!secret) return { type: 'open', params: text };
  const h = await signRequest(secret, SESSION_OPEN_METHOD, SESSION_PATH, text, nowMs);
  return { type: 'open', params: text, auth: { key_id: h['x-edgespec-key-id'], timestamp: h['x-edgespec-timestamp'], nonce: h['x-edgespec-nonce'], signature: h['x-edgespec-signature'] } };
}
