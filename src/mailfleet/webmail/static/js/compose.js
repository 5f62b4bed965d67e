// The compose window: To/Cc/Bcc with completion from past correspondents
// (GET /v1/contacts), attachments by picker or drag and drop with upload
// progress, reply / reply all / forward with quoting and threading
// (in_reply_to), and drafts kept in this browser's localStorage so a closed
// tab loses nothing (they are not on the server: another device won't see them).

import { h, $, icon, formatAddress, formatSize, longDate } from './dom.js';
import { get, post, query, uploadFile, fetchBlob, ApiError } from './api.js';
import { toast, reportError, refreshFolders, currentFolder } from './main.js';

const DRAFTS_KEY = 'mailfleet.drafts.';
const SAVE_DELAY_MS = 400;

// "Ann <ann@x.org>, bob@y.org" -> [{name, email}, ...]; what is not an address is reported.
export function parseAddresses(text) {
  const out = [];
  const bad = [];
  for (const part of text.split(/[,;\n]/)) {
    const value = part.trim();
    if (!value) continue;
    const m = value.match(/^(.*?)\s*<([^<>\s]+@[^<>\s]+)>$/);
    if (m) out.push({ name: m[1].replace(/^"|"$/g, '').trim(), email: m[2] });
    else if (/^[^\s@<>]+@[^\s@<>]+\.[^\s@<>]+$/.test(value) || /^[^\s@<>]+@[^\s@<>]+$/.test(value)) out.push({ name: '', email: value });
    else bad.push(value);
  }
  return { addresses: out, bad };
}

function subjectWith(prefix, subject) {
  const s = (subject || '').trim();
  const re = prefix === 'Re:' ? /^(re|aw|sv)\s*:/i : /^(fwd?|wg)\s*:/i;
  return re.test(s) ? s : `${prefix} ${s}`.trim();
}

function quoteText(message) {
  const body = (message.body || '').replace(/\r\n/g, '\n');
  const quoted = body.split('\n').map((l) => `> ${l}`).join('\n');
  return `\n\nOn ${longDate(message.received_at)}, ${formatAddress(message.from)} wrote:\n${quoted}\n`;
}

function forwardText(message) {
  return [
    '',
    '',
    '---------- Forwarded message ----------',
    `From: ${formatAddress(message.from)}`,
    `Date: ${longDate(message.received_at)}`,
    `Subject: ${message.subject || ''}`,
    `To: ${(message.to || []).map(formatAddress).join(', ')}`,
    message.cc && message.cc.length ? `Cc: ${message.cc.map(formatAddress).join(', ')}` : null,
    '',
    message.body || '',
    '',
  ].filter((l) => l !== null).join('\n');
}

export class Composer {
  constructor(app) {
    this.app = app;
    this.dialog = $('#compose-dialog');
    this.draft = null;
    this.uploads = new Map(); // local key -> {file, state, progress, result, abort}
    this.saveTimer = null;
    this.suggestToken = 0;
    this.dialog.addEventListener('close', () => this.onClosed());
    this.dialog.addEventListener('cancel', (e) => {
      // Esc closes the window and keeps the draft.
      if (document.activeElement && document.activeElement.getAttribute('aria-expanded') === 'true') {
        e.preventDefault();
        this.hideSuggestions();
      }
    });
  }

  // ------------------------------------------------------------ drafts
  key() {
    return DRAFTS_KEY + this.app.me.id;
  }

  drafts() {
    if (!this.app.me) return [];
    try {
      const all = JSON.parse(localStorage.getItem(this.key()) || '{}');
      return Object.values(all).sort((a, b) => b.updated - a.updated);
    } catch {
      return [];
    }
  }

  storeDraft(draft) {
    const all = JSON.parse(localStorage.getItem(this.key()) || '{}');
    if (draft) all[draft.id] = draft;
    localStorage.setItem(this.key(), JSON.stringify(all));
  }

  dropDraft(id) {
    const all = JSON.parse(localStorage.getItem(this.key()) || '{}');
    delete all[id];
    localStorage.setItem(this.key(), JSON.stringify(all));
  }

  isEmpty(d) {
    return !d.to && !d.cc && !d.bcc && !d.subject && !(d.body || '').trim() && !d.attachments.length;
  }

  saveSoon() {
    clearTimeout(this.saveTimer);
    this.saveTimer = setTimeout(() => this.saveNow(), SAVE_DELAY_MS);
  }

