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
  messages: Map<string, { thread: string; body: unknown; author: string; deleted: boolean }>;
}

/**
 * The subset of the frontend/v1 API the smoke test uses, with asynchronous
 * writes like the real service: a message is visible to GET only from the
 * second read on (never, with `loseMessages`). `fail` makes one route answer an error (echoing the
 * request's X-API-Key, as a careless server might).
 */
export function fakeApi(
  version: string,
  apiKey: string,
  fail?: { method: string; pathPattern: RegExp; status: number },
  /** Accept message writes (202) but never apply them. */
  loseMessages = false,
): FakeApi {
  const health = fakeProgressDb({ version });
  const threads = new Map<string, { title: string; author: string; deleted: boolean }>();
  const messages = new Map<string, { thread: string; body: unknown; author: string; deleted: boolean }>();
  const reads = new Map<string, number>();
  let seq = 0;
  const handler: Handler = (req, res) => {
    if (req.path === "/healthz" || req.path === "/readyz") return health(req, res);
    if (fail && req.method === fail.method && fail.pathPattern.test(req.path)) {
      return json(res, fail.status, { error: `request failed for key ${String(req.headers["x-api-key"])}`, headers: req.headers });
    }
    if (req.headers["x-api-key"] !== apiKey) return json(res, 401, { error: "invalid api key" });
    const user = req.headers["x-user-id"];
    if (typeof user !== "string" || user === "") return json(res, 401, { error: "missing X-User-ID" });
    const url = new URL(req.path, "http://x");
    const parts = url.pathname.split("/").map((p) => decodeURIComponent(p));
    // ["", "frontend", "v1", "threads", key?, "messages"?, id?]
    if (parts[1] !== "frontend" || parts[2] !== "v1" || parts[3] !== "threads") return json(res, 404, { error: "not found" });
    const tk = parts[4];
    if (tk === undefined) {
      if (req.method !== "POST") return json(res, 405, { error: "method" });
      const key = `t:${String(++seq).padStart(8, "0")}`;
      threads.set(key, { title: (JSON.parse(req.body) as { title: string }).title, author: user, deleted: false });
      return json(res, 202, { key });
    }
    const thread = threads.get(tk);
    if (!thread || thread.deleted) return json(res, 404, { error: "thread not found" });
    if (parts[5] === undefined) {
      if (req.method === "DELETE") {
        thread.deleted = true;
        res.writeHead(204).end();
        return;
      }
      return json(res, 200, { thread: { key: tk, ...thread } });
    }
    if (parts[5] !== "messages") return json(res, 404, { error: "not found" });
    const mid = parts[6];
    if (mid === undefined && req.method === "POST") {
      const key = `${tk}:m:${String(++seq).padStart(8, "0")}`;
      messages.set(key, { thread: tk, body: (JSON.parse(req.body) as { body: unknown }).body, author: user, deleted: false });
      return json(res, 202, { message: { key, thread: tk, author: user } });
    }
    if (mid === undefined && req.method === "GET") {
      const n = (reads.get(tk) ?? 0) + 1;
      reads.set(tk, n);
      const visible = n === 1 || loseMessages ? [] : [...messages.entries()].filter(([, m]) => m.thread === tk && !m.deleted);
      return json(res, 200, { thread: tk, messages: visible.map(([key, m]) => ({ key, ...m })) });
    }
    if (mid !== undefined && req.method === "DELETE") {
      const m = messages.get(mid);
      if (!m) return json(res, 404, { error: "message not found" });
      m.deleted = true;
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
