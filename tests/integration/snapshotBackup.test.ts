/**
 * The snapshot backup (binary mode's default), through the rendered scripts
 * over real SSH with a real MinIO: the warm copy while the service runs, the
 * cold delta inside the install's stop, the offsite upload once the service
 * runs again (started beside the install, as the engine does), the fallback to
 * the streaming backup when the snapshot does not fit, and old tar.gz backups
 * restoring as before. Every aws process start is recorded by a wrapper that
 * asks the service's /healthz at that moment: none may find it stopped.
 */
import { execFileSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  backup,
  currentLink,
  downloadObject,
  install,
  newHost,
  offsite,
  pidOf,
  plainArchive,
  preflight,
  provision,
  readMessages,
  readyz,
  releaseDir,
  restore,
  secretsOf,
  sha256File,
  skipMessage,
  startWorld,
  treeHash,
  writeSampleData,
  type TestHost,
  type World,
} from "./world";
import { awsCliPath } from "../fixtures/minio";
import { run, tempDir } from "../fixtures/net";

const skip = skipMessage("snapshot backup integration tests", fs.existsSync("/usr/bin/rsync") ? undefined : "rsync is not installed (scripts/setup.sh installs it)");

/** An aws CLI that records, for each start, whether the service answered /healthz at that moment. */
function awsRecorder(dir: string, url: string): { path: string; starts: () => Array<{ health: string; args: string }> } {
  const log = path.join(dir, "aws-starts.log");
  const wrapper = path.join(dir, "aws");
  fs.writeFileSync(
    wrapper,
    [
      "#!/bin/sh",
      `code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 '${url}/healthz' || true)`,
      `printf '%s %s\\n' "$code" "$*" >>'${log}'`,
      `exec '${awsCliPath}' "$@"`,
      "",
    ].join("\n"),
    { mode: 0o755 },
  );
  return {
    path: wrapper,
    starts: () =>
      (fs.existsSync(log) ? fs.readFileSync(log, "utf8") : "")
        .split("\n")
        .filter(Boolean)
        .map((l) => ({ health: l.slice(0, 3), args: l.slice(4) })),
  };
}

