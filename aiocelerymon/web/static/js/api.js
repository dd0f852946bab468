// Fetch helpers. Every URL is relative to the page, so any --url-prefix or proxy prefix works.
// Unsafe requests carry the session's CSRF token (docs/web-security.md).

let session = null;

export class HttpError extends Error {
  constructor(status, body) {
    super(typeof body === "string" ? body : (body && body.message) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

const COMMON = { "X-Requested-With": "aiocelerymon", Accept: "application/json" };

function toLogin() {
  const next = location.pathname + location.search + location.hash;
  location.assign(`login?next=${encodeURIComponent(next)}`);
}

async function parse(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) return response.json();
  return response.text();
}

export async function loadSession() {
  const response = await fetch("auth/session", { headers: COMMON, credentials: "same-origin" });
  if (response.status === 404) {
    // Served without the security layer (embedded behind someone else's): no roles here.
    session = { user: "anonymous", role: "operator", can_control: true, csrf_token: null,
      csrf_header: "X-CSRF-Token", authenticated: false };
  } else if (response.status === 401) {
    toLogin();
    throw new HttpError(401, "login required");
  } else {
    session = await response.json();
  }
  return session;
}

export function currentSession() {
  return session;
}

export function canControl() {
  return Boolean(session && session.can_control);
}

export async function get(path, params) {
  const query = params ? `?${new URLSearchParams(clean(params))}` : "";
  const response = await fetch(path + query, { headers: COMMON, credentials: "same-origin" });
  if (response.status === 401) {
    toLogin();
    throw new HttpError(401, "login required");
  }
  const body = await parse(response);
  if (!response.ok) throw new HttpError(response.status, body);
  return body;
}

// POST a form; resolves to {status, ok, body} whatever the status (the replies matter).
export async function post(path, form) {
  const headers = { ...COMMON, "Content-Type": "application/x-www-form-urlencoded" };
  if (session && session.csrf_token) headers[session.csrf_header || "X-CSRF-Token"] = session.csrf_token;
  const response = await fetch(path, {
    method: "POST", headers, credentials: "same-origin",
    body: new URLSearchParams(clean(form || {})).toString(),
  });
  if (response.status === 401) {
    toLogin();
    throw new HttpError(401, "login required");
  }
  return { status: response.status, ok: response.ok, body: await parse(response) };
}

function clean(params) {
  const out = {};
  for (const [k, v] of Object.entries(params)) {
    if (v !== null && v !== undefined && v !== "") out[k] = String(v);
  }
  return out;
}

export function path(...parts) {
  return parts.map((p) => encodeURIComponent(p)).join("/");
}
