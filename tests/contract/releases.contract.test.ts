/**
 * Release contract: the behaviours of ProgressDB 0.1.2 and 0.2.1 that the
 * upgrade program relies on, asserted identically against
 *   - the stand-in built from tests/fixtures/progressdb-standin (always), and
 *   - the real release binaries (when realReleasesDir() finds them:
 *     $PDB_RELEASES_DIR or ../shared/progressdb-releases).
 * A stand-in that drifts from the real releases fails here. Facts are cited
 * as "§N" = docs releases-as-built.md (the shared reference), S1 = upstream
 * server/ at v0.1.2, S2 = service/ at v0.2.1.
 *
 * Everything runs on 127.0.0.1 random ports in temp dirs with a minimal
 * environment; every process started is stopped (also on failure). The 0.2
 * fatal-startup cases (10 s countdown each in the real release) are started
 * together in beforeAll so they cost one countdown per target.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort, run, tcpOpen } from "../fixtures/net";
import { realReleasesDir, startReleaseMirror, type ReleaseMirror } from "../fixtures/releases";
import {
  KEYS,
  anyFileContains,
  baseEnv,
  call,
  cleanupAll,
  eventually,
  ls,
  mode,
  rawPost,
  runCli,
  scratch,
  sha,
  start,
  startServer,
  umask,
  v1Config,
  v2Config,
  waitHealthy,
  type Proc,
  type Server,
} from "./harness";

type Kind = "stand-in" | "real";
type Version = "0.1.2" | "0.2.1";

interface Target {
  kind: Kind;
  version: Version;
  /** progressdb of this version. */
  bin: string;
  /** progressdb of the other version, same kind (for upgrade/downgrade cases). */
  sibling: string;
  /** prgcli (0.2.1 only). */
  prgcli?: string;
  /** The mirror serving this kind of release (archives, checksums). */
  mirror: ReleaseMirror;
  /** Countdown before exit 2 on a fatal 0.2 startup error. */
  crashMs: number;
}

// The stand-in honours PROGRESSDB_STANDIN_CRASH_DELAY_MS; the real releases
// ignore it (and always count down 10 s). Both get the same environment.
const STANDIN_CRASH_MS = 500;
const env = (extra: Record<string, string> = {}) => baseEnv({ PROGRESSDB_STANDIN_CRASH_DELAY_MS: String(STANDIN_CRASH_MS), ...extra });

const arch = process.arch === "x64" ? "amd64" : process.arch;
const foundDir = realReleasesDir();
const realDir =
  foundDir && (["0.1.2", "0.2.1"] as const).every((v) => fs.existsSync(path.join(foundDir, v, `progressdb_${v}_linux_${arch}.tar.gz`)))
    ? foundDir
    : undefined;
if (!realDir) {
  console.warn(
    `\n\n*** SKIPPING the REAL-release contract tests: no real ProgressDB 0.1.2 + 0.2.1 linux_${arch} archives ${foundDir ? `in ${foundDir}` : "found"}.\n` +
      "*** Set PDB_RELEASES_DIR=<dir with 0.1.2/ and 0.2.1/ archives> (or provide ../shared/progressdb-releases).\n" +
      "*** Only the stand-in is checked — drift from the real releases goes unnoticed. ***\n",
  );
}

const mirrors = new Map<Kind, Promise<ReleaseMirror>>();
function mirrorOf(kind: Kind): Promise<ReleaseMirror> {
  if (!mirrors.has(kind)) {
    mirrors.set(kind, kind === "real" ? startReleaseMirror({ fromDir: realDir!, versions: ["0.1.2", "0.2.1"] }) : startReleaseMirror());
  }
  return mirrors.get(kind)!;
}

async function target(kind: Kind, version: Version): Promise<Target> {
  const m = await mirrorOf(kind);
  const other: Version = version === "0.1.2" ? "0.2.1" : "0.1.2";
  const rel = m.release(version);
  return {
    kind,
    version,
    bin: rel.binaryPath,
    sibling: m.release(other).binaryPath,
    prgcli: rel.prgcliBinaryPath,
    mirror: m,
    crashMs: kind === "real" ? 10_000 : STANDIN_CRASH_MS,
  };
}

afterAll(async () => {
  await cleanupAll();
  for (const m of mirrors.values()) await (await m.catch(() => undefined))?.stop();
}, 60_000);

const stdoutHas = (p: Proc, s: string) => eventually(`stdout contains ${s}`, async () => p.stdout(), (o) => o.includes(s), 5000);

/** The release archives are laid out like the real ones (§2). */
function artifactTests(get: () => Target) {
  it("ships progressdb wrapped in progressdb_<v>_linux_<arch>/, prgcli (0.2.x) unwrapped, both in checksums.txt (§2; .goreleaser.yml)", async () => {
    const t = get();
    const rel = t.mirror.release(t.version);
    const arch = t.mirror.arch;
    expect(rel.archiveName).toBe(`progressdb_${t.version}_linux_${arch}.tar.gz`);
    const list = (await run("tar", ["-tzf", rel.archivePath])).stdout.split("\n").filter(Boolean);
    expect(list).toContain(`progressdb_${t.version}_linux_${arch}/progressdb`);
    expect(list.every((e) => e.startsWith(`progressdb_${t.version}_linux_${arch}/`))).toBe(true);
    const sums = await (await fetch(rel.checksumsUrl)).text();
    expect(sums).toContain(`${rel.sha256}  ${rel.archiveName}\n`);
    if (t.version === "0.2.1") {
      expect(rel.prgcliArchiveName).toBe(`prgcli_${t.version}_linux_${arch}.tar.gz`);
      const cli = (await run("tar", ["-tzf", rel.prgcliArchivePath!])).stdout.split("\n");
      expect(cli).toContain("prgcli");
      expect(sums).toContain(`${rel.prgcliSha256}  ${rel.prgcliArchiveName}\n`);
      const got = await fetch(rel.prgcliArtifactUrl!);
      expect(got.status).toBe(200);
      await got.arrayBuffer();
    } else {
      expect(rel.prgcliArchiveName).toBeUndefined();
    }
  });
}

// ============================================================================
// 0.1.x
// ============================================================================

