// Pure logic of the HealthCheck dynamic provider: polling /healthz + /readyz,
// the optional API smoke test, input validation and the diff rules.
//
// This file is serialized INTO the provider closure (pulumi.runtime
// serializeFunction walks every function the provider calls). Rules:
//   - no imports of any kind (type positions use `typeof import(...)`, erased);
//   - only globals: URL, setTimeout, Buffer, JSON, Date, Math, crypto,
//     process.getBuiltinModule (Node >= 20.16: the global way to reach
//     node:http/node:https without `require` or a captured import);
//   - no exported `const`s used inside functions (TypeScript compiles those
//     to `exports.X`, which would capture the whole module), no classes;
//     defaults live inside the functions that use them.
// Only loopback servers are needed to test it: see tests/healthCheck.test.ts.

type HttpModule = typeof import("node:http");
type HttpsModule = typeof import("node:https");
type IncomingMessage = import("node:http").IncomingMessage;

/** What `pollUntilHealthy` / `runHealthCheck` need. Times are milliseconds. */
export interface PollOptions {
  /** Base URL of the instance, e.g. http://10.0.0.5:8080 (no /healthz). */
  url: string;
  /** Version /readyz must report, e.g. "0.2.0" (a leading "v" is ignored on both sides). */
  expectedVersion: string;
  /** Total budget. The poll ends at most one `intervalMs` after it (see runHealthCheck). */
  timeoutMs: number;
  /** Base of the exponential backoff. */
  intervalMs: number;
  /** Cut for one HTTP request (connect + headers + body). */
  requestTimeoutMs: number;
  /** Backoff ceiling. Defaults to 4 × intervalMs. */
  maxIntervalMs?: number;
  /** Extra request headers (e.g. for an auth proxy in front of the instance). */
  headers?: Record<string, string>;
  /** PEM of the CA (or the self-signed certificate) to trust for https. */
  caCertPem?: string;
  /** Run the API smoke test after the instance is healthy. Defaults to false. */
  smokeTest?: boolean;
  /** Backend API key for the smoke test (secret: never echoed). */
  apiKey?: string;
  /** X-User-ID the smoke test acts as. Defaults to "progressdb-upgrades-smoke". */
  smokeUserId?: string;
  /** Budget of the smoke test, separate from timeoutMs. Defaults to 30000. */
  smokeTimeoutMs?: number;
}

/** Injectable clock/sleep/randomness (tests); defaults are the real ones. */
export interface PollDeps {
  now?: () => number;
  sleep?: (ms: number) => Promise<void>;
  random?: () => number;
}

export interface PollResult {
  status: "healthy";
  /** The version /readyz reported (as reported). */
  reportedVersion: string;
  attempts: number;
  elapsedMs: number;
  /** ISO timestamp of the successful check. */
  checkedAt: string;
  smokeResult: "passed" | "skipped";
}

/** Non-throwing form, used by `read` (refresh) to report an unhealthy instance. */
export interface HealthOutcome {
  ok: boolean;
  /** Last version /readyz reported, "" if it never reported one. */
  reportedVersion: string;
  attempts: number;
  elapsedMs: number;
  checkedAt: string;
  smokeResult: "passed" | "skipped" | "failed" | "not-run";
  /** "" when ok; otherwise the one readable failure message. */
  message: string;
}

interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

interface RequestSpec {
  url: URL;
  method: string;
  headers: Record<string, string>;
  body?: string;
  timeoutMs: number;
  caCertPem?: string;
}

/** One look at the instance (or one failed smoke step). */
interface Observation {
  ok: boolean;
  /** Retrying cannot help (TLS trust, cross-origin redirect, wrong scheme): stop now. */
  fatal: boolean;
  /** The request was cut by the overall deadline, not by the service. */
  cutByDeadline: boolean;
  /** What we saw: "GET <url> answered 503: <excerpt>" or "GET <url> failed: <error>". */
  seen: string;
  /** Likely cause, in operator terms. */
  cause: string;
  /** Version /readyz reported, if any. */
  version?: string;
}

// ---------------------------------------------------------------- backoff

/**
 * Delay before attempt `attempt + 1`, "equal jitter": the ceiling doubles from
 * `intervalMs` up to `maxIntervalMs`, and the delay is uniformly drawn from
 * [ceiling/2, ceiling]. Never 0 (no hammering), never in lock-step with other
 * pollers.
 */
export function backoffDelayMs(attempt: number, intervalMs: number, maxIntervalMs: number, random: () => number): number {
  const exp = Math.min(Math.max(attempt - 1, 0), 30);
  const ceiling = Math.min(maxIntervalMs, intervalMs * Math.pow(2, exp));
  const r = Math.min(Math.max(random(), 0), 1);
  return ceiling / 2 + r * (ceiling / 2);
}

// ---------------------------------------------------------------- text helpers

/** Version compare key: trims and drops a leading "v". */
export function normalizeVersion(v: string): string {
  return v.trim().replace(/^v(?=\d)/, "");
}

