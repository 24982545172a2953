// HTTP for the health and snapshot providers: one request function for http
// and https, the redirect policy, error diagnosis, the API call with its
// 429 back-off, and the text helpers every message goes through.
//
// Serialized INTO the dynamic-provider closures (see ./index.ts for the rules):
// only globals (URL, setTimeout, Buffer, JSON, Math, crypto,
// process.getBuiltinModule), type-only imports, no exported consts used in
// functions, no classes.

type HttpModule = typeof import("node:http");
type HttpsModule = typeof import("node:https");
type IncomingMessage = import("node:http").IncomingMessage;

export interface HttpResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
  /** The body was longer than the cap and was cut (not valid JSON any more). */
  truncated: boolean;
}

export interface RequestSpec {
  url: URL;
  method: string;
  headers: Record<string, string>;
  body?: string;
  timeoutMs: number;
  caCertPem?: string;
  /** Body cap. Defaults to 64 KiB (health answers are tiny; data reads pass more). */
  maxBodyBytes?: number;
}

/** One look at the instance (or one failed API step). */
export interface Observation {
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

export function noObs(): Observation {
  return { ok: false, fatal: false, cutByDeadline: false, seen: "", cause: "" };
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
export function excerpt(body: string, max = 200): string {
  // eslint-disable-next-line no-control-regex
  const flat = body.replace(/[\u0000-\u001f\u007f]+/g, " ").replace(/\s+/g, " ").trim();
  if (flat === "") return "(empty body)";
  return flat.length > max ? flat.slice(0, max) + "…" : flat;
}

/** URL for messages: no userinfo. */
export function displayUrl(u: URL): string {
  const c = new URL(u.href);
  c.username = "";
  c.password = "";
  return c.href;
}

/** Base URL for messages: no userinfo, no lone trailing slash. */
export function displayBase(u: URL): string {
  return displayUrl(u).replace(/\/$/, "");
}

export function seconds(ms: number): string {
  return (ms / 1000).toFixed(1) + "s";
}

/** `path` below the base URL's path, with an optional query (values URL-encoded). */
export function endpoint(base: URL, path: string, query?: Record<string, string>): URL {
  const u = new URL(base.href);
  u.pathname = u.pathname.replace(/\/+$/, "") + path;
  u.search = "";
  u.hash = "";
  for (const [k, v] of Object.entries(query ?? {})) u.searchParams.set(k, v);
  return u;
}

/** Path segment for a server key like "t:0001": encoded, but ':' kept (a legal pchar). */
export function segment(key: string): string {
  return encodeURIComponent(key).replace(/%3A/gi, ":");
}

export function parseJson(body: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(body) as unknown };
  } catch {
    return { ok: false };
  }
}