function v1Suite(get: () => Promise<Target>) {
  let t: Target;
  let s: Server; // shared instance: minimal 0.1 config
  beforeAll(async () => {
    t = await get();
    s = await startServer(t.bin, env(), (port, db) => v1Config({ port, db }));
  });

  artifactTests(() => t);

  it("reports `Version:  dev` in its banner whatever was built in, and has no /readyz: 401 without a key, 404 with one (§1, §2; S1/cmd/progressdb/main.go)", async () => {
    await stdoutHas(s.proc, "Version:");
    expect(s.proc.stdout()).toMatch(/^Version: {2}dev$/m);
    let r = await call(s.base, "GET", "/readyz");
    expect(r.status).toBe(401);
    expect(r.text.trim()).toBe("unauthorized");
    r = await call(s.base, "GET", "/readyz", { key: KEYS.backend });
    expect(r.status).toBe(404);
  });

  it("answers GET /healthz without a key: 200 {\"status\":\"ok\"} (§4; S1/cmd/progressdb/main.go)", async () => {
    const r = await call(s.base, "GET", "/healthz");
    expect(r.status).toBe(200);
    expect(r.json).toEqual({ status: "ok" });
  });

  it("config precedence is flag > PROGRESSDB_* env > file (§3; S1/pkg/config/config.go)", async () => {
    const dir = scratch("v1prec");
    const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
    const [d1, d2, d3] = ["file", "env", "flag"].map((n) => path.join(dir, n));
    const cfg = path.join(dir, "c.yaml");
    fs.writeFileSync(cfg, v1Config({ port: p1, db: d1, adminKey: "ak_file" }));
    const p = start(t.bin, ["--config", cfg, "--addr", `127.0.0.1:${p3}`, "--db", d3], {
      cwd: dir,
      env: env({ PROGRESSDB_ADDR: `127.0.0.1:${p2}`, PROGRESSDB_DB_PATH: d2, PROGRESSDB_API_ADMIN_KEYS: "ak_env" }),
    });
    const base = `http://127.0.0.1:${p3}`;
    await waitHealthy(p, base);
    expect(await tcpOpen(p1)).toBe(false);
    expect(await tcpOpen(p2)).toBe(false);
    expect(fs.existsSync(path.join(d3, "CURRENT"))).toBe(true);
    expect(fs.existsSync(d1) || fs.existsSync(d2)).toBe(false);
    expect((await call(base, "GET", "/admin/stats", { key: "ak_env" })).status).toBe(200);
    expect((await call(base, "GET", "/admin/stats", { key: "ak_file" })).status).toBe(401);
    await p.kill();

    // Without flags, the env beats the file.
    const q = start(t.bin, ["--config", cfg], { cwd: dir, env: env({ PROGRESSDB_ADDR: `127.0.0.1:${p2}`, PROGRESSDB_DB_PATH: d2 }) });
    await waitHealthy(q, `http://127.0.0.1:${p2}`);
    expect(fs.existsSync(path.join(d2, "CURRENT"))).toBe(true);
    expect(fs.existsSync(d1)).toBe(false);
    expect((await call(`http://127.0.0.1:${p2}`, "GET", "/admin/stats", { key: "ak_file" })).status).toBe(200);
    await q.kill();
  });

  it("silently ignores a missing or invalid config file (§3)", async () => {
    const dir = scratch("v1nocfg");
    const bad = path.join(dir, "bad.yaml");
    fs.writeFileSync(bad, "server: [\n  port: {\n");
    for (const cfg of [path.join(dir, "missing.yaml"), bad]) {
      const port = await freePort();
      const p = start(t.bin, ["--config", cfg, "--addr", `127.0.0.1:${port}`, "--db", path.join(dir, `db-${port}`)], {
        cwd: dir,
        env: env({ PROGRESSDB_API_ADMIN_KEYS: "ak_env" }),
      });
      await waitHealthy(p, `http://127.0.0.1:${port}`);
      expect((await call(`http://127.0.0.1:${port}`, "GET", "/admin/stats", { key: "ak_env" })).json).toEqual({ threads: 0, messages: 0 });
      await p.kill();
    }
  });

  it("the renderer's 0.1 keys work: server.address/port, storage.db_path, security.api_keys, rate_limit, encryption_key (data encrypted at rest) (§3; S1/pkg/config/config.go, S1/pkg/store/pebble.go)", async () => {
    const key = "7f".repeat(32);
    const e = await startServer(t.bin, env(), (port, db) => v1Config({ port, db, encryptionKey: key }));
    const marker = `MARKER-${Date.now()}-v1`;
    const th = await call(e.base, "POST", "/v1/threads", { key: KEYS.backend, body: { author: "alice", title: "secret" } });
    expect(th.status).toBe(200);
    const id = (th.json as { id: string }).id;
    expect((await call(e.base, "POST", `/v1/threads/${id}/messages`, { key: KEYS.backend, body: { author: "alice", body: { text: marker } } })).status).toBe(200);
    const list = await call(e.base, "GET", `/v1/threads/${id}/messages?author=alice`, { key: KEYS.backend });
    expect((list.json as { messages: Array<{ body: unknown }> }).messages.map((m) => m.body)).toEqual([{ text: marker }]);
    expect(anyFileContains(e.db, marker)).toBeUndefined();
    // rate_limit 1000/1000 from the file: 30 quick requests all pass.
    const codes = await Promise.all(Array.from({ length: 30 }, () => call(e.base, "GET", "/admin/stats", { key: KEYS.admin }).then((r) => r.status)));
    expect(codes.every((c) => c === 200)).toBe(true);
    await e.proc.kill();
  });

  it("an invalid security.encryption_key is fatal: exit 1 at once (§3; S1/cmd/progressdb/main.go)", async () => {
    const dir = scratch("v1badkey");
    const port = await freePort();
    fs.writeFileSync(path.join(dir, "c.yaml"), v1Config({ port, db: path.join(dir, "db"), encryptionKey: "not-hex" }));
    const p = start(t.bin, ["--config", path.join(dir, "c.yaml")], { cwd: dir, env: env() });
    const e = await p.exited;
    expect(e.code).toBe(1);
    expect(e.ms).toBeLessThan(5000);
    expect(p.stderr()).toContain("invalid encryption key");
  });

  it("has no SIGTERM handler: dies at once by the signal; writes acknowledged before survive (§5; S1/cmd/progressdb/main.go)", async () => {
    const a = await startServer(t.bin, env(), (port, db) => v1Config({ port, db }));
    const th = await call(a.base, "POST", "/v1/threads", { key: KEYS.backend, body: { author: "sig", title: "survives" } });
    expect(th.status).toBe(200);
    const t0 = Date.now();
    const e = await a.proc.signal("SIGTERM");
    expect(e.code).toBeNull();
    expect(e.signal).toBe("SIGTERM");
    expect(Date.now() - t0).toBeLessThan(1000);
    const b = await startServer(t.bin, env(), (port, db) => v1Config({ port, db }), { db: a.db });
    const list = await call(b.base, "GET", "/v1/threads?author=sig", { key: KEYS.backend });
    expect((list.json as { threads: Array<{ id: string }> }).threads.map((x) => x.id)).toEqual([(th.json as { id: string }).id]);
    await b.proc.kill();
  });

  it("lays out one Pebble-style DB at the data dir root, dir 0755 / files 0644 (§1, §6)", async () => {
    const f = await startServer(t.bin, env(), (port, db) => v1Config({ port, db }));
    expect(ls(f.db)).toEqual(["000002.log", "CURRENT", "LOCK", "MANIFEST-000001", "OPTIONS-000003"]);
    expect(mode(f.db)).toBe(0o755 & ~umask);
    for (const n of ls(f.db)) expect(mode(path.join(f.db, n)), n).toBe(0o644 & ~umask);
    expect(fs.readFileSync(path.join(f.db, "CURRENT"), "utf8")).toBe("MANIFEST-000001\n");
    await f.proc.kill();
  });

  it("refuses a data dir another instance holds (Pebble LOCK): exit 1 at once, `failed to open pebble at <dir>: resource temporarily unavailable` (§7)", async () => {
    const port = await freePort();
    const p = start(t.bin, ["--db", s.db, "--addr", `127.0.0.1:${port}`], { cwd: s.dir, env: env() });
    const e = await p.exited;
    expect(e.code).toBe(1);
    expect(e.ms).toBeLessThan(5000);
    expect(p.stderr()).toContain(`failed to open pebble at ${s.db}: resource temporarily unavailable`);
    expect((await call(s.base, "GET", "/healthz")).status).toBe(200);
  });

  it("GET /admin/stats → {\"threads\":N,\"messages\":M} for the admin and the backend key; frontend 403, no key 401 (§1, §4; S1/pkg/api/handlers/admin.go)", async () => {
    for (const key of [KEYS.admin, KEYS.backend]) {
      const r = await call(s.base, "GET", "/admin/stats", { key });
      expect(r.status).toBe(200);
      expect(Object.keys(r.json as object)).toEqual(["threads", "messages"]);
    }
    const f = await call(s.base, "GET", "/admin/stats", { key: KEYS.frontend });
    expect([f.status, f.text.trim()]).toEqual([403, "forbidden"]);
    const n = await call(s.base, "GET", "/admin/stats");
    expect([n.status, n.text.trim()]).toEqual([401, "unauthorized"]);
  });

  it("rate-limits 5 rps, burst 10 per key when security.rate_limit is unset (§1; S1/pkg/security/middleware.go)", async () => {
    const r = await startServer(t.bin, env(), (port, db) => v1Config({ port, db, rateLimit: false }));
    const t0 = Date.now();
    const codes = await Promise.all(Array.from({ length: 30 }, () => call(r.base, "GET", "/admin/stats", { key: KEYS.admin }).then((x) => x.status)));
    const refill = Math.ceil(((Date.now() - t0) / 1000) * 5);
    const ok = codes.filter((c) => c === 200).length;
    expect(ok).toBeGreaterThanOrEqual(10);
    expect(ok).toBeLessThanOrEqual(10 + refill);
    expect(codes.filter((c) => c === 429).length).toBe(30 - ok);
    expect(ok).toBeLessThan(30);
    expect((await call(r.base, "GET", "/healthz")).status).toBe(200); // not rate-limited
    await r.proc.kill();
  });

  it("data API round trip in the /v1 dialect: create thread, two messages, list threads, list messages, delete (§4; S1/pkg/api/handlers/threads.go, S1/pkg/store/pebble.go)", async () => {
    const s = await startServer(t.bin, env(), (port, db) => v1Config({ port, db })); // fresh: exact stats
    const b = { key: KEYS.backend };
    // create: 200 with the record; ids thread-<ns>-<n>; author from the body
    const th = await call(s.base, "POST", "/v1/threads", { ...b, body: { author: "alice", title: "Contract Thread" } });
    expect(th.status).toBe(200);
    const thread = th.json as { id: string; title: string; author: string; slug: string; created_ts: number };
    expect(thread.id).toMatch(/^thread-\d+-\d+$/);
    expect(thread).toMatchObject({ title: "Contract Thread", author: "alice", slug: `contract-thread-${thread.id}` });
    // post: author in the body, or as X-User-ID
    const m1 = await call(s.base, "POST", `/v1/threads/${thread.id}/messages`, { ...b, body: { author: "alice", body: { text: "one" } } });
    const m2 = await call(s.base, "POST", `/v1/threads/${thread.id}/messages`, { ...b, user: "alice", body: { body: { text: "two" } } });
    expect([m1.status, m2.status]).toEqual([200, 200]);
    const msg1 = m1.json as { id: string };
    expect(m1.json).toMatchObject({ thread: thread.id, author: "alice", role: "user", body: { text: "one" } });
    expect(msg1.id).toMatch(/^msg-\d+-\d+$/);
    // list threads: GET /v1/threads for one author (?author= or X-User-ID); without one 400
    const lt = await call(s.base, "GET", "/v1/threads?author=alice", b);
    expect(lt.status).toBe(200);
    expect((lt.json as { threads: Array<{ id: string }> }).threads.map((x) => x.id)).toEqual([thread.id]);
    const noAuthor = await call(s.base, "GET", "/v1/threads", b);
    expect([noAuthor.status, noAuthor.json]).toEqual([400, { error: "author required for backend requests" }]);
    // list messages: {"thread","messages"} in order
    const lm = await call(s.base, "GET", `/v1/threads/${thread.id}/messages`, { ...b, user: "alice" });
    expect(lm.status).toBe(200);
    expect(Object.keys(lm.json as object)).toEqual(["thread", "messages"]);
    expect((lm.json as { messages: Array<{ body: unknown }> }).messages.map((m) => m.body)).toEqual([{ text: "one" }, { text: "two" }]);
    const stats = async () => (await call(s.base, "GET", "/admin/stats", { key: KEYS.admin })).json;
    expect(await stats()).toEqual({ threads: 1, messages: 2 });
    // delete a message: 204; it disappears but stats count one more version
    const dm = await call(s.base, "DELETE", `/v1/threads/${thread.id}/messages/${msg1.id}?author=alice`, b);
    expect(dm.status).toBe(204);
    const after = await call(s.base, "GET", `/v1/threads/${thread.id}/messages?author=alice`, b);
    expect((after.json as { messages: Array<{ body: unknown }> }).messages.map((m) => m.body)).toEqual([{ text: "two" }]);
    expect(await stats()).toEqual({ threads: 1, messages: 3 });
    // delete the thread: 204; soft delete + tombstone message
    expect((await call(s.base, "DELETE", `/v1/threads/${thread.id}?author=alice`, b)).status).toBe(204);
    expect((await call(s.base, "GET", "/v1/threads?author=alice", b)).json).toEqual({ threads: null });
    const gone = await call(s.base, "GET", `/v1/threads/${thread.id}/messages?author=alice`, b);
    expect([gone.status, gone.json]).toEqual([404, { error: "thread not found" }]);
    expect(await stats()).toEqual({ threads: 1, messages: 4 });
    // GET /admin/threads (admin or backend key) still lists it, marked deleted
    const all = await call(s.base, "GET", "/admin/threads", { key: KEYS.admin });
    expect((all.json as { threads: Array<{ id: string; deleted?: boolean }> }).threads).toEqual([expect.objectContaining({ id: thread.id, deleted: true })]);
    await s.proc.kill();
  });

  it("accepts Authorization: Bearer as well as X-API-Key; frontend keys need X-User-ID + X-User-Signature = HMAC-SHA256(backend key, user) from POST /v1/_sign (§4; S1/pkg/api/handlers/sign.go, S1/pkg/auth/middleware.go)", async () => {
    const bearer = await call(s.base, "GET", "/admin/stats", { headers: { Authorization: `Bearer ${KEYS.admin}` } });
    expect(bearer.status).toBe(200);
    const sig = await call(s.base, "POST", "/v1/_sign", { key: KEYS.backend, body: { userId: "fiona" } });
    expect(sig.status).toBe(200);
    const signature = (sig.json as { signature: string }).signature;
    expect(sig.json).toEqual({ userId: "fiona", signature: expect.stringMatching(/^[0-9a-f]{64}$/) });
    const f = { key: KEYS.frontend, user: "fiona" };
    const unsigned = await call(s.base, "POST", "/v1/threads", { ...f, body: { title: "mine" } });
    expect(unsigned.status).toBe(401);
    const signed = await call(s.base, "POST", "/v1/threads", { ...f, headers: { "X-User-Signature": signature }, body: { title: "mine" } });
    expect(signed.status).toBe(200);
    expect((signed.json as { author: string }).author).toBe("fiona");
    const bad = await call(s.base, "POST", "/v1/threads", { ...f, headers: { "X-User-Signature": "0".repeat(64) }, body: { title: "mine" } });
    expect(bad.status).toBe(401);
  });

  it("has no body size limit: a 2 MB message is accepted (§1)", async () => {
    const th = await call(s.base, "POST", "/v1/threads", { key: KEYS.backend, body: { author: "big", title: "big" } });
    const id = (th.json as { id: string }).id;
    const r = await call(s.base, "POST", `/v1/threads/${id}/messages`, { key: KEYS.backend, body: { author: "big", body: { text: "x".repeat(2_000_000) } } });
    expect(r.status).toBe(200);
  });

  it("started on a 0.2 data dir, it opens an empty root DB and sees none of the 0.2 data (§6)", async () => {
    const dir = scratch("down");
    const db = path.join(dir, "data");
    const up = await startServer(t.sibling, env(), (port, d) => v2Config({ port, db: d }), { db });
    await call(up.base, "POST", "/frontend/v1/threads", { key: KEYS.backend, user: "zoe", body: { title: "written by 0.2" } });
    await eventually("0.2 stats", async () => (await call(up.base, "GET", "/admin/stats", { key: KEYS.admin })).json, (j) => (j as { threads: number }).threads === 1);
    expect((await up.proc.signal("SIGTERM")).code).toBe(0);
    const storeBefore = ls(path.join(db, "store"));
    const down = await startServer(t.bin, env(), (port, d) => v1Config({ port, db: d }), { db });
    expect((await call(down.base, "GET", "/admin/stats", { key: KEYS.admin })).json).toEqual({ threads: 0, messages: 0 });
    expect(ls(db)).toEqual(expect.arrayContaining(["CURRENT", "LOCK", "000002.log", "store", "index", "state"]));
    expect(ls(path.join(db, "store"))).toEqual(storeBefore);
    await down.proc.kill();
  });
}

