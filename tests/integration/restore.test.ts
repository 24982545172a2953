/**
 * Restore from a pre-upgrade backup over real SSH, within a release family:
 * 0.2.1 → 0.2.2 (data written after the upgrade too) → restore
 * "before:0.2.2" → 0.2.1 runs on byte-identical pre-upgrade data (and the
 * separate KMS dir), the data it replaced is kept aside, and the result is
 * recorded for the step's replay.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  backup,
  currentLink,
  install,
  listThreads,
  newHost,
  preflight,
  provision,
  readMessages,
  readyz,
  releaseDir,
  restore,
  skipMessage,
  startWorld,
  treeHash,
  writeSampleData,
  type BackupJson,
  type Sample,
  type TestHost,
  type World,
} from "./world";
import { renderReplayScript } from "../../components/hostScripts";
import { runRemote } from "../fixtures/sshd";

const skip = skipMessage("restore integration tests");

describe.skipIf(!!skip)("restore from the pre-upgrade backup", () => {
  let w: World;
  let h: TestHost;
  let data: Sample;
  let after: Sample;
  let b: BackupJson;
  let preUpgradeDb: string;
  let preUpgradeKms: string;

  beforeAll(async () => {
    w = await startWorld({ versions: ["0.2.1", "0.2.2"] });
    h = await newHost(w, "restore", "process", { withSeparateKms: true });
    await provision(w, h, "0.2.1");
    data = await writeSampleData(h, "0.2.1", 4, "before the upgrade");
    expect((await preflight(w, h, "0.2.2")).code).toBe(0);
    const r = await backup(w, h, "0.2.2");
    expect(r.code, r.stderr).toBe(0);
    b = r.json!;
    preUpgradeDb = treeHash(h.params.dbPath);
    preUpgradeKms = treeHash(h.params.kmsDataDir!);
    const i = await install(w, h, "0.2.2");
    expect(i.code, i.stderr).toBe(0);
    expect((await readyz(h)).body.version).toBe("v0.2.2");
    after = await writeSampleData(h, "0.2.2", 1, "after the upgrade");
  }, 240_000);

  afterAll(async () => {
    await w?.stop();
  }, 120_000);

  it("refuses a backup whose bytes do not match its recorded sha256, touching nothing", async () => {
    const tampered = `${b.key!.replace(/\.tar\.gz$/, "")}-tampered.tar.gz`;
    const wrong = JSON.stringify({ sha256: "0".repeat(64) });
    const cp = await w.minio.aws(["s3", "cp", "--metadata", wrong, "--metadata-directive", "REPLACE", `s3://${w.minio.bucket}/${b.key}`, `s3://${w.minio.bucket}/${tampered}`]);
    expect(cp.code, cp.stderr).toBe(0);
    const before = treeHash(h.params.dbPath);
    const r = await restore(w, h, `s3://${w.minio.bucket}/${tampered}`, "0.2.1");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`sha256 mismatch for s3://${w.minio.bucket}/${tampered}: downloaded ${b.sha256}, recorded ${"0".repeat(64)} (nothing was changed)`);
    expect((await readyz(h)).body.version).toBe("v0.2.2");
    expect(treeHash(h.params.dbPath)).toBe(before);
    expect(fs.readdirSync(path.dirname(h.params.dbPath)).filter((n) => n.startsWith(".progressdb-restore"))).toEqual([]);
    expect(fs.existsSync(path.join(h.params.installDir, "run", "restore-last.json"))).toBe(false);
  });

  it("says which backups exist when none was taken before the requested version", async () => {
    const r = await restore(w, h, "before:9.9.9", "0.2.1");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("no backup taken before upgrading to 9.9.9 under s3://");
    expect(r.stderr).toContain("aws s3 ls");
    expect((await readyz(h)).body.version).toBe("v0.2.2");
  });

  it("before:0.2.2 restores byte-identical pre-upgrade data, keeps the data it replaced aside, and records the result", async () => {
    const r = await restore(w, h, "before:0.2.2", "0.2.1");
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ restored: b.uri, sha256: b.sha256, size: b.size, started: false });
    expect(treeHash(h.params.dbPath)).toBe(preUpgradeDb);
    expect(treeHash(h.params.kmsDataDir!)).toBe(preUpgradeKms);
    const aside = r.json!.movedAside.find((p) => p.startsWith(`${h.params.dbPath}.before-restore-`));
    expect(aside).toBeDefined();
    expect(treeHash(aside!)).not.toBe(preUpgradeDb);
    expect(r.json!.movedAside.some((p) => p.startsWith(`${h.params.kmsDataDir}.before-restore-`))).toBe(true);
    expect((await readyz(h)).status).toBe(0); // stopped: the install starts 0.2.1
    // The step's update replays exactly this result (it never restores twice).
    expect(fs.readFileSync(path.join(h.params.installDir, "run", "restore-last.json"), "utf8")).toBe(r.stdout);
    const replay = await runRemote(w.sshd, renderReplayScript(h.params.installDir, "restore"));
    expect(replay.code, replay.stderr).toBe(0);
    expect(replay.stdout).toBe(r.stdout);
  });

  it("0.2.1 then runs on the restored data: what was written before the upgrade, not after it", async () => {
    expect((await preflight(w, h, "0.2.1", { s3: null })).code).toBe(0);
    const i = await install(w, h, "0.2.1");
    expect(i.code, i.stderr).toBe(0);
    expect(i.json).toMatchObject({ version: "0.2.1", proof: '/readyz reports "v0.2.1"' });
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "v0.2.1" });
    expect(await readMessages(h, "0.2.1", data.threadKey)).toEqual(data.bodies);
    expect((await listThreads(h, "0.2.1")).map((t) => t.title)).toEqual([data.title]);
    expect(after.title).not.toBe(data.title);
    expect(currentLink(h)).toBe(releaseDir(h, "0.2.1"));
  });

  it("at the version already installed, the restore starts the service itself", async () => {
    const r = await restore(w, h, b.uri!, "0.2.1");
    expect(r.code, r.stderr).toBe(0);
    expect(r.json?.started).toBe(true);
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "v0.2.1" });
    expect(await readMessages(h, "0.2.1", data.threadKey)).toEqual(data.bodies);
  });
});