export function field(obj: unknown, ...path: string[]): unknown {
  let cur = obj;
  for (const p of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return cur;
}

/** Header names whose values are credentials (scrubbed from every message). */
export function isSecretHeader(name: string): boolean {
  return /auth|token|secret|key|cookie|session|passw|credential/i.test(name);
}

/** Everything that must never appear in a message: keys, URL password, credential headers. */
export function secretsFor(base: URL, keys: readonly (string | undefined)[], headers: Record<string, string> | undefined): string[] {
  const out: string[] = [];
  for (const k of keys) if (k) out.push(k);
  if (base.password) {
    out.push(base.password);
    try {
      out.push(decodeURIComponent(base.password));
    } catch {
      // keep the raw form only
    }
  }
  for (const [name, value] of Object.entries(headers ?? {})) if (isSecretHeader(name)) out.push(String(value));
  return out;
}

// ---------------------------------------------------------------- HTTP

/**
 * One HTTP request with node:http / node:https (one code path for both: global
 * fetch cannot take a CA). No keep-alive (agent: false), so every poll opens a
 * fresh connection and a restarted service is seen as it is. The timeout
 * covers connect, headers and body. The body is capped (`maxBodyBytes`).
 */
export function sendRequest(spec: RequestSpec): Promise<HttpResponse> {
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
    const cap = spec.maxBodyBytes ?? 65536;
    const headers: Record<string, string> = { ...spec.headers };
    if (spec.body !== undefined) headers["Content-Length"] = String(Buffer.byteLength(spec.body));
    const onResponse = (res: IncomingMessage): void => {
      const chunks: Buffer[] = [];
      let size = 0;
      let truncated = false;
      res.on("data", (c: Buffer) => {
        if (size < cap) {
          chunks.push(c);
          size += c.length;
        } else {
          truncated = true;
        }
      });
      res.on("end", () => {
        let body = Buffer.concat(chunks);
        if (body.length > cap) {
          body = body.subarray(0, cap);
          truncated = true;
        }
        finish(undefined, { status: res.statusCode ?? 0, headers: res.headers, body: body.toString("utf8"), truncated });
      });
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
export async function request(spec: RequestSpec): Promise<{ res: HttpResponse; url: URL }> {
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

export function errorCode(e: unknown): string {
  const c = field(e, "code");
  return typeof c === "string" ? c : "";
}

export function errorMessage(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Network/TLS error → observation with a likely cause. */
export function diagnoseError(method: string, url: URL, e: unknown, hasCa: boolean): Observation {
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

export function answered(method: string, url: URL, res: HttpResponse): string {
  return `${method} ${displayUrl(url)} answered ${res.status}: ${excerpt(res.body)}`;
}

// ---------------------------------------------------------------- API calls

/** What every ProgressDB API call needs. Times are milliseconds (epoch for `deadline`). */
export interface ApiContext {
  base: URL;
  /** Extra headers (an auth proxy's), sent first; ours win on a clash. */
  headers?: Record<string, string>;
  requestTimeoutMs: number;
  caCertPem?: string;
  /** No new request (nor 429 wait) starts after this. */
  deadline: number;
  now: () => number;
  sleep: (ms: number) => Promise<void>;
  random: () => number;
}

export interface ApiCallOptions {
  /** API key, sent as X-API-Key (leaves Authorization to a proxy in `headers`). */
  key?: string;
  /** X-User-ID (ASCII only; data reads pass the author as ?author= instead). */
  userId?: string;
  query?: Record<string, string>;
  body?: unknown;
  okStatuses: number[];
  /** Cleanup calls pass false: a full request timeout even after the deadline, and no 429 waits. */
  withinBudget?: boolean;
  maxBodyBytes?: number;
}

export type ApiResult =
  | { ok: true; res: HttpResponse; url: URL; json: unknown }
  | { ok: false; obs: Observation; res?: HttpResponse; url: URL };

/**
 * One API request. A 429 (rate limit) is waited out — Retry-After if given,
 * else a backoff from 250 ms to 2 s — while the budget lasts, so a sample read
 * stays polite on a 0.1.x instance with its default 5 rps. Any other status
 * outside `okStatuses` is returned as an observation for the caller to word.
 */
export async function apiCall(ctx: ApiContext, method: string, path: string, o: ApiCallOptions): Promise<ApiResult> {
  const url = endpoint(ctx.base, path, o.query);
  const headers: Record<string, string> = {
    Accept: "application/json",
    "User-Agent": "progressdb-upgrades-healthcheck",
    ...(ctx.headers ?? {}),
  };
  if (o.key !== undefined) headers["X-API-Key"] = o.key;
  if (o.userId !== undefined) headers["X-User-ID"] = o.userId;
  if (o.body !== undefined) headers["Content-Type"] = "application/json";
  const withinBudget = o.withinBudget ?? true;
  for (let attempt = 1; ; attempt++) {
    const left = ctx.deadline - ctx.now();
    const budget = withinBudget ? Math.max(1, Math.min(ctx.requestTimeoutMs, left)) : ctx.requestTimeoutMs;
    let res: HttpResponse;
    let finalUrl: URL;
    try {
      const r = await request({
        url,
        method,
        headers,
        body: o.body === undefined ? undefined : JSON.stringify(o.body),
        timeoutMs: budget,
        caCertPem: ctx.caCertPem,
        maxBodyBytes: o.maxBodyBytes,
      });
      res = r.res;
      finalUrl = r.url;
    } catch (e) {
      const obs = diagnoseError(method, url, e, Boolean(ctx.caCertPem));
      obs.cutByDeadline = errorCode(e) === "REQUEST_TIMEOUT" && budget < ctx.requestTimeoutMs;
      return { ok: false, obs, url };
    }
    if (res.status === 429 && withinBudget) {
      const ra = Number(res.headers["retry-after"]);
      const wait = Number.isFinite(ra) && ra > 0 ? Math.min(ra * 1000, 5000) : backoffDelayMs(attempt, 250, 2000, ctx.random);
      if (ctx.deadline - ctx.now() > wait + 50) {
        await ctx.sleep(wait);
        continue;
      }
    }
    if (o.okStatuses.includes(res.status)) {
      if (res.truncated) {
        return {
          ok: false,
          res,
          url: finalUrl,
          obs: { ...noObs(), seen: answered(method, finalUrl, res), cause: `the response is larger than ${o.maxBodyBytes ?? 65536} bytes (not read in full)` },
        };
      }
      const parsed = parseJson(res.body);
      return { ok: true, res, url: finalUrl, json: parsed.ok ? parsed.value : undefined };
    }
    let cause = `expected ${o.okStatuses.join("/")}`;
    if (res.status === 429) cause = "rate limited (429) for the whole budget: raise the service's rate limit or the timeout";
    else if (res.status >= 500) cause = `the service failed the request (${res.status}): check its logs`;
    return { ok: false, res, url: finalUrl, obs: { ...noObs(), seen: answered(method, finalUrl, res), cause } };
  }
}
