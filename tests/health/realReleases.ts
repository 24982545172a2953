// The real ProgressDB 0.1.2 and 0.2.1 binaries for the health tests: found in
// PDB_RELEASES_DIR or ../shared/progressdb-releases beside the project (never
// copied into it), extracted to a temp dir, started on loopback with a config
// like the one the program renders, stopped by their pid.
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { apiCall, type ApiContext } from "../../components/health/http";
import { freePort } from "./servers";

export const BACKEND_KEY = "sk_health_backend_0001";
export const ADMIN_KEY = "ak_health_admin_0001";
const FRONTEND_KEY = "pk_health_frontend_0001";
const SIGNING_KEY = "sg_health_signing_0001";

/** Where the release archives are (PDB_RELEASES_DIR if set, else ../shared/progressdb-releases), or why they are not there. */
export function releasesDir(): { dir?: string; why: string } {
  const env = process.env["PDB_RELEASES_DIR"];
  const candidates = env ? [env] : [path.resolve(__dirname, "../../../shared/progressdb-releases")];
  for (const dir of candidates) {
    if (fs.existsSync(path.join(dir, "0.1.2", "progressdb_0.1.2_linux_amd64.tar.gz")) && fs.existsSync(path.join(dir, "0.2.1", "progressdb_0.2.1_linux_amd64.tar.gz"))) {
      return { dir, why: "" };
    }
  }
  if (process.platform !== "linux" || process.arch !== "x64") return { why: `the release binaries are linux/amd64 (this is ${process.platform}/${process.arch})` };
  return { why: `no progressdb_0.1.2/0.2.1 linux_amd64 archives in ${candidates.join(" or ")} (set PDB_RELEASES_DIR)` };
}

/** Whether the 0.2.1 prgcli archive (the offline migration tool) is there too. */
export function hasPrgcli(): boolean {
  const dir = releasesDir().dir;
  return dir !== undefined && fs.existsSync(path.join(dir, "0.2.1", "prgcli_0.2.1_linux_amd64.tar.gz"));
}

let scratch: string | undefined;
/** A temp dir for this test file (binaries, data dirs, configs). */
export function scratchDir(): string {
  scratch ??= fs.mkdtempSync(path.join(tmpdir(), "hc-real-"));
  return scratch;
}

export function removeScratch(): void {
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  scratch = undefined;
}

function run(cmd: string, args: string[], input?: string): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { stdio: ["pipe", "pipe", "pipe"] });
    let out = "";
    c.stdout.on("data", (b: Buffer) => (out += b.toString()));
    c.stderr.on("data", (b: Buffer) => (out += b.toString()));
    c.on("error", reject);
    c.on("close", (code) => resolve({ code, out }));
    c.stdin.end(input ?? "");
  });
}

/** Extracts (once) and returns the path of `progressdb` (or `prgcli`) of `version`. */
export async function binary(version: "0.1.2" | "0.2.1", name: "progressdb" | "prgcli" = "progressdb"): Promise<string> {
  const rel = releasesDir();
  if (!rel.dir) throw new Error(rel.why);
  const dest = path.join(scratchDir(), "bin", version, name);
  const wrapped = name === "progressdb" ? path.join(dest, `progressdb_${version}_linux_amd64`, "progressdb") : path.join(dest, "prgcli");
  if (fs.existsSync(wrapped)) return wrapped;
  fs.mkdirSync(dest, { recursive: true });
  const archive = path.join(rel.dir, version, `${name}_${version}_linux_amd64.tar.gz`);
  if (!fs.existsSync(archive)) throw new Error(`${archive} is missing`);
  const t = await run("tar", ["-xzf", archive, "-C", dest]);
  if (t.code !== 0) throw new Error(`tar -xzf ${archive} failed: ${t.out}`);
  return wrapped;
}

export interface RealInstance {
  version: string;
  url: string;
  port: number;
  dataDir: string;
  /** stdout + stderr so far. */
  logs(): string;
  /** SIGTERM (0.1.2 dies at once, 0.2.1 shuts down gracefully), SIGKILL after 20 s. */
  stop(): Promise<void>;
}

const running = new Set<RealInstance>();

/** Stops every instance still running (afterAll). */
export async function stopAll(): Promise<void> {
  await Promise.all([...running].map((i) => i.stop()));
}

/**
 * Starts `version` on 127.0.0.1 with the backend and admin keys and the rate
 * limit the program renders (rps 100, burst 200), on `dataDir`.
 */