  saveNow() {
    clearTimeout(this.saveTimer);
    if (!this.draft) return;
    this.collect();
    const d = this.draft;
    if (this.isEmpty(d) || (d.pristine && d.body === d.initialBody)) this.dropDraft(d.id);
    else this.storeDraft({ ...d, pristine: false, updated: Date.now() });
    const status = $('#compose-saved');
    if (status) status.textContent = 'Draft saved in this browser';
  }

  restoreOnStart() {
    window.addEventListener('beforeunload', () => this.saveNow());
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'hidden') this.saveNow();
    });
    this.renderLocalDrafts();
  }

  // In the Drafts folder: the drafts kept in this browser, to resume.
  renderLocalDrafts() {
    const box = $('#drafts-local');
    const folder = currentFolder();
    const drafts = this.app.me ? this.drafts() : [];
    if (!folder || folder.role !== 'drafts' || !drafts.length) {
      box.hidden = true;
      box.replaceChildren();
      return;
    }
    box.hidden = false;
    box.replaceChildren(
      h('h2', { class: 'drafts-title' }, 'Unsent drafts in this browser'),
      h(
        'ul',
        { class: 'draft-list' },
        drafts.map((d) =>
          h(
            'li',
            {},
            h('button', { type: 'button', class: 'draft-open', onclick: () => this.open({ draft: d }) },
              h('span', { class: 'row-from' }, d.to || '(no recipients)'),
              h('span', { class: 'row-subject' }, d.subject || '(no subject)'),
              h('span', { class: 'row-snippet' }, (d.body || '').slice(0, 80))),
            h('button', { type: 'button', class: 'link', 'aria-label': `Discard draft ${d.subject || ''}`, onclick: () => {
              this.dropDraft(d.id);
              this.renderLocalDrafts();
              this.app.folders.length && refreshFolders().catch(() => {});
            } }, 'Discard'),
          ),
        ),
      ),
    );
  }

  // ------------------------------------------------------------ open
  open({ mode = 'new', message = null, draft = null } = {}) {
    // The previous draft, if it is still here: the dialog is open, or it was
    // just closed and its close event has not run yet.
    if (this.draft) this.saveNow();
    this.uploads = new Map();
    if (draft) this.draft = { ...draft };
    else this.draft = this.fromMessage(mode, message);
    for (const a of this.draft.attachments) this.uploads.set(a.key, { name: a.filename, size: a.size, state: 'done', result: a, progress: 1 });
    this.render();
    if (!this.dialog.open) this.dialog.showModal();
    const focus = this.draft.to ? $('#compose-body') : $('#compose-to');
    focus.focus();
    if (focus.id === 'compose-body') focus.setSelectionRange(0, 0);
    if (mode === 'forward' && message && message.attachments && message.attachments.length) this.forwardAttachments(message);
  }

  fromMessage(mode, m) {
    const me = this.app.me.email.toLowerCase();
    const base = {
      id: `d${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`,
      mode,
      to: '',
      cc: '',
      bcc: '',
      subject: '',
      body: '',
      in_reply_to: null,
      attachments: [],
      updated: Date.now(),
      pristine: true,
    };
    if (!m) return { ...base, initialBody: '' };
    const list = (addresses) => addresses.map(formatAddress).join(', ');
    const others = (addresses) => (addresses || []).filter((a) => a.email.toLowerCase() !== me);
    const fromMe = m.from && m.from.email.toLowerCase() === me;
    if (mode === 'forward') {
      const body = forwardText(m);
      return { ...base, subject: subjectWith('Fwd:', m.subject), body, initialBody: body };
    }
    const to = fromMe ? m.to || [] : [m.from].filter(Boolean);
    const cc = mode === 'all' ? others([...(fromMe ? [] : m.to || []), ...(m.cc || [])]).filter((a) => !to.some((t) => t.email === a.email)) : [];
    const body = quoteText(m);
    return {
      ...base,
      to: list(to),
      cc: list(cc),
      subject: subjectWith('Re:', m.subject),
      body,
      initialBody: body,
      in_reply_to: String(m.id),
    };
  }

  async forwardAttachments(message) {
    for (const a of message.attachments) {
      try {
        const blob = await fetchBlob(`/v1/messages/${message.id}/attachments/${a.id}`);
        this.addFiles([new File([blob], a.filename, { type: a.content_type })]);
      } catch (e) {
        reportError(e);
      }
    }
  }

  collect() {
    if (!this.draft || !$('#compose-to')) return;
    const d = this.draft;
    d.to = $('#compose-to').value;
    d.cc = $('#compose-cc').value;
    d.bcc = $('#compose-bcc').value;
    d.subject = $('#compose-subject').value;
    d.body = $('#compose-body').value;
    d.attachments = [...this.uploads.entries()]
      .filter(([, u]) => u.state === 'done')
      .map(([key, u]) => ({ key, id: u.result.id, filename: u.result.filename, size: u.result.size, content_type: u.result.content_type }));
  }

  onClosed() {
    // The close event comes a task after close(): a compose opened in
    // between (a shortcut pressed right after Discard or Send) owns the
    // dialog and its draft now.
    if (this.dialog.open) return;
    this.hideSuggestions();
    this.saveNow();
    for (const u of this.uploads.values()) if (u.state === 'uploading' && u.abort) u.abort();
    this.draft = null;
    this.renderLocalDrafts();
  }

  // ------------------------------------------------------------ render
  addressField(id, label, value, hidden = false) {
    const input = h('input', {
      id,
      value,
      autocomplete: 'off',
      spellcheck: false,
      role: 'combobox',
      'aria-autocomplete': 'list',
      'aria-expanded': 'false',
      'aria-controls': `${id}-list`,
      oninput: () => {
        this.saveSoon();
        this.suggest(input);
      },
      onkeydown: (e) => this.suggestKeys(e, input),
      onblur: () => setTimeout(() => this.hideSuggestions(input), 150),
    });
    return h(
      'div',
      { class: 'field address-field', id: `${id}-row`, hidden },
      h('label', { for: id }, label),
      h('div', { class: 'combo' }, input, h('ul', { id: `${id}-list`, class: 'suggestions', role: 'listbox', 'aria-label': `${label} suggestions`, hidden: true })),
    );
  }

  render() {
    const d = this.draft;
    const limit = this.app.limits.max_attachment_bytes;
    const title = { new: 'New message', reply: 'Reply', all: 'Reply all', forward: 'Forward' }[d.mode] || 'New message';
    const showCc = Boolean(d.cc);
    const showBcc = Boolean(d.bcc);
    const fileInput = h('input', {
      type: 'file',
      id: 'compose-files',
      multiple: true,
      class: 'sr-only',
      'aria-describedby': 'compose-limit',
      onchange: (e) => {
        this.addFiles([...e.target.files]);
        e.target.value = '';
      },
    });
    const form = h(
      'form',
      {
        class: 'compose-form',
        method: 'dialog',
        onsubmit: (e) => {
          e.preventDefault();
          this.send();
        },
        onkeydown: (e) => {
          if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
            e.preventDefault();
            this.send();
          }
        },
      },
      h(
        'header',
        { class: 'compose-head' },
        h('h2', { id: 'compose-title' }, title),
        h('span', { id: 'compose-saved', class: 'compose-saved', role: 'status' }),
        h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Close (keeps the draft)', title: 'Close (keeps the draft)', onclick: () => this.dialog.close() }, icon('close')),
      ),
      h('div', { class: 'field from-field' }, h('span', { class: 'field-label' }, 'From'), h('span', {}, formatAddress({ name: this.app.me.name, email: this.app.me.email }))),
      h(
        'div',
        { class: 'to-line' },
        this.addressField('compose-to', 'To', d.to),
        h(
          'div',
          { class: 'cc-toggles' },
          h('button', { type: 'button', class: 'link', id: 'show-cc', hidden: showCc, onclick: (e) => {
            $('#compose-cc-row').hidden = false;
            e.currentTarget.hidden = true;
            $('#compose-cc').focus();
          } }, 'Cc'),
          h('button', { type: 'button', class: 'link', id: 'show-bcc', hidden: showBcc, onclick: (e) => {
            $('#compose-bcc-row').hidden = false;
            e.currentTarget.hidden = true;
            $('#compose-bcc').focus();
          } }, 'Bcc'),
        ),
      ),
      this.addressField('compose-cc', 'Cc', d.cc, !showCc),
      this.addressField('compose-bcc', 'Bcc', d.bcc, !showBcc),
      h('div', { class: 'field' }, h('label', { for: 'compose-subject' }, 'Subject'), h('input', { id: 'compose-subject', value: d.subject, maxLength: 998, oninput: () => this.saveSoon() })),
      h('label', { for: 'compose-body', class: 'sr-only' }, 'Message'),
      h('textarea', { id: 'compose-body', class: 'compose-body', value: d.body, oninput: () => this.saveSoon() }),
      h('ul', { class: 'uploads', id: 'compose-uploads', 'aria-label': 'Attachments', 'aria-live': 'polite' }),
      h('p', { class: 'form-error', id: 'compose-error', role: 'alert' }),
      h(
        'footer',
        { class: 'compose-foot' },
        h('button', { type: 'submit', class: 'primary', id: 'compose-send', title: 'Send (Ctrl+Enter)' }, icon('send'), 'Send'),
        h('label', { for: 'compose-files', class: 'button secondary attach-button' }, icon('clip'), 'Attach files'),
        fileInput,
        h('span', { class: 'hint', id: 'compose-limit' }, `Up to ${formatSize(limit)} per file, ${formatSize(this.app.limits.max_message_bytes)} per message. Or drop files here.`),
        h('button', { type: 'button', class: 'link danger discard', onclick: () => this.discard() }, 'Discard'),
      ),
    );
    this.dialog.replaceChildren(form, h('div', { class: 'drop-overlay', 'aria-hidden': 'true' }, 'Drop files to attach'));
    this.setupDrop();
    this.renderUploads();
  }

  setupDrop() {
    if (this.dropReady) return;
    this.dropReady = true;
    let depth = 0;
    this.dialog.addEventListener('dragenter', (e) => {
      if (![...(e.dataTransfer?.types || [])].includes('Files')) return;
      depth += 1;
      this.dialog.classList.add('dragging');
    });
    this.dialog.addEventListener('dragleave', () => {
      depth = Math.max(0, depth - 1);
      if (!depth) this.dialog.classList.remove('dragging');
    });
    this.dialog.addEventListener('dragover', (e) => e.preventDefault());
    this.dialog.addEventListener('drop', (e) => {
      e.preventDefault();
      depth = 0;
      this.dialog.classList.remove('dragging');
      const files = [...(e.dataTransfer?.files || [])];
      if (files.length) this.addFiles(files);
    });
  }

  // ------------------------------------------------------------ attachments
  addFiles(files) {
    const limit = this.app.limits.max_attachment_bytes;
    for (const file of files) {
      const key = `u${Date.now().toString(36)}${Math.random().toString(36).slice(2, 7)}`;
      if (file.size > limit) {
        this.uploads.set(key, { name: file.name, size: file.size, state: 'refused', progress: 0, error: `over the ${formatSize(limit)} limit per file: share a link to it instead` });
        continue;
      }
      const entry = { name: file.name, size: file.size, state: 'uploading', progress: 0 };
      const { promise, abort } = uploadFile(file, (p) => {
        entry.progress = p;
        this.renderUploads();
      });
      entry.abort = abort;
      this.uploads.set(key, entry);
      promise
        .then((result) => {
          entry.state = 'done';
          entry.progress = 1;
          entry.result = { ...result, id: String(result.id) };
          this.renderUploads();
          this.saveSoon();
        })
        .catch((e) => {
          if (entry.state === 'removed') return;
          entry.state = 'failed';
          entry.error = e instanceof ApiError ? e.message : 'upload failed';
          this.renderUploads();
        });
    }
    this.renderUploads();
  }

  renderUploads() {
    const list = $('#compose-uploads');
    if (!list) return;
    list.replaceChildren(
      ...[...this.uploads.entries()]
        .filter(([, u]) => u.state !== 'removed')
        .map(([key, u]) =>
          h(
            'li',
            { class: `upload ${u.state}`, dataset: { state: u.state } },
            icon('clip'),
            h('span', { class: 'upload-name' }, u.name),
            h('span', { class: 'upload-size' }, formatSize(u.size)),
            u.state === 'uploading'
              ? h('progress', { max: 1, value: u.progress, 'aria-label': `Uploading ${u.name}` })
              : null,
            u.state === 'uploading' ? h('span', { class: 'upload-pct' }, `${Math.round(u.progress * 100)}%`) : null,
            u.error ? h('span', { class: 'upload-error' }, u.error) : null,
            h('button', { type: 'button', class: 'icon-button small', 'aria-label': `Remove ${u.name}`, onclick: () => {
              if (u.abort && u.state === 'uploading') u.abort();
              u.state = 'removed';
              this.renderUploads();
              this.saveSoon();
            } }, icon('close')),
          ),
        ),
    );
  }

  // ------------------------------------------------------------ completion
  async suggest(input) {
    const token = ++this.suggestToken;
    const value = input.value;
    const cut = Math.max(value.lastIndexOf(','), value.lastIndexOf(';'));
    const term = value.slice(cut + 1).trim();
    if (!term) {
      this.hideSuggestions(input);
      return;
    }
    await new Promise((r) => setTimeout(r, 120));
    if (token !== this.suggestToken) return;
    let found = [];
    try {
      found = await get(`/v1/contacts${query({ q: term, limit: 8 })}`);
    } catch {
      return;
    }
    if (token !== this.suggestToken) return;
    const chosen = new Set(parseAddresses(value.slice(0, cut + 1)).addresses.map((a) => a.email.toLowerCase()));
    found = found.filter((c) => !chosen.has(c.email.toLowerCase()));
    const list = $(`#${input.id}-list`);
    if (!found.length) {
      this.hideSuggestions(input);
      return;
    }
    list.replaceChildren(
      ...found.map((c, i) =>
        h('li', {
          id: `${input.id}-opt-${i}`,
          role: 'option',
          class: 'suggestion',
          'aria-selected': i === 0 ? 'true' : 'false',
          dataset: { value: formatAddress(c) },
          onmousedown: (e) => {
            e.preventDefault();
            this.choose(input, formatAddress(c));
          },
        }, h('span', { class: 'sugg-name' }, c.name || c.email), c.name ? h('span', { class: 'sugg-email' }, c.email) : null),
      ),
    );
    list.hidden = false;
    input.setAttribute('aria-expanded', 'true');
    input.setAttribute('aria-activedescendant', `${input.id}-opt-0`);
  }

  hideSuggestions(input) {
    const inputs = input ? [input] : [...this.dialog.querySelectorAll('[role=combobox]')];
    for (const i of inputs) {
      const list = $(`#${i.id}-list`);
      if (list) list.hidden = true;
      i.setAttribute('aria-expanded', 'false');
      i.removeAttribute('aria-activedescendant');
    }
  }

  suggestKeys(e, input) {
    const list = $(`#${input.id}-list`);
    if (!list || list.hidden) return;
    const options = [...list.querySelectorAll('[role=option]')];
    let i = options.findIndex((o) => o.getAttribute('aria-selected') === 'true');
    if (e.key === 'ArrowDown' || e.key === 'ArrowUp') {
      e.preventDefault();
      i = (i + (e.key === 'ArrowDown' ? 1 : -1) + options.length) % options.length;
      options.forEach((o, j) => o.setAttribute('aria-selected', String(j === i)));
      input.setAttribute('aria-activedescendant', options[i].id);
    } else if (e.key === 'Enter' || e.key === 'Tab') {
      if (i >= 0) {
        e.preventDefault();
        this.choose(input, options[i].dataset.value);
      }
    } else if (e.key === 'Escape') {
      e.preventDefault();
      e.stopPropagation();
      this.hideSuggestions(input);
    }
  }

  choose(input, value) {
    const cut = Math.max(input.value.lastIndexOf(','), input.value.lastIndexOf(';'));
    const head = input.value.slice(0, cut + 1);
    input.value = `${head}${head ? ' ' : ''}${value}, `;
    this.hideSuggestions(input);
    input.focus();
    this.saveSoon();
  }

  // ------------------------------------------------------------ send
  async send() {
    this.collect();
    const d = this.draft;
    const error = $('#compose-error');
    error.textContent = '';
    const fields = { to: parseAddresses(d.to), cc: parseAddresses(d.cc), bcc: parseAddresses(d.bcc) };
    const bad = [...fields.to.bad, ...fields.cc.bad, ...fields.bcc.bad];
    if (bad.length) {
      error.textContent = `Not an email address: ${bad.join(', ')}`;
      return;
    }
    if (!fields.to.addresses.length && !fields.cc.addresses.length && !fields.bcc.addresses.length) {
      error.textContent = 'Add at least one recipient.';
      $('#compose-to').focus();
      return;
    }
    const pending = [...this.uploads.values()].filter((u) => u.state === 'uploading');
    if (pending.length) {
      error.textContent = 'Wait for the attachments to finish uploading.';
      return;
    }
    const button = $('#compose-send');
    button.disabled = true;
    try {
      const body = {
        to: fields.to.addresses,
        cc: fields.cc.addresses,
        bcc: fields.bcc.addresses,
        subject: d.subject,
        body: d.body,
        attachments: d.attachments.map((a) => a.id),
      };
      if (d.in_reply_to) body.in_reply_to = d.in_reply_to;
      await post('/v1/messages', body);
      this.dropDraft(d.id);
      this.draft = null;
      this.dialog.close();
      toast('Message sent.');
      refreshFolders().catch(() => {});
      if (this.app.reader.threadId) this.app.reader.reload(new Set()).catch(() => {});
    } catch (e) {
      error.textContent = e.message;
      button.disabled = false;
    }
  }

  discard() {
    if (this.draft) this.dropDraft(this.draft.id);
    for (const u of this.uploads.values()) if (u.state === 'uploading' && u.abort) u.abort();
    this.draft = null;
    this.dialog.close();
    toast('Draft discarded.');
  }
}