describe.skipIf(!!skip).concurrent("snapshot backup", { timeout: 150_000 }, () => {
  let w: World;
  let scratch: string;

  beforeAll(async () => {
    w = await startWorld({ versions: ["0.2.1", "0.2.2", { version: "0.2.3", fault: "exit-at-start" }] });
    scratch = tempDir("snapshot");
  }, 180_000);
  afterAll(async () => {
    await w?.stop();
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }, 120_000);

  async function recordedHost(name: string): Promise<{ h: TestHost; aws: ReturnType<typeof awsRecorder> }> {
    const h0 = await newHost(w, name, "process", { withSeparateKms: true });
    const dir = path.join(scratch, name);
    fs.mkdirSync(dir, { recursive: true });
    const aws = awsRecorder(dir, h0.url);
    h0.params.awsCli = aws.path;
    await provision(w, h0, "0.2.1");
    return { h: h0, aws };
  }

  it("an upgrade: the copy is made while 0.2.1 serves, a write just before the stop is in the backup, no aws process starts while the service is stopped", async () => {
    const { h, aws } = await recordedHost("snap");
    const before = await writeSampleData(h, "0.2.1", 3);
    const pid = pidOf(h);
    const snap = `${h.params.dbPath}.backup-snapshot`;

    const p = await preflight(w, h, "0.2.2", { backupMode: "snapshot" });
    expect(p.code, p.stderr).toBe(0);
    expect(p.json!.backup).toBe("snapshot");

    const b = await backup(w, h, "0.2.2", { stack: h.params.serviceName, mode: "snapshot" });
    expect(b.code, b.stderr).toBe(0);
    expect(b.json).toMatchObject({ snapshot: snap, fromVersion: "0.2.1", toVersion: "0.2.2" });
    expect(b.json!.key).toMatch(/^progressdb-backups\/pdb-snap\/\d{8}T\d{6}Z-0\.2\.1-to-0\.2\.2\.tar\.zst$/);
    expect(b.json!.uri).toBeUndefined();
    // Nothing stopped, nothing sent to S3.
    expect(pidOf(h)).toBe(pid);
    expect(aws.starts().filter((s) => !s.args.includes("head-bucket") && !s.args.includes("get-bucket"))).toEqual([]);
    expect(fs.statSync(snap).mode & 0o777).toBe(0o700);

    // The offsite step starts beside the install, as the engine runs it: it waits for the release.
    const upload = offsite(w, h, "0.2.2", { stack: h.params.serviceName });
    // A write after the warm copy, just before the stop: only the cold delta can carry it.
    const late = await writeSampleData(h, "0.2.1", 2);
    expect(treeHash(path.join(snap, "tree", h.params.dbPath))).not.toBe(treeHash(h.params.dbPath));

    const i = await install(w, h, "0.2.2");
    expect(i.code, i.stderr).toBe(0);
    expect(i.stderr).toMatch(/backup snapshot completed with the service stopped \(cold delta in \d+ s\)/);
    const o = await upload;
    expect(o.code, o.stderr).toBe(0);
    const r = o.json!;
    expect(r).toMatchObject({ uri: `s3://${w.minio.bucket}/${b.json!.key}`, key: b.json!.key, fromVersion: "0.2.1", toVersion: "0.2.2", at: b.json!.at });
    expect(r.sha256).toMatch(/^[0-9a-f]{64}$/);
    // The local copy is gone once the offsite one is verified; the result is recorded (a re-run repeats it).
    expect(fs.existsSync(snap)).toBe(false);
    const again = await offsite(w, h, "0.2.2", { stack: h.params.serviceName });
    expect(again.json).toEqual(r);

    // Every aws process found the service answering when it started.
    const starts = aws.starts();
    expect(starts.length).toBeGreaterThanOrEqual(4); // preflight's head-bucket, the upload, its sidecar, head-object
    expect(starts.filter((s) => s.health !== "200")).toEqual([]);

    // The object: its sidecar names the sha256 the step recorded, and its bytes have it.
    const sidecar = await w.minio.aws(["s3", "cp", `${r.uri}.sha256`, "-"]);
    expect(sidecar.stdout).toBe(`${r.sha256}  ${path.basename(r.key!)}\n`);
    const archive = path.join(scratch, "snap.tar.zst");
    await downloadObject(w, r.key!, archive);
    expect(sha256File(archive)).toBe(r.sha256);
    const plain = plainArchive(archive);
    for (const s of secretsOf(w, h)) expect(plain.includes(Buffer.from(s)), s).toBe(false);
    const listing = execFileSync("tar", ["-tf", archive], { encoding: "utf8" });
    expect(listing).toContain(`${h.params.kmsDataDir!.slice(1)}/wrapped-deks.json`);
    expect(listing).not.toMatch(/progressdb\.env|config\.yaml/);

    // Restored, it holds both writes: the one before the copy and the one just before the stop.
    const back = await restore(w, h, { uri: r.uri!, sha256: r.sha256! }, "0.2.2");
    expect(back.code, back.stderr).toBe(0);
    expect((await readyz(h)).body.version).toBe("v0.2.2");
    expect(await readMessages(h, "0.2.2", before.threadKey)).toEqual(before.bodies);
    expect(await readMessages(h, "0.2.2", late.threadKey)).toEqual(late.bodies);
  });

  it("the install fails and reverts: the offsite step still uploads, after the revert, and records its result", async () => {
    const { h, aws } = await recordedHost("revert");
    const data = await writeSampleData(h, "0.2.1", 2);
    expect((await preflight(w, h, "0.2.3", { backupMode: "snapshot" })).code).toBe(0);
    const b = await backup(w, h, "0.2.3", { stack: h.params.serviceName, mode: "snapshot" });
    expect(b.code, b.stderr).toBe(0);
    const upload = offsite(w, h, "0.2.3", { stack: h.params.serviceName });
    const i = await install(w, h, "0.2.3", { autoRevertSeconds: 8 });
    expect(i.code).toBe(5);
    expect(i.stderr).toContain("AUTO-REVERTED: current -> releases/0.2.1");
    const o = await upload;
    expect(o.code, o.stderr).toBe(0);
    expect(o.json).toMatchObject({ fromVersion: "0.2.1", toVersion: "0.2.3" });
    expect(fs.readFileSync(path.join(h.params.installDir, "run", "offsite-last"), "utf8")).toContain(o.json!.sha256!);
    expect(aws.starts().filter((s) => s.health !== "200")).toEqual([]);
    expect(currentLink(h)).toBe(releaseDir(h, "0.2.1"));
    expect(await readMessages(h, "0.2.1", data.threadKey)).toEqual(data.bodies);
  });

  it("an upgrade that ends before the stop leaves nothing to upload: the offsite step says so at once; the next run completes and uploads the snapshot", async () => {
    const { h } = await recordedHost("abandon");
    const b = await backup(w, h, "0.2.2", { stack: h.params.serviceName, mode: "snapshot" });
    expect(b.code, b.stderr).toBe(0);
    const upload = offsite(w, h, "0.2.2", { stack: h.params.serviceName });
    // No staged archive: the install fails before it stops anything.
    const i = await install(w, h, "0.2.2");
    expect(i.code).toBe(1);
    const o = await upload;
    expect(o.code).toBe(1);
    expect(o.stderr).toContain("the upgrade ended before");
    expect((await readyz(h)).body.version).toBe("v0.2.1");
    // The retry of the same upgrade (same run key): the kept snapshot is completed in the stop, then uploaded.
    expect((await preflight(w, h, "0.2.2", { backupMode: "snapshot" })).code).toBe(0);
    const again = offsite(w, h, "0.2.2", { stack: h.params.serviceName });
    const i2 = await install(w, h, "0.2.2");
    expect(i2.code, i2.stderr).toBe(0);
    const o2 = await again;
    expect(o2.code, o2.stderr).toBe(0);
    expect(o2.json!.uri).toMatch(/\.tar\.zst$/);
  });

  it("no room for the snapshot beside the data dir: the preflight warns and the backup streams with the service stopped", async () => {
    const h = await newHost(w, "short", "process");
    // The data dir's filesystem: 64 MB, holding ~40 MB of data.
    const lib = path.dirname(h.params.dbPath);
    fs.mkdirSync(lib, { recursive: true });
    const m = await run("mount", ["-t", "tmpfs", "-o", "size=64m,mode=0755", "pdb-snapshot-short", lib]);
    expect(m.code, m.stderr).toBe(0);
    try {
      await provision(w, h, "0.2.1");
      fs.writeFileSync(path.join(h.params.dbPath, "padding.bin"), Buffer.alloc(40 << 20, 7));
      const pid = pidOf(h);
      const p = await preflight(w, h, "0.2.2", { backupMode: "snapshot", minFreeMb: 8 });
      expect(p.code, p.stderr).toBe(0);
      expect(p.json!.backup).toBe("stream");
      expect(p.json!.warnings.join("\n")).toMatch(/no room for the backup snapshot \(the snapshot needs 40 MB beside .* but \d+ MB are free\): the backup falls back to streaming/);
      expect(pidOf(h)).toBe(pid);

      const b = await backup(w, h, "0.2.2", { stack: h.params.serviceName, mode: "snapshot", minFreeMb: 8 });
      expect(b.code, b.stderr).toBe(0);
      expect(b.stderr).toContain("falling back to the streaming backup");
      expect(b.json!.uri).toMatch(/\.tar\.zst$/);
      expect(pidOf(h)).toBeUndefined();
      expect(fs.existsSync(`${h.params.dbPath}.backup-snapshot`)).toBe(false);
      // The offsite step repeats the streamed backup's result; the install starts the new version.
      const o = await offsite(w, h, "0.2.2", { stack: h.params.serviceName });
      expect(o.json).toEqual(b.json);
      const i = await install(w, h, "0.2.2");
      expect(i.code, i.stderr).toBe(0);
    } finally {
      // Its service (by its own pid) first, then the filesystem under it.
      const pid = pidOf(h);
      if (pid !== undefined) process.kill(pid, "SIGKILL");
      await run("umount", ["-l", lib]);
    }
  });

  it("a tar.gz backup (as taken before zstd) still restores, checked against its sha256", async () => {
    const h = await newHost(w, "oldgz", "process");
    await provision(w, h, "0.2.1");
    const data = await writeSampleData(h, "0.2.1", 2);
    const b = await backup(w, h, "0.2.2", { stack: h.params.serviceName });
    expect(b.code, b.stderr).toBe(0);
    const zst = path.join(scratch, "oldgz.tar.zst");
    await downloadObject(w, b.json!.key!, zst);
    const gz = path.join(scratch, "oldgz.tar.gz");
    execFileSync("sh", ["-c", `zstd -dc '${zst}' | gzip -c > '${gz}'`]);
    const key = b.json!.key!.replace(/\.tar\.zst$/, "-old.tar.gz");
    expect((await w.minio.aws(["s3", "cp", gz, `s3://${w.minio.bucket}/${key}`])).code).toBe(0);
    const r = await restore(w, h, { uri: `s3://${w.minio.bucket}/${key}`, sha256: sha256File(gz) }, "0.2.1");
    expect(r.code, r.stderr).toBe(0);
    expect(r.json!.started).toBe(true);
    expect(await readMessages(h, "0.2.1", data.threadKey)).toEqual(data.bodies);
  });
});
