// The reading pane: one conversation (GET /v1/threads/{id}), the user's own
// replies included, each message's text or sanitized HTML, attachments,
// remote images on request and, on sent mail, delivery per recipient.
//
// HTML mail is shown only in an iframe sandboxed WITHOUT allow-scripts and
// WITHOUT allow-same-origin (an opaque origin: it can reach neither this
// page nor its storage), with a Content-Security-Policy of its own that
// allows images from data: only, or from http(s) once the reader allows
// remote images for this message or this sender. Images the mail carries
// itself (cid: URLs naming its parts, RFC 2392) are fetched with the token
// and written into the frame as data: URLs: the frame can neither carry the
// token nor reach this origin, and they are not remote, so need no consent.
// Not blob: URLs: Chromium refuses this origin's blob: in the opaque frame
// ("Not allowed to load local resource").

import { h, $, icon, longDate, shortDate, displayName, formatSize } from './dom.js';
import { get, patch, del, fetchBlob, ApiError } from './api.js';
import {
  toast,
  reportError,
  folderById,
  folderByRole,
  currentFolder,
  refreshFolders,
  renderList,
  closeConversation,
  chooseFolder,
  moveMessages,
  actionButton,
  loadList,
  undoMove,
} from './main.js';

const IMAGES_KEY = 'mailfleet.images.';
const PREVIEW_MAX = 10 * 1024 * 1024;
// Previews one mail's attachment list may fetch: past these, the list shows
// icons (a mail of 200 photos must not download them all on opening).
const PREVIEW_COUNT_MAX = 12;
const PREVIEW_TOTAL_MAX = 30 * 1024 * 1024;
const DETAIL_AT_ONCE = 25;
// What one mail's cid: images may make the browser fetch and hold: a hostile
// mail must not turn the reading pane into a download of its whole size.
// Parts past these stay out of the frame and in the attachment list.
const INLINE_IMAGE_MAX = 5 * 1024 * 1024;
const INLINE_TOTAL_MAX = 10 * 1024 * 1024;
const INLINE_COUNT_MAX = 50;
// A sender can thread many such mails into one conversation, all unread, so
// all opened at once: the conversation has a budget too.
const INLINE_CONVERSATION_MAX = 25 * 1024 * 1024;
// The frame's document repeats a data: URL for every <img> naming the part,
// so what it may hold in data: URLs is bounded too (characters).
const INLINE_FRAME_MAX = 2 * INLINE_TOTAL_MAX;
// Kinds every browser decodes as an <img>; the data: URL is typed by this,
// never by what the part claims beyond it.
const INLINE_TYPES = /^image\/(png|jpe?g|gif|webp|bmp|avif)$/i;

function allowedSenders(accountId) {
  try {
    return new Set(JSON.parse(localStorage.getItem(IMAGES_KEY + accountId) || '[]'));
  } catch {
    return new Set();
  }
}

function allowSender(accountId, email) {
  const set = allowedSenders(accountId);
  set.add(email.toLowerCase());
  localStorage.setItem(IMAGES_KEY + accountId, JSON.stringify([...set]));
}

const REMOTE = /^\s*(https?:)?\/\//i;

// Content-IDs compared without case, spaces or angle brackets: senders are
// not consistent, and the server strips spaces from the header the same way.
function normalCid(id) {
  return id.replace(/\s+/g, '').replace(/^<(.*)>$/, '$1').toLowerCase();
}

// The Content-ID a cid: URL names (RFC 2392: percent-encoded), or null.
function cidOf(src) {
  const m = /^\s*cid:(.*)$/i.exec(src || '');
  if (!m) return null;
  try {
    return normalCid(decodeURIComponent(m[1]));
  } catch {
    return normalCid(m[1]); // a stray %: taken as written
  }
}

