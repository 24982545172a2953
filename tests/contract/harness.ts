/**
 * Helpers for the release contract tests: run a progressdb/prgcli binary
 * (stand-in or real) with a clean environment in a temp dir, on a random
 * 127.0.0.1 port, talk to it, and stop everything that was started.
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { freePort, run, sleep, tempDir, type RunResult } from "../fixtures/net";

export const KEYS = { backend: "sk_contract", frontend: "pk_contract", admin: "ak_contract", signing: "sig_contract" };

/** Every process started here, so a failing test never leaks one. */
const live = new Set<Proc>();
/** Every temp dir made here. */
const dirs: string[] = [];

export function scratch(prefix: string): string {
  const d = tempDir(`contract-${prefix}`);
  dirs.push(d);
  return d;
}

export async function cleanupAll(): Promise<void> {
  await Promise.all([...live].map((p) => p.kill()));
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

/** A minimal, deterministic environment (nothing from the developer's shell). */
export function baseEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: process.env.HOME ?? "/tmp", LANG: "C.UTF-8", ...extra };
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** ms from spawn to exit. */
  ms: number;
}

export interface Proc {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exited: Promise<Exit>;
  exit?: Exit;
  /** SIGKILL if still running; resolves on exit. */
  kill(): Promise<void>;
  /** Sends a signal and waits for the exit (SIGKILL after graceMs). */
  signal(sig: NodeJS.Signals, graceMs?: number): Promise<Exit>;
}

