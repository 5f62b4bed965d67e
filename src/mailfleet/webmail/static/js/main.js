// The webmail: sign-in, folders, the message list, actions, shortcuts and the
// live updates that keep them current. The reading pane is reader.js, the
// compose window compose.js; everything goes through the public API (api.js).

import { h, $, $$, icon, shortDate, displayName } from './dom.js';
import { get, post, patch, del, query, session, onUnauthorized, ApiError } from './api.js';
import { LiveEvents } from './live.js';
import { Reader } from './reader.js';
import { Composer } from './compose.js';

const PAGE = 50;
const ROLE_ORDER = ['inbox', 'sent', 'drafts', 'archive', 'junk', 'trash'];
const ROLE_ICON = { inbox: 'inbox', sent: 'send', drafts: 'file', archive: 'archive', junk: 'spam', trash: 'trash' };

export const app = {
  me: null,
  limits: null,
  folders: [],
  view: { kind: 'folder', folderId: null, q: '', threadId: null },
  unreadOnly: false,
  rows: [],
  nextCursor: null,
  listToken: 0,
  loadingMore: false,
  active: -1,
  selected: new Set(),
  live: null,
  liveStatus: '',
  notified: new Set(),
  reader: null,
  composer: null,
};
window.mailfleet = app; // for the console and the browser tests (state only, no token)

// ---------------------------------------------------------------- helpers

// The last move's undo (the toast's button, or z).
let lastUndo = null;

export function toast(text, { error = false, undo = null } = {}) {
  const el = $('#toast');
  el.replaceChildren(text);
  lastUndo = undo;
  if (undo) {
    el.append(
      ' ',
      h('button', {
        type: 'button',
        class: 'link toast-undo',
        onclick: () => undoLast(),
      }, 'Undo'),
    );
  }
  el.classList.toggle('error', error);
  el.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove('show'), error || undo ? 8000 : 3500);
}

export async function undoLast() {
  const undo = lastUndo;
  if (!undo) return;
  lastUndo = null;
  $('#toast').classList.remove('show');
  try {
    await undo();
    toast('Undone.');
    await refreshFolders();
    await loadList(true);
  } catch (e) {
    reportError(e);
  }
}

// Moves back what a move or delete took away: ``where`` is {id: folder id before}.
export function undoMove(where) {
  return () => Promise.all(Object.entries(where).map(([id, folder]) => patch(`/v1/messages/${id}`, { folder_id: folder })));
}

export function reportError(e) {
  console.error(e);
  if (e && e.name === 'AbortError') return;
  toast(e instanceof ApiError ? e.message : 'Something went wrong; please try again.', { error: true });
}

export const folderById = (id) => app.folders.find((f) => f.id === String(id));
export const folderByRole = (role) => app.folders.find((f) => f.role === role);
export const currentFolder = () => (app.view.kind === 'folder' ? folderById(app.view.folderId) : null);

function sortFolders(list) {
  const rank = (f) => (f.role ? ROLE_ORDER.indexOf(f.role) : 100);
  return list.sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name));
}

export function listHash(view = app.view) {
  return view.kind === 'search' ? `#/s/${encodeURIComponent(view.q)}` : `#/f/${view.folderId}`;
}

export function threadHash(threadId, view = app.view) {
  return `${listHash(view)}/t/${threadId}`;
}

function parseHash() {
  const m = location.hash.match(/^#\/(f|s)\/([^/]*)(?:\/t\/(\d+))?$/);
  if (!m) return null;
  if (m[1] === 'f') return { kind: 'folder', folderId: m[2], q: '', threadId: m[3] || null };
  return { kind: 'search', folderId: null, q: decodeURIComponent(m[2]), threadId: m[3] || null };
}

// ---------------------------------------------------------------- sign in

function showAuth() {
  $('#app').hidden = true;
  $('#auth').hidden = false;
  document.title = 'Sign in – mailfleet';
  $('#login-email').focus();
}

function setupAuth() {
  const showForm = (signup) => {
    $('#login-form').hidden = signup;
    $('#signup-form').hidden = !signup;
    $('#auth-title').textContent = signup ? 'Create your account' : 'Sign in';
    (signup ? $('#signup-name') : $('#login-email')).focus();
  };
  $('#show-signup').addEventListener('click', () => showForm(true));
  $('#show-login').addEventListener('click', () => showForm(false));

  const logIn = async (email, password) => {
    const issued = await post('/v1/sessions', { email, password });
    session.save(issued.token, issued.expires_at);
    location.hash = '';
    await startApp();
  };

  $('#login-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const error = $('#login-error');
    error.textContent = '';
    const form = e.currentTarget;
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      await logIn(form.email.value.trim(), form.password.value);
    } catch (err) {
      error.textContent = err.status === 401 ? 'Wrong email address or password.' : err.message;
    } finally {
      button.disabled = false;
    }
  });

  $('#signup-form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const form = e.currentTarget;
    const error = $('#signup-error');
    error.textContent = '';
    const button = form.querySelector('button[type=submit]');
    button.disabled = true;
    try {
      await post('/v1/accounts', {
        name: form.name.value.trim(),
        email: form.email.value.trim(),
        password: form.password.value,
      });
      await logIn(form.email.value.trim(), form.password.value);
    } catch (err) {
      error.textContent = err.message;
    } finally {
      button.disabled = false;
    }
  });
}

