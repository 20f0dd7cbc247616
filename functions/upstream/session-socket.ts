import { SESSION_PATH } from '../../shared/session-protocol';

/**
 * A WebSocket to an origin's /v1/session, in workerd or in Node. A Worker
 * opens an outbound socket with a fetch carrying `Upgrade: websocket`: the
 * socket is the `webSocket` of its 101 answer, accepted before use (Cloudflare,
 * "Using the WebSockets API"). Node 22 (benchmarks, tests that run the loop in
 * Node) has the standard global WebSocket. Both then speak the same event API
 * (send, close, addEventListener for message / close / error).
 */
export class SessionRefused extends Error {
  constructor(
    message: string,
    /** The HTTP status that refused the upgrade, when there was one: 404 = an origin without sessions. */
    readonly status: number | null,
  ) {
    super(message);
    this.name = 'SessionRefused';
  }
}

const isWorkerd = () => typeof WebSocketPair === 'function';

/** A connected socket to `baseUrl`'s session endpoint; throws SessionRefused (or the network error) otherwise. */
export async function connectSessionSocket(baseUrl: string, timeoutMs: number): Promise<WebSocket> {
  const url = baseUrl + SESSION_PATH;
  if (isWorkerd()) {
    // A timer of our own, cleared once the upgrade answers: a signal that fired later must not touch the open socket.
    const connecting = new AbortController();
    const timer = setTimeout(() => connecting.abort(new SessionRefused(`no session within ${timeoutMs} ms`, null)), timeoutMs);
    let response: Response;
    try {
      response = await fetch(url, { headers: { upgrade: 'websocket' }, signal: connecting.signal });
    } finally {
      clearTimeout(timer);
    }
    const socket = response.webSocket;
    if (!socket) {
      await response.body?.cancel().catch(() => {});
      throw new SessionRefused(`the upgrade to a session was answered with HTTP ${response.status}`, response.status);
    }
    socket.accept();
    return socket;
  }
  const socket = new WebSocket(url.replace(/^http/, 'ws'));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      socket.close();
      reject(new SessionRefused(`no session within ${timeoutMs} ms`, null));
    }, timeoutMs);
    const settle = (error?: Error) => {
      clearTimeout(timer);
      socket.removeEventListener('open', onOpen);
      socket.removeEventListener('error', onError);
      if (error) reject(error);
      else resolve();
    };
    // Node's WebSocket reports a refused upgrade only as an error event: no status to read.
    const onOpen = () => settle();
    const onError = () => settle(new SessionRefused('the upgrade to a session failed', null));
    socket.addEventListener('open', onOpen);
    socket.addEventListener('error', onError);
  });
  return socket;
}
