/**
 * Upgrade 0.1.2 → 0.2.0 of a "process"-managed host through the rendered
 * scripts over real SSH, with a real MinIO and the progressdb stand-in.
 * The install dir deliberately contains a space, a quote and "$HOME".
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as zlib from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  backup,
  downloadObject,
  install,
  newHost,
  pidOf,
  preflight,
  provision,
  readMessages,
  readyz,
  sha256File,
  skipMessage,
  startCmdlinePoller,
  startWorld,
  treeHash,
  untar,
  writeSampleData,
  type BackupJson,
  type TestHost,
  type World,
} from "./world";
import { run, tempDir } from "../fixtures/net";

const skip = skipMessage("upgrade.process integration tests");

describe.skipIf(!!skip)("upgrade 0.1.2 → 0.2.0 (process manager)", () => {
  let w: World;
  let h: TestHost;
  let data: { threadKey: string; bodies: unknown[] };
  let poller: { stop(): string[] };
  const outputs: string[] = [];
  let b: BackupJson;
  let dbTreeAfterStop: string;
  let kmsTreeAfterStop: string;

  beforeAll(async () => {
    poller = startCmdlinePoller();
    w = await startWorld();
    h = await newHost(w, "proc", "process", {
      withSeparateKms: true,
      installDir: path.join(w.root, "proc", "opt", "it's $HOME dir", "progressdb"),
    });
    await provision(w, h, "0.1.2");
    data = await writeSampleData(h, 3);
  }, 180_000);

  afterAll(async () => {
    poller?.stop();
    await w?.stop();
  }, 120_000);

  it("starts 0.1.2 detached from the SSH session, with its env file 0600", async () => {
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "0.1.2" });
    const env = path.join(h.params.installDir, "progressdb.env");
    expect(fs.statSync(env).mode & 0o777).toBe(0o600);
    expect(fs.readFileSync(env, "utf8")).toBe(`PROGRESSDB_KMS_MASTER_KEY_HEX=${h.kmsKeyHex}\n`);
    expect(fs.readlinkSync(path.join(h.params.installDir, "current"))).toBe(path.join(h.params.installDir, "releases", "0.1.2"));
    // The separate v0.1 KMS dir holds the key hash, never the key.
    expect(fs.readdirSync(h.params.kmsDataDir!)).toContain("master.sha256");
  });

  it("preflight stages and verifies 0.2.0 without touching the service, and is idempotent", async () => {
    const pid = pidOf(h);
    const p1 = await preflight(w, h, "0.2.0");
    outputs.push(p1.stdout, p1.stderr);
    expect(p1.code, p1.stderr).toBe(0);
    const rel = w.mirror.release("0.2.0");
    expect(p1.json).toEqual({
      archive: path.join(h.params.installDir, "staging", "0.2.0", rel.archiveName),
      sha256: rel.sha256,
      reused: false,
    });
    expect(sha256File(p1.json!.archive)).toBe(rel.sha256);
    const p2 = await preflight(w, h, "0.2.0");
    expect(p2.code, p2.stderr).toBe(0);
    expect(p2.json!.reused).toBe(true);
    expect(pidOf(h)).toBe(pid);
    expect((await readyz(h)).body.version).toBe("0.1.2");
  });

  it("backup stops the service, streams a verified tar.gz to S3 with metadata and sidecar", async () => {
    const r = await backup(w, h, "0.2.0");
    outputs.push(r.stdout, r.stderr);
    expect(r.code, r.stderr).toBe(0);
    b = r.json!;
    // The service is stopped: the data dir is exactly as it was at the stop.
    expect(pidOf(h)).toBeUndefined();
    expect((await readyz(h)).status).toBe(0);
    dbTreeAfterStop = treeHash(h.params.dbPath);
    kmsTreeAfterStop = treeHash(h.params.kmsDataDir!);

    expect(b.fromVersion).toBe("0.1.2");
    expect(b.toVersion).toBe("0.2.0");
    expect(b.key).toMatch(/^progressdb-backups\/itest\/\d{8}T\d{6}Z-0\.1\.2-to-0\.2\.0\.tar\.gz$/);
    expect(b.uri).toBe(`s3://${w.minio.bucket}/${b.key}`);

    const head = await w.minio.aws(["s3api", "head-object", "--bucket", w.minio.bucket, "--key", b.key!]);
    expect(head.code, head.stderr).toBe(0);
    const meta = JSON.parse(head.stdout) as { ContentLength: number; Metadata: Record<string, string> };
    expect(meta.ContentLength).toBe(b.size);
    expect(meta.Metadata.sha256).toBe(b.sha256);
    expect(meta.Metadata["from-version"]).toBe("0.1.2");

    const sidecar = await w.minio.aws(["s3", "cp", `s3://${w.minio.bucket}/${b.key}.sha256`, "-"]);
    expect(sidecar.stdout).toBe(`${b.sha256}  ${path.basename(b.key!)}\n`);

    const ls = await w.minio.aws(["s3", "ls", `s3://${w.minio.bucket}/progressdb-backups/itest/`]);
    expect(ls.stdout).not.toContain(".partial");
  });

  it("the backup restores to a byte-identical tree, without the master key", async () => {
    const dir = tempDir("restore");
    try {
      const archive = path.join(dir, "backup.tar.gz");
      await downloadObject(w, b.key!, archive);
      expect(sha256File(archive)).toBe(b.sha256);
      expect(fs.statSync(archive).size).toBe(b.size);
      const x = await untar(archive, path.join(dir, "root"));
      expect(x.code, x.stderr).toBe(0);
      const root = path.join(dir, "root");
      expect(treeHash(path.join(root, h.params.dbPath))).toBe(dbTreeAfterStop);
      expect(treeHash(path.join(root, h.params.kmsDataDir!))).toBe(kmsTreeAfterStop);
      const manifest = JSON.parse(fs.readFileSync(path.join(root, "progressdb-backup.json"), "utf8"));
      expect(manifest).toMatchObject({ fromVersion: "0.1.2", toVersion: "0.2.0", dbPath: h.params.dbPath, kmsDataDir: h.params.kmsDataDir });
      const listing = await run("tar", ["-tzf", archive]);
      expect(listing.stdout).not.toMatch(/progressdb\.env/);
      // Neither the key nor its hex text is anywhere in the archive bytes.
      const plain = zlib.gunzipSync(fs.readFileSync(archive));
      expect(plain.includes(Buffer.from(h.kmsKeyHex))).toBe(false);
      expect(plain.includes(Buffer.from(h.kmsKeyHex, "hex"))).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("install switches current to 0.2.0, migrates, keeps 0.1.2, and the data is intact", async () => {
    const r = await install(w, h, "0.2.0", { backupUri: b.uri });
    outputs.push(r.stdout, r.stderr);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toEqual({ version: "0.2.0", previousVersion: "0.1.2" });
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "0.2.0" });
    expect(fs.readlinkSync(path.join(h.params.installDir, "current"))).toBe(path.join(h.params.installDir, "releases", "0.2.0"));
    expect(fs.existsSync(path.join(h.params.installDir, "releases", "0.1.2", "progressdb"))).toBe(true);
    expect(await readMessages(h, data.threadKey)).toEqual(data.bodies);
    for (const d of ["store", "index", "wal", "kms", "state"]) {
      expect(fs.existsSync(path.join(h.params.dbPath, d)), d).toBe(true);
    }
    const log = fs.readFileSync(path.join(h.params.installDir, "logs", `${h.params.serviceName}.log`), "utf8");
    expect(log).toContain("migration_complete");
    // The backup stopped 0.1.2 with a clean SIGTERM (flushed, exit 0) before 0.2.0 started.
    expect(log.indexOf('"msg":"shutdown complete","ts"')).toBeGreaterThan(-1);
    expect(log.indexOf('"msg":"shutdown complete"')).toBeLessThan(log.indexOf("migration_complete"));
  });

  it("re-running the install converges without a restart", async () => {
    const pid = pidOf(h);
    const r = await install(w, h, "0.2.0");
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toEqual({ version: "0.2.0", previousVersion: "0.1.2" });
    expect(pidOf(h)).toBe(pid);
  });

  it("re-running the backup after success takes a new backup and does not break", async () => {
    const r = await backup(w, h, "0.2.0");
    expect(r.code, r.stderr).toBe(0);
    expect(r.json!.fromVersion).toBe("0.2.0");
    // Bring the service back (install starts what current points to).
    const i = await install(w, h, "0.2.0");
    expect(i.code, i.stderr).toBe(0);
    expect((await readyz(h)).body.version).toBe("0.2.0");
  });

  it("keeps at most keepReleases releases, never the previous one", async () => {
    const p = await preflight(w, h, "0.2.1", { s3: null });
    expect(p.code, p.stderr).toBe(0);
    const r = await install(w, h, "0.2.1", { keepReleases: 1 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toEqual({ version: "0.2.1", previousVersion: "0.2.0" });
    expect(fs.readdirSync(path.join(h.params.installDir, "releases")).filter((n) => !n.startsWith(".")).sort()).toEqual(["0.2.0", "0.2.1"]);
    expect(fs.readdirSync(path.join(h.params.installDir, "staging"))).toEqual(["0.2.1"]);
    expect(await readMessages(h, data.threadKey)).toEqual(data.bodies);
  });

  it("never put a secret in any process's argv or in stdout", async () => {
    const cmdlines = poller.stop();
    expect(cmdlines.length).toBeGreaterThan(20);
    // The poller really saw the scripts run (the ssh client carrying the script text).
    expect(cmdlines.some((c) => c.includes("PDB_SCRIPT='backup'"))).toBe(true);
    const secrets = [w.secrets.awsSecretAccessKey, w.secrets.awsAccessKeyId, h.kmsKeyHex];
    for (const s of secrets) {
      expect(cmdlines.filter((c) => c.includes(s))).toEqual([]);
      for (const o of outputs) expect(o.includes(s)).toBe(false);
    }
  });
});
