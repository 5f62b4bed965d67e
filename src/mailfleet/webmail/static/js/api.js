// The public HTTP API v1 (shared/API.md), and nothing else: bearer token in a
// header, JSON in and out. The token lives in this origin's localStorage; mail
// content never runs script in this origin (sandboxed frame), so it cannot read it.

const SESSION_KEY = 'mailfleet.session';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let unauthorizedHandler = null;
export function onUnauthorized(fn) {
  unauthorizedHandler = fn;
}

export const session = {
  get token() {
    try {
      const saved = JSON.parse(localStorage.getItem(SESSION_KEY) || 'null');
      if (!saved || (saved.expires_at && Date.parse(saved.expires_at) < Date.now())) return null;
      return saved.token;
    } catch {
      return null;
    }
  },
  save(token, expiresAt) {
    localStorage.setItem(SESSION_KEY, JSON.stringify({ token, expires_at: expiresAt }));
  },
  clear() {
    localStorage.removeItem(SESSION_KEY);
  },
};

function authHeaders() {
  const token = session.token;
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function failure(res, withToken) {
  let code = 'error';
  let message = res.statusText || `HTTP ${res.status}`;
  try {
    const data = await res.json();
    if (data && data.error) ({ code, message } = data.error);
  } catch {
    /* not JSON */
  }
  const err = new ApiError(res.status, code, message);
  // A refused token (expired, signed out elsewhere) ends the session here;
  // a refused password at sign-in does not.
  if (res.status === 401 && withToken && unauthorizedHandler) unauthorizedHandler(err);
  return err;
}

// JSON.parse with integers beyond 2^53 kept exactly, as strings. Ids are
// 63-bit; the API's own fields are strings already, but change-log event
// data may carry them as numbers. Digits inside strings are left alone.
export function parseJson(text) {
  let out = '';
  let i = 0;
  let start = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === 34) {
      // a string: skip to its closing quote
      i += 1;
      while (i < n && text.charCodeAt(i) !== 34) i += text.charCodeAt(i) === 92 ? 2 : 1;
      i += 1;
    } else if ((c >= 48 && c <= 57) || c === 45) {
      let j = i + 1;
      while (j < n && /[0-9.eE+-]/.test(text[j])) j += 1;
      const literal = text.slice(i, j);
      if (/^-?\d{16,}$/.test(literal) && !Number.isSafeInteger(Number(literal))) {
        out += `${text.slice(start, i)}"${literal}"`;
        start = j;
      }
      i = j;
    } else i += 1;
  }
  return JSON.parse(out + text.slice(start));
}

export async function api(method, path, body, { signal, bigIds = false } = {}) {
  const headers = { Accept: 'application/json', ...authHeaders() };
  const init = { method, headers, signal, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'Cannot reach the server; check your connection.');
  }
  if (!res.ok) throw await failure(res, 'Authorization' in headers);
  if (res.status === 204) return null;
  return bigIds ? parseJson(await res.text()) : res.json();
}

export const get = (path, opts) => api('GET', path, undefined, opts);
export const post = (path, body) => api('POST', path, body);
export const patch = (path, body) => api('PATCH', path, body);
export const del = (path) => api('DELETE', path);

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

// Bytes of a download, fetched with the bearer header (a plain link cannot carry it).
export async function fetchBlob(path) {
  let res;
  try {
    res = await fetch(path, { headers: authHeaders(), cache: 'no-store' });
  } catch {
    throw new ApiError(0, 'network', 'Cannot reach the server; check your connection.');
  }
  if (!res.ok) throw await failure(res, true);
  return res.blob();
}

// POST /v1/attachments through XMLHttpRequest: fetch has no upload progress.
export function uploadFile(file, onProgress) {
  const xhr = new XMLHttpRequest();
  const promise = new Promise((resolve, reject) => {
    xhr.open('POST', '/v1/attachments');
    const token = session.token;
    if (token) xhr.setRequestHeader('Authorization', `Bearer ${token}`);
    xhr.responseType = 'json';
    xhr.upload.addEventListener('progress', (e) => {
      if (e.lengthComputable) onProgress(e.loaded / e.total);
    });
    xhr.addEventListener('load', () => {
      if (xhr.status === 201) resolve(xhr.response);
      else {
        const err = xhr.response && xhr.response.error;
        reject(new ApiError(xhr.status, err ? err.code : 'error', err ? err.message : `HTTP ${xhr.status}`));
      }
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, 'network', 'Upload failed: connection lost.')));
    xhr.addEventListener('abort', () => reject(new ApiError(0, 'aborted', 'Upload cancelled.')));
    const form = new FormData();
    form.append('file', file, file.name);
    xhr.send(form);
  });
  return { promise, abort: () => xhr.abort() };
}