async function logOut() {
  if (app.live) app.live.stop();
  try {
    await del('/v1/sessions/current');
  } catch {
    /* signed out here either way */
  }
  session.clear();
  location.hash = '';
  location.reload();
}

// ---------------------------------------------------------------- folders

export async function refreshFolders() {
  app.folders = sortFolders((await get('/v1/folders')).map(normalizeFolder));
  renderFolders();
}

function normalizeFolder(f) {
  return { ...f, id: String(f.id) };
}

function renderFolders() {
  const tree = $('#folders');
  const current = app.view.kind === 'folder' ? app.view.folderId : null;
  const focused = document.activeElement && document.activeElement.closest('#folders');
  tree.replaceChildren(
    ...app.folders.map((f) => {
      const selected = f.id === current;
      const count = f.role === 'drafts' ? draftCount() : f.unread;
      const label = f.role === 'drafts' ? 'unsent drafts' : 'unread';
      return h(
        'li',
        {
          role: 'treeitem',
          class: `folder${selected ? ' selected' : ''}${count ? ' has-unread' : ''}`,
          'aria-selected': selected ? 'true' : 'false',
          tabindex: selected || (!current && f.role === 'inbox') ? '0' : '-1',
          dataset: { id: f.id, role: f.role || '' },
          onclick: () => openFolder(f.id),
        },
        icon(ROLE_ICON[f.role] || 'folder'),
        h('span', { class: 'folder-name' }, f.name),
        count ? h('span', { class: 'count' }, String(count), h('span', { class: 'sr-only' }, ` ${label}`)) : null,
      );
    }),
  );
  if (focused) {
    const again = tree.querySelector('[tabindex="0"]');
    if (again) again.focus();
  }
  updateTitle();
}

function draftCount() {
  return app.composer ? app.composer.drafts().length : 0;
}

function setupFolderTree() {
  const tree = $('#folders');
  tree.addEventListener('keydown', (e) => {
    const items = $$('[role=treeitem]', tree);
    const i = items.indexOf(document.activeElement);
    if (i < 0) return;
    let next = null;
    if (e.key === 'ArrowDown') next = items[Math.min(i + 1, items.length - 1)];
    else if (e.key === 'ArrowUp') next = items[Math.max(i - 1, 0)];
    else if (e.key === 'Home') next = items[0];
    else if (e.key === 'End') next = items[items.length - 1];
    else if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      openFolder(items[i].dataset.id);
      return;
    } else return;
    e.preventDefault();
    items.forEach((it) => it.setAttribute('tabindex', '-1'));
    next.setAttribute('tabindex', '0');
    next.focus();
  });
}

function openFolder(id) {
  closeDrawer();
  const hash = `#/f/${id}`;
  if (location.hash === hash) loadList(true).catch(reportError);
  else location.hash = hash;
}

export function updateTitle() {
  const inbox = folderByRole('inbox');
  const unread = inbox ? inbox.unread : 0;
  const where = app.view.kind === 'search' ? 'Search' : (currentFolder() || {}).name || 'Mail';
  document.title = `${unread ? `(${unread}) ` : ''}${where} – mailfleet`;
}

// ---------------------------------------------------------------- the list

function rowKey(item) {
  return app.view.kind === 'folder' ? String(item.thread_id) : String(item.id);
}

function normalizeRow(item) {
  return { ...item, id: String(item.id), thread_id: String(item.thread_id), folder_id: String(item.folder_id) };
}

function listUrl(cursor) {
  if (app.view.kind === 'search') return `/v1/search${query({ q: app.view.q, limit: PAGE, cursor })}`;
  return `/v1/folders/${app.view.folderId}/messages${query({
    group: 'thread',
    limit: PAGE,
    cursor,
    is_read: app.unreadOnly ? 'false' : undefined,
  })}`;
}

export async function loadList(reset) {
  const token = ++app.listToken;
  if (reset) {
    app.rows = [];
    app.nextCursor = null;
    app.active = -1;
    app.selected.clear();
    $('#list-loading').textContent = 'Loading…';
    renderListHead();
  }
  const page = await get(listUrl(reset ? undefined : app.nextCursor));
  if (token !== app.listToken) return;
  const known = new Set(app.rows.map((r) => r.key));
  for (const item of page.items) {
    const row = { ...normalizeRow(item) };
    row.key = rowKey(row);
    if (!known.has(row.key)) app.rows.push(row);
  }
  app.nextCursor = page.next_cursor;
  $('#list-loading').textContent = '';
  renderList();
}

async function loadMore() {
  if (!app.nextCursor || app.loadingMore) return;
  app.loadingMore = true;
  $('#list-loading').textContent = 'Loading more…';
  try {
    await loadList(false);
  } catch (e) {
    reportError(e);
  } finally {
    app.loadingMore = false;
  }
}

function renderListHead() {
  const title = app.view.kind === 'search' ? `Search: ${app.view.q}` : (currentFolder() || {}).name || '';
  $('#list-title').textContent = title;
  $('#unread-filter').hidden = app.view.kind === 'search';
  $('#unread-filter').setAttribute('aria-pressed', String(app.unreadOnly));
  $('#search-input').value = app.view.kind === 'search' ? app.view.q : '';
  renderBulk();
  updateTitle();
  app.composer.renderLocalDrafts();
}