// ============================================================================
// 0.2.x
// ============================================================================

interface CrashCase {
  proc: Proc;
  cwd: string;
  db: string;
  marker?: string;
}

function v2Suite(kind: Kind, get: () => Promise<Target>) {
  let t: Target;
  let s: Server; // shared instance: minimal working config (§3)
  let lockHolder: Server;
  const crash: Record<string, CrashCase> = {};

  beforeAll(async () => {
    t = await get();
    s = await startServer(t.bin, env(), (port, db) => v2Config({ port, db }));
    lockHolder = await startServer(t.bin, env(), (port, db) => v2Config({ port, db }));

    // Fatal startups, all at once (each counts down 10 s in the real release).
    const launch = async (name: string, o: { args: (dir: string, port: number) => string[]; config?: (port: number, db: string) => string; marker?: string; db?: string; cfgName?: string }) => {
      const dir = scratch(`crash-${name}`);
      const port = await freePort();
      const db = o.db ?? path.join(dir, "data");
      if (o.config) fs.writeFileSync(path.join(dir, o.cfgName ?? "c.yaml"), o.config(port, db));
      const proc = start(t.bin, o.args(dir, port), { cwd: dir, env: env(o.marker ? { PDB_CONTRACT_MARKER: o.marker } : {}) });
      crash[name] = { proc, cwd: dir, db, marker: o.marker };
    };
    await launch("noConfig", { args: (dir) => ["--db", path.join(dir, "crashdb")], marker: `contract-${Date.now()}-${process.pid}` });
    await launch("flagsOnly", { cfgName: "config.yaml", config: (port, db) => v2Config({ port, db }), args: (dir, port) => ["--addr", `127.0.0.1:${port}`, "--db", path.join(dir, "flagdb")] });
    await launch("noSigning", { config: (port, db) => v2Config({ port, db, omit: ["signing"] }), args: (dir) => ["--config", path.join(dir, "c.yaml")] });
    await launch("intSize", { config: (port, db) => v2Config({ port, db, serverExtra: ["max_payload_size: 102400"] }), args: (dir) => ["--config", path.join(dir, "c.yaml")] });
    await launch("lock", { db: lockHolder.db, config: (port, db) => v2Config({ port, db }), args: (dir) => ["--config", path.join(dir, "c.yaml")] });
  });

  const crashDumps = (db: string) => {
    const d = path.join(db, "state", "crash");
    return fs.existsSync(d) ? ls(d).filter((n) => !n.startsWith(".")) : [];
  };

  /** Exit 2 after the countdown, "CRASH ERROR: …" on stderr, a 0600 dump under <db>/state/crash. */
  async function expectCrash(c: CrashCase, stderr: string, dumpDb: string): Promise<string> {
    const e = await c.proc.exited;
    expect(e.code, c.proc.stderr()).toBe(2);
    expect(e.ms).toBeGreaterThanOrEqual(t.crashMs * 0.9);
    expect(c.proc.stderr()).toContain(stderr);
    const dumps = crashDumps(dumpDb);
    expect(dumps.length).toBeGreaterThanOrEqual(1);
    for (const n of dumps) expect(n).toMatch(/^crash-\d+\.log$/);
    const dump = path.join(dumpDb, "state", "crash", dumps[dumps.length - 1]);
    expect(mode(dump)).toBe(0o600);
    expect(c.proc.stderr()).toContain(`CRASH DUMP WRITTEN: `);
    return dump;
  }

  artifactTests(() => t);

  it("reports v<version> in its banner and on the public /readyz: 200 {\"status\":\"ok\",\"version\":\"v0.2.1\"} (§1, §4; S2/internal/app/http.go, S2/pkg/api/auth/gateway.go)", async () => {
    await stdoutHas(s.proc, "Version:");
    expect(s.proc.stdout()).toMatch(/^Version: {2}v0\.2\.1\b/m);
    for (const key of [undefined, KEYS.admin, "not-a-key"]) {
      const r = await call(s.base, "GET", "/readyz", { key });
      expect(r.status).toBe(200);
      expect(r.json).toEqual({ status: "ok", version: "v0.2.1" });
    }
  });

  it("answers GET /healthz without a key: 200 {\"status\":\"ok\"} (§4)", async () => {
    const r = await call(s.base, "GET", "/healthz");
    expect([r.status, r.json]).toEqual([200, { status: "ok" }]);
  });

  it("with --config only the file counts: --addr, --db and PROGRESSDB_* env are ignored (§3; S2/pkg/config/parse.go)", async () => {
    const dir = scratch("v2prec");
    const [p1, p2, p3] = [await freePort(), await freePort(), await freePort()];
    const [d1, d2, d3] = ["file", "flag", "env"].map((n) => path.join(dir, n));
    const cfg = path.join(dir, "c.yaml");
    fs.writeFileSync(cfg, v2Config({ port: p1, db: d1 }));
    const p = start(t.bin, ["--config", cfg, "--addr", `127.0.0.1:${p2}`, "--db", d2], {
      cwd: dir,
      env: env({ PROGRESSDB_SERVER_PORT: String(p3), PROGRESSDB_SERVER_DB_PATH: d3, PROGRESSDB_API_ADMIN_KEYS: "ak_env" }),
    });
    const base = `http://127.0.0.1:${p1}`;
    await waitHealthy(p, base);
    expect(await tcpOpen(p2)).toBe(false);
    expect(await tcpOpen(p3)).toBe(false);
    expect(ls(d1)).toEqual(["index", "kms", "state", "store", "wal"]);
    expect(fs.existsSync(d2) || fs.existsSync(d3)).toBe(false);
    expect((await call(base, "GET", "/admin/stats", { key: "ak_env" })).status).toBe(401);
    expect((await call(base, "GET", "/admin/stats", { key: KEYS.admin })).status).toBe(200);
    await p.kill();
  });

  it("without a config file it crashes: exit 2 after a countdown, crash dump <--db>/state/crash/crash-<ns>.log (0600) holding the FULL environment in cleartext (§3)", async () => {
    const c = crash.noConfig;
    const dump = await expectCrash(c, "CRASH ERROR: failed to load config file - config file not found: ./config.yaml", path.join(c.cwd, "crashdb"));
    expect(fs.readFileSync(dump, "utf8")).toContain(`\nPDB_CONTRACT_MARKER=${c.marker}\n`);
    expect(mode(path.join(c.cwd, "crashdb"))).toBe(0o700);
    const reqs = ls(path.join(c.cwd, "crashdb", "state", "abort"));
    expect(reqs.some((n) => /^req-\d+\.json$/.test(n))).toBe(true);
  });

  it("--addr/--db without --config keep only addr and db, even with a ./config.yaml: crash `signing keys are required` (§3; S2/pkg/config/parse.go)", async () => {
    const c = crash.flagsOnly;
    await expectCrash(c, "CRASH ERROR: invalid configuration - signing keys are required", path.join(c.cwd, "flagdb"));
  });

  it("server.api_keys.signing unset: crash `signing keys are required`, dump under server.db_path (§3; S2/pkg/config/validate.go)", async () => {
    const c = crash.noSigning;
    await expectCrash(c, "CRASH ERROR: invalid configuration - signing keys are required", c.db);
  });

  it("sizes must be YAML strings: an integer max_payload_size is a config-load crash, dumped under ./database (§3; S2/pkg/config/types.go)", async () => {
    const c = crash.intSize;
    await expectCrash(c, "expected string node for SizeBytes", path.join(c.cwd, "database"));
    expect(c.proc.stderr()).toContain("CRASH ERROR: failed to load config file");
    expect(fs.existsSync(c.db)).toBe(false);
  });

  it("server.db_path unset: exit 2 `flag redefined: addr` at once, no crash dump (§3; S2/pkg/state/shutdown/abort.go)", async () => {
    const dir = scratch("nodb");
    const port = await freePort();
    fs.writeFileSync(path.join(dir, "c.yaml"), v2Config({ port, db: "", omit: ["db_path"] }));
    const p = start(t.bin, ["--config", path.join(dir, "c.yaml")], { cwd: dir, env: env() });
    const e = await p.exited;
    expect(e.code).toBe(2);
    expect(e.ms).toBeLessThan(5000);
    expect(p.stderr()).toContain("CRASH ERROR: invalid configuration - database path is empty");
    expect(p.stderr()).toContain("flag redefined: addr");
    expect(ls(dir)).toEqual(["c.yaml"]);
  });

  it("telemetry.flush_interval unset: panic `non-positive interval for NewTicker`, exit 2 (§3)", async () => {
    const dir = scratch("notel");
    const port = await freePort();
    fs.writeFileSync(path.join(dir, "c.yaml"), v2Config({ port, db: path.join(dir, "db"), omit: ["flush_interval"] }));
    const p = start(t.bin, ["--config", path.join(dir, "c.yaml")], { cwd: dir, env: env() });
    const e = await p.exited;
    expect(e.code).toBe(2);
    expect(p.stderr()).toContain("panic: non-positive interval for NewTicker");
  });

  it("ingest.intake.queue_capacity unset: panic, exit 2 (§3)", async () => {
    const dir = scratch("noq");
    const port = await freePort();
    fs.writeFileSync(path.join(dir, "c.yaml"), v2Config({ port, db: path.join(dir, "db"), omit: ["queue_capacity"] }));
    const p = start(t.bin, ["--config", path.join(dir, "c.yaml")], { cwd: dir, env: env() });
    const e = await p.exited;
    expect(e.code).toBe(2);
    expect(p.stderr()).toMatch(/panic: .*capacity must be > 0/);
  });

  it("server.rate_limit unset: every authenticated request gets 429; /healthz and /readyz still answer (§1, §3; S2/pkg/api/auth/limiter.go)", async () => {
    const r = await startServer(t.bin, env(), (port, db) => v2Config({ port, db, omit: ["rate_limit"] }));
    for (const key of [KEYS.admin, KEYS.backend]) {
      const x = await call(r.base, "GET", key === KEYS.admin ? "/admin/stats" : "/frontend/v1/threads", { key, user: "u" });
      expect([x.status, x.json]).toEqual([429, { error: "rate limit exceeded" }]);
    }
    expect((await call(r.base, "GET", "/admin/stats")).status).toBe(401);
    expect((await call(r.base, "GET", "/readyz")).status).toBe(200);
    await r.proc.kill();
  });

  it("SIGTERM is graceful: signal_received … shutdown: complete, exit 0 (§5; S2/pkg/state/shutdown/graceful.go)", async () => {
    const g = await startServer(t.bin, env(), (port, db) => v2Config({ port, db }));
    const t0 = Date.now();
    const e = await g.proc.signal("SIGTERM");
    expect(e.code).toBe(0);
    expect(Date.now() - t0).toBeLessThan(5000);
    const out = g.proc.stdout();
    expect(out).toMatch(/msg=signal_received signal=terminated/);
    expect(out.indexOf("signal_received")).toBeLessThan(out.indexOf('msg="shutdown: complete"'));
  });

  it("lays out store/ index/ wal/ kms/ state/ (0700), Pebble-style files under store/ and index/ (§1, §6; S2/pkg/state/dirs.go)", async () => {
    const db = s.db;
    expect(mode(db)).toBe(0o700);
    expect(ls(db)).toEqual(["index", "kms", "state", "store", "wal"]);
    for (const d of ls(db)) expect(mode(path.join(db, d)), d).toBe(0o700);
    for (const d of ["store", "index"]) expect(ls(path.join(db, d)), d).toEqual(["000002.log", "CURRENT", "LOCK", "MANIFEST-000001", "OPTIONS-000003"]);
    expect(ls(path.join(db, "state"))).toEqual(["audit", "backups", "logs", "retention", "telemetry", "tmp"]);
  });

  it("started on a 0.1 data dir: adds its subdirs, leaves the root files, logs the four [MIGRATIONS] lines, serves none of the old data and is still ready; 0.1 still sees its data afterwards (§6)", async () => {
    const dir = scratch("up");
    const db = path.join(dir, "data");
    const old = await startServer(t.sibling, env(), (port, d) => v1Config({ port, db: d }), { db });
    const th = await call(old.base, "POST", "/v1/threads", { key: KEYS.backend, body: { author: "olga", title: "old" } });
    await call(old.base, "POST", `/v1/threads/${(th.json as { id: string }).id}/messages`, { key: KEYS.backend, body: { author: "olga", body: "hi" } });
    await old.proc.signal("SIGTERM");
    const rootFiles = ls(db);
    const hashes = Object.fromEntries(rootFiles.filter((n) => n !== "LOCK").map((n) => [n, sha(path.join(db, n))]));

    const up = await startServer(t.bin, env(), (port, d) => v2Config({ port, db: d }), { db });
    expect((await call(up.base, "GET", "/readyz")).json).toEqual({ status: "ok", version: "v0.2.1" });
    expect((await call(up.base, "GET", "/admin/stats", { key: KEYS.admin })).json).toEqual({ threads: 0, messages: 0 });
    const lt = await call(up.base, "GET", "/frontend/v1/threads", { key: KEYS.backend, user: "olga" });
    expect((lt.json as { threads: unknown[] }).threads).toEqual([]);
    expect(ls(db)).toEqual([...rootFiles, "index", "kms", "state", "store", "wal"].sort());
    for (const [n, h] of Object.entries(hashes)) expect(sha(path.join(db, n)), n).toBe(h);
    const lines = [
      '"[MIGRATIONS] migration_run_invoked" new_version=v0.2.1',
      '"[MIGRATIONS] migration_version_not_found_defaulting_to_current" default=v0.2.1',
      '"[MIGRATIONS] migration_current_stored_key" stored_value=v0.2.1',
      '"[MIGRATIONS] migration_version_up_to_date" version=v0.2.1',
    ];
    await stdoutHas(up.proc, lines[3]);
    const out = up.proc.stdout();
    const at = lines.map((l) => out.indexOf(l));
    expect(at.every((i) => i >= 0)).toBe(true);
    expect([...at].sort((a, b) => a - b)).toEqual(at);
    expect(out).not.toContain("migration_completed");
    expect((await up.proc.signal("SIGTERM")).code).toBe(0);

    const back = await startServer(t.sibling, env(), (port, d) => v1Config({ port, db: d }), { db });
    const again = await call(back.base, "GET", "/v1/threads?author=olga", { key: KEYS.backend });
    expect((again.json as { threads: Array<{ title: string }> }).threads.map((x) => x.title)).toEqual(["old"]);
    await back.proc.kill();
  });

  it("refuses a db_path another instance holds: exit 2 after the countdown, dump in the running instance's state/crash (§7)", async () => {
    const c = crash.lock;
    await expectCrash(c, `CRASH ERROR: app run failed - failed to open pebble at ${path.join(lockHolder.db, "store")}: resource temporarily unavailable`, lockHolder.db);
    expect((await call(lockHolder.base, "GET", "/readyz")).status).toBe(200);
  });

  it("GET /admin/stats → {\"threads\":N,\"messages\":M} for the admin key only: backend and frontend 403, no key 401; the admin key is refused outside /admin (§1, §4; S2/pkg/api/auth/gateway.go)", async () => {
    const a = await call(s.base, "GET", "/admin/stats", { key: KEYS.admin });
    expect(a.status).toBe(200);
    expect(Object.keys(a.json as object)).toEqual(["threads", "messages"]);
    for (const key of [KEYS.backend, KEYS.frontend]) {
      const r = await call(s.base, "GET", "/admin/stats", { key, user: "u" });
      expect([r.status, r.json]).toEqual([403, { error: "forbidden" }]);
    }
    expect((await call(s.base, "GET", "/admin/stats")).json).toEqual({ error: "unauthorized" });
    const x = await call(s.base, "GET", "/frontend/v1/threads", { key: KEYS.admin, user: "u" });
    expect([x.status, x.json]).toEqual([403, { error: "forbidden" }]);
  });

  it("data API round trip in the /frontend/v1 dialect: 202 writes, keys t:<ns>, X-User-ID or ?author=, lists with pagination, soft deletes (§4; S2/pkg/api/routes/frontend/*.go)", async () => {
    const s = await startServer(t.bin, env(), (port, db) => v2Config({ port, db })); // fresh: exact stats
    const b = { key: KEYS.backend };
    const th = await call(s.base, "POST", "/frontend/v1/threads", { ...b, user: "alice", body: { title: "Contract Thread" } });
    expect(th.status).toBe(202);
    const key = (th.json as { key: string }).key;
    expect(th.json).toEqual({ key: expect.stringMatching(/^t:\d+$/) });
    // an author in the body is not read: backend keys must send X-User-ID or ?author=
    const bodyAuthor = await call(s.base, "POST", "/frontend/v1/threads", { ...b, body: { title: "x", author: "alice" } });
    expect([bodyAuthor.status, bodyAuthor.json]).toEqual([400, { error: "author required for backend requests" }]);
    const enc = encodeURIComponent(key);
    const m1 = await call(s.base, "POST", `/frontend/v1/threads/${enc}/messages`, { ...b, user: "alice", body: { body: { text: "one" } } });
    const m2 = await call(s.base, "POST", `/frontend/v1/threads/${enc}/messages?author=alice`, { ...b, body: { body: { text: "two" } } });
    expect([m1.status, m2.status]).toEqual([202, 202]);
    const k1 = (m1.json as { key: string }).key;
    expect(k1).toMatch(new RegExp(`^${key}:m:\\d+$`));
    // list threads (the author's own, newest first)
    const lt = await eventually(
      "thread listed",
      () => call(s.base, "GET", "/frontend/v1/threads", { ...b, user: "alice" }),
      (r) => (r.json as { threads: Array<{ key: string }> }).threads.some((x) => x.key === key),
    );
    const tl = lt.json as { threads: Array<Record<string, unknown>>; pagination: Record<string, unknown> };
    expect(Object.keys(tl)).toEqual(["threads", "pagination"]);
    expect(tl.threads[0]).toEqual({ key, title: "Contract Thread", author: "alice", created_ts: expect.any(Number), updated_ts: expect.any(Number) });
    expect(Object.keys(tl.pagination)).toEqual(["before_anchor", "after_anchor", "has_before", "has_after", "count", "total"]);
    expect(tl.pagination).toMatchObject({ count: 1, total: 1 });
    // list messages (oldest first); stored keys get a :<9 digits> sequence suffix
    const lm = await eventually(
      "two messages",
      () => call(s.base, "GET", `/frontend/v1/threads/${enc}/messages`, { ...b, user: "alice" }),
      (r) => (r.json as { messages?: unknown[] }).messages?.length === 2,
    );
    const ml = lm.json as { thread: string; messages: Array<{ key: string; body: unknown; author: string }>; pagination: { total: number } };
    expect(Object.keys(ml)).toEqual(["thread", "messages", "pagination"]);
    expect(ml.thread).toBe(key);
    expect(ml.messages.map((m) => m.body)).toEqual([{ text: "one" }, { text: "two" }]);
    expect(ml.messages[0].key).toBe(`${k1}:000000000`);
    expect(ml.messages.every((m) => m.author === "alice" && /^t:\d+:m:\d+:\d{9}$/.test(m.key))).toBe(true);
    expect(ml.pagination.total).toBe(2);
    const stats = async () => (await call(s.base, "GET", "/admin/stats", { key: KEYS.admin })).json;
    expect(await eventually("stats", stats, (j) => (j as { messages: number }).messages === 2)).toEqual({ threads: 1, messages: 2 });
    // delete a message by its provisional key: 202 with the stored key; stats unchanged
    const dm = await call(s.base, "DELETE", `/frontend/v1/threads/${enc}/messages/${encodeURIComponent(k1)}`, { ...b, user: "alice" });
    expect([dm.status, dm.json]).toEqual([202, { key: `${k1}:000000000` }]);
    await eventually(
      "message gone",
      () => call(s.base, "GET", `/frontend/v1/threads/${enc}/messages`, { ...b, user: "alice" }),
      (r) => (r.json as { messages?: unknown[] }).messages?.length === 1,
    );
    expect(await stats()).toEqual({ threads: 1, messages: 2 });
    // delete the thread: 202; gone from the list, its messages 404; stats unchanged
    const dt = await call(s.base, "DELETE", `/frontend/v1/threads/${enc}`, { ...b, user: "alice" });
    expect([dt.status, dt.json]).toEqual([202, { key }]);
    await eventually(
      "thread gone",
      () => call(s.base, "GET", "/frontend/v1/threads", { ...b, user: "alice" }),
      (r) => (r.json as { threads: unknown[] }).threads.length === 0,
    );
    const gone = await call(s.base, "GET", `/frontend/v1/threads/${enc}/messages`, { ...b, user: "alice" });
    expect([gone.status, gone.json]).toEqual([404, { error: "thread not found" }]);
    expect(await stats()).toEqual({ threads: 1, messages: 2 });
    await s.proc.kill();
  });

  it("accepts Authorization: Bearer as well as X-API-Key; frontend keys need X-User-ID + X-User-Signature = HMAC-SHA256(signing key, user) from POST /backend/v1/sign (§4; S2/pkg/api/routes/backend/operators.go, S2/pkg/api/auth/identity.go)", async () => {
    const bearer = await call(s.base, "GET", "/admin/stats", { headers: { Authorization: `Bearer ${KEYS.admin}` } });
    expect(bearer.status).toBe(200);
    const sig = await call(s.base, "POST", "/backend/v1/sign", { key: KEYS.backend, body: { userId: "fiona" } });
    expect(sig.status).toBe(200);
    const signature = (sig.json as { signature: string }).signature;
    expect(sig.json).toEqual({ userId: "fiona", signature: expect.stringMatching(/^[0-9a-f]{64}$/) });
    const f = { key: KEYS.frontend, user: "fiona" };
    const unsigned = await call(s.base, "POST", "/frontend/v1/threads", { ...f, body: { title: "mine" } });
    expect([unsigned.status, unsigned.json]).toEqual([401, { error: "signature required" }]);
    const signed = await call(s.base, "POST", "/frontend/v1/threads", { ...f, headers: { "X-User-Signature": signature }, body: { title: "mine" } });
    expect(signed.status).toBe(202);
    const bad = await call(s.base, "POST", "/frontend/v1/threads", { ...f, headers: { "X-User-Signature": "0".repeat(64) }, body: { title: "mine" } });
    expect([bad.status, bad.json]).toEqual([401, { error: "invalid signature" }]);
    const asFrontend = await call(s.base, "POST", "/backend/v1/sign", { ...f, headers: { "X-User-Signature": signature }, body: { userId: "x" } });
    expect(asFrontend.status).toBe(403);
  });

  it("bodies over max_payload_size (102400 B when unset) get 400 `Error when parsing request` (§1)", async () => {
    const th = await call(s.base, "POST", "/frontend/v1/threads", { key: KEYS.backend, user: "big", body: { title: "big" } });
    const enc = encodeURIComponent((th.json as { key: string }).key);
    const url = `${s.base}/frontend/v1/threads/${enc}/messages`;
    const h = { "X-API-Key": KEYS.backend, "X-User-ID": "big", "Content-Type": "application/json" };
    const over = await rawPost(url, Buffer.from(JSON.stringify({ body: { text: "x".repeat(200_000) } })), h);
    expect([over.status, over.text]).toEqual([400, "Error when parsing request"]);
    const under = await rawPost(url, Buffer.from(JSON.stringify({ body: { text: "x".repeat(102_300) } })), h);
    expect(under.status).toBe(202);
  });

  it("the renderer's optional keys work: max_payload_size, logging.level, embedded KMS (a master_key_hex that is not 32 bytes is hashed; fields [\"body\"] encrypts bodies at rest) (§3; S2/pkg/store/encryption/kms.go)", async () => {
    const full = await startServer(t.bin, env(), (port, db) =>
      v2Config({
        port,
        db,
        serverExtra: [`max_payload_size: "1MB"`],
        extra: ["logging:", `  level: "info"`, "encryption:", "  enabled: true", `  fields: ["body"]`, "  kms:", `    mode: "embedded"`, `    master_key_hex: "00ff"`, ""].join("\n"),
      }),
    );
    await stdoutHas(full.proc, "master key hashed to 32 bytes");
    const b = { key: KEYS.backend, user: "kim" };
    const th = await call(full.base, "POST", "/frontend/v1/threads", { ...b, body: { title: "encrypted" } });
    const key = (th.json as { key: string }).key;
    const enc = encodeURIComponent(key);
    await eventually("thread", () => call(full.base, "GET", "/frontend/v1/threads", b), (r) => (r.json as { threads: unknown[] }).threads.length === 1);
    const marker = `MARKER-${Date.now()}-kms`;
    expect((await call(full.base, "POST", `/frontend/v1/threads/${enc}/messages`, { ...b, body: { body: { text: marker } } })).status).toBe(202);
    const lm = await eventually(
      "message",
      () => call(full.base, "GET", `/frontend/v1/threads/${enc}/messages`, b),
      (r) => (r.json as { messages?: unknown[] }).messages?.length === 1,
    );
    expect((lm.json as { messages: Array<{ body: unknown }> }).messages[0].body).toEqual({ text: marker });
    expect(anyFileContains(full.db, marker)).toBeUndefined();
    expect(ls(path.join(full.db, "kms")).length).toBeGreaterThan(0);
    const big = await rawPost(`${full.base}/frontend/v1/threads/${enc}/messages`, Buffer.from(JSON.stringify({ body: { text: "x".repeat(200_000) } })), {
      "X-API-Key": KEYS.backend,
      "X-User-ID": "kim",
      "Content-Type": "application/json",
    });
    expect(big.status).toBe(202);
    await full.proc.kill();
  });

  describe("prgcli migrate (§6; clients/cli/cmd/migrate.go, clients/cli/internal/migrate/migrate_to_pebble.go)", () => {
    let src: Server;
    const key = "ab".repeat(32);
    let old: { threadId: string; createdTs: number; msgTs: number[]; deletedId: string; deletedCreatedTs: number };

    beforeAll(async () => {
      src = await startServer(t.sibling, env(), (port, db) => v1Config({ port, db }));
      const bk = { key: KEYS.backend };
      const th = await call(src.base, "POST", "/v1/threads", { ...bk, body: { author: "carol", title: "Migrated Title" } });
      const thread = th.json as { id: string; created_ts: number };
      const a = await call(src.base, "POST", `/v1/threads/${thread.id}/messages`, { ...bk, body: { author: "carol", body: { text: "one" } } });
      const b = await call(src.base, "POST", `/v1/threads/${thread.id}/messages`, { ...bk, body: { author: "dave", body: { text: "two" } } });
      // A second thread whose message and then the thread itself were deleted in 0.1.
      const gone = (await call(src.base, "POST", "/v1/threads", { ...bk, body: { author: "carol", title: "Deleted in 0.1" } })).json as { id: string; created_ts: number };
      const gm = (await call(src.base, "POST", `/v1/threads/${gone.id}/messages`, { ...bk, body: { author: "carol", body: { text: "gone" } } })).json as { id: string };
      expect((await call(src.base, "DELETE", `/v1/threads/${gone.id}/messages/${gm.id}?author=carol`, bk)).status).toBe(204);
      expect((await call(src.base, "DELETE", `/v1/threads/${gone.id}?author=carol`, bk)).status).toBe(204);
      old = {
        threadId: thread.id,
        createdTs: thread.created_ts,
        msgTs: [a, b].map((r) => (r.json as { ts: number }).ts),
        deletedId: gone.id,
        deletedCreatedTs: gone.created_ts,
      };
    });

    const cli = (args: string[], input = "", extra: Record<string, string> = {}) => runCli(t.prgcli!, args, { cwd: src.dir, env: env(extra), input });

    it("reports `progressdb version dev (commit: unknown)` for --version; `version` is not a command (§2; clients/cli/cmd/root.go)", async () => {
      const v = await cli(["--version"]);
      expect([v.code, v.stdout.trim()]).toEqual([0, "progressdb version dev (commit: unknown)"]);
      const c = await cli(["version"]);
      expect(c.code).toBe(1);
      expect(c.stderr).toContain('unknown command "version"');
    });

    it("fails with exit 1 `resource temporarily unavailable` while a 0.1 instance holds the source (§6)", async () => {
      const r = await cli(["migrate", "--from", src.db, "--to", path.join(src.dir, "locked"), "--old-encryption-key", key, "--format", "pebble"], "y\n");
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("resource temporarily unavailable");
      await src.proc.signal("SIGTERM");
    });

    it("requires --old-encryption-key even for unencrypted data: exit 1 (§6)", async () => {
      const r = await cli(["migrate", "--from", src.db, "--to", path.join(src.dir, "nokey"), "--format", "pebble", "--interactive=false"]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain("old encryption key is required");
    });

    it("prints `Migration Summary:` and asks `[y/N]:`; anything but y/yes cancels with exit 0 and writes nothing (§6)", async () => {
      const to = path.join(src.dir, "cancelled");
      for (const answer of ["n\n", "Yes please\n", ""]) {
        const r = await cli(["migrate", "--from", src.db, "--to", to, "--old-encryption-key", key, "--format", "pebble"], answer);
        expect(r.code).toBe(0);
        expect(r.stdout).toContain("Migration Summary:");
        expect(r.stdout).toContain("[y/N]:");
        expect(r.stdout).toContain("Migration cancelled.");
        expect(fs.existsSync(to)).toBe(false);
      }
    });

    /** Migrates with --format pebble and checks what 0.2.1 serves; `copies` = how often each message appears. */
    async function migrateAndServe(copies: number, extraEnv: Record<string, string> = {}) {
      const to = path.join(src.dir, `migrated-${copies}-${Date.now()}`);
      const r = await cli(["migrate", "--old-db-path", src.db, "--to", to, "--old-encryption-key", key, "--format", "pebble"], "y\n", extraEnv);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toContain("Migration Summary:");
      // 0.1 rows: thread 1 has 2 message versions; thread 2 has 3 ("gone", its deleted version, the thread tombstone)
      expect(r.stdout).toMatch(/^ {2}Threads migrated: 2$/m);
      expect(r.stdout).toMatch(new RegExp(`^ {2}Messages migrated: ${5 * copies}$`, "m"));
      expect(r.stdout).toMatch(/^ {2}Indexes created: 8$/m);
      expect(r.stdout).toMatch(/^ {2}Relationships created: 4$/m);
      expect(ls(to)).toEqual(["index", "kms", "state", "store", "wal"]);

      const up = await startServer(t.bin, env(), (port, db) => v2Config({ port, db }), { db: to });
      expect((await call(up.base, "GET", "/admin/stats", { key: KEYS.admin })).json).toEqual({ threads: 2, messages: 5 * copies });
      const b = { key: KEYS.backend, user: "carol" };
      const lt = await call(up.base, "GET", "/frontend/v1/threads", b);
      const threads = (lt.json as { threads: Array<Record<string, unknown>> }).threads;
      const keyOf = (id: string) => `t:${id.split("-")[1].padStart(20, "0")}`;
      // title and author carry over; the key is t:<20-digit thread ns>; the thread deleted in 0.1 is back (deleted is not carried)
      expect(threads).toEqual([
        { key: keyOf(old.deletedId), title: "Deleted in 0.1", author: "carol", created_ts: old.deletedCreatedTs, updated_ts: old.deletedCreatedTs },
        { key: keyOf(old.threadId), title: "Migrated Title", author: "carol", created_ts: old.createdTs, updated_ts: old.createdTs },
      ]);
      // every 0.1 version of a message becomes a message: the deleted one is back, its delete and the tombstone are listed with "deleted":true
      const ld = await call(up.base, "GET", `/frontend/v1/threads/${encodeURIComponent(keyOf(old.deletedId))}/messages`, b);
      const dmsgs = (ld.json as { messages: Array<{ body: unknown; deleted?: boolean }> }).messages;
      const rep = <T>(xs: T[]) => xs.flatMap((x) => Array<T>(copies).fill(x));
      expect(dmsgs.map((m) => [m.body, m.deleted ?? false])).toEqual(
        rep<[unknown, boolean]>([
          [{ text: "gone" }, false],
          [{ text: "gone" }, true],
          [{ _event: "thread_deleted", by: "carol" }, true],
        ]),
      );
      const enc = encodeURIComponent(keyOf(old.threadId));
      const lm = await call(up.base, "GET", `/frontend/v1/threads/${enc}/messages`, b);
      const msgs = (lm.json as { messages: Array<{ author: string; body: unknown; created_ts: number }> }).messages;
      // each message keeps its author, body and timestamp
      expect(msgs.map((m) => m.body)).toEqual(rep([{ text: "one" }, { text: "two" }]));
      expect(msgs.map((m) => m.author)).toEqual(rep(["carol", "dave"]));
      expect(msgs.map((m) => m.created_ts)).toEqual(rep(old.msgTs));
      // and 0.2.1 takes new writes on the migrated thread
      expect((await call(up.base, "POST", `/frontend/v1/threads/${enc}/messages`, { ...b, body: { body: "after" } })).status).toBe(202);
      await eventually(
        "new message",
        () => call(up.base, "GET", `/frontend/v1/threads/${enc}/messages`, b),
        (x) => (x.json as { messages: unknown[] }).messages.length === 2 * copies + 1,
      );
      await up.proc.kill();
    }

    it(
      kind === "real"
        ? "--format pebble: 0.2.1 serves the migrated data — every message TWICE (the real 0.2.1 bug) (§6)"
        : "--format pebble: 0.2.1 serves the migrated data, each message once (stand-in without the bug switch) (§6)",
      async () => {
        await migrateAndServe(t.kind === "real" ? 2 : 1);
      },
    );

    it.runIf(kind === "stand-in")("the stand-in reproduces the duplicates only when switched on (PRGCLI_STANDIN_FAULT=duplicate-messages) (§6)", async () => {
      await migrateAndServe(2, { PRGCLI_STANDIN_FAULT: "duplicate-messages" });
    });

    /**
     * Writes `n` messages to a 0.1.2 with an encryption_key, stops it, migrates with --verbose, and
     * returns how many message versions prgcli migrated and how many thread:…:msg: values it
     * skipped as unparsable JSON.
     */
    async function migrateEncrypted(n: number, serverEnv: Record<string, string> = {}) {
      const enc = await startServer(t.sibling, env(serverEnv), (port, db) => v1Config({ port, db, encryptionKey: key }));
      const bk = { key: KEYS.backend };
      const th = (await call(enc.base, "POST", "/v1/threads", { ...bk, body: { author: "erin", title: "sealed" } })).json as { id: string };
      for (let i = 0; i < n; i++) {
        const r = await call(enc.base, "POST", `/v1/threads/${th.id}/messages`, { ...bk, body: { author: "erin", body: { text: `m${i}` } } });
        expect(r.status).toBe(200);
      }
      expect((await call(enc.base, "GET", "/admin/stats", { key: KEYS.admin })).json).toEqual({ threads: 1, messages: n });
      await enc.proc.signal("SIGTERM");
      await enc.proc.exited;
      const to = path.join(enc.dir, "migrated");
      const r = await runCli(t.prgcli!, ["--verbose", "migrate", "--old-db-path", enc.db, "--to", to, "--old-encryption-key", key, "--format", "pebble"], {
        cwd: enc.dir,
        env: env(),
        input: "y\n",
      });
      expect(r.code, r.stderr).toBe(0);
      const migrated = Number(/^ {2}Messages migrated: (\d+)$/m.exec(r.stdout)?.[1]);
      const skipped = (r.stdout.match(/Failed to parse JSON for key thread:[^ ]*:msg:/g) ?? []).length;
      return { migrated, skipped };
    }

    // 0.1.x seals a whole message as nonce|ciphertext with a random nonce (S1/pkg/security/crypto.go);
    // prgcli's decryptValue passes a value whose first non-blank byte is '{' or '[' through as
    // plaintext JSON, fails to parse it and skips it (clients/cli/internal/migrate/migrate_to_pebble.go):
    // about 1 value in 128 is lost. migrate.sh's message count check is there for it.
    if (kind === "real") {
      it("an encrypted 0.1.2 store: prgcli skips the ~1 in 128 messages whose ciphertext looks like JSON (not in releases-as-built)", async () => {
        const n = 1200; // P(no such value among them) < 1e-4
        const { migrated, skipped } = await migrateEncrypted(n);
        expect(skipped).toBeGreaterThanOrEqual(1);
        expect(skipped).toBeLessThan(n * 0.03);
        // each skipped value is gone from both of its copies (thread:…:msg: and version:msg: hold the same bytes)
        expect(migrated).toBe(2 * (n - skipped));
      }, 120_000);
    } else {
      it("the stand-in's ciphertexts never look like JSON, except with PROGRESSDB_STANDIN_FAULT=json-looking-ciphertext: then prgcli skips every one", async () => {
        expect(await migrateEncrypted(50)).toEqual({ migrated: 50, skipped: 0 });
        expect(await migrateEncrypted(5, { PROGRESSDB_STANDIN_FAULT: "json-looking-ciphertext" })).toEqual({ migrated: 0, skipped: 5 });
      });
    }
  });
}

for (const kind of ["stand-in", "real"] as const) {
  for (const version of ["0.1.2", "0.2.1"] as const) {
    const d = kind === "real" && !realDir ? describe.skip : describe;
    d(`${kind} ${version}`, () => {
      const get = () => target(kind, version);
      if (version === "0.1.2") v1Suite(get);
      else v2Suite(kind, get);
    });
  }
}

// ============================================================================
// Fixture-only: the stand-in's fault knobs (no real counterpart).
// ============================================================================

describe("stand-in fault knobs (fixture only)", () => {
  let t1: Target;
  let t2: Target;
  beforeAll(async () => {
    t1 = await target("stand-in", "0.1.2");
    t2 = await target("stand-in", "0.2.1");
  });

  it("exit-at-start exits 1 at once", async () => {
    for (const bin of [t1.bin, t2.bin]) {
      const p = start(bin, [], { cwd: scratch("f-exit"), env: env({ PROGRESSDB_STANDIN_FAULT: "exit-at-start" }) });
      const e = await p.exited;
      expect(e.code).toBe(1);
      expect(e.ms).toBeLessThan(3000);
    }
  });

  it("wrong-version: 0.2 /readyz reports another version", async () => {
    const s = await startServer(t2.bin, env({ PROGRESSDB_STANDIN_FAULT: "wrong-version" }), (port, db) => v2Config({ port, db }));
    const r = await call(s.base, "GET", "/readyz");
    expect(r.status).toBe(200);
    expect((r.json as { version: string }).version).not.toBe("v0.2.1");
    await s.proc.kill();
  });

  it("never-ready: /healthz and /readyz answer 503", async () => {
    for (const [bin, cfg] of [
      [t1.bin, (port: number, db: string) => v1Config({ port, db })],
      [t2.bin, (port: number, db: string) => v2Config({ port, db })],
    ] as const) {
      const dir = scratch("f-never");
      const port = await freePort();
      fs.writeFileSync(path.join(dir, "c.yaml"), cfg(port, path.join(dir, "db")));
      const p = start(bin, ["--config", path.join(dir, "c.yaml")], { cwd: dir, env: env({ PROGRESSDB_STANDIN_FAULT: "never-ready" }) });
      const base = `http://127.0.0.1:${port}`;
      await eventually("listening", () => tcpOpen(port), (x) => x);
      expect((await call(base, "GET", "/healthz")).status).toBe(503);
      if (bin === t2.bin) expect((await call(base, "GET", "/readyz")).status).toBe(503);
      await p.kill();
    }
  });

  it("empty-store: healthy, but serves none of the existing data (a release that silently loses data)", async () => {
    const a = await startServer(t1.bin, env(), (port, db) => v1Config({ port, db }));
    await call(a.base, "POST", "/v1/threads", { key: KEYS.backend, body: { author: "e", title: "kept" } });
    expect((await call(a.base, "GET", "/admin/stats", { key: KEYS.admin })).json).toEqual({ threads: 1, messages: 0 });
    await a.proc.kill();
    const b = await startServer(t1.bin, env({ PROGRESSDB_STANDIN_FAULT: "empty-store" }), (port, db) => v1Config({ port, db }), { db: a.db });
    expect((await call(b.base, "GET", "/admin/stats", { key: KEYS.admin })).json).toEqual({ threads: 0, messages: 0 });
    await b.proc.kill();
    const c = await startServer(t1.bin, env(), (port, db) => v1Config({ port, db }), { db: a.db });
    expect((await call(c.base, "GET", "/admin/stats", { key: KEYS.admin })).json).toEqual({ threads: 1, messages: 0 });
    await c.proc.kill();
  });
});