function compareSemver(a: string, b: string): number | undefined {
  const re = /^(\d+)\.(\d+)\.(\d+)/;
  const ma = re.exec(a);
  const mb = re.exec(b);
  if (!ma || !mb) return undefined;
  for (let i = 1; i <= 3; i++) {
    const d = Number(ma[i]) - Number(mb[i]);
    if (d !== 0) return d;
  }
  return 0;
}

/** Replaces every occurrence of each secret (raw, URL-encoded and JSON-escaped forms). */
export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) {
    if (typeof s !== "string" || s.length < 4) continue;
    const forms = new Set([s, encodeURIComponent(s), JSON.stringify(s).slice(1, -1)]);
    for (const f of forms) out = out.split(f).join("[redacted]");
  }
  return out;
}

/** Single-line, printable, at most `max` characters. */
function excerpt(body: string, max = 200): string {
  // eslint-disable-next-line no-control-regex
  const flat = body.replace(/[\u0000-\u001f\u007f]+/g, " ").replace(/\s+/g, " ").trim();
  if (flat === "") return "(empty body)";
  return flat.length > max ? flat.slice(0, max) + "…" : flat;
}

/** URL for messages: no userinfo. */
function displayUrl(u: URL): string {
  const c = new URL(u.href);
  c.username = "";
  c.password = "";
  return c.href;
}

/** Base URL for messages: no userinfo, no lone trailing slash. */
function displayBase(u: URL): string {
  return displayUrl(u).replace(/\/$/, "");
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(1) + "s";
}

function endpoint(base: URL, path: string): URL {
  const u = new URL(base.href);
  u.pathname = u.pathname.replace(/\/+$/, "") + path;
  u.search = "";
  u.hash = "";
  return u;
}

/** Path segment for a server key like "t:0001": encoded, but ':' kept (a legal pchar). */
function segment(key: string): string {
  return encodeURIComponent(key).replace(/%3A/gi, ":");
}

function parseJson(body: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(body) as unknown };
  } catch {
    return { ok: false };
  }
}

function field(obj: unknown, ...path: string[]): unknown {
  let cur = obj;
  for (const p of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

function secretsOf(opts: PollOptions, base: URL): string[] {
  const out: string[] = [];
  if (opts.apiKey) out.push(opts.apiKey);
  if (base.password) {
    out.push(base.password);
    try {
      out.push(decodeURIComponent(base.password));
    } catch {
      // keep the raw form only
    }
  }
  for (const [name, value] of Object.entries(opts.headers ?? {})) {
    if (/auth|token|secret|key|cookie|session|passw|credential/i.test(name)) out.push(String(value));
  }
  return out;
}

// ---------------------------------------------------------------- HTTP

/**
 * One HTTP request with node:http / node:https (one code path for both: global
 * fetch cannot take a CA). No keep-alive (agent: false), so every poll opens a
 * fresh connection and a restarted service is seen as it is. The timeout
 * covers connect, headers and body. The body is capped at 64 KiB.
 */
function sendRequest(spec: RequestSpec): Promise<HttpResponse> {
  return new Promise<HttpResponse>((resolve, reject) => {
    // Declared before use: the closure serializer does not follow TDZ hoisting.
    const timer: { id?: ReturnType<typeof setTimeout> } = {};
    let settled = false;
    const finish = (err: Error | undefined, res?: HttpResponse): void => {
      if (settled) return;
      settled = true;
      if (timer.id !== undefined) clearTimeout(timer.id);
      if (err) reject(err);
      else if (res) resolve(res);
    };
    const headers: Record<string, string> = { ...spec.headers };
    if (spec.body !== undefined) headers["Content-Length"] = String(Buffer.byteLength(spec.body));
    const onResponse = (res: IncomingMessage): void => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (c: Buffer) => {
        if (size < 65536) {
          chunks.push(c);
          size += c.length;
        }
      });
      res.on("end", () =>
        finish(undefined, { status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString("utf8") }),
      );
      res.on("error", (e: Error) => finish(e));
      res.on("close", () => finish(Object.assign(new Error("connection closed before the response body ended"), { code: "ECONNRESET" })));
    };
    let req: import("node:http").ClientRequest;
    try {
      if (spec.url.protocol === "https:") {
        const https = process.getBuiltinModule("node:https") as HttpsModule;
        req = https.request(spec.url, { method: spec.method, headers, agent: false, ca: spec.caCertPem || undefined }, onResponse);
      } else {
        const http = process.getBuiltinModule("node:http") as HttpModule;
        req = http.request(spec.url, { method: spec.method, headers, agent: false }, onResponse);
      }
    } catch (e) {
      reject(e instanceof Error ? e : new Error(String(e)));
      return;
    }
    timer.id = setTimeout(() => {
      const err = Object.assign(new Error(`no response within ${spec.timeoutMs} ms`), { code: "REQUEST_TIMEOUT" });
      req.destroy(err);
      finish(err);
    }, Math.max(1, spec.timeoutMs));
    req.on("error", (e: Error) => finish(e));
    if (spec.body !== undefined) req.write(spec.body);
    req.end();
  });
}