function senderText(row) {
  const folder = folderById(row.folder_id);
  if (folder && (folder.role === 'sent' || folder.role === 'drafts')) {
    return `To: ${row.to.map(displayName).join(', ') || '(no recipients)'}`;
  }
  if (row.from && app.me && row.from.email === app.me.email) return 'me';
  return displayName(row.from);
}

function renderRow(row, index) {
  const unread = !row.is_read;
  const href = threadHash(row.thread_id);
  const count = row.thread_count > 1 ? row.thread_count : 0;
  const isOpen = app.view.threadId === row.thread_id;
  return h(
    'li',
    {
      class: `row${unread ? ' unread' : ''}${index === app.active ? ' active' : ''}${
        app.selected.has(row.key) ? ' selected' : ''
      }${isOpen ? ' open' : ''}`,
      dataset: { key: row.key, id: row.id, thread: row.thread_id },
    },
    h('input', {
      type: 'checkbox',
      class: 'row-check',
      checked: app.selected.has(row.key),
      'aria-label': `Select: ${row.subject || '(no subject)'}`,
      onchange: (e) => toggleSelect(row.key, e.target.checked),
    }),
    h(
      'button',
      {
        type: 'button',
        class: `star${row.is_flagged ? ' on' : ''}`,
        'aria-pressed': String(row.is_flagged),
        'aria-label': 'Starred',
        title: row.is_flagged ? 'Unstar (s)' : 'Star (s)',
        onclick: () => flagRows([row], !row.is_flagged),
      },
      icon('star'),
    ),
    h(
      'a',
      {
        class: 'row-link',
        href,
        'aria-current': isOpen ? 'true' : undefined,
        onclick: () => {
          app.active = index;
        },
        onfocus: () => setActive(index, false),
      },
      unread ? h('span', { class: 'sr-only' }, 'Unread, ') : null,
      h('span', { class: 'row-from' }, senderText(row), count ? h('span', { class: 'row-count' }, ` ${count}`) : null),
      h(
        'span',
        { class: 'row-text' },
        app.view.kind === 'search' && folderById(row.folder_id)
          ? h('span', { class: 'tag row-folder' }, folderById(row.folder_id).name)
          : null,
        h('span', { class: 'row-subject' }, row.subject || '(no subject)'),
        row.snippet ? h('span', { class: 'row-snippet' }, ` – ${row.snippet}`) : null,
      ),
      h(
        'span',
        { class: 'row-marks' },
        row.has_attachments ? h('span', { class: 'mark', title: 'Has attachments' }, icon('clip'), h('span', { class: 'sr-only' }, ', has attachments')) : null,
        row.is_flagged ? h('span', { class: 'sr-only' }, ', starred') : null,
      ),
      h('time', { class: 'row-date', datetime: row.received_at }, shortDate(row.received_at)),
    ),
  );
}

export function renderList() {
  const list = $('#messages');
  const focusedKey = document.activeElement && document.activeElement.closest('#messages .row')?.dataset.key;
  const focusedClass = document.activeElement?.classList?.contains('row-check') ? '.row-check' : '.row-link';
  list.replaceChildren(...app.rows.map(renderRow));
  const empty = $('#list-empty');
  empty.hidden = app.rows.length > 0 || app.listToken === 0 || $('#list-loading').textContent !== '';
  empty.textContent = app.view.kind === 'search' ? 'No messages match your search.' : app.unreadOnly ? 'No unread conversations.' : 'Nothing here.';
  if (focusedKey) {
    const again = list.querySelector(`.row[data-key="${focusedKey}"] ${focusedClass}`);
    if (again) again.focus({ preventScroll: true });
  }
  renderBulk();
}

// Focus moves to the list only from where the user already was: the list,
// the reader or nowhere in particular (never out of a field or a dialog).
function mayTakeFocus() {
  const el = document.activeElement;
  if (document.querySelector('dialog[open]')) return false;
  return !el || el === document.body || Boolean(el.closest('#messages, #reader, #list-view'));
}

function setActive(index, focus = true) {
  if (index < 0 || index >= app.rows.length) return;
  if (focus && !mayTakeFocus()) focus = false;
  const rows = $$('#messages .row');
  rows.forEach((r, i) => r.classList.toggle('active', i === index));
  app.active = index;
  if (focus && rows[index]) {
    const link = rows[index].querySelector('.row-link');
    link.focus();
    rows[index].scrollIntoView({ block: 'nearest' });
  }
  if (index >= app.rows.length - 5) loadMore();
}

function toggleSelect(key, on) {
  if (on) app.selected.add(key);
  else app.selected.delete(key);
  const row = $(`#messages .row[data-key="${key}"]`);
  if (row) {
    row.classList.toggle('selected', on);
    row.querySelector('.row-check').checked = on;
  }
  renderBulk();
}

