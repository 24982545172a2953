/**
 * Backup retention and bucket checks against real MinIO through the aws CLI,
 * over real SSH: the next upgrade's preflight tags the instance's backups but
 * the newest (and their sidecars) superseded — the only objects the bucket's
 * lifecycle rule expires — and the newest never is; a backup writes its
 * object once, leaving no other version behind. The preflight warns (naming
 * progressdb:backup.bucket and the fix) when a bucket the stack does not
 * manage is unversioned or has no default encryption.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { renderPreflightScript, type PreflightResult, type S3Params } from "../../components/hostScripts";
import { familyOf } from "../../components/releases";
import { backup, newHost, runScript, skipMessage, startWorld, type BackupJson, type TestHost, type World } from "./world";

const skip = skipMessage("backup retention integration tests");
const VERSIONED = "pdb-versioned";

describe.skipIf(!!skip)("backup retention and bucket checks", () => {
  let w: World;
  let h: TestHost;
  let s3: S3Params;

  beforeAll(async () => {
    w = await startWorld({ versions: ["0.2.1"] });
    h = await newHost(w, "retention", "process");
    fs.mkdirSync(path.join(h.params.dbPath, "store"), { recursive: true });
    fs.writeFileSync(path.join(h.params.dbPath, "store", "000001.sst"), "some data\n");
    for (const args of [["s3api", "create-bucket", "--bucket", VERSIONED], ["s3api", "put-bucket-versioning", "--bucket", VERSIONED, "--versioning-configuration", "Status=Enabled"]]) {
      const r = await w.minio.aws(args);
      expect(r.code, r.stderr).toBe(0);
    }
    s3 = { ...w.s3, bucket: VERSIONED };
  }, 240_000);

  afterAll(async () => {
    await w?.stop();
  }, 120_000);

  async function tagsOf(bucket: string, key: string, versionId?: string): Promise<Array<{ Key: string; Value: string }>> {
    const r = await w.minio.aws(["s3api", "get-object-tagging", "--bucket", bucket, "--key", key, ...(versionId ? ["--version-id", versionId] : [])]);
    expect(r.code, r.stderr).toBe(0);
    return (JSON.parse(r.stdout) as { TagSet: Array<{ Key: string; Value: string }> }).TagSet;
  }
  const SUPERSEDED = [{ Key: "progressdb-backup", Value: "superseded" }];

  async function takeBackup(version: string, stack = "itest"): Promise<BackupJson> {
    const r = await backup(w, h, version, { s3, stack, runKey: `${stack}-${version}` });
    expect(r.code, r.stderr).toBe(0);
    return r.json!;
  }

  /** A preflight against `bucket`: of a bucket the stack does not manage (checkSettings), or of one it created (supersede: the stack whose older backups it tags). */
  function runPreflight(bucket: string, o: { checkSettings?: boolean; supersede?: string } = {}) {
    const rel = w.mirror.release("0.2.1");
    const script = renderPreflightScript({
      host: h.params,
      version: "0.2.1",
      artifactUrl: rel.artifactUrl,
      checksumsUrl: rel.checksumsUrl,
      archiveName: rel.archiveName,
      minFreeMb: 1,
      s3: { ...w.s3, bucket },
      targetLayout: familyOf("0.2.1").dataLayout,
      checkBucketSettings: o.checkSettings,
      supersedeOlderBackupsOf: o.supersede,
    });
    return runScript<PreflightResult>(w, script, w.secrets);
  }

  /** The preflight of the next upgrade, in a bucket the stack created (so it tags, and checks nothing else). */
  async function nextPreflight(stack = "itest"): Promise<PreflightResult> {
    const r = await runPreflight(VERSIONED, { supersede: stack });
    expect(r.code, r.stderr).toBe(0);
    return r.json!;
  }

  it("the next preflight tags every backup of the instance but the newest superseded; the backup itself tags nothing (no S3 call while the service is stopped)", async () => {
    const first = await takeBackup("0.2.1");
    const other = await takeBackup("0.2.1", "other-stack");
    expect(other.key, JSON.stringify(other)).toContain("/other-stack/");
    const second = await takeBackup("0.2.2");
    // Taking the second backup tagged nothing.
    expect(await tagsOf(VERSIONED, first.key!)).toEqual([]);

    expect((await nextPreflight()).warnings).toEqual([]);
    expect(await tagsOf(VERSIONED, first.key!)).toEqual(SUPERSEDED);
    expect(await tagsOf(VERSIONED, `${first.key}.sha256`)).toEqual(SUPERSEDED);
    expect(await tagsOf(VERSIONED, second.key!)).toEqual([]);
    expect(await tagsOf(VERSIONED, `${second.key}.sha256`)).toEqual([]);
    // Another instance's (stack's) backups are not touched.
    expect(await tagsOf(VERSIONED, other.key!)).toEqual([]);

    const third = await takeBackup("0.2.3");
    await nextPreflight();
    for (const k of [first.key!, second.key!]) expect(await tagsOf(VERSIONED, k)).toEqual(SUPERSEDED);
    expect(await tagsOf(VERSIONED, third.key!)).toEqual([]);
    expect(await tagsOf(VERSIONED, `${third.key}.sha256`)).toEqual([]);
  }, 180_000);

  it("a backup writes its object once, straight to its key: no partial upload, no leftover version in a versioned bucket", async () => {
    const b = await takeBackup("0.2.4");
    const r = await w.minio.aws(["s3api", "list-object-versions", "--bucket", VERSIONED, "--prefix", b.key!]);
    expect(r.code, r.stderr).toBe(0);
    const listing = JSON.parse(r.stdout) as { Versions?: Array<{ Key: string }>; DeleteMarkers?: unknown[] };
    expect(listing.DeleteMarkers ?? []).toEqual([]);
    expect(listing.Versions!.map((v) => v.Key).sort()).toEqual([b.key!, `${b.key}.sha256`]);
  }, 120_000);

  const checkBucket = (bucket: string) => runPreflight(bucket, { checkSettings: true });

  it("the preflight warns, without failing, about an unversioned and unencrypted bucket it does not manage", async () => {
    const r = await checkBucket(w.minio.bucket);
    expect(r.code, r.stderr).toBe(0);
    const warnings = r.json!.warnings;
    expect(warnings).toEqual([
      `progressdb:backup.bucket s3://${w.minio.bucket} has versioning off: a deleted or overwritten backup cannot be recovered — turn it on: aws s3api put-bucket-versioning --bucket ${w.minio.bucket} --versioning-configuration Status=Enabled`,
      expect.stringMatching(new RegExp(`^progressdb:backup\\.bucket s3://${w.minio.bucket} has no default encryption: backups may be stored unencrypted — turn it on: aws s3api put-bucket-encryption --bucket ${w.minio.bucket} `)),
    ]);
    // The same lines reach the step's log (stderr) as warnings.
    for (const line of warnings) expect(r.stderr).toContain(`WARNING: ${line}`);
  }, 120_000);

  it("with versioning on, the versioning warning is gone", async () => {
    const r = await checkBucket(VERSIONED);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json!.warnings.filter((x) => x.includes("versioning"))).toEqual([]);
    // MinIO here has no KMS configured, so default encryption cannot be turned on: that warning stays.
    expect(r.json!.warnings).toEqual([expect.stringContaining(`s3://${VERSIONED} has no default encryption`)]);
  }, 120_000);

  it("the preflight of a bucket the stack creates checks nothing of it", async () => {
    const r = await runPreflight(w.minio.bucket);
    expect(r.code, r.stderr).toBe(0);
    expect(r.json!.warnings).toEqual([]);
  }, 120_000);
});