/**
 * GET/POST/DELETE with the redirect policy: same-origin redirects
 * (301/302/303/307/308, same scheme+host+port) are followed for GET, at most
 * 5; a redirect to another origin is never followed (it would carry the
 * headers / API key elsewhere) and is reported as a fatal misconfiguration.
 */
async function request(spec: RequestSpec): Promise<{ res: HttpResponse; url: URL }> {
  let url = spec.url;
  for (let hop = 0; ; hop++) {
    const res = await sendRequest({ ...spec, url });
    const location = res.headers["location"];
    if (spec.method !== "GET" || ![301, 302, 303, 307, 308].includes(res.status) || typeof location !== "string") {
      return { res, url };
    }
    const next = new URL(location, url);
    if (next.origin !== url.origin) {
      throw Object.assign(new Error(`redirected (${res.status}) to another origin, ${displayUrl(next)}; not followed`), {
        code: "CROSS_ORIGIN_REDIRECT",
        target: displayUrl(next),
      });
    }
    if (hop >= 5) {
      throw Object.assign(new Error(`more than 5 redirects (last to ${displayUrl(next)})`), { code: "TOO_MANY_REDIRECTS" });
    }
    url = next;
  }
}

// ---------------------------------------------------------------- diagnosis

function errorCode(e: unknown): string {
  const c = field(e, "code");
  return typeof c === "string" ? c : "";
}

function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Network/TLS error → observation with a likely cause. */
function diagnoseError(method: string, url: URL, e: unknown, hasCa: boolean): Observation {
  const code = errorCode(e);
  const msg = errorMessage(e);
  const hostPort = `${url.hostname}:${url.port || (url.protocol === "https:" ? "443" : "80")}`;
  const seen = `${method} ${displayUrl(url)} failed: ${msg}${code && !msg.includes(code) ? ` (${code})` : ""}`;
  const o = (cause: string, fatal = false): Observation => ({ ok: false, fatal, cutByDeadline: false, seen, cause });
  switch (code) {
    case "ECONNREFUSED":
      return o(`connection refused: the service is not listening on ${hostPort} (not started yet, crashed on start, or wrong address/port)`);
    case "ECONNRESET":
    case "EPIPE":
      return o("connection reset: the service accepted the connection and dropped it (restarting, crashing, or an http/https mismatch)");
    case "REQUEST_TIMEOUT":
      return o(`no response within ${msg.replace(/^no response within /, "")}: the service is hung or overloaded, or a firewall drops the packets`);
    case "ETIMEDOUT":
      return o(`connect timed out: ${hostPort} is unreachable or a firewall drops the packets`);
    case "ENOTFOUND":
    case "EAI_AGAIN":
      return o(`DNS lookup failed for ${url.hostname}: check the hostname in url`);
    case "EHOSTUNREACH":
    case "ENETUNREACH":
    case "EHOSTDOWN":
      return o(`host unreachable: ${url.hostname} is down or no network route/firewall allows it`);
    case "DEPTH_ZERO_SELF_SIGNED_CERT":
    case "SELF_SIGNED_CERT_IN_CHAIN":
    case "UNABLE_TO_VERIFY_LEAF_SIGNATURE":
    case "UNABLE_TO_GET_ISSUER_CERT":
    case "UNABLE_TO_GET_ISSUER_CERT_LOCALLY":
    case "CERT_SIGNATURE_FAILURE":
      return o(
        hasCa
          ? `TLS certificate not trusted (${code}): the configured caCertPem did not sign the instance's certificate`
          : `TLS certificate not trusted (${code}): set caCertPem to the CA (or the self-signed certificate) the instance uses`,
        true,
      );
    case "ERR_TLS_CERT_ALTNAME_INVALID":
      return o(`TLS certificate does not cover ${url.hostname}: use a url with the host name/IP the certificate was issued for`, true);
    case "CERT_HAS_EXPIRED":
    case "CERT_NOT_YET_VALID":
      return o(`TLS certificate is outside its validity period (${code}): renew the instance's certificate or fix its clock`, true);
    case "EPROTO":
    case "ERR_SSL_WRONG_VERSION_NUMBER":
    case "ERR_SSL_PACKET_LENGTH_TOO_LONG":
      return o("TLS handshake failed: the port probably serves plain http; use an http:// url", true);
    case "CROSS_ORIGIN_REDIRECT":
      return o(`the instance redirects to another origin (${String(field(e, "target"))}): set url to that address directly`, true);
    case "TOO_MANY_REDIRECTS":
      return o("redirect loop: a proxy in front of the instance keeps redirecting", true);
    default:
      if (/PEM|certificate|ERR_OSSL/i.test(code + " " + msg) && hasCa) {
        return o("caCertPem could not be loaded: it must be a PEM certificate (-----BEGIN CERTIFICATE-----)", true);
      }
      if (/wrong version number|packet length too long/i.test(msg)) {
        return o("TLS handshake failed: the port probably serves plain http; use an http:// url", true);
      }
      return o(`network error${code ? ` (${code})` : ""}: ${msg}`);
  }
}