function renderBulk() {
  const bulk = $('#bulk-actions');
  const count = app.selected.size;
  const all = $('#select-all');
  all.checked = count > 0 && count === app.rows.length;
  all.indeterminate = count > 0 && count < app.rows.length;
  if (!count) {
    bulk.replaceChildren();
    return;
  }
  const rows = app.rows.filter((r) => app.selected.has(r.key));
  const inJunk = (currentFolder() || {}).role === 'junk';
  bulk.replaceChildren(
    h('span', { class: 'bulk-count' }, `${count} selected`),
    actionButton('archive', 'Archive', () => moveRowsToRole(rows, 'archive')),
    actionButton('trash', 'Delete', () => deleteRows(rows)),
    inJunk
      ? actionButton('inbox', 'Not spam', () => moveRowsToRole(rows, 'inbox'))
      : actionButton('spam', 'Report spam', () => moveRowsToRole(rows, 'junk')),
    actionButton('mailopen', 'Mark read', () => markRows(rows, true)),
    actionButton('mail', 'Mark unread', () => markRows(rows, false)),
    actionButton('move', 'Move to…', () => chooseFolder((f) => moveRows(rows, f.id))),
  );
}

export function actionButton(iconName, label, onclick, extra = {}) {
  return h('button', { type: 'button', class: 'action', title: label, onclick, ...extra }, icon(iconName), h('span', { class: 'action-label' }, label));
}

// Re-derive one conversation's row from the server (after an event or an action).
async function refreshThreadRow(threadId) {
  const folder = currentFolder();
  if (!folder) return;
  let thread = null;
  try {
    thread = await get(`/v1/threads/${threadId}`);
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 404)) throw e;
  }
  const inFolder = thread
    ? thread.messages.map(normalizeRow).filter((m) => m.folder_id === folder.id)
    : [];
  const visible = app.unreadOnly ? inFolder.filter((m) => !m.is_read) : inFolder;
  const before = app.rows.findIndex((r) => r.key === threadId);
  const wasActive = before >= 0 && before === app.active;
  if (before >= 0) app.rows.splice(before, 1);
  if (visible.length) {
    visible.sort((a, b) => a.received_at.localeCompare(b.received_at) || a.id.localeCompare(b.id));
    const latest = visible[visible.length - 1];
    const row = {
      ...latest,
      key: threadId,
      thread_count: thread.messages.length,
      is_read: !visible.some((m) => !m.is_read),
      is_flagged: visible.some((m) => m.is_flagged),
      has_attachments: visible.some((m) => m.has_attachments),
    };
    const last = app.rows[app.rows.length - 1];
    const beyond = app.nextCursor && last && row.received_at < last.received_at;
    if (!beyond) {
      let at = app.rows.findIndex((r) => r.received_at < row.received_at || (r.received_at === row.received_at && r.id < row.id));
      if (at < 0) at = app.rows.length;
      app.rows.splice(at, 0, row);
      if (wasActive) app.active = at;
    }
  } else app.selected.delete(threadId);
  if (app.active >= app.rows.length) app.active = app.rows.length - 1;
}

// ---------------------------------------------------------------- actions

// The messages an action on a conversation row touches: in a folder, the
// conversation's messages in that folder; in search results, the message.
export async function messagesOf(rows) {
  const ids = [];
  const folder = currentFolder();
  for (const row of rows) {
    if (folder && row.thread_count > 1) {
      const thread = await get(`/v1/threads/${row.thread_id}`);
      ids.push(...thread.messages.filter((m) => String(m.folder_id) === folder.id).map((m) => String(m.id)));
    } else ids.push(row.id);
  }
  return ids;
}

async function afterAction(rows) {
  app.selected.clear();
  if (app.view.kind === 'folder') {
    await Promise.all(rows.map((r) => refreshThreadRow(r.thread_id)));
  }
  renderList();
  refreshFolders().catch(() => {});
}

export async function moveMessages(ids, folderId) {
  await Promise.all(ids.map((id) => patch(`/v1/messages/${id}`, { folder_id: folderId })));
}

function originsOf(rows, ids) {
  const folder = currentFolder();
  const where = {};
  for (const id of ids) {
    const row = rows.find((r) => r.id === id);
    where[id] = folder ? folder.id : row ? row.folder_id : null;
  }
  for (const id of Object.keys(where)) if (!where[id]) delete where[id];
  return where;
}

export async function moveRows(rows, folderId) {
  try {
    const ids = await messagesOf(rows);
    const where = originsOf(rows, ids);
    await moveMessages(ids, folderId);
    const f = folderById(folderId);
    toast(`${rows.length === 1 ? 'Conversation' : `${rows.length} conversations`} moved to ${f ? f.name : 'folder'}.`, { undo: undoMove(where) });
    if (app.view.kind === 'search') rows.forEach((r) => (r.folder_id = folderId));
    await afterAction(rows);
  } catch (e) {
    reportError(e);
  }
}

export async function moveRowsToRole(rows, role) {
  const folder = folderByRole(role);
  if (folder) await moveRows(rows, folder.id);
}

export async function deleteRows(rows) {
  try {
    const ids = await messagesOf(rows);
    const where = originsOf(rows, ids);
    await Promise.all(ids.map((id) => del(`/v1/messages/${id}`)));
    const forGood = (currentFolder() || {}).role === 'trash';
    toast(forGood ? 'Deleted for good.' : 'Moved to Trash.', { undo: forGood ? null : undoMove(where) });
    if (app.view.kind === 'search') {
      const gone = new Set(rows.map((r) => r.key));
      app.rows = app.rows.filter((r) => !gone.has(r.key));
    }
    await afterAction(rows);
  } catch (e) {
    reportError(e);
  }
}

