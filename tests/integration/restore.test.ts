/**
 * Restore from a pre-upgrade backup over real SSH: the rollback past a data
 * migration. 0.1.2 → 0.2.0 (migrates) → restore "before:0.2.0" → 0.1.2 runs
 * on byte-identical pre-upgrade data, and the migrated data is kept aside.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  backup,
  install,
  newHost,
  preflight,
  provision,
  readMessages,
  readyz,
  restore,
  skipMessage,
  startWorld,
  treeHash,
  writeSampleData,
  type BackupJson,
  type TestHost,
  type World,
} from "./world";

const skip = skipMessage("restore integration tests");

describe.skipIf(!!skip)("restore from the pre-upgrade backup", () => {
  let w: World;
  let h: TestHost;
  let data: { threadKey: string; bodies: unknown[] };
  let b: BackupJson;
  let preUpgradeDb: string;
  let preUpgradeKms: string;

  beforeAll(async () => {
    w = await startWorld({ versions: ["0.1.2", "0.2.0"] });
    h = await newHost(w, "restore", "process", { withSeparateKms: true });
    await provision(w, h, "0.1.2");
    data = await writeSampleData(h, 4);
    expect((await preflight(w, h, "0.2.0")).code).toBe(0);
    const r = await backup(w, h, "0.2.0");
    expect(r.code, r.stderr).toBe(0);
    b = r.json!;
    preUpgradeDb = treeHash(h.params.dbPath);
    preUpgradeKms = treeHash(h.params.kmsDataDir!);
    const i = await install(w, h, "0.2.0");
    expect(i.code, i.stderr).toBe(0);
    expect((await readyz(h)).body.version).toBe("0.2.0");
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
    const r = await restore(w, h, `s3://${w.minio.bucket}/${tampered}`, "0.1.2");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`sha256 mismatch for s3://${w.minio.bucket}/${tampered}: downloaded ${b.sha256}, recorded ${"0".repeat(64)} (nothing was changed)`);
    expect((await readyz(h)).body.version).toBe("0.2.0");
    expect(treeHash(h.params.dbPath)).toBe(before);
    expect(fs.readdirSync(path.dirname(h.params.dbPath)).filter((n) => n.startsWith(".progressdb-restore"))).toEqual([]);
  });

  it("says which backups exist when none was taken before the requested version", async () => {
    const r = await restore(w, h, "before:9.9.9", "0.1.2");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("no backup taken before upgrading to 9.9.9 under s3://");
    expect(r.stderr).toContain("aws s3 ls");
    expect((await readyz(h)).body.version).toBe("0.2.0");
  });

  it("before:0.2.0 restores byte-identical pre-upgrade data and keeps the migrated data aside", async () => {
    const migrated = treeHash(h.params.dbPath);
    const r = await restore(w, h, "before:0.2.0", "0.1.2");
    expect(r.code, r.stderr).toBe(0);
    expect(r.json).toMatchObject({ restored: b.uri, sha256: b.sha256, size: b.size, started: false });
    expect(treeHash(h.params.dbPath)).toBe(preUpgradeDb);
    expect(treeHash(h.params.kmsDataDir!)).toBe(preUpgradeKms);
    const aside = r.json!.movedAside.find((p) => p.startsWith(`${h.params.dbPath}.before-restore-`));
    expect(aside).toBeDefined();
    expect(treeHash(aside!)).not.toBe(preUpgradeDb);
    expect(fs.existsSync(aside!)).toBe(true);
    expect(migrated).not.toBe(preUpgradeDb);
    expect((await readyz(h)).status).toBe(0); // stopped: the install starts 0.1.2
  });

  it("0.1.2 then runs on the restored data, with the data written before the upgrade", async () => {
    expect((await preflight(w, h, "0.1.2")).code).toBe(0);
    const i = await install(w, h, "0.1.2");
    expect(i.code, i.stderr).toBe(0);
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "0.1.2" });
    expect(await readMessages(h, data.threadKey)).toEqual(data.bodies);
    expect(fs.readlinkSync(path.join(h.params.installDir, "current"))).toBe(path.join(h.params.installDir, "releases", "0.1.2"));
  });

  it("at the version already installed, the restore starts the service itself", async () => {
    const r = await restore(w, h, b.uri!, "0.1.2");
    expect(r.code, r.stderr).toBe(0);
    expect(r.json?.started).toBe(true);
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "0.1.2" });
    expect(await readMessages(h, data.threadKey)).toEqual(data.bodies);
  });
});