function answered(method: string, url: URL, res: HttpResponse): string {
  return `${method} ${displayUrl(url)} answered ${res.status}: ${excerpt(res.body)}`;
}

/** Common non-2xx causes for the health endpoints. */
function statusCause(path: string, res: HttpResponse): { cause: string; fatal: boolean } {
  if (res.status === 400 && /HTTP request to an HTTPS server/i.test(res.body)) {
    return { cause: "the port serves https: use an https:// url", fatal: true };
  }
  if (res.status === 401 || res.status === 403) {
    return { cause: `${path} was rejected with ${res.status}: an auth proxy or the ip_whitelist is in front; set headers or allow this host`, fatal: false };
  }
  if (res.status === 404) {
    return path === "/readyz"
      ? { cause: "no /readyz endpoint: a release older than 0.2.0 (without /readyz) is still running, or url points below the server root", fatal: false }
      : { cause: "/healthz not found: url must be the ProgressDB base URL (without /healthz); is something else answering on this port?", fatal: false };
  }
  if (res.status === 502 || res.status === 504) {
    return { cause: `a proxy in front of the instance answered ${res.status}: the service behind it is down or not reachable`, fatal: false };
  }
  if (res.status >= 500) {
    return { cause: `${path} answered ${res.status}: the service is up but failing`, fatal: false };
  }
  return { cause: `${path} answered ${res.status}, expected 200`, fatal: false };
}

/** One attempt: /healthz, then /readyz. */
async function probe(opts: PollOptions, base: URL, hardDeadline: number, now: () => number): Promise<Observation> {
  const expected = normalizeVersion(opts.expectedVersion);
  const headers: Record<string, string> = {
    Accept: "application/json",
    "User-Agent": "progressdb-upgrades-healthcheck",
    ...(opts.headers ?? {}),
  };
  const getJson = async (
    path: string,
  ): Promise<{ kind: "error"; obs: Observation } | { kind: "res"; res: HttpResponse; url: URL; json: unknown; isJson: boolean }> => {
    const url = endpoint(base, path);
    const left = hardDeadline - now();
    const budget = Math.max(1, Math.min(opts.requestTimeoutMs, left));
    try {
      const { res, url: finalUrl } = await request({ url, method: "GET", headers, timeoutMs: budget, caCertPem: opts.caCertPem });
      const parsed = parseJson(res.body);
      return { kind: "res", res, url: finalUrl, json: parsed.ok ? parsed.value : undefined, isJson: parsed.ok };
    } catch (e) {
      const obs = diagnoseError("GET", url, e, Boolean(opts.caCertPem));
      obs.cutByDeadline = errorCode(e) === "REQUEST_TIMEOUT" && budget < opts.requestTimeoutMs;
      return { kind: "error", obs };
    }
  };
  const fail = (seen: string, cause: string, fatal = false, version?: string): Observation => ({
    ok: false,
    fatal,
    cutByDeadline: false,
    seen,
    cause,
    version,
  });

  const h = await getJson("/healthz");
  if (h.kind === "error") return h.obs;
  if (h.res.status !== 200) {
    const sc = statusCause("/healthz", h.res);
    return fail(answered("GET", h.url, h.res), sc.cause, sc.fatal);
  }
  if (!h.isJson) {
    return fail(answered("GET", h.url, h.res), "/healthz answered 200 but not with JSON: url may point at another service or a proxy page");
  }
  const hs = field(h.json, "status");
  if (hs !== "ok") {
    return fail(answered("GET", h.url, h.res), `/healthz reports status ${JSON.stringify(hs ?? null)}, expected "ok"`);
  }

  const r = await getJson("/readyz");
  if (r.kind === "error") return r.obs;
  const reported = field(r.json, "version");
  const version = typeof reported === "string" ? reported : undefined;
  if (r.res.status === 503) {
    return fail(
      answered("GET", r.url, r.res),
      "/readyz answered 503: the service is up but its store is not open yet (still starting or migrating data)",
      false,
      version,
    );
  }
  if (r.res.status !== 200) {
    const sc = statusCause("/readyz", r.res);
    return fail(answered("GET", r.url, r.res), sc.cause, sc.fatal, version);
  }
  if (!r.isJson) {
    return fail(answered("GET", r.url, r.res), "/readyz answered 200 but not with JSON: url may point at another service or a proxy page");
  }
  const rs = field(r.json, "status");
  if (rs !== "ok") {
    return fail(answered("GET", r.url, r.res), `/readyz reports status ${JSON.stringify(rs ?? null)}, expected "ok"`, false, version);
  }
  if (version === undefined || version.trim() === "") {
    return fail(answered("GET", r.url, r.res), "/readyz did not report a version: a release without version reporting is running");
  }
  if (normalizeVersion(version) !== expected) {
    const cmp = compareSemver(normalizeVersion(version), expected);
    const cause =
      cmp !== undefined && cmp > 0
        ? `answering ${version}, newer than the expected ${opts.expectedVersion}: another deployment replaced it, or expectedVersion is stale`
        : `still answering ${version}: the old binary is running (expected ${opts.expectedVersion}); the new one was not installed/restarted, or it failed and the old one came back`;
    return fail(answered("GET", r.url, r.res), cause, false, version);
  }
  return { ok: true, fatal: false, cutByDeadline: false, seen: answered("GET", r.url, r.res), cause: "", version };
}

