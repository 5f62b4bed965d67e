// New mail as it happens (API.md "Realtime"): a WebSocket on /v1/events/ws,
// falling back to the long poll GET /v1/events when sockets fail. Either way
// the client resumes from the last cursor it handled, so after a disconnect
// or an offline spell nothing is missed and nothing comes twice. A `reset`
// event means the cursor was too old: the app refetches everything.

import { get, query, session, parseJson, ApiError } from './api.js';

const QUICK_CLOSE_MS = 3000; // a socket closing this soon after opening did not work
const SOCKET_FAILURES_BEFORE_POLL = 2;
const SOCKET_RETRY_AFTER_POLL_MS = 5 * 60 * 1000;
const POLL_TIMEOUT_S = 25;

export class LiveEvents {
  constructor({ onEvents, onReset, onStatus }) {
    this.onEvents = onEvents;
    this.onReset = onReset;
    this.onStatus = onStatus;
    this.cursor = null;
    this.mode = 'ws';
    this.stopped = true;
    this.socketFailures = 0;
    this.backoff = 500;
    this.ws = null;
    this.poll = null;
    this.timer = null;
    this.sleeping = null;
    this.queue = Promise.resolve();
    this.wake = () => this.reconnectNow();
    this.offline = () => this.onStatus('offline');
  }

  // The cursor to start from is taken before the first fetch of folders and
  // lists, so whatever changes in between is replayed (and applied idempotently).
  async begin() {
    const first = await get(`/v1/events${query({ timeout: 0 })}`, { bigIds: true });
    this.cursor = first.cursor;
    if (first.events && first.events.length) this.deliver(first.events);
  }

  start() {
    this.stopped = false;
    window.addEventListener('online', this.wake);
    window.addEventListener('offline', this.offline);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.wake);
    window.removeEventListener('offline', this.offline);
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
    if (this.poll) this.poll.abort();
  }

  connect() {
    if (this.stopped) return;
    if (this.mode === 'ws') this.openSocket();
    else this.longPoll();
  }

  reconnectNow() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.backoff = 500;
    if (this.sleeping) {
      this.sleeping(); // the poll loop was waiting out a failure: go now
      return;
    }
    if (this.ws && this.ws.readyState <= WebSocket.OPEN) return;
    if (this.poll) {
      this.poll.abort();
      return; // the poll loop goes round at once
    }
    this.connect();
  }

  retryLater() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 15000);
  }

  // Events are handled one batch at a time, in order; the cursor moves only
  // once a batch is handled.
  deliver(events) {
    this.queue = this.queue.then(async () => {
      const normal = [];
      for (const event of events) {
        if (event.type === 'reset') {
          if (normal.length) await this.onEvents(normal.splice(0));
          this.cursor = event.cursor;
          await this.onReset();
        } else normal.push(event);
      }
      if (normal.length) {
        await this.onEvents(normal);
        this.cursor = normal[normal.length - 1].cursor;
      }
    }).catch((e) => console.error('event handling failed', e));
    return this.queue;
  }

  openSocket() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    let ws;
    try {
      ws = new WebSocket(`${scheme}://${location.host}/v1/events/ws`);
    } catch {
      this.socketFailed();
      return;
    }
    this.ws = ws;
    let openedAt = 0;
    let heard = false;
    ws.addEventListener('open', () => {
      openedAt = Date.now();
      const hello = { token: session.token };
      if (this.cursor !== null) hello.cursor = this.cursor;
      ws.send(JSON.stringify(hello));
    });
    ws.addEventListener('message', (e) => {
      let event;
      try {
        event = parseJson(e.data);
      } catch {
        return;
      }
      if (!heard) {
        heard = true;
        this.socketFailures = 0;
        this.backoff = 500;
        this.onStatus('live');
      }
      if (event && event.type) this.deliver([event]);
    });
    // The server says nothing until a change; an open socket that stays open is live.
    const settle = setTimeout(() => {
      if (this.ws === ws && ws.readyState === WebSocket.OPEN) {
        this.socketFailures = 0;
        this.backoff = 500;
        this.onStatus('live');
      }
    }, QUICK_CLOSE_MS);
    ws.addEventListener('close', (e) => {
      clearTimeout(settle);
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.stopped) return;
      if (e.code === 4401 || e.code === 1008) {
        // Refused credentials: the API says the same on the next request.
        get('/v1/me').catch(() => {});
      }
      const quick = !openedAt || Date.now() - openedAt < QUICK_CLOSE_MS;
      if (quick && !heard) this.socketFailed();
      else {
        this.onStatus(navigator.onLine ? 'reconnecting' : 'offline');
        this.retryLater();
      }
    });
  }

  socketFailed() {
    if (!navigator.onLine) {
      // Offline, every socket fails: that says nothing about sockets. Wait
      // for the browser to say it is back ('online' reconnects at once).
      this.onStatus('offline');
      this.retryLater();
      return;
    }
    this.socketFailures += 1;
    if (this.socketFailures >= SOCKET_FAILURES_BEFORE_POLL) {
      this.mode = 'poll';
      this.onStatus('polling');
      setTimeout(() => {
        // Try the socket again now and then; the poll stops when it works.
        if (!this.stopped && this.mode === 'poll') {
          this.mode = 'ws';
          this.socketFailures = 0;
          if (this.poll) this.poll.abort();
        }
      }, SOCKET_RETRY_AFTER_POLL_MS);
      this.longPoll();
    } else {
      this.onStatus(navigator.onLine ? 'reconnecting' : 'offline');
      this.retryLater();
    }
  }

  async longPoll() {
    while (!this.stopped && this.mode === 'poll') {
      const controller = new AbortController();
      this.poll = controller;
      try {
        const answer = await get(
          `/v1/events${query({ cursor: this.cursor, timeout: POLL_TIMEOUT_S })}`,
          { signal: controller.signal, bigIds: true },
        );
        this.backoff = 500;
        this.onStatus('polling');
        if (answer.events.length) await this.deliver(answer.events);
        else this.cursor = answer.cursor ?? this.cursor;
      } catch (e) {
        if (this.stopped) break;
        if (e instanceof ApiError && e.status === 401) break;
        if (e.name !== 'AbortError') {
          this.onStatus(navigator.onLine ? 'reconnecting' : 'offline');
          await new Promise((resolve) => {
            this.sleeping = resolve;
            this.timer = setTimeout(resolve, this.backoff);
            this.backoff = Math.min(this.backoff * 2, 15000);
          });
          this.sleeping = null;
        }
      } finally {
        this.poll = null;
      }
    }
    if (!this.stopped && this.mode === 'ws') this.openSocket();
  }
}
