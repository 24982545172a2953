/**
 * Restore from a pre-upgrade backup over real SSH, within a release family:
 * 0.2.1 → 0.2.2 (data written after the upgrade too) → restore the backup
 * taken before 0.2.2 → 0.2.1 runs on byte-identical pre-upgrade data (and the
 * separate KMS dir), the data it replaced is kept aside, and the result is
 * recorded for the step's replay. Before that, crafted objects: forged
 * metadata, a manifest pointing elsewhere, members leaving the archive.
 */
import * as crypto from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  backup,
  backupListing,
  currentLink,
  downloadObject,
  install,
  listThreads,
  newHost,
  preflight,
  provision,
  readMessages,
  readyz,
  releaseDir,
  restore,
  sha256File,
  skipMessage,
  startWorld,
  treeHash,
  untar,
  writeSampleData,
  type BackupJson,
  type Sample,
  type TestHost,
  type World,
} from "./world";
import { renderReplayScript } from "../../components/hostScripts";
import { runRemote } from "../fixtures/sshd";
import { run, tempDir } from "../fixtures/net";

const skip = skipMessage("restore integration tests");

describe.skipIf(!!skip)("restore from the pre-upgrade backup", () => {
  let w: World;
  let h: TestHost;
  let data: Sample;
  let after: Sample;
  let b: BackupJson;
  let preUpgradeDb: string;
  let preUpgradeKms: string;
  /** Crafted archives are built here; the real backup is extracted under backup/. */
  let scratch: string;
  let backupTree: string;
  /** Where backup.sh stores the data dir and the KMS dir in the archive. */
  let dbMember: string;
  let kmsMember: string;
  let manifest: Record<string, unknown>;
  /** A directory on the host no restore may touch. */
  let victim: string;
  let victimHash: string;

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
    scratch = tempDir("restore-crafted");
    backupTree = path.join(scratch, "backup");
    await downloadObject(w, b.key!, path.join(scratch, "backup.tar.gz"));
    expect((await untar(path.join(scratch, "backup.tar.gz"), backupTree)).code).toBe(0);
    dbMember = fs.realpathSync(h.params.dbPath).slice(1);
    kmsMember = fs.realpathSync(h.params.kmsDataDir!).slice(1);
    manifest = JSON.parse(fs.readFileSync(path.join(backupTree, "progressdb-backup.json"), "utf8")) as Record<string, unknown>;
    victim = path.join(w.root, "victim");
    fs.mkdirSync(victim);
    fs.writeFileSync(path.join(victim, "secret.txt"), "must stay where it is");
    victimHash = treeHash(victim);
    const i = await install(w, h, "0.2.2");
    expect(i.code, i.stderr).toBe(0);
    expect((await readyz(h)).body.version).toBe("v0.2.2");
    after = await writeSampleData(h, "0.2.2", 1, "after the upgrade");
  }, 240_000);

  afterAll(async () => {
    await w?.stop();
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true });
  }, 120_000);

  /** Uploads a tar.gz of `members` (relative to `dir`, stored as given: -P keeps "../" and "/") under this stack's prefix. */
  async function uploadArchive(name: string, dir: string, members: string[]) {
    const file = path.join(scratch, `${name}.tar.gz`);
    const t = await run("tar", ["-czPf", file, "-C", dir, "--", ...members]);
    expect(t.code, t.stderr).toBe(0);
    const uri = `s3://${w.minio.bucket}/progressdb-backups/itest/${name}.tar.gz`;
    const cp = await w.minio.aws(["s3", "cp", file, uri]);
    expect(cp.code, cp.stderr).toBe(0);
    return { uri, sha256: sha256File(file) };
  }

  /** A copy of the real backup's members in a fresh dir, to craft archives from. */
  function copyOfBackup(name: string): string {
    const dir = path.join(scratch, name);
    fs.cpSync(backupTree, dir, { recursive: true, verbatimSymlinks: true });
    return dir;
  }

  /** Nothing on the host changed: the service, both data dirs, no staging left, no result recorded. */
  async function expectUntouched(dbBefore: string, kmsBefore: string) {
    expect((await readyz(h)).body.version).toBe("v0.2.2");
    expect(treeHash(h.params.dbPath)).toBe(dbBefore);
    expect(treeHash(h.params.kmsDataDir!)).toBe(kmsBefore);
    expect(fs.readdirSync(path.dirname(h.params.dbPath)).filter((n) => n.startsWith(".progressdb-restore") || n.includes(".before-restore-"))).toEqual([]);
    expect(fs.existsSync(path.join(h.params.installDir, "run", "restore-last.json"))).toBe(false);
    expect(treeHash(victim)).toBe(victimHash);
  }

  it("refuses an object whose metadata and sidecar were forged to match tampered bytes: only the sha256 the program passes counts", async () => {
    const dir = copyOfBackup("forged");
    fs.writeFileSync(path.join(dir, dbMember, "planted"), "not from the backup");
    const forged = await uploadArchive("20990101T000000Z-forged-to-0.2.2", dir, ["progressdb-backup.json", dbMember, kmsMember]);
    const meta = JSON.stringify({ sha256: forged.sha256 });
    const key = forged.uri.replace(`s3://${w.minio.bucket}/`, "");
    expect((await w.minio.aws(["s3", "cp", "--metadata", meta, "--metadata-directive", "REPLACE", forged.uri, forged.uri])).code).toBe(0);
    const side = await w.minio.aws(["s3", "cp", "-", `${forged.uri}.sha256`], { input: `${forged.sha256}  ${path.basename(key)}\n` });
    expect(side.code, side.stderr).toBe(0);
    const [db, kms] = [treeHash(h.params.dbPath), treeHash(h.params.kmsDataDir!)];
    const r = await restore(w, h, { uri: forged.uri, sha256: b.sha256! }, "0.2.1");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`sha256 mismatch for ${forged.uri}: downloaded ${forged.sha256}, expected ${b.sha256}`);
    expect(r.stderr).toContain("(nothing was changed)");
    await expectUntouched(db, kms);
  });

  it("never takes a path from the manifest: a dbPath climbing out with ../ is refused when the archive lacks the data dir", async () => {
    const dir = path.join(scratch, "manifest-only");
    fs.mkdirSync(dir);
    // What the old restore moved into the data dir: <staging>/tree/<dbPath without "/"> — here the victim dir.
    const climb = { ...manifest, dbPath: `/${"../".repeat(40)}${victim.slice(1)}`, kmsDataDir: "" };
    fs.writeFileSync(path.join(dir, "progressdb-backup.json"), `${JSON.stringify(climb)}\n`);
    const crafted = await uploadArchive("crafted-manifest-only", dir, ["progressdb-backup.json"]);
    const [db, kms] = [treeHash(h.params.dbPath), treeHash(h.params.kmsDataDir!)];
    const r = await restore(w, h, crafted, "0.2.1");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`does not hold the data dir ${h.params.dbPath} (member ${dbMember}/`);
    await expectUntouched(db, kms);
  });

  it.each([
    ["a member named ../…", (dir: string) => {
      fs.writeFileSync(path.join(dir, "..", "escape.txt"), "outside");
      return ["../escape.txt"];
    }, "holds a member outside the archive ('../escape.txt')"],
    ["an absolute member", () => [path.join(victim, "secret.txt")], "holds a member outside the archive ('/"],
    ["a symlink out of the archive", (dir: string) => {
      fs.symlinkSync(victim, path.join(dir, "out"));
      return ["out"];
    }, `holds a device, fifo or a link leaving the archive`],
  ])("refuses an archive with %s before extracting anything", async (what, add, message) => {
    const dir = copyOfBackup(`evil-${what.replace(/\W+/g, "-")}`);
    const extra = add(dir);
    const evil = await uploadArchive(`evil-${what.replace(/\W+/g, "-")}`, dir, ["progressdb-backup.json", dbMember, kmsMember, ...extra]);
    const [db, kms] = [treeHash(h.params.dbPath), treeHash(h.params.kmsDataDir!)];
    const r = await restore(w, h, evil, "0.2.1");
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(message);
    expect(r.stderr).toContain("refusing to extract it (nothing was changed)");
    await expectUntouched(db, kms);
  });

  it("with the data dir where the backup stores it, a crafted manifest is ignored: the victim stays, the data comes from the fixed place", async () => {
    const dir = copyOfBackup("manifest-ignored");
    fs.writeFileSync(path.join(dir, "progressdb-backup.json"), `${JSON.stringify({ ...manifest, dbPath: `/${"../".repeat(40)}${victim.slice(1)}`, kmsDataDir: "" })}\n`);
    fs.writeFileSync(path.join(dir, dbMember, "marker"), "restored from the fixed place");
    const crafted = await uploadArchive("crafted-manifest-ignored", dir, ["progressdb-backup.json", dbMember]);
    const r = await restore(w, h, crafted, "0.2.1");
    expect(r.code, r.stderr).toBe(0);
    expect(fs.readFileSync(path.join(h.params.dbPath, "marker"), "utf8")).toBe("restored from the fixed place");
    expect(treeHash(victim)).toBe(victimHash);
    expect(fs.readdirSync(victim)).toEqual(["secret.txt"]);
  });

  it("the backup before 0.2.2 (its recorded sha256) restores byte-identical pre-upgrade data, keeps the data it replaced aside, and records the result", async () => {
    const r = await restore(w, h, { uri: b.uri!, sha256: b.sha256! }, "0.2.1");
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
    const r = await restore(w, h, { uri: b.uri!, sha256: b.sha256! }, "0.2.1");
    expect(r.code, r.stderr).toBe(0);
    expect(r.json?.started).toBe(true);
    expect((await readyz(h)).body).toEqual({ status: "ok", version: "v0.2.1" });
    expect(await readMessages(h, "0.2.1", data.threadKey)).toEqual(data.bodies);
  });

  it("a data dir whose archived name begins with -- is a file to tar, not an option, in the backup and the restore", async () => {
    // backup.sh archives the data dir as its path without the leading "/": for a dir at the root that is
    // the dir's own name, which can begin with "--". As an option, this one would run `touch <marker>`.
    const marker = `pdb-pwned-${crypto.randomBytes(4).toString("hex")}`;
    const dbPath = `/--use-compress-program=touch ${marker}`;
    const cwd = (await runRemote(w.sshd, "pwd")).stdout.trim();
    const dh = await newHost(w, "dashes", "process", { dbPath });
    try {
      fs.mkdirSync(dbPath);
      fs.writeFileSync(path.join(dbPath, "data.txt"), "kept by the backup");
      const bk = await backup(w, dh, "0.2.1", { stack: "dashes" });
      expect(bk.code, bk.stderr).toBe(0);
      expect(await backupListing(w, bk.json!.key!)).toContain(`${dbPath.slice(1)}/data.txt`);
      expect(fs.existsSync(path.join(cwd, marker))).toBe(false);
      fs.writeFileSync(path.join(dbPath, "data.txt"), "written after the backup");
      const r = await restore(w, dh, { uri: bk.json!.uri!, sha256: bk.json!.sha256! }, "0.2.1");
      expect(r.code, r.stderr).toBe(0);
      expect(fs.readFileSync(path.join(dbPath, "data.txt"), "utf8")).toBe("kept by the backup");
      expect(fs.existsSync(path.join(cwd, marker))).toBe(false);
    } finally {
      for (const n of fs.readdirSync("/").filter((x) => x.startsWith(dbPath.slice(1)) || x === marker)) fs.rmSync(`/${n}`, { recursive: true, force: true });
      fs.rmSync(path.join(cwd, marker), { force: true });
    }
  });
});