export async function markRows(rows, isRead) {
  try {
    const ids = await messagesOf(rows);
    await Promise.all(ids.map((id) => patch(`/v1/messages/${id}`, { is_read: isRead })));
    rows.forEach((r) => (r.is_read = isRead));
    await afterAction(rows);
  } catch (e) {
    reportError(e);
  }
}

export async function flagRows(rows, flagged) {
  try {
    // A star goes on the newest message, as in Gmail; off comes from all.
    const ids = flagged ? rows.map((r) => r.id) : await messagesOf(rows);
    await Promise.all(ids.map((id) => patch(`/v1/messages/${id}`, { is_flagged: flagged })));
    rows.forEach((r) => (r.is_flagged = flagged));
    await afterAction(rows);
    if (app.reader.threadId && rows.some((r) => r.thread_id === app.reader.threadId)) app.reader.reload(new Set());
  } catch (e) {
    reportError(e);
  }
}

function rowsForKeyboard() {
  if (app.selected.size) return app.rows.filter((r) => app.selected.has(r.key));
  if (app.view.threadId) {
    const row = app.rows.find((r) => r.thread_id === app.view.threadId);
    return row ? [row] : null;
  }
  const row = app.rows[app.active];
  return row ? [row] : [];
}

// An action from the keyboard or the reader's toolbar: the open conversation
// (all of it that is in this folder), else the selection, else the active row.
export async function act(kind) {
  if (app.view.threadId && !app.selected.size) {
    await app.reader.act(kind);
    return;
  }
  const rows = rowsForKeyboard();
  if (!rows || !rows.length) return;
  const index = app.active;
  if (kind === 'archive') await moveRowsToRole(rows, 'archive');
  else if (kind === 'delete') await deleteRows(rows);
  else if (kind === 'spam') {
    const inJunk = (currentFolder() || {}).role === 'junk';
    await moveRowsToRole(rows, inJunk ? 'inbox' : 'junk');
  } else if (kind === 'star') await flagRows(rows, !rows.every((r) => r.is_flagged));
  else if (kind === 'read') await markRows(rows, true);
  else if (kind === 'unread') await markRows(rows, false);
  else if (kind === 'move') chooseFolder((f) => moveRows(rows, f.id));
  if (kind !== 'move' && kind !== 'star' && kind !== 'read' && kind !== 'unread') {
    setActive(Math.min(Math.max(index, 0), app.rows.length - 1));
  }
}

// Leaving a conversation after it was archived, deleted or moved: back to
// the list, on the row that took its place.
export function closeConversation() {
  const index = app.rows.findIndex((r) => r.thread_id === app.view.threadId);
  location.hash = listHash();
  setTimeout(() => setActive(Math.min(Math.max(index, 0), app.rows.length - 1)), 0);
}

export function chooseFolder(onChoose) {
  const dialog = $('#move-dialog');
  const current = currentFolder();
  const targets = app.folders.filter((f) => f.role !== 'drafts' && f !== current);
  dialog.replaceChildren(
    h('h2', { id: 'move-title' }, 'Move to'),
    h(
      'ul',
      { class: 'move-list' },
      targets.map((f) =>
        h('li', {}, h('button', {
          type: 'button',
          class: 'move-target',
          onclick: () => {
            dialog.close();
            onChoose(f);
          },
        }, icon(ROLE_ICON[f.role] || 'folder'), f.name)),
      ),
    ),
    h('div', { class: 'dialog-actions' }, h('button', { type: 'button', onclick: () => dialog.close() }, 'Cancel')),
  );
  dialog.showModal();
  const first = dialog.querySelector('.move-target');
  if (first) first.focus();
}

// ---------------------------------------------------------------- folders dialog

function manageFolders() {
  const dialog = $('#folders-dialog');
  const render = () => {
    const mine = app.folders.filter((f) => !f.role);
    const nameInput = h('input', { id: 'new-folder-name', required: true, maxLength: 200, autocomplete: 'off' });
    dialog.replaceChildren(
      h('h2', { id: 'folders-title' }, 'Folders'),
      h(
        'form',
        {
          class: 'inline-form',
          onsubmit: async (e) => {
            e.preventDefault();
            const name = nameInput.value.trim();
            if (!name) return;
            try {
              await post('/v1/folders', { name });
              await refreshFolders();
              toast(`Folder “${name}” created.`);
              render();
              $('#new-folder-name').focus();
            } catch (err) {
              reportError(err);
            }
          },
        },
        h('label', { for: 'new-folder-name' }, 'New folder'),
        nameInput,
        h('button', { type: 'submit', class: 'primary' }, 'Create'),
      ),
      mine.length
        ? h(
            'ul',
            { class: 'folder-admin', 'aria-label': 'Your folders' },
            mine.map((f) => {
              const input = h('input', { value: f.name, 'aria-label': `Name of folder ${f.name}`, maxLength: 200 });
              return h(
                'li',
                {},
                input,
                h('button', {
                  type: 'button',
                  onclick: async () => {
                    const name = input.value.trim();
                    if (!name || name === f.name) return;
                    try {
                      await patch(`/v1/folders/${f.id}`, { name });
                      await refreshFolders();
                      renderListHead();
                      toast(`Renamed to “${name}”.`);
                      render();
                    } catch (err) {
                      reportError(err);
                    }
                  },
                }, 'Rename'),
                h('button', {
                  type: 'button',
                  class: 'danger',
                  onclick: async () => {
                    if (!confirm(`Delete the folder “${f.name}”? Its mail moves to Trash.`)) return;
                    try {
                      await del(`/v1/folders/${f.id}`);
                      await refreshFolders();
                      if (app.view.folderId === f.id) location.hash = `#/f/${folderByRole('inbox').id}`;
                      toast(`Folder “${f.name}” deleted; its mail is in Trash.`);
                      render();
                    } catch (err) {
                      reportError(err);
                    }
                  },
                }, 'Delete'),
              );
            }),
          )
        : h('p', { class: 'hint' }, 'You have no folders of your own yet.'),
      h('div', { class: 'dialog-actions' }, h('button', { type: 'button', onclick: () => dialog.close() }, 'Done')),
    );
  };
  render();
  dialog.showModal();
  $('#new-folder-name').focus();
}