// ---------------------------------------------------------------- smoke test

/**
 * The API smoke test, per openapi.yaml (v0.2.0): a backend key in X-API-Key
 * plus X-User-ID (backend callers "may omit X-User-Signature and instead set
 * X-User-ID"). Creates a thread, posts a message, reads it back (mutations are
 * asynchronous: 202, so reads are retried briefly), then deletes the message
 * and the thread — the deletes run even when an earlier step failed.
 * Returns "" on success, or the failure text (not yet scrubbed).
 */
async function runSmokeTest(
  opts: PollOptions,
  base: URL,
  now: () => number,
  sleep: (ms: number) => Promise<void>,
  random: () => number,
): Promise<string> {
  const started = now();
  const deadline = started + (opts.smokeTimeoutMs ?? 30000);
  const nonce = globalThis.crypto.randomUUID();
  const text = `progressdb-upgrades smoke test ${nonce}`;
  const headers: Record<string, string> = {
    Accept: "application/json",
    "User-Agent": "progressdb-upgrades-healthcheck",
    ...(opts.headers ?? {}),
    "X-API-Key": opts.apiKey ?? "",
    "X-User-ID": opts.smokeUserId ?? "progressdb-upgrades-smoke",
  };
  const retryBase = Math.min(opts.intervalMs, 500);

  type Step = { ok: true; res: HttpResponse; json: unknown } | { ok: false; obs: Observation };
  /** One API request; cleanup calls pass `withinBudget = false` so they get a full request timeout even after the deadline. */
  const call = async (method: string, path: string, body: unknown, okStatuses: number[], withinBudget = true): Promise<Step> => {
    const url = endpoint(base, path);
    const h = { ...headers };
    if (body !== undefined) h["Content-Type"] = "application/json";
    const budget = withinBudget ? Math.max(1, Math.min(opts.requestTimeoutMs, deadline - now())) : opts.requestTimeoutMs;
    try {
      const { res, url: finalUrl } = await request({
        url,
        method,
        headers: h,
        body: body === undefined ? undefined : JSON.stringify(body),
        timeoutMs: budget,
        caCertPem: opts.caCertPem,
      });
      const parsed = parseJson(res.body);
      if (okStatuses.includes(res.status)) return { ok: true, res, json: parsed.ok ? parsed.value : undefined };
      let cause = `expected ${okStatuses.join("/")}`;
      if (res.status === 401 || res.status === 403) {
        cause = `the API key was rejected (${res.status}): apiKey must be a backend key (sent as X-API-Key, with X-User-ID)`;
      } else if (res.status === 400 || res.status === 422) {
        cause = `the service rejected the request as invalid (${res.status}): does this instance serve the v0.2 frontend/v1 API?`;
      } else if (res.status === 404) {
        cause = "not found: the thread/message is not there (the write was lost or not applied yet)";
      } else if (res.status >= 500) {
        cause = `the service failed the request (${res.status}): check its logs`;
      }
      return { ok: false, obs: { ok: false, fatal: false, cutByDeadline: false, seen: answered(method, finalUrl, res), cause } };
    } catch (e) {
      return { ok: false, obs: diagnoseError(method, url, e, Boolean(opts.caCertPem)) };
    }
  };
  /** Repeats `fn` while it asks to and time is left (asynchronous writes). */
  const retrying = async (fn: () => Promise<Step & { retry?: boolean }>): Promise<Step> => {
    for (let n = 1; ; n++) {
      const s = await fn();
      const delay = backoffDelayMs(n, retryBase, 2000, random);
      // Stop while the last answer is still the informative one (not a request cut short by the deadline).
      if (s.ok || !s.retry || deadline - now() < delay + Math.min(opts.requestTimeoutMs, 100)) return s;
      await sleep(delay);
    }
  };

  let threadKey: string | undefined;
  let messageKey: string | undefined;
  const failed = (step: string, obs: Observation): string =>
    `smoke test failed at step "${step}": ${obs.seen}\nLikely cause: ${obs.cause}`;

  const steps = async (): Promise<string> => {
    const t = await call("POST", "/frontend/v1/threads", { title: text }, [200, 201, 202]);
    if (!t.ok) return failed("create thread", t.obs);
    const key = field(t.json, "key") ?? field(t.json, "thread", "key");
    if (typeof key !== "string" || key === "") {
      return failed("create thread", {
        ...noObs(),
        seen: answered("POST", endpoint(base, "/frontend/v1/threads"), t.res),
        cause: "the response has no thread key ({\"key\": ...} per openapi.yaml)",
      });
    }
    threadKey = key;
    const messagesPath = `/frontend/v1/threads/${segment(threadKey)}/messages`;

    const m = await retrying(async () => {
      const s = await call("POST", messagesPath, { body: { text } }, [200, 201, 202]);
      // The thread creation is queued: a 404 right after it is not yet a failure.
      return !s.ok && s.obs.seen.includes(" answered 404") ? { ...s, retry: true } : s;
    });
    if (!m.ok) return failed("post message", m.obs);
    const mk = field(m.json, "message", "key") ?? field(m.json, "key") ?? field(m.json, "message", "id") ?? field(m.json, "id");
    if (typeof mk === "string" && mk !== "") messageKey = mk;

    const rb = await retrying(async () => {
      const s = await call("GET", messagesPath, undefined, [200]);
      if (!s.ok) return s.obs.seen.includes(" answered 404") ? { ...s, retry: true } : s;
      const list = field(s.json, "messages");
      const found = Array.isArray(list) ? list.find((x) => field(x, "body", "text") === text) : undefined;
      if (found !== undefined) {
        const fk = field(found, "key") ?? field(found, "id");
        if (typeof fk === "string" && fk !== "") messageKey = fk;
        return s;
      }
      return {
        ok: false as const,
        retry: true,
        obs: {
          ...noObs(),
          seen: answered("GET", endpoint(base, messagesPath), s.res),
          cause: "the posted message never appeared in the thread: writes are accepted but not applied (check the service's queue/store)",
        },
      };
    });
    if (!rb.ok) return failed("read message back", rb.obs);
    return "";
  };

  let failure: string;
  try {
    failure = await steps();
  } catch (e) {
    failure = `smoke test failed: ${errorMessage(e)}`;
  }
  // Clean up whatever was created, even after a failure.
  const cleanup: string[] = [];
  if (threadKey !== undefined) {
    const threadPath = `/frontend/v1/threads/${segment(threadKey)}`;
    if (messageKey !== undefined) {
      const d = await call("DELETE", `${threadPath}/messages/${segment(messageKey)}`, undefined, [200, 202, 204, 404], false);
      if (!d.ok) cleanup.push(`could not delete message ${messageKey}: ${d.obs.seen}`);
    }
    const dt = await call("DELETE", threadPath, undefined, [200, 202, 204], false);
    if (!dt.ok) cleanup.push(`could not delete thread ${threadKey} (delete it by hand): ${dt.obs.seen}`);
  }
  if (cleanup.length > 0) {
    failure = (failure ? failure + "\n" : 'smoke test failed at step "clean up"\n') + "Cleanup: " + cleanup.join("; ");
  } else if (failure && threadKey !== undefined) {
    failure += `\nCleanup: thread ${threadKey} deleted.`;
  }
  return failure;
}