export function start(bin: string, args: string[], opts: { cwd: string; env: Record<string, string>; input?: string }): Proc {
  const t0 = Date.now();
  const child = spawn(bin, args, { cwd: opts.cwd, env: opts.env, stdio: ["pipe", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d) => (out += d));
  child.stderr!.on("data", (d) => (err += d));
  child.stdin!.on("error", () => undefined);
  child.stdin!.end(opts.input ?? "");
  const p: Proc = {
    child,
    stdout: () => out,
    stderr: () => err,
    exited: new Promise<Exit>((resolve) => {
      child.once("error", (e) => {
        err += String(e);
        resolve({ code: -1, signal: null, ms: Date.now() - t0 });
      });
      child.once("close", (code, signal) => resolve({ code, signal, ms: Date.now() - t0 }));
    }),
    async kill() {
      if (p.exit) return;
      child.kill("SIGKILL");
      await p.exited;
    },
    async signal(sig, graceMs = 10_000) {
      if (!p.exit) {
        child.kill(sig);
        const t = setTimeout(() => child.kill("SIGKILL"), graceMs);
        await p.exited;
        clearTimeout(t);
      }
      return p.exit!;
    },
  };
  live.add(p);
  void p.exited.then((e) => {
    p.exit = e;
    live.delete(p);
  });
  return p;
}

export interface Res {
  status: number;
  text: string;
  json: unknown;
  contentType: string;
}

export async function call(
  base: string,
  method: string,
  p: string,
  o: { key?: string; user?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<Res> {
  const headers: Record<string, string> = { ...(o.headers ?? {}) };
  if (o.key) headers["X-API-Key"] = o.key;
  if (o.user) headers["X-User-ID"] = o.user;
  if (o.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(`${base}${p}`, {
    method,
    headers,
    body: o.body === undefined ? undefined : typeof o.body === "string" ? o.body : JSON.stringify(o.body),
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, text, json, contentType: res.headers.get("content-type") ?? "" };
}

/** POST with node:http, tolerating a server that answers and closes before reading the body. */
export async function rawPost(url: string, body: Buffer, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method: "POST", headers: { ...headers, "Content-Length": body.length, Connection: "close" } }, (res) => {
      let t = "";
      res.on("data", (d) => (t += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text: t }));
      res.on("error", () => resolve({ status: res.statusCode ?? 0, text: t }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

/** Waits until /healthz answers 200, or fails with the process output if it exits first. */
export async function waitHealthy(p: Proc, base: string, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (p.exit) throw new Error(`exited (${JSON.stringify(p.exit)}) before /healthz answered\nstdout:\n${p.stdout()}\nstderr:\n${p.stderr()}`);
    try {
      const r = await fetch(`${base}/healthz`, { signal: AbortSignal.timeout(1000) });
      await r.text();
      if (r.status === 200) return;
    } catch {
      /* not up yet */
    }
    await sleep(50);
  }
  throw new Error(`/healthz not 200 after ${timeoutMs} ms\nstdout:\n${p.stdout()}\nstderr:\n${p.stderr()}`);
}

/** Polls `probe` until it returns a value that `ok` accepts (the 0.2 API applies writes asynchronously). */
export async function eventually<T>(what: string, probe: () => Promise<T>, ok: (v: T) => boolean, timeoutMs = 5000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: T = await probe();
  while (!ok(last)) {
    if (Date.now() > deadline) throw new Error(`${what}: still ${JSON.stringify(last)} after ${timeoutMs} ms`);
    await sleep(50);
    last = await probe();
  }
  return last;
}

export async function runCli(bin: string, args: string[], o: { cwd: string; env: Record<string, string>; input?: string }): Promise<RunResult> {
  return run(bin, args, { cwd: o.cwd, env: o.env, input: o.input, timeoutMs: 60_000 });
}

// ---- configs ----------------------------------------------------------------

export const q = (s: string) => JSON.stringify(s);

/**
 * A 0.2.x config file: the minimal working key set of releases-as-built.md §3
 * (server.{address,port,db_path,rate_limit,api_keys}, telemetry.flush_interval,
 * ingest.intake.queue_capacity). `omit` drops one of them; `extra` is appended.
 */
export function v2Config(o: {
  port: number;
  db: string;
  omit?: Array<"db_path" | "rate_limit" | "signing" | "flush_interval" | "queue_capacity">;
  serverExtra?: string[];
  extra?: string;
}): string {
  const omit = new Set(o.omit ?? []);
  const l: string[] = ["server:", `  address: "127.0.0.1"`, `  port: ${o.port}`];
  if (!omit.has("db_path")) l.push(`  db_path: ${q(o.db)}`);
  for (const s of o.serverExtra ?? []) l.push(`  ${s}`);
  if (!omit.has("rate_limit")) l.push("  rate_limit:", "    rps: 1000", "    burst: 1000");
  l.push("  api_keys:", `    backend: [${q(KEYS.backend)}]`, `    frontend: [${q(KEYS.frontend)}]`, `    admin: [${q(KEYS.admin)}]`);
  if (!omit.has("signing")) l.push(`    signing: [${q(KEYS.signing)}]`);
  if (!omit.has("flush_interval")) l.push("telemetry:", `  flush_interval: "2s"`);
  if (!omit.has("queue_capacity")) l.push("ingest:", "  intake:", "    queue_capacity: 4096");
  return `${l.join("\n")}\n${o.extra ?? ""}`;
}

/** A 0.1.x config file with the server/storage/security keys of §3. */
export function v1Config(o: { port: number; db: string; rateLimit?: boolean; encryptionKey?: string; adminKey?: string }): string {
  const l = [
    "server:",
    `  address: "127.0.0.1"`,
    `  port: ${o.port}`,
    "storage:",
    `  db_path: ${q(o.db)}`,
    "security:",
    "  api_keys:",
    `    backend: [${q(KEYS.backend)}]`,
    `    frontend: [${q(KEYS.frontend)}]`,
    `    admin: [${q(o.adminKey ?? KEYS.admin)}]`,
  ];
  if (o.rateLimit !== false) l.push("  rate_limit:", "    rps: 1000", "    burst: 1000");
  if (o.encryptionKey) l.push(`  encryption_key: ${q(o.encryptionKey)}`);
  return `${l.join("\n")}\n`;
}

export interface Server {
  proc: Proc;
  base: string;
  port: number;
  dir: string;
  db: string;
}

/** Starts a server with a config file written into a fresh dir (cwd = that dir) and waits for /healthz. */
export async function startServer(
  bin: string,
  env: Record<string, string>,
  make: (port: number, db: string) => string,
  o: { db?: string; args?: (cfg: string, port: number, db: string) => string[]; env?: Record<string, string> } = {},
): Promise<Server> {
  const dir = scratch("srv");
  const port = await freePort();
  const db = o.db ?? path.join(dir, "data");
  const cfg = path.join(dir, "progressdb.yaml");
  fs.writeFileSync(cfg, make(port, db));
  const proc = start(bin, o.args ? o.args(cfg, port, db) : ["--config", cfg], { cwd: dir, env: { ...env, ...(o.env ?? {}) } });
  const base = `http://127.0.0.1:${port}`;
  await waitHealthy(proc, base);
  return { proc, base, port, dir, db };
}

/** Every regular file under dir. */
export function filesUnder(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) out.push(p);
    }
  };
  walk(dir);
  return out;
}

export function anyFileContains(dir: string, needle: string): string | undefined {
  const b = Buffer.from(needle);
  return filesUnder(dir).find((f) => fs.readFileSync(f).includes(b));
}

export function mode(p: string): number {
  return fs.statSync(p).mode & 0o777;
}

export function sha(p: string): string {
  return crypto.createHash("sha256").update(fs.readFileSync(p)).digest("hex");
}

export const umask = (() => {
  const m = process.umask();
  return m;
})();

/** Sorted entry names of a dir. */
export const ls = (d: string) => fs.readdirSync(d).sort();