// ---------------------------------------------------------------- help

const SHORTCUTS = [
  ['j / k', 'Next / previous conversation'],
  ['o or Enter', 'Open conversation'],
  ['u', 'Back to the list'],
  ['x', 'Select conversation'],
  ['c', 'Compose'],
  ['r', 'Reply'],
  ['a', 'Reply all'],
  ['f', 'Forward'],
  ['e', 'Archive'],
  ['#', 'Delete'],
  ['!', 'Report spam / not spam'],
  ['s', 'Star / unstar'],
  ['Shift+i / Shift+u', 'Mark read / unread'],
  ['v', 'Move to folder'],
  ['z', 'Undo the last move'],
  ['/', 'Search'],
  ['g then i', 'Go to Inbox'],
  ['Ctrl+Enter', 'Send (in compose)'],
  ['Esc', 'Close a dialog'],
  ['?', 'This help'],
];

function showHelp() {
  const dialog = $('#help-dialog');
  dialog.replaceChildren(
    h('h2', { id: 'help-title' }, 'Keyboard shortcuts'),
    h(
      'table',
      { class: 'shortcuts' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Key'), h('th', { scope: 'col' }, 'Action'))),
      h('tbody', {}, SHORTCUTS.map(([k, what]) => h('tr', {}, h('td', {}, h('kbd', {}, k)), h('td', {}, what)))),
    ),
    h('div', { class: 'dialog-actions' }, h('button', { type: 'button', class: 'primary', onclick: () => dialog.close() }, 'Close')),
  );
  dialog.showModal();
  dialog.querySelector('button').focus();
}

// ---------------------------------------------------------------- keyboard

function typing(target) {
  return target.closest('input, textarea, select, [contenteditable=""], [contenteditable="true"], dialog[open]');
}

function setupShortcuts() {
  let pendingG = false;
  document.addEventListener('keydown', (e) => {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
    if ($('#app').hidden || typing(e.target) || document.querySelector('dialog[open]')) return;
    const key = e.key;
    if (pendingG) {
      pendingG = false;
      const role = { i: 'inbox', s: 'sent', a: 'archive', t: 'trash', d: 'drafts' }[key];
      if (role && folderByRole(role)) {
        e.preventDefault();
        openFolder(folderByRole(role).id);
        return;
      }
    }
    const reading = Boolean(app.view.threadId);
    const handlers = {
      j: () => (reading ? openNeighbour(1) : setActive(Math.min(app.active + 1, app.rows.length - 1))),
      k: () => (reading ? openNeighbour(-1) : setActive(Math.max(app.active - 1, 0))),
      o: () => openActive(),
      Enter: () => (e.target.closest('a, button') ? null : openActive()),
      u: () => reading && closeReader(),
      U: () => act('unread'),
      I: () => act('read'),
      x: () => app.rows[app.active] && toggleSelect(app.rows[app.active].key, !app.selected.has(app.rows[app.active].key)),
      c: () => app.composer.open({}),
      r: () => reading && app.reader.replyLast('reply'),
      a: () => reading && app.reader.replyLast('all'),
      f: () => reading && app.reader.replyLast('forward'),
      e: () => act('archive'),
      '#': () => act('delete'),
      '!': () => act('spam'),
      s: () => act('star'),
      v: () => act('move'),
      '/': () => $('#search-input').focus(),
      '?': () => showHelp(),
      z: () => undoLast(),
      g: () => {
        pendingG = true;
        setTimeout(() => (pendingG = false), 1500);
      },
    };
    const handler = handlers[key];
    if (!handler) return;
    if (key === 'Enter' && e.target.closest('a, button')) return; // the link or button does it
    e.preventDefault();
    Promise.resolve(handler()).catch(reportError);
  });
}

function openActive() {
  const row = app.rows[app.active] || app.rows[0];
  if (row) location.hash = threadHash(row.thread_id);
}

function openNeighbour(step) {
  const index = app.rows.findIndex((r) => r.thread_id === app.view.threadId);
  const next = app.rows[index + step];
  if (next) {
    app.active = index + step;
    location.hash = threadHash(next.thread_id);
  }
}

function closeReader() {
  const threadId = app.view.threadId;
  location.hash = listHash();
  setTimeout(() => {
    const index = app.rows.findIndex((r) => r.thread_id === threadId);
    setActive(index >= 0 ? index : Math.max(app.active, 0));
  }, 0);
}

// ---------------------------------------------------------------- routing

async function route() {
  let r = parseHash();
  if (!r || (r.kind === 'folder' && !folderById(r.folderId))) {
    const inbox = folderByRole('inbox');
    location.replace(`#/f/${inbox.id}`);
    return;
  }
  const listChanged = r.kind !== app.view.kind || r.folderId !== app.view.folderId || r.q !== app.view.q || !app.listToken;
  app.view = r;
  document.body.classList.toggle('reading', Boolean(r.threadId));
  if (listChanged) {
    renderFolders();
    loadList(true).catch(reportError);
  } else {
    $$('#messages .row').forEach((el) => {
      const open = el.dataset.thread === r.threadId;
      el.classList.toggle('open', open);
      const link = el.querySelector('.row-link');
      if (open) link.setAttribute('aria-current', 'true');
      else link.removeAttribute('aria-current');
    });
  }
  if (r.threadId) await app.reader.open(r.threadId);
  else app.reader.close();
  updateTitle();
}

// ---------------------------------------------------------------- live

async function onEvents(events) {
  let foldersChanged = false;
  const threads = new Map(); // thread id -> whether it concerns the visible list
  const refetch = new Map(); // thread id -> its messages whose deliveries changed
  const arrived = [];
  for (const event of events) {
    const data = event.data || {};
    if (event.type === 'folder.updated') {
      const id = String(data.id);
      const i = app.folders.findIndex((f) => f.id === id);
      if (data.deleted) {
        if (i >= 0) app.folders.splice(i, 1);
      } else if (i >= 0) {
        app.folders[i] = { ...app.folders[i], ...normalizeFolder(data) };
      } else if (data.name) {
        app.folders.push({ user_id: app.me.id, total: 0, unread: 0, ...normalizeFolder(data) });
      }
      foldersChanged = true;
      continue;
    }
    if (!event.type || !event.type.startsWith('message.')) continue;
    const id = String(data.id);
    let threadId = data.thread_id !== undefined && data.thread_id !== null ? String(data.thread_id) : null;
    if (!threadId) {
      const row = app.rows.find((r) => r.id === id);
      if (row) threadId = row.thread_id;
      else if (event.type !== 'message.deleted') {
        try {
          threadId = String((await get(`/v1/messages/${id}`)).thread_id);
        } catch {
          continue;
        }
      } else continue;
    }
    const folderId = data.folder_id !== undefined ? String(data.folder_id) : null;
    const fromId = data.from_folder_id !== undefined ? String(data.from_folder_id) : null;
    const current = app.view.kind === 'folder' ? app.view.folderId : null;
    const concerns = (current && (folderId === current || fromId === current)) || app.rows.some((r) => r.thread_id === threadId);
    threads.set(threadId, (threads.get(threadId) || false) || concerns);
    if (!refetch.has(threadId)) refetch.set(threadId, new Set());
    if (data.delivery) refetch.get(threadId).add(id);
    if (event.type === 'message.new' && data.is_read === false) {
      const inbox = folderByRole('inbox');
      if (inbox && folderId === inbox.id) arrived.push(id);
    }
    if (app.view.kind === 'search') {
      const row = app.rows.find((r) => r.id === id);
      if (row && event.type === 'message.deleted') app.rows.splice(app.rows.indexOf(row), 1);
      else if (row) {
        if (data.is_read !== undefined) row.is_read = data.is_read;
        if (data.is_flagged !== undefined) row.is_flagged = data.is_flagged;
        if (folderId) row.folder_id = folderId;
      }
    }
  }
  if (foldersChanged) {
    sortFolders(app.folders);
    renderFolders();
  }
  const updates = [];
  for (const [threadId, concerns] of threads) {
    if (concerns && app.view.kind === 'folder') updates.push(refreshThreadRow(threadId));
    if (app.view.threadId === threadId) updates.push(app.reader.reload(refetch.get(threadId)));
  }
  await Promise.all(updates.map((p) => p.catch(reportError)));
  if (threads.size) renderList();
  for (const id of arrived) notify(id);
}

async function onReset() {
  app.resets = (app.resets || 0) + 1;
  await refreshFolders();
  await loadList(true);
  if (app.view.threadId) await app.reader.reload();
}

function onLiveStatus(status) {
  app.liveStatus = status;
  document.body.dataset.live = status;
  const text = {
    live: 'Live',
    polling: 'Live (polling)',
    reconnecting: 'Reconnecting…',
    offline: 'Offline – will catch up',
    unavailable: 'Updates paused',
  }[status] || '';
  const el = $('#live-status');
  el.textContent = text;
  el.className = `live-status ${status}`;
}

async function notify(messageId) {
  if (app.notified.has(messageId)) return;
  app.notified.add(messageId);
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  if (document.visibilityState === 'visible' && document.hasFocus()) return;
  try {
    const m = await get(`/v1/messages/${messageId}`);
    const n = new Notification(displayName(m.from), { body: m.subject || m.snippet, tag: `mail-${m.id}` });
    n.addEventListener('click', () => {
      window.focus();
      location.hash = `#/f/${m.folder_id}/t/${m.thread_id}`;
    });
  } catch {
    /* nothing to show */
  }
}

function setupNotifyButton() {
  const button = $('#notify-button');
  const render = () => {
    if (!('Notification' in window)) {
      button.textContent = 'Notifications not supported';
      button.disabled = true;
    } else if (Notification.permission === 'granted') {
      button.textContent = 'Desktop notifications are on';
      button.disabled = true;
    } else if (Notification.permission === 'denied') {
      button.textContent = 'Notifications blocked in browser settings';
      button.disabled = true;
    }
  };
  render();
  button.addEventListener('click', async () => {
    await Notification.requestPermission();
    render();
  });
}

// ---------------------------------------------------------------- layout

function closeDrawer() {
  document.body.classList.remove('drawer-open');
  $('#menu-button').setAttribute('aria-expanded', 'false');
  $('#scrim').hidden = true;
}

function setupChrome() {
  $('#menu-button').append(icon('menu'));
  $('#refresh-button').append(icon('refresh'));
  $('#compose-button').prepend(icon('pen'));
  $('#menu-button').addEventListener('click', () => {
    const open = !document.body.classList.contains('drawer-open');
    document.body.classList.toggle('drawer-open', open);
    $('#menu-button').setAttribute('aria-expanded', String(open));
    $('#scrim').hidden = !open;
    if (open) ($('#folders [tabindex="0"]') || $('#compose-button')).focus();
  });
  $('#scrim').addEventListener('click', closeDrawer);
  document.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && document.body.classList.contains('drawer-open')) closeDrawer();
  });
  for (const id of ['#compose-button', '#compose-fab']) {
    $(id).addEventListener('click', () => {
      closeDrawer();
      app.composer.open({});
    });
  }
  $('#compose-fab').prepend(icon('pen'));
  $('#manage-folders').addEventListener('click', () => {
    closeDrawer();
    manageFolders();
  });
  $('#help-button').addEventListener('click', showHelp);
  $('#refresh-button').addEventListener('click', () => {
    refreshFolders().catch(reportError);
    loadList(true).catch(reportError);
  });
  $('#unread-filter').addEventListener('click', () => {
    app.unreadOnly = !app.unreadOnly;
    loadList(true).catch(reportError);
  });
  $('#select-all').addEventListener('change', (e) => {
    if (e.target.checked) app.rows.forEach((r) => app.selected.add(r.key));
    else app.selected.clear();
    renderList();
  });
  $('#search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const q = $('#search-input').value.trim();
    if (!q) return;
    location.hash = `#/s/${encodeURIComponent(q)}`;
    $('#search-input').blur();
  });
  $('#search-input').addEventListener('keydown', (e) => {
    if (e.key === 'Escape') e.target.blur();
  });
  const accountButton = $('#account-button');
  const menu = $('#account-menu');
  accountButton.addEventListener('click', () => {
    const open = menu.hidden;
    menu.hidden = !open;
    accountButton.setAttribute('aria-expanded', String(open));
    if (open) menu.querySelector('button:not([disabled])').focus();
  });
  menu.addEventListener('keydown', (e) => {
    if (e.key === 'Escape') {
      menu.hidden = true;
      accountButton.setAttribute('aria-expanded', 'false');
      accountButton.focus();
    }
  });
  document.addEventListener('click', (e) => {
    if (!menu.hidden && !e.target.closest('.account')) {
      menu.hidden = true;
      accountButton.setAttribute('aria-expanded', 'false');
    }
  });
  $('#logout-button').addEventListener('click', logOut);
  setupNotifyButton();

  const observer = new IntersectionObserver(
    (entries) => {
      if (entries.some((en) => en.isIntersecting)) loadMore();
    },
    { root: $('#list-scroll'), rootMargin: '400px' },
  );
  observer.observe($('#list-sentinel'));
}