function noObs(): Observation {
  return { ok: false, fatal: false, cutByDeadline: false, seen: "", cause: "" };
}

// ---------------------------------------------------------------- the poll

/**
 * Polls `opts.url` until /healthz answers {"status":"ok"} and /readyz answers
 * {"status":"ok","version":<expectedVersion>}; then, if asked, runs the smoke
 * test. Never throws for a health failure: returns `ok: false` with one
 * readable message (URL, wait, attempts, last response, likely cause).
 *
 * Timing: attempt 1 is immediate; between attempts the delay is
 * `backoffDelayMs` clamped to the time left; an attempt may start up to the
 * deadline and its requests are cut `intervalMs` after it, so the whole poll
 * ends within [timeoutMs, timeoutMs + intervalMs] (+ scheduling noise) unless
 * it succeeds or hits a fatal error first.
 */
export async function runHealthCheck(opts: PollOptions, deps: PollDeps = {}): Promise<HealthOutcome> {
  const now = deps.now ?? (() => Date.now());
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const random = deps.random ?? Math.random;
  const start = now();
  const base = new URL(opts.url);
  const secrets = secretsOf(opts, base);
  const deadline = start + opts.timeoutMs;
  const hardDeadline = deadline + opts.intervalMs;
  const maxInterval = opts.maxIntervalMs ?? opts.intervalMs * 4;

  let attempts = 0;
  let last: Observation | undefined;
  let lastVersion = "";
  for (;;) {
    attempts++;
    const obs = await probe(opts, base, hardDeadline, now);
    if (obs.version !== undefined) lastVersion = obs.version;
    if (obs.ok) {
      let smokeResult: HealthOutcome["smokeResult"] = "skipped";
      let message = "";
      if (opts.smokeTest) {
        const failure = await runSmokeTest(opts, base, now, sleep, random);
        smokeResult = failure ? "failed" : "passed";
        if (failure) message = scrubSecrets(`health check of ${displayBase(base)}: healthy at ${obs.version}, but the ${failure}`, secrets);
      }
      const end = now();
      return {
        ok: message === "",
        reportedVersion: obs.version ?? "",
        attempts,
        elapsedMs: end - start,
        checkedAt: new Date(end).toISOString(),
        smokeResult,
        message,
      };
    }
    // Keep the more informative earlier observation if this one was only cut by our own deadline.
    if (!(obs.cutByDeadline && last !== undefined)) last = obs;
    const remaining = deadline - now();
    if (obs.fatal || remaining <= 0) break;
    await sleep(Math.min(backoffDelayMs(attempts, opts.intervalMs, maxInterval, random), remaining));
  }
  const end = now();
  const elapsed = end - start;
  const seen = last ?? noObs();
  const head = seen.fatal
    ? `health check of ${displayBase(base)} failed: gave up after ${seconds(elapsed)} and ${attempts} attempt${attempts === 1 ? "" : "s"} (not retried: waiting cannot fix this)`
    : `health check of ${displayBase(base)} failed: not healthy at version ${opts.expectedVersion} after waiting ${seconds(elapsed)} (timeout ${seconds(opts.timeoutMs)}), ${attempts} attempt${attempts === 1 ? "" : "s"}`;
  const message = scrubSecrets(`${head}\nLast seen: ${seen.seen}\nLikely cause: ${seen.cause}`, secrets);
  return {
    ok: false,
    reportedVersion: lastVersion,
    attempts,
    elapsedMs: elapsed,
    checkedAt: new Date(end).toISOString(),
    smokeResult: opts.smokeTest ? "not-run" : "skipped",
    message,
  };
}