// The parts a message's HTML shows by cid: that the reader will inline:
// images of a kind browsers decode, within the caps and `budget` (bytes),
// by Content-ID.
function inlineParts(m, budget) {
  const parts = new Map();
  const byCid = new Map();
  for (const a of (m.html && m.attachments) || []) {
    const cid = a.content_id ? normalCid(a.content_id) : '';
    // Two parts with one Content-ID: the first, as mail clients do.
    if (cid && !byCid.has(cid)) byCid.set(cid, a);
  }
  if (!byCid.size) return parts;
  const most = Math.min(INLINE_TOTAL_MAX, budget);
  let total = 0;
  const doc = new DOMParser().parseFromString(m.html, 'text/html');
  for (const img of doc.querySelectorAll('img[src]')) {
    const cid = cidOf(img.getAttribute('src'));
    const a = cid !== null && byCid.get(cid);
    if (!a || parts.has(cid) || !INLINE_TYPES.test(a.content_type)) continue;
    if (a.size > INLINE_IMAGE_MAX || total + a.size > most) continue;
    if (parts.size >= INLINE_COUNT_MAX) break;
    total += a.size;
    parts.set(cid, a);
  }
  return parts;
}

function dataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.addEventListener('load', () => resolve(reader.result));
    reader.addEventListener('error', () => reject(reader.error));
    reader.readAsDataURL(blob);
  });
}

// The parts' bytes as data: URLs by Content-ID. A part that cannot be
// fetched is left out: its <img> stays empty, like a broken remote one.
async function inlineUrls(messageId, parts) {
  const urls = new Map();
  await Promise.all(
    [...parts].map(async ([cid, a]) => {
      try {
        const blob = await fetchBlob(`/v1/messages/${messageId}/attachments/${a.id}`);
        urls.set(cid, await dataUrl(new Blob([blob], { type: a.content_type.toLowerCase() })));
      } catch {
        /* shown empty */
      }
    }),
  );
  return urls;
}

// The sanitized HTML, prepared for the frame: cid: images replaced by the
// data: URLs in `inline` (Content-ID -> URL), remote images kept back unless
// allowed, links opened outside the frame, anything active dropped again.
export function frameDocument(html, allowRemote, inline = new Map()) {
  const doc = new DOMParser().parseFromString(html, 'text/html'); // inert: loads and runs nothing
  let remote = 0;
  doc.querySelectorAll('script, style, link, meta, base, iframe, frame, object, embed, form, input, button, textarea, select').forEach((el) => el.remove());
  for (const el of doc.querySelectorAll('*')) {
    for (const attr of [...el.attributes]) {
      const name = attr.name.toLowerCase();
      if (name.startsWith('on') || name === 'style' || name === 'srcset' || name === 'background') el.removeAttribute(attr.name);
    }
  }
  let room = INLINE_FRAME_MAX;
  for (const img of doc.querySelectorAll('img')) {
    const src = img.getAttribute('src') || '';
    const cid = cidOf(src);
    if (cid !== null) {
      const url = inline.get(cid);
      if (url && url.length <= room) {
        room -= url.length;
        img.setAttribute('src', url);
      } else img.removeAttribute('src');
    } else if (REMOTE.test(src)) {
      remote += 1;
      if (!allowRemote) {
        img.removeAttribute('src');
        img.setAttribute('data-blocked-src', src);
      }
    } else img.removeAttribute('src'); // data: included: the frame's data: images are only the reader's own
  }
  for (const a of doc.querySelectorAll('a')) {
    const href = a.getAttribute('href') || '';
    if (!/^(https?:|mailto:)/i.test(href.trim())) a.removeAttribute('href');
    a.setAttribute('target', '_blank');
    a.setAttribute('rel', 'noopener noreferrer');
  }
  const imgSrc = allowRemote ? 'data: http: https:' : 'data:';
  const css = `${location.origin}/assets/mail.css`;
  const csp = `default-src 'none'; img-src ${imgSrc}; style-src ${css}; font-src 'none'; form-action 'none'; base-uri 'none'`;
  const srcdoc =
    '<!doctype html><html><head><meta charset="utf-8">' +
    `<meta http-equiv="Content-Security-Policy" content="${csp}">` +
    '<meta name="referrer" content="no-referrer">' +
    `<link rel="stylesheet" href="${css}">` +
    `</head><body>${doc.body.innerHTML}</body></html>`;
  return { srcdoc, remote };
}