// ---------------------------------------------------------------- start

async function startApp() {
  app.me = await get('/v1/me');
  app.me.id = String(app.me.id);
  app.limits = await get('/v1/limits').catch(() => ({ max_attachment_bytes: 25 * 1024 * 1024, max_message_bytes: 25 * 1024 * 1024, max_recipients: 100 }));
  $('#auth').hidden = true;
  $('#app').hidden = false;
  const initial = (app.me.name || app.me.email).trim().charAt(0).toUpperCase();
  $('#account-button').textContent = initial;
  $('#account-button').setAttribute('aria-label', `Account: ${app.me.email}`);
  $('#account-email').textContent = app.me.email;

  app.live = new LiveEvents({ onEvents, onReset, onStatus: onLiveStatus });
  let live = true;
  try {
    await app.live.begin(); // the cursor first: nothing between it and the fetches below is lost
  } catch (e) {
    live = false;
    onLiveStatus('unavailable');
  }
  await refreshFolders();
  window.addEventListener('hashchange', () => route().catch(reportError));
  await route();
  if (live) app.live.start();
  else setInterval(() => refreshFolders().catch(() => {}), 30000);
  app.composer.restoreOnStart();
  document.body.dataset.ready = 'true';
}

async function boot() {
  app.reader = new Reader(app);
  app.composer = new Composer(app);
  setupAuth();
  setupChrome();
  setupFolderTree();
  setupShortcuts();
  onUnauthorized(() => {
    if (app.live) app.live.stop();
    session.clear();
    location.reload();
  });
  if (!session.token) {
    showAuth();
    return;
  }
  try {
    await startApp();
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    showAuth();
    $('#login-error').textContent = e.message;
  }
}

boot();
