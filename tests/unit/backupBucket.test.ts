// The bucket the stack creates (progressdb:backup.createBucket), proven on the resource graph under
// mocks: the aws provider plugin is not available on this machine, so these resources never reach S3.
import { describe, expect, test } from "vitest";
import { ProgramRun, runProgram } from "./programHarness";
import { TEST_SECRETS, binaryConfig } from "./fixtures";

function run(backup: Record<string, unknown>): Promise<ProgramRun> {
  const config = { ...binaryConfig(), backup: { bucket: "backups", createBucket: true, retentionDays: 14, ...backup } };
  return runProgram({ ...config, ...TEST_SECRETS }, Object.keys(TEST_SECRETS));
}

describe("the backup bucket the stack creates", () => {
  test("denies every request that does not arrive over TLS", async () => {
    const r = await run({});
    const policy = r.byName("progressdb-bucket-tls-only");
    expect(policy.type).toBe("aws:s3/bucketPolicy:BucketPolicy");
    expect(policy.protect).toBe(true);
    const doc = JSON.parse(String(policy.inputs.policy)) as { Statement: Array<Record<string, unknown>> };
    expect(doc.Statement).toEqual([
      expect.objectContaining({
        Effect: "Deny",
        Principal: "*",
        Action: "s3:*",
        // The bucket's arn, and every object in it (the mocks give the bucket no arn).
        Resource: [null, "undefined/*"],
        Condition: { Bool: { "aws:SecureTransport": "false" } },
      }),
    ]);
  });

  test("over a plain-http endpoint the policy is left out (it would lock the host out)", async () => {
    const r = await run({ endpoint: "http://127.0.0.1:19000" });
    expect(r.registrations.some((x) => x.name === "progressdb-bucket-tls-only")).toBe(false);
  });

  test("aborts incomplete uploads and expires only superseded backups, never by age alone", async () => {
    const rules = (await run({})).byName("progressdb-bucket-expiry").inputs.rules as Array<Record<string, unknown>>;
    expect(rules).toEqual([
      expect.objectContaining({ status: "Enabled", abortIncompleteMultipartUpload: { daysAfterInitiation: 1 } }),
      expect.objectContaining({
        status: "Enabled",
        filter: { tag: { key: "progressdb-backup", value: "superseded" } },
        expiration: { days: 14 },
        noncurrentVersionExpiration: { noncurrentDays: 14 },
      }),
    ]);
    // No rule expires objects without the tag filter.
    for (const rule of rules.filter((x) => x.expiration || x.noncurrentVersionExpiration)) {
      expect((rule.filter as { tag?: unknown }).tag).toBeDefined();
    }
  });

  test("objectLockDays: the bucket is created with object lock and a governance-mode default retention", async () => {
    const r = await run({ objectLockDays: 21 });
    expect(r.byName("progressdb-bucket-bucket").inputs.objectLockEnabled).toBe(true);
    const lock = r.byName("progressdb-bucket-object-lock");
    expect(lock.type).toBe("aws:s3/bucketObjectLockConfiguration:BucketObjectLockConfiguration");
    expect(lock.protect).toBe(true);
    expect(lock.inputs).toMatchObject({ objectLockEnabled: "Enabled", rule: { defaultRetention: { mode: "GOVERNANCE", days: 21 } } });
    const without = await run({});
    expect(without.byName("progressdb-bucket-bucket").inputs.objectLockEnabled).toBeUndefined();
    expect(without.registrations.some((x) => x.name === "progressdb-bucket-object-lock")).toBe(false);
  });

  test("the preflight checks the bucket's settings only when the stack does not manage it", async () => {
    const created = String((await run({})).byName("progressdb-preflight-check").inputs.create);
    expect(created).toMatch(/^PDB_S3_CHECK_SETTINGS=''$/m);
    const existing = String((await run({ createBucket: false })).byName("progressdb-preflight-check").inputs.create);
    expect(existing).toMatch(/^PDB_S3_CHECK_SETTINGS='1'$/m);
  });
});
