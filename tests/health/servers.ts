// Loopback HTTP/HTTPS servers for the HealthCheck tests: started and stopped
// by each test, record every request, and can be killed mid-request.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach } from "vitest";

export interface RecordedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export type Handler = (req: RecordedRequest, res: http.ServerResponse) => void;

export interface TestServer {
  port: number;
  /** Base URL, e.g. http://127.0.0.1:41234 */
  url: string;
  requests: RecordedRequest[];
  close(): Promise<void>;
}

export interface ServeOptions {
  tls?: { key: string; cert: string };
  /** Listen on this port (e.g. one a poll is already hammering). */
  port?: number;
}

export async function serve(handler: Handler, opts: ServeOptions = {}): Promise<TestServer> {
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();
  const onRequest = (req: http.IncomingMessage, res: http.ServerResponse): void => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const rec: RecordedRequest = {
        method: req.method ?? "",
        path: req.url ?? "",
        headers: req.headers,
        body: Buffer.concat(chunks).toString("utf8"),
      };
      requests.push(rec);
      handler(rec, res);
    });
  };
  const server = opts.tls ? https.createServer({ key: opts.tls.key, cert: opts.tls.cert }, onRequest) : http.createServer(onRequest);
  server.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  // Quiet TLS handshake failures from clients that (correctly) refuse the cert.
  server.on("tlsClientError", () => undefined);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port ?? 0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    url: `${opts.tls ? "https" : "http"}://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A port nobody listens on (bound then released). */
export async function freePort(): Promise<number> {
  const s = http.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

export function json(res: http.ServerResponse, status: number, body: unknown): void {
  const text = typeof body === "string" ? body : JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(text) });
  res.end(text);
}

export interface FakeProgressDbOptions {
  /** Version /readyz reports. Defaults to "0.2.0". */
  version?: string;
  /** /readyz answers 503 for this many requests first. */
  notReadyFor?: number;
}

/** /healthz + /readyz like ProgressDB v0.2.0; 404 elsewhere. */
export function fakeProgressDb(o: FakeProgressDbOptions = {}): Handler {
  let readyCalls = 0;
  return (req, res) => {
    if (req.method === "GET" && req.path === "/healthz") return json(res, 200, { status: "ok" });
    if (req.method === "GET" && req.path === "/readyz") {
      readyCalls++;
      if (readyCalls <= (o.notReadyFor ?? 0)) return json(res, 503, { status: "starting" });
      return json(res, 200, { status: "ok", version: o.version ?? "0.2.0" });
    }
    json(res, 404, { error: "not found" });
  };
}

export interface FakeApi {
  handler: Handler;
  threads: Map<string, { title: string; author: string; deleted: boolean }>;
  /** Keyed by the stored key (the provisional key + ":000000000", as 0.2.1 stores it). */
  messages: Map<string, { thread: string; body: unknown; author: string; deleted: boolean }>;
}

/**
 * The 0.2.x /frontend/v1 API as the real 0.2.1 answers it (shapes verified on
 * the binary): a backend key in X-API-Key with the author as X-User-ID or
 * ?author= (a body author gets 400); POST → 202 {"key"}; a message is stored
 * under its provisional key + ":000000000"; GET lists carry "pagination";
 * DELETE → 202 {"key"}. Writes are asynchronous: a posted message is
 * visible from the second read of its thread on (never, with `loseMessages`). `fail` makes
 * one route answer an error (echoing the request's X-API-Key, as a careless
 * server might). /admin/stats and /admin/users take `adminKey` only.
 */
export function fakeApi(
  version: string,
  apiKey: string,
  fail?: { method: string; pathPattern: RegExp; status: number },
  /** Accept message writes (202) but never apply them. */
  loseMessages = false,
  adminKey = "ak_fake_admin_key",
): FakeApi {
  const health = fakeProgressDb({ version });
  const threads = new Map<string, { title: string; author: string; deleted: boolean }>();
  const messages = new Map<string, { thread: string; body: unknown; author: string; deleted: boolean }>();
  /** Posted but not applied yet: hidden from the next read of their thread (for ever with `loseMessages`). */
  const unapplied = new Set<string>();
  let seq = 0;
  const page = (count: number) => ({ before_anchor: "", after_anchor: "", has_before: false, has_after: false, count, total: count });
  const handler: Handler = (req, res) => {
    if (req.path === "/healthz" || req.path === "/readyz") return health(req, res);
    if (fail && req.method === fail.method && fail.pathPattern.test(req.path)) {
      return json(res, fail.status, { error: `request failed for key ${String(req.headers["x-api-key"])}`, headers: req.headers });
    }
    const key = req.headers["x-api-key"];
    const url = new URL(req.path, "http://x");
    if (url.pathname.startsWith("/admin/")) {
      if (key === apiKey) return json(res, 403, { error: "forbidden" });
      if (key !== adminKey) return json(res, 401, { error: "unauthorized" });
      if (url.pathname === "/admin/stats") {
        return json(res, 200, { threads: threads.size, messages: messages.size });
      }
      if (url.pathname === "/admin/users") {
        const users = [...new Set([...threads.values()].map((t) => t.author))].sort();
        return json(res, 200, { users, pagination: page(users.length) });
      }
      return json(res, 404, "404 page not found");
    }
    if (key === adminKey) return json(res, 403, { error: "forbidden" });
    if (key !== apiKey) return json(res, 401, { error: "unauthorized" });
    const body = req.body ? (JSON.parse(req.body) as Record<string, unknown>) : {};
    if (body["author"] !== undefined) return json(res, 400, { error: "author required for backend requests" });
    const user = req.headers["x-user-id"] ?? url.searchParams.get("author") ?? "";
    if (typeof user !== "string" || user === "") return json(res, 400, { error: "author required for backend requests" });
    const parts = url.pathname.split("/").map((p) => decodeURIComponent(p));
    // ["", "frontend", "v1", "threads", key?, "messages"?, id?]
    if (parts[1] !== "frontend" || parts[2] !== "v1" || parts[3] !== "threads") return json(res, 404, "404 page not found");
    const tk = parts[4];
    if (tk === undefined) {
      if (req.method === "GET") {
        const own = [...threads.entries()].filter(([, t]) => t.author === user && !t.deleted).map(([k, t]) => ({ key: k, title: t.title, author: t.author }));
        return json(res, 200, { threads: own.reverse(), pagination: page(own.length) });
      }
      if (req.method !== "POST") return json(res, 405, { error: "method" });
      const k = `t:${String(++seq).padStart(8, "0")}`;
      threads.set(k, { title: String(body["title"] ?? ""), author: user, deleted: false });
      return json(res, 202, { key: k });
    }
    const thread = threads.get(tk);
    if (!thread || thread.deleted) return json(res, 404, { error: "thread not found" });
    if (thread.author !== user) return json(res, 403, { error: "access denied" });
    if (parts[5] === undefined) {
      if (req.method === "DELETE") {
        thread.deleted = true;
        return json(res, 202, { key: tk });
      }
      return json(res, 200, { thread: { key: tk, ...thread } });
    }
    if (parts[5] !== "messages") return json(res, 404, "404 page not found");
    const mid = parts[6];
    if (mid === undefined && req.method === "POST") {
      const k = `${tk}:m:${String(++seq).padStart(8, "0")}`;
      messages.set(`${k}:000000000`, { thread: tk, body: body["body"], author: user, deleted: false });
      unapplied.add(`${k}:000000000`);
      return json(res, 202, { key: k });
    }
    if (mid === undefined && req.method === "GET") {
      const visible = [...messages.entries()].filter(([k, m]) => m.thread === tk && !m.deleted && !unapplied.has(k));
      if (!loseMessages) for (const [k, m] of messages) if (m.thread === tk) unapplied.delete(k);
      return json(res, 200, { thread: tk, messages: visible.map(([k, m]) => ({ key: k, ...m })), pagination: page(visible.length) });
    }
    if (mid !== undefined && req.method === "DELETE") {
      const m = messages.get(mid);
      if (!m) return json(res, 404, { error: "message not found" });
      m.deleted = true;
      return json(res, 202, { key: mid });
    }
    json(res, 405, { error: "method" });
  };
  return { handler, threads, messages };
}

export interface FakeV1Api {
  handler: Handler;
  threads: Map<string, { title: string; author: string; deleted: boolean }>;
  messages: Map<string, { thread: string; body: unknown; author: string; deleted: boolean }>;
}

/**
 * The 0.1.x API as the real 0.1.2 answers it (shapes verified on the binary):
 * no /readyz (401 without a key, 404 with one); /v1 with the author in the
 * body or ?author=; synchronous 200/204; soft deletes; /admin/threads and
 * /admin/stats with the admin or backend key. `rateLimit`: after `burst`
 * requests within a second, 429 (0.1.2's default is 5 rps, burst 10).
 */
export function fakeV1Api(apiKey: string, opts: { adminKey?: string; rateLimit?: { burst: number } } = {}): FakeV1Api {
  const threads = new Map<string, { title: string; author: string; deleted: boolean }>();
  const messages = new Map<string, { thread: string; body: unknown; author: string; deleted: boolean }>();
  let seq = 0;
  let windowStart = 0;
  let inWindow = 0;
  const handler: Handler = (req, res) => {
    const url = new URL(req.path, "http://x");
    if (req.method === "GET" && url.pathname === "/healthz") return json(res, 200, { status: "ok" });
    const key = req.headers["x-api-key"];
    if (typeof key !== "string" || (key !== apiKey && key !== opts.adminKey)) {
      res.writeHead(401, { "Content-Type": "text/plain" }).end("unauthorized\n");
      return;
    }
    if (opts.rateLimit) {
      const now = Date.now();
      if (now - windowStart >= 1000) {
        windowStart = now;
        inWindow = 0;
      }
      if (++inWindow > opts.rateLimit.burst) {
        res.writeHead(429, { "Content-Type": "text/plain" }).end("rate limit exceeded\n");
        return;
      }
    }
    const body = req.body ? (JSON.parse(req.body) as Record<string, unknown>) : {};
    const author = String(body["author"] ?? req.headers["x-user-id"] ?? url.searchParams.get("author") ?? "");
    const live = (thread: string) => [...messages.entries()].filter(([, m]) => m.thread === thread && !m.deleted).map(([id, m]) => ({ id, ...m }));
    if (url.pathname === "/admin/threads") return json(res, 200, { threads: [...threads.entries()].map(([id, t]) => ({ id, ...t })) });
    if (url.pathname === "/admin/stats") return json(res, 200, { threads: threads.size, messages: messages.size });
    if (url.pathname === "/v1/messages" && req.method === "GET") {
      const t = url.searchParams.get("thread") ?? "default";
      return json(res, 200, { thread: t, messages: live(t) });
    }
    const parts = url.pathname.split("/").map((p) => decodeURIComponent(p));
    if (parts[1] !== "v1" || parts[2] !== "threads") return json(res, 404, "404 page not found");
    if (author === "") return json(res, 400, { error: "author required for backend requests" });
    const id = parts[3];
    if (id === undefined) {
      if (req.method !== "POST") return json(res, 405, { error: "method" });
      const tid = `thread-${Date.now()}000000-${++seq}`;
      threads.set(tid, { title: String(body["title"] ?? ""), author, deleted: false });
      return json(res, 200, { id: tid, title: body["title"], author });
    }
    const thread = threads.get(id);
    if (parts[4] === undefined && req.method === "DELETE") {
      if (thread) thread.deleted = true;
      res.writeHead(204).end();
      return;
    }
    if (!thread || thread.deleted) return json(res, 404, { error: "thread not found" });
    if (parts[4] !== "messages") return json(res, 404, "404 page not found");
    const mid = parts[5];
    if (mid === undefined && req.method === "POST") {
      const m = `msg-${Date.now()}000000-${++seq}`;
      messages.set(m, { thread: id, body: body["body"], author, deleted: false });
      return json(res, 200, { id: m, thread: id, author, body: body["body"] });
    }
    if (mid === undefined && req.method === "GET") {
      const all = [...messages.values()].filter((m) => m.thread === id);
      if (!all.some((m) => m.author === author)) return json(res, 403, { error: "author not found in any message in this thread" });
      return json(res, 200, { thread: id, messages: live(id) });
    }
    if (mid !== undefined && req.method === "DELETE") {
      const m = messages.get(mid);
      if (m) m.deleted = true;
      res.writeHead(204).end();
      return;
    }
    json(res, 405, { error: "method" });
  };
  return { handler, threads, messages };
}

export interface SelfSignedCert {
  key: string;
  cert: string;
}

/** A throw-away self-signed certificate for 127.0.0.1 (generated with openssl, never written to the repo). */
export function selfSignedCert(): SelfSignedCert {
  const dir = mkdtempSync(join(tmpdir(), "hc-tls-"));
  try {
    execFileSync(
      "openssl",
      [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"), "-days", "1",
        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
      ],
      { stdio: "ignore" },
    );
    return { key: readFileSync(join(dir, "key.pem"), "utf8"), cert: readFileSync(join(dir, "cert.pem"), "utf8") };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A `serve` whose servers are all closed after each test of the calling file. */
export function servePerTest(): (...args: Parameters<typeof serve>) => Promise<TestServer> {
  const servers: TestServer[] = [];
  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });
  return async (...args) => {
    const s = await serve(...args);
    servers.push(s);
    return s;
  };
}