function textBody(text) {
  const wrap = h('div', { class: 'text-body' });
  const urls = /\bhttps?:\/\/[^\s<>"')\]]+/g;
  let quote = null;
  for (const line of text.replace(/\r\n/g, '\n').split('\n')) {
    const para = h('div', { class: 'line' });
    let last = 0;
    for (const m of line.matchAll(urls)) {
      para.append(line.slice(last, m.index));
      para.append(h('a', { href: m[0], target: '_blank', rel: 'noopener noreferrer' }, m[0]));
      last = m.index + m[0].length;
    }
    para.append(line.slice(last) || '\u200b');
    if (line.startsWith('>')) {
      if (!quote) {
        quote = h('blockquote', { class: 'quoted' });
        wrap.append(quote);
      }
      quote.append(para);
    } else {
      quote = null;
      wrap.append(para);
    }
  }
  return wrap;
}

const STATUS_TEXT = { delivered: 'Delivered', queued: 'Queued', deferred: 'Deferred', bounced: 'Bounced' };

function deliveryList(delivery) {
  return h(
    'section',
    { class: 'delivery', 'aria-label': 'Delivery status' },
    h('h3', {}, 'Delivery'),
    h(
      'ul',
      {},
      delivery.map((d) =>
        h(
          'li',
          { class: `delivery-${d.status}`, dataset: { email: d.email, status: d.status } },
          h('span', { class: 'delivery-email' }, d.email),
          h('span', { class: `badge ${d.status}` }, STATUS_TEXT[d.status] || d.status),
          d.detail ? h('span', { class: 'delivery-detail' }, d.detail) : null,
          d.status === 'deferred' && d.next_attempt_at
            ? h('span', { class: 'delivery-next' }, `next try ${shortDate(d.next_attempt_at)} ${new Date(d.next_attempt_at).toLocaleTimeString()}`)
            : null,
        ),
      ),
    ),
  );
}

export class Reader {
  constructor(app) {
    this.app = app;
    this.threadId = null;
    this.thread = null;
    this.details = new Map();
    this.expanded = new Set();
    this.imagesFor = new Set(); // message ids whose remote images the reader allowed
    this.inline = new Map(); // message id -> its cid: images: { parts, urls }
    this.inlineLeft = INLINE_CONVERSATION_MAX;
    this.token = 0;
    // Attachment URL -> promise of its preview's object URL, for the open
    // conversation: a re-render (marked read, a new reply) fetches nothing again.
    this.previews = new Map();
  }

  close() {
    this.threadId = null;
    this.thread = null;
    this.token += 1;
    $('#reader-body').hidden = true;
    $('#reader-empty').hidden = false;
    this.revokePreviews();
    this.inline = new Map();
    this.inlineLeft = INLINE_CONVERSATION_MAX;
  }

  revokePreviews() {
    this.previews.forEach((pending) => pending.then((u) => URL.revokeObjectURL(u), () => {}));
    this.previews = new Map();
  }

  preview(url) {
    let pending = this.previews.get(url);
    if (!pending) {
      pending = fetchBlob(url).then((blob) => URL.createObjectURL(blob));
      this.previews.set(url, pending);
      pending.catch(() => this.previews.delete(url));
    }
    return pending;
  }

  async open(threadId) {
    if (threadId !== this.threadId) {
      this.threadId = threadId;
      this.details = new Map();
      this.expanded = new Set();
      this.revokePreviews();
      this.inline = new Map();
    this.inlineLeft = INLINE_CONVERSATION_MAX;
      $('#reader-body').replaceChildren(h('p', { class: 'loading', role: 'status' }, 'Loading…'));
      $('#reader-body').hidden = false;
      $('#reader-empty').hidden = true;
      await this.load(true);
    } else await this.load(false);
  }

  // ``refetch``: the messages whose details (body, deliveries) changed and
  // are fetched again; the others keep theirs with the thread's new flags.
  // Without it every shown message is fetched again (after a reset).
  reload(refetch) {
    return this.threadId ? this.load(false, refetch) : Promise.resolve();
  }

  // Which of the conversation's messages to show: Trash and Junk ones only
  // when that is where the reader is looking.
  visible(messages) {
    const here = currentFolder();
    const hidden = new Set(['trash', 'junk'].filter((role) => !here || here.role !== role).map((r) => (folderByRole(r) || {}).id));
    const shown = messages.filter((m) => !hidden.has(String(m.folder_id)));
    return shown.length ? shown : messages;
  }

  async load(first, refetch) {
    const token = ++this.token;
    const threadId = this.threadId;
    let thread;
    try {
      thread = await get(`/v1/threads/${threadId}`);
    } catch (e) {
      if (token !== this.token) return;
      if (e instanceof ApiError && e.status === 404) {
        $('#reader-body').replaceChildren(h('p', { class: 'hint' }, 'This conversation is gone.'));
        return;
      }
      throw e;
    }
    if (token !== this.token) return;
    const messages = this.visible(thread.messages.map((m) => ({ ...m, id: String(m.id), folder_id: String(m.folder_id) })));
    // Details (bodies, attachments, delivery) for the newest ones, fetched together.
    // A flag change comes back as a live update for each message: fetching
    // every body again each time made a long unread conversation take
    // seconds to open.
    const need = messages
      .slice(-DETAIL_AT_ONCE)
      .filter((m) => !this.details.has(m.id) || (!first && (!refetch || refetch.has(m.id))));
    const fetched = await Promise.all(need.map((m) => get(`/v1/messages/${m.id}`).catch(() => null)));
    if (token !== this.token) return;
    need.forEach((m, i) => fetched[i] && this.details.set(m.id, { ...fetched[i], id: String(fetched[i].id), folder_id: String(fetched[i].folder_id) }));
    for (const m of messages) {
      const known = this.details.get(m.id);
      if (known && !need.includes(m)) this.details.set(m.id, { ...known, is_read: m.is_read, is_flagged: m.is_flagged, folder_id: m.folder_id });
    }
    if (first) {
      messages.forEach((m, i) => {
        if (!m.is_read || i === messages.length - 1) this.expanded.add(m.id);
      });
    } else {
      messages.forEach((m) => {
        if (!this.thread || !this.thread.messages.some((old) => old.id === m.id)) this.expanded.add(m.id);
      });
    }
    this.thread = { ...thread, messages };
    this.render(first);
    // What arrives while the tab is hidden stays unread until it is seen.
    const unread = messages.filter((m) => !m.is_read && this.expanded.has(m.id));
    if (unread.length && document.visibilityState === 'visible') this.markRead(unread);
  }

  async markRead(messages) {
    try {
      await Promise.all(messages.map((m) => patch(`/v1/messages/${m.id}`, { is_read: true })));
      messages.forEach((m) => (m.is_read = true));
      const row = this.app.rows.find((r) => r.thread_id === this.threadId);
      if (row) {
        row.is_read = true;
        renderList();
      }
      refreshFolders().catch(() => {});
    } catch (e) {
      reportError(e);
    }
  }

  // Actions on the conversation: what of it is in the folder being read
  // (in search results: all of it but Sent and Drafts).
  targets() {
    const here = currentFolder();
    const skip = new Set(['sent', 'drafts'].map((r) => (folderByRole(r) || {}).id));
    const messages = this.thread ? this.thread.messages : [];
    const mine = here ? messages.filter((m) => m.folder_id === here.id) : messages.filter((m) => !skip.has(m.folder_id));
    return mine.length ? mine : messages;
  }

  async act(kind) {
    if (!this.thread) return;
    const ids = this.targets().map((m) => m.id);
    const where = Object.fromEntries(this.targets().map((m) => [m.id, m.folder_id]));
    const here = currentFolder();
    try {
      if (kind === 'archive' || kind === 'spam' || kind === 'move' || kind === 'delete') {
        if (kind === 'move') {
          chooseFolder(async (f) => {
            try {
              await moveMessages(ids, f.id);
              toast(`Moved to ${f.name}.`, { undo: undoMove(where) });
              await this.leave();
            } catch (e) {
              reportError(e);
            }
          });
          return;
        }
        if (kind === 'delete') {
          await Promise.all(ids.map((id) => del(`/v1/messages/${id}`)));
          const forGood = here && here.role === 'trash';
          toast(forGood ? 'Deleted for good.' : 'Moved to Trash.', { undo: forGood ? null : undoMove(where) });
        } else {
          const role = kind === 'archive' ? 'archive' : here && here.role === 'junk' ? 'inbox' : 'junk';
          await moveMessages(ids, folderByRole(role).id);
          toast(kind === 'archive' ? 'Archived.' : role === 'junk' ? 'Reported as spam.' : 'Moved to Inbox: not spam.', {
            undo: undoMove(where),
          });
        }
        await this.leave();
      } else if (kind === 'star') {
        const last = this.thread.messages[this.thread.messages.length - 1];
        const on = !this.thread.messages.some((m) => m.is_flagged);
        const which = on ? [last] : this.thread.messages.filter((m) => m.is_flagged);
        await Promise.all(which.map((m) => patch(`/v1/messages/${m.id}`, { is_flagged: on })));
        await this.afterChange();
      } else if (kind === 'unread' || kind === 'read') {
        await Promise.all(ids.map((id) => patch(`/v1/messages/${id}`, { is_read: kind === 'read' })));
        if (kind === 'unread') {
          toast('Marked unread.');
          await this.afterChange();
          closeConversation();
          return;
        }
        await this.afterChange();
      }
    } catch (e) {
      reportError(e);
    }
  }

  async afterChange() {
    await this.reload(new Set());
    if (this.app.view.kind === 'folder') await loadList(true);
    refreshFolders().catch(() => {});
  }

  async leave() {
    const threadId = this.threadId;
    const index = this.app.rows.findIndex((r) => r.thread_id === threadId);
    if (this.app.view.kind === 'folder' && index >= 0) {
      this.app.rows.splice(index, 1);
      this.app.active = Math.min(index, this.app.rows.length - 1);
    }
    renderList();
    refreshFolders().catch(() => {});
    closeConversation();
  }

  replyLast(mode) {
    if (!this.thread) return;
    const messages = this.thread.messages;
    const own = this.app.me.email.toLowerCase();
    // Reply to the newest message someone else sent, else the newest.
    const pick = [...messages].reverse().find((m) => m.from && m.from.email.toLowerCase() !== own) || messages[messages.length - 1];
    this.reply(pick.id, mode);
  }

  async reply(messageId, mode) {
    let message = this.details.get(messageId);
    if (!message) message = await get(`/v1/messages/${messageId}`);
    this.app.composer.open({ mode, message });
  }

  render(first) {
    const body = $('#reader-body');
    const thread = this.thread;
    const here = currentFolder();
    const inJunk = here && here.role === 'junk';
    const inTrash = here && here.role === 'trash';
    const starred = thread.messages.some((m) => m.is_flagged);
    const scroll = body.scrollTop;
    // A re-render (a live update) keeps the keyboard where it was.
    const focused = document.activeElement;
    const hadFocus = focused && body.contains(focused) && focused !== body;
    const focusedMsg = hadFocus ? focused.closest('.msg')?.dataset.id : null;
    const focusedClass = hadFocus ? [...focused.classList].find((c) => c !== 'on') : null;
    const toolbar = h(
      'div',
      { class: 'toolbar reader-toolbar', role: 'toolbar', 'aria-label': 'Conversation actions' },
      h('a', { class: 'action back', href: `#${location.hash.replace(/^#/, '').replace(/\/t\/\d+$/, '')}`, title: 'Back to the list (u)' }, icon('back'), h('span', { class: 'action-label' }, 'Back')),
      actionButton('archive', 'Archive', () => this.act('archive'), { title: 'Archive (e)' }),
      actionButton('trash', inTrash ? 'Delete for good' : 'Delete', () => this.act('delete'), { title: 'Delete (#)' }),
      inJunk
        ? actionButton('inbox', 'Not spam', () => this.act('spam'), { title: 'Not spam (!)' })
        : actionButton('spam', 'Report spam', () => this.act('spam'), { title: 'Report spam (!)' }),
      actionButton('mail', 'Mark unread', () => this.act('unread'), { title: 'Mark unread (Shift+u)' }),
      actionButton('move', 'Move to…', () => this.act('move'), { title: 'Move to folder (v)' }),
      actionButton('star', starred ? 'Unstar' : 'Star', () => this.act('star'), { title: 'Star (s)', 'aria-pressed': String(starred), class: `action${starred ? ' on' : ''}` }),
    );
    const articles = thread.messages.map((m) => this.renderMessage(m));
    body.replaceChildren(
      toolbar,
      h('h2', { class: 'thread-subject', id: 'thread-subject', tabindex: '-1' }, thread.subject || '(no subject)',
        h('span', { class: 'thread-count' }, thread.messages.length > 1 ? ` ${thread.messages.length} messages` : '')),
      h('div', { class: 'thread', role: 'list', 'aria-labelledby': 'thread-subject' }, articles),
    );
    body.hidden = false;
    $('#reader-empty').hidden = true;
    if (first) {
      body.scrollTop = 0;
      const lastOpen = body.querySelector('.msg.expanded:last-of-type') || articles[articles.length - 1];
      if (articles.length > 2 && lastOpen) lastOpen.scrollIntoView({ block: 'start' });
      if (!document.activeElement || document.activeElement === document.body || document.activeElement.closest('#messages')) {
        $('#thread-subject').focus({ preventScroll: true });
      }
    } else {
      body.scrollTop = scroll;
      if (hadFocus && !body.contains(document.activeElement)) {
        const again =
          (focusedMsg && focusedClass && body.querySelector(`.msg[data-id="${focusedMsg}"] .${focusedClass}`)) ||
          $('#thread-subject');
        again.focus({ preventScroll: true });
      }
    }
  }

  renderMessage(summary) {
    const m = this.details.get(summary.id) || summary;
    const expanded = this.expanded.has(summary.id);
    const folder = folderById(summary.folder_id);
    const own = m.from && m.from.email.toLowerCase() === this.app.me.email.toLowerCase();
    const tags = [];
    if (folder && folder.role === 'sent') tags.push(h('span', { class: 'tag sent' }, 'Sent'));
    if (folder && folder.role === 'junk') tags.push(h('span', { class: 'tag spam' }, 'Spam'));
    if (folder && folder.role === 'trash') tags.push(h('span', { class: 'tag' }, 'Trash'));
    if (m.spam && m.spam.verdict === 'spam' && !(folder && folder.role === 'junk')) tags.push(h('span', { class: 'tag spam' }, 'Suspected spam'));
    const who = own ? 'me' : displayName(m.from);
    const toggle = () => {
      if (this.expanded.has(summary.id)) this.expanded.delete(summary.id);
      else this.expanded.add(summary.id);
      if (!this.details.has(summary.id)) {
        get(`/v1/messages/${summary.id}`).then((d) => {
          this.details.set(summary.id, { ...d, id: String(d.id), folder_id: String(d.folder_id) });
          this.render(false);
        }).catch(reportError);
      }
      this.render(false);
      const again = $(`.msg[data-id="${summary.id}"] .msg-toggle`);
      if (again) again.focus();
      if (!summary.is_read) this.markRead([summary]);
    };
    const recipients = [
      m.to && m.to.length ? `to ${m.to.map((a) => (a.email.toLowerCase() === this.app.me.email.toLowerCase() ? 'me' : displayName(a))).join(', ')}` : '',
      m.cc && m.cc.length ? `cc ${m.cc.map(displayName).join(', ')}` : '',
      m.bcc && m.bcc.length ? `bcc ${m.bcc.map(displayName).join(', ')}` : '',
    ].filter(Boolean).join('; ');
    const head = h(
      'div',
      { class: 'msg-head' },
      h('span', { class: 'avatar', 'aria-hidden': 'true' }, (who || '?').charAt(0).toUpperCase()),
      h(
        'button',
        { type: 'button', class: 'msg-toggle', 'aria-expanded': String(expanded), onclick: toggle },
        h('span', { class: 'msg-from' }, who, !own && m.from && m.from.name ? h('span', { class: 'msg-email' }, ` <${m.from.email}>`) : null),
        expanded ? h('span', { class: 'msg-to' }, recipients) : h('span', { class: 'msg-snippet' }, m.snippet),
      ),
      tags,
      m.has_attachments ? h('span', { class: 'mark', title: 'Has attachments' }, icon('clip')) : null,
      h('time', { class: 'msg-date', datetime: m.received_at, title: longDate(m.received_at) }, shortDate(m.received_at)),
    );
    const article = h('article', {
      class: `msg ${expanded ? 'expanded' : 'collapsed'}${summary.is_read ? '' : ' unread'}`,
      role: 'listitem',
      dataset: { id: summary.id },
      'aria-label': `${who}, ${shortDate(m.received_at)}`,
    }, head);
    if (!expanded) return article;
    if (!('body' in m)) {
      article.append(h('p', { class: 'loading' }, 'Loading…'));
      return article;
    }
    article.append(this.renderContent(m));
    // A part the frame shows in its place is not offered again as a file,
    // unless the sender attached it as one (not inline); parts the frame
    // cannot show (unnamed, over the caps, not an image) stay listed.
    const { parts } = this.inlineFor(m);
    const shown = new Set([...parts.values()].filter((a) => a.inline).map((a) => a.id));
    const listed = (m.attachments || []).filter((a) => !shown.has(a.id));
    if (listed.length) article.append(this.renderAttachments(m, listed));
    if (m.delivery && m.delivery.length) article.append(deliveryList(m.delivery));
    article.append(
      h(
        'div',
        { class: 'msg-actions' },
        h('button', { type: 'button', class: 'secondary', onclick: () => this.reply(m.id, 'reply') }, icon('reply'), 'Reply'),
        h('button', { type: 'button', class: 'secondary', onclick: () => this.reply(m.id, 'all') }, icon('replyall'), 'Reply all'),
        h('button', { type: 'button', class: 'secondary', onclick: () => this.reply(m.id, 'forward') }, icon('forward'), 'Forward'),
      ),
    );
    return article;
  }

  // A message's cid: images: the parts (decided once), and their data: URLs
  // once fetched (empty until then). Fetched once per conversation opened;
  // when they arrive the message's frame, if still shown, is refilled.
  inlineFor(m) {
    let entry = this.inline.get(m.id);
    if (entry) return entry;
    entry = { parts: inlineParts(m, this.inlineLeft), urls: new Map() };
    this.inline.set(m.id, entry);
    for (const a of entry.parts.values()) this.inlineLeft -= a.size;
    if (entry.parts.size) {
      inlineUrls(m.id, entry.parts).then((urls) => {
        if (this.inline.get(m.id) !== entry) return; // the conversation was left
        entry.urls = urls;
        const frame = $(`.msg[data-id="${m.id}"] iframe.mail-frame`);
        if (frame) frame.srcdoc = frameDocument(m.html, this.imagesAllowed(m), urls).srcdoc;
      });
    }
    return entry;
  }

  imagesAllowed(m) {
    const sender = m.from ? m.from.email.toLowerCase() : '';
    return this.imagesFor.has(m.id) || Boolean(sender && allowedSenders(this.app.me.id).has(sender));
  }

  renderContent(m) {
    if (!m.html) return textBody(m.body || '');
    const sender = m.from ? m.from.email.toLowerCase() : '';
    const allowed = this.imagesAllowed(m);
    const { srcdoc, remote } = frameDocument(m.html, allowed, this.inlineFor(m).urls);
    const frame = h('iframe', {
      class: 'mail-frame',
      title: `Message from ${displayName(m.from)}`,
      sandbox: 'allow-popups allow-popups-to-escape-sandbox',
      referrerpolicy: 'no-referrer',
      srcdoc,
    });
    const wrap = h('div', { class: 'html-body' });
    if (remote && !allowed) {
      wrap.append(
        h(
          'div',
          { class: 'images-banner', role: 'note' },
          h('span', {}, icon('image'), ' Remote images are hidden: they can tell the sender when and where you read this.'),
          h('button', { type: 'button', class: 'link show-images', onclick: () => {
            this.imagesFor.add(m.id);
            this.render(false);
          } }, 'Show images'),
          sender
            ? h('button', { type: 'button', class: 'link always-images', onclick: () => {
                allowSender(this.app.me.id, sender);
                this.render(false);
              } }, `Always show from ${sender}`)
            : null,
        ),
      );
    }
    wrap.append(frame);
    return wrap;
  }

  renderAttachments(m, attachments) {
    const list = h('ul', { class: 'attachments', 'aria-label': 'Attachments' });
    let previewCount = 0;
    let previewBytes = 0;
    for (const a of attachments) {
      const url = `/v1/messages/${m.id}/attachments/${a.id}`;
      const isImage = /^image\/(png|jpe?g|gif|webp|bmp|avif)$/i.test(a.content_type);
      const preview = h('span', { class: 'att-preview', 'aria-hidden': 'true' }, icon(isImage ? 'image' : 'file'));
      const withinBudget = previewCount < PREVIEW_COUNT_MAX && previewBytes + a.size <= PREVIEW_TOTAL_MAX;
      if (isImage && a.size <= PREVIEW_MAX && withinBudget) {
        previewCount += 1;
        previewBytes += a.size;
        this.preview(url)
          .then((src) => preview.replaceChildren(h('img', { src, alt: '' })))
          .catch(() => {});
      }
      list.append(
        h(
          'li',
          { class: 'attachment' },
          preview,
          h('span', { class: 'att-name' }, a.filename),
          h('span', { class: 'att-size' }, formatSize(a.size)),
          h('button', {
            type: 'button',
            class: 'secondary att-download',
            'aria-label': `Download ${a.filename}`,
            onclick: async (e) => {
              const button = e.currentTarget;
              button.disabled = true;
              try {
                const blob = await fetchBlob(url);
                const href = URL.createObjectURL(blob);
                const link = h('a', { href, download: a.filename, hidden: true });
                document.body.append(link);
                link.click();
                link.remove();
                setTimeout(() => URL.revokeObjectURL(href), 60000);
              } catch (err) {
                reportError(err);
              } finally {
                button.disabled = false;
              }
            },
          }, icon('download'), 'Download'),
        ),
      );
    }
    return list;
  }
}