export async function startReal(version: "0.1.2" | "0.2.1", dataDir: string): Promise<RealInstance> {
  const bin = await binary(version);
  const port = await freePort();
  fs.mkdirSync(dataDir, { recursive: true });
  const config = path.join(scratchDir(), `config-${version}-${port}.yaml`);
  let args: string[];
  if (version === "0.1.2") {
    fs.writeFileSync(
      config,
      [
        "security:",
        "  rate_limit: { rps: 100, burst: 200 }",
        "  api_keys:",
        `    backend: ["${BACKEND_KEY}"]`,
        `    frontend: ["${FRONTEND_KEY}"]`,
        `    admin: ["${ADMIN_KEY}"]`,
        "",
      ].join("\n"),
    );
    args = ["--db", dataDir, "--addr", `127.0.0.1:${port}`, "--config", config];
  } else {
    fs.writeFileSync(
      config,
      [
        "server:",
        "  address: 127.0.0.1",
        `  port: ${port}`,
        `  db_path: ${JSON.stringify(dataDir)}`,
        "  rate_limit: { rps: 100, burst: 200 }",
        "  api_keys:",
        `    backend: ["${BACKEND_KEY}"]`,
        `    frontend: ["${FRONTEND_KEY}"]`,
        `    admin: ["${ADMIN_KEY}"]`,
        `    signing: ["${SIGNING_KEY}"]`,
        "telemetry:",
        '  flush_interval: "2s"',
        "ingest:",
        "  intake:",
        "    queue_capacity: 1024",
        "",
      ].join("\n"),
    );
    args = ["--config", config];
  }
  const child: ChildProcess = spawn(bin, args, { cwd: scratchDir(), stdio: ["ignore", "pipe", "pipe"] });
  let logs = "";
  child.stdout?.on("data", (b: Buffer) => (logs += b.toString()));
  child.stderr?.on("data", (b: Buffer) => (logs += b.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  let alive = true;
  void exited.then(() => (alive = false));
  const url = `http://127.0.0.1:${port}`;
  const inst: RealInstance = {
    version,
    url,
    port,
    dataDir,
    logs: () => logs,
    stop: async () => {
      running.delete(inst);
      if (!alive) return;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
      await exited;
      clearTimeout(timer);
    },
  };
  running.add(inst);
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (!alive) throw new Error(`progressdb ${version} exited at start:\n${logs}`);
    const ok = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
    if (ok) return inst;
    if (Date.now() > deadline) {
      await inst.stop();
      throw new Error(`progressdb ${version} did not answer /healthz within 30 s:\n${logs}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** prgcli migrate --format pebble from a (stopped) 0.1.2 data dir into a new 0.2.1 one. */
export async function migrate(fromDir: string, toDir: string): Promise<string> {
  const prgcli = await binary("0.2.1", "prgcli");
  const r = await run(prgcli, ["migrate", "--from", fromDir, "--to", toDir, "--format", "pebble", "--old-encryption-key", "0".repeat(64)], "y\n");
  if (r.code !== 0 || !/Migration completed/.test(r.out)) throw new Error(`prgcli migrate failed (${r.code}):\n${r.out}`);
  return r.out;
}

export function copyDir(from: string, to: string): void {
  fs.cpSync(from, to, { recursive: true });
}

/** A polite API client for writing test data (the program's own one, waiting out 429s). */
export function client(url: string): ApiContext {
  return {
    base: new URL(url),
    requestTimeoutMs: 5000,
    deadline: Date.now() + 60_000,
    now: () => Date.now(),
    sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    random: Math.random,
  };
}

export interface Seed {
  title: string;
  author: string;
  messages: unknown[];
  /** Delete the thread after writing it (0.1.x keeps it, soft-deleted). */
  deleted?: boolean;
}

/** Writes threads and messages through the real API of `dialect`; returns the thread ids/keys. */
export async function seed(url: string, dialect: "v1" | "frontend-v1", threads: Seed[]): Promise<string[]> {
  const ctx = client(url);
  const ids: string[] = [];
  const must = async (method: string, p: string, o: Parameters<typeof apiCall>[3]): Promise<unknown> => {
    const r = await apiCall(ctx, method, p, o);
    if (!r.ok) throw new Error(`${method} ${p}: ${r.obs.seen} (${r.obs.cause})`);
    return r.json;
  };
  for (const t of threads) {
    if (dialect === "v1") {
      const created = (await must("POST", "/v1/threads", { key: BACKEND_KEY, body: { author: t.author, title: t.title }, okStatuses: [200] })) as { id: string };
      for (const body of t.messages) await must("POST", `/v1/threads/${created.id}/messages`, { key: BACKEND_KEY, body: { author: t.author, body }, okStatuses: [200] });
      if (t.deleted) await must("DELETE", `/v1/threads/${created.id}`, { key: BACKEND_KEY, query: { author: t.author }, okStatuses: [204] });
      ids.push(created.id);
    } else {
      const created = (await must("POST", "/frontend/v1/threads", { key: BACKEND_KEY, userId: t.author, body: { title: t.title }, okStatuses: [202] })) as { key: string };
      // 0.2 applies writes asynchronously: the owner gets 403 "access denied" until the thread is applied.
      for (const body of t.messages) {
        for (let i = 0; ; i++) {
          const r = await apiCall(ctx, "POST", `/frontend/v1/threads/${created.key}/messages`, { key: BACKEND_KEY, userId: t.author, body: { body }, okStatuses: [202] });
          if (r.ok) break;
          if (i > 50) throw new Error(`posting a message: ${r.obs.seen}`);
          await new Promise((res) => setTimeout(res, 50));
        }
      }
      // Wait until the writes are applied: 0.2.1 answers 202 to a DELETE that races the thread's creation
      // and then drops it ("failed to retrieve thread: pebble: not found" in its log).
      for (let i = 0; ; i++) {
        const r = await apiCall(ctx, "GET", `/frontend/v1/threads/${created.key}/messages`, { key: BACKEND_KEY, userId: t.author, okStatuses: [200] });
        if (r.ok && (r.json as { messages: unknown[] }).messages.length === t.messages.length) break;
        if (i > 100) throw new Error(`0.2.1 never applied the writes to ${created.key}`);
        await new Promise((res) => setTimeout(res, 50));
      }
      if (t.deleted) await must("DELETE", `/frontend/v1/threads/${created.key}`, { key: BACKEND_KEY, userId: t.author, okStatuses: [202] });
      ids.push(created.key);
    }
  }
  return ids;
}