/** Throwing form for create/update: resolves when healthy, rejects with the one readable message. */
export async function pollUntilHealthy(opts: PollOptions, deps: PollDeps = {}): Promise<PollResult> {
  const o = await runHealthCheck(opts, deps);
  if (!o.ok) throw new Error(o.message);
  return {
    status: "healthy",
    reportedVersion: o.reportedVersion,
    attempts: o.attempts,
    elapsedMs: o.elapsedMs,
    checkedAt: o.checkedAt,
    smokeResult: o.smokeResult === "passed" ? "passed" : "skipped",
  };
}

// ---------------------------------------------------------------- provider helpers (pure)

/** Provider inputs as they reach the dynamic provider (secrets already unwrapped). */
export type HealthInputs = Record<string, unknown>;

/** The input keys (kept in the outputs so `read` can re-check and return them as inputs). */
export function inputKeys(): string[] {
  return [
    "url",
    "expectedVersion",
    "deploymentId",
    "timeoutSeconds",
    "intervalSeconds",
    "requestTimeoutSeconds",
    "headers",
    "caCertPem",
    "smokeTest",
    "providerVersion",
  ];
}

function isUnknown(v: unknown): boolean {
  // The engine's placeholder for values not known during preview.
  return v === "04da6b54-80e4-46f7-96ec-b56ff0331ba9";
}

function num(v: unknown, dflt: number): number {
  return typeof v === "number" && Number.isFinite(v) ? v : dflt;
}

/** Inputs (seconds, defaults) → PollOptions (milliseconds). */
export function optionsFromInputs(inputs: HealthInputs): PollOptions {
  const headers: Record<string, string> = {};
  const h = inputs["headers"];
  if (h && typeof h === "object") {
    for (const [k, v] of Object.entries(h as Record<string, unknown>)) headers[k] = String(v);
  }
  const ca = inputs["caCertPem"];
  const key = inputs["apiKey"];
  return {
    url: String(inputs["url"]),
    expectedVersion: String(inputs["expectedVersion"]),
    timeoutMs: Math.round(num(inputs["timeoutSeconds"], 120) * 1000),
    intervalMs: Math.round(num(inputs["intervalSeconds"], 2) * 1000),
    requestTimeoutMs: Math.round(num(inputs["requestTimeoutSeconds"], 5) * 1000),
    headers,
    caCertPem: typeof ca === "string" && ca !== "" ? ca : undefined,
    smokeTest: inputs["smokeTest"] === true,
    apiKey: typeof key === "string" && key !== "" ? key : undefined,
  };
}

/** The state written after a check: the inputs (never apiKey) plus the results. */
export function outputsFrom(inputs: HealthInputs, r: HealthOutcome | PollResult): Record<string, unknown> {
  const outs: Record<string, unknown> = {};
  for (const k of inputKeys()) if (inputs[k] !== undefined && inputs[k] !== null) outs[k] = inputs[k];
  const ok = "ok" in r ? r.ok : true;
  outs["status"] = ok ? "healthy" : "unhealthy";
  outs["reportedVersion"] = r.reportedVersion;
  outs["attempts"] = r.attempts;
  outs["elapsedMs"] = r.elapsedMs;
  outs["checkedAt"] = r.checkedAt;
  outs["smokeResult"] = r.smokeResult;
  outs["message"] = "message" in r ? r.message : "";
  return outs;
}

/** `check`: one failure per bad field, naming it and the fix. Unknown (preview) values are skipped. */
export function validateInputs(news: HealthInputs): { property: string; reason: string }[] {
  const failures: { property: string; reason: string }[] = [];
  const url = news["url"];
  if (!isUnknown(url)) {
    let parsed: URL | undefined;
    try {
      parsed = typeof url === "string" ? new URL(url) : undefined;
    } catch {
      parsed = undefined;
    }
    if (!parsed || (parsed.protocol !== "http:" && parsed.protocol !== "https:")) {
      failures.push({ property: "url", reason: `url must be an http:// or https:// base URL such as http://10.0.0.5:8080 (got ${JSON.stringify(url ?? null)})` });
    } else if (/\/(healthz|readyz)\/?$/.test(parsed.pathname)) {
      failures.push({ property: "url", reason: `url must be the base URL without ${parsed.pathname.replace(/^.*(\/(healthz|readyz)).*$/, "$1")} (got ${displayUrl(parsed)})` });
    } else if (parsed.search || parsed.hash) {
      failures.push({ property: "url", reason: "url must not have a query string or fragment" });
    }
  }
  const ev = news["expectedVersion"];
  if (!isUnknown(ev) && (typeof ev !== "string" || ev.trim() === "")) {
    failures.push({ property: "expectedVersion", reason: "expectedVersion must be a non-empty version such as \"0.2.0\"" });
  }
  const dep = news["deploymentId"];
  if (!isUnknown(dep) && typeof dep !== "string") {
    failures.push({ property: "deploymentId", reason: "deploymentId must be a string (e.g. the install command's id)" });
  }
  for (const k of ["timeoutSeconds", "intervalSeconds", "requestTimeoutSeconds"]) {
    const v = news[k];
    if (v === undefined || isUnknown(v)) continue;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
      failures.push({ property: k, reason: `${k} must be a number of seconds greater than 0 (got ${JSON.stringify(v)})` });
    }
  }
  const headers = news["headers"];
  if (headers !== undefined && !isUnknown(headers)) {
    if (headers === null || typeof headers !== "object" || Array.isArray(headers)) {
      failures.push({ property: "headers", reason: "headers must be a map of header name to string value" });
    } else {
      for (const [name, value] of Object.entries(headers as Record<string, unknown>)) {
        if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
          failures.push({ property: "headers", reason: `headers: ${JSON.stringify(name)} is not a valid HTTP header name` });
        } else if (typeof value !== "string" && !isUnknown(value)) {
          failures.push({ property: "headers", reason: `headers.${name} must be a string` });
        } else if (typeof value === "string" && /[\r\n]/.test(value)) {
          failures.push({ property: "headers", reason: `headers.${name} must not contain line breaks` });
        }
      }
    }
  }
  const ca = news["caCertPem"];
  if (ca !== undefined && ca !== "" && !isUnknown(ca) && (typeof ca !== "string" || !ca.includes("-----BEGIN CERTIFICATE-----"))) {
    failures.push({ property: "caCertPem", reason: "caCertPem must be a PEM certificate (-----BEGIN CERTIFICATE----- …)" });
  }
  const key = news["apiKey"];
  if (news["smokeTest"] === true && (key === undefined || key === null || key === "")) {
    failures.push({
      property: "apiKey",
      reason: "apiKey (a backend API key, as a secret) is required when smokeTest is true — set it with: pulumi config set --secret progressdb:apiKey <key>",
    });
  }
  return failures;
}

function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a ?? null) === JSON.stringify(b ?? null);
}

/**
 * `diff`: a new version, deployment or URL is a different thing to prove →
 * replace; any other setting (timeouts, headers, CA, smoke test, provider
 * code version) → update, i.e. re-check in place; a state that `read` found
 * unhealthy → update too, so the next `pulumi up` re-checks it.
 */
export function diffInputs(olds: HealthInputs, news: HealthInputs): { changes: boolean; replaces: string[]; deleteBeforeReplace: boolean } {
  const replaceKeys = ["url", "expectedVersion", "deploymentId"];
  const replaces = replaceKeys.filter((k) => !same(olds[k], news[k]));
  const defaults: Record<string, unknown> = { timeoutSeconds: 120, intervalSeconds: 2, requestTimeoutSeconds: 5, smokeTest: false };
  const updateKeys = inputKeys().filter((k) => !replaceKeys.includes(k));
  const updated = updateKeys.some((k) => !same(olds[k] ?? defaults[k], news[k] ?? defaults[k]));
  const unhealthy = olds["status"] !== undefined && olds["status"] !== "healthy";
  return { changes: replaces.length > 0 || updated || unhealthy, replaces, deleteBeforeReplace: false };
}
