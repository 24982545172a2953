// What a restore request resolves to, under Pulumi mocks: the backup ledger the
// stack carries in its own outputs, the sha256 the restore step is given, and
// the requests refused at preview before any resource exists.
import { describe, expect, test } from "vitest";
import { BackupRecord, LEDGER_LIMIT } from "../../components/backupLedger";
import { Registration, runProgram } from "./programHarness";
import { TEST_SECRETS, binaryConfig } from "./fixtures";

const PLACE = "s3://backups/progressdb-backups/test";
const record = (n: number, toVersion: string, sha = n.toString(16).padStart(64, "0")): BackupRecord => ({
  uri: `${PLACE}/2026010${n}T000000Z-0.2.0-to-${toVersion}.tar.gz`,
  sha256: sha,
  fromVersion: "0.2.0",
  toVersion,
  at: `2026010${n}T000000Z`,
});
const LEDGER = [record(1, "0.2.1", "d".repeat(64)), record(2, "0.2.2", "e".repeat(64)), record(3, "0.2.1", "f".repeat(64))];

function run(restore: Record<string, string> | undefined, previousOutputs: Record<string, unknown> = { version: "0.2.2", backupLedger: LEDGER }) {
  const config = { ...binaryConfig("0.2.1"), ...TEST_SECRETS, ...(restore ? { restore } : {}) };
  return runProgram(config, Object.keys(TEST_SECRETS), previousOutputs);
}

async function refusal(restore: Record<string, string>, previousOutputs?: Record<string, unknown>): Promise<{ message: string; registrations: Registration[] }> {
  const failure = await run(restore, previousOutputs).then(
    () => undefined,
    (e: Error & { registrations: Registration[] }) => e,
  );
  expect(failure, "the run should have been refused").toBeDefined();
  return failure!;
}

const restoreScript = async (restore: Record<string, string>) => String((await run(restore)).byName("progressdb-restore-data").inputs.create);

describe("restore source", () => {
  test("a URI in the ledger is restored with the sha256 the ledger recorded for it", async () => {
    const create = await restoreScript({ backup: LEDGER[1].uri });
    expect(create).toContain(`PDB_RESTORE='${LEDGER[1].uri}'`);
    expect(create).toContain(`PDB_SHA256='${"e".repeat(64)}'`);
  });

  test("before:<version> is the newest ledger backup taken for the upgrade to that version, with its sha256", async () => {
    const r = await run({ backup: "before:0.2.1" });
    const create = String(r.byName("progressdb-restore-data").inputs.create);
    expect(create).toContain(`PDB_RESTORE='${LEDGER[2].uri}'`);
    expect(create).toContain(`PDB_SHA256='${"f".repeat(64)}'`);
    // The request, not what it resolved to, re-runs the step.
    expect(r.byName("progressdb-restore-data").inputs.triggers).toEqual(["before:0.2.1"]);
  });

  test("a URI outside this stack's backups is refused at preview, naming the key and the fix", async () => {
    const failure = await refusal({ backup: "s3://elsewhere/x/backup.tar.gz" });
    expect(failure.message).toContain("progressdb:restore.backup (s3://elsewhere/x/backup.tar.gz) is not one of this stack's backups (s3://backups/progressdb-backups/test/");
    expect(failure.message).toContain("pulumi config set --path progressdb:restore.sha256 <sha256>");
    expect(failure.registrations).toEqual([]);
  });

  test("with progressdb:restore.sha256, a URI outside this stack's backups is restored against that sha256", async () => {
    const create = await restoreScript({ backup: "s3://elsewhere/x/backup.tar.gz", sha256: "a".repeat(64) });
    expect(create).toContain("PDB_RESTORE='s3://elsewhere/x/backup.tar.gz'");
    expect(create).toContain(`PDB_SHA256='${"a".repeat(64)}'`);
  });

  test("a URI under this stack's prefix but not in the ledger has no recorded sha256: refused unless restore.sha256 is set", async () => {
    const uri = `${PLACE}/20250101T000000Z-0.1.2-to-0.2.0.tar.gz`;
    const failure = await refusal({ backup: uri });
    expect(failure.message).toContain(`progressdb:restore.backup (${uri}) is under this stack's backups`);
    expect(failure.message).toContain("progressdb:restore.sha256");
    expect(failure.registrations).toEqual([]);
    expect(await restoreScript({ backup: uri, sha256: "b".repeat(64) })).toContain(`PDB_SHA256='${"b".repeat(64)}'`);
  });

  test("a restore.sha256 that contradicts the ledger is refused", async () => {
    const failure = await refusal({ backup: LEDGER[0].uri, sha256: "a".repeat(64) });
    expect(failure.message).toContain(`progressdb:restore.sha256 (${"a".repeat(64)}) is not the sha256 this stack recorded for ${LEDGER[0].uri}`);
  });

  test("before:<this version> after a failed upgrade (its backup only in state, not in the ledger) restores that backup with the sha256 it verified", async () => {
    // The last update to 0.2.1 failed after its backup: no outputs were written, so the ledger stops at 0.2.0.
    const r = await run({ backup: "before:0.2.1" }, { version: "0.2.0", backupLedger: [record(1, "0.2.0")] });
    const create = String(r.byName("progressdb-restore-data").inputs.create);
    expect(create).toContain(`PDB_RESTORE='${String(r.outputs.backupUri)}'`);
    expect(create).toContain(`PDB_SHA256='${"b".repeat(64)}'`); // the mocked backup script's verified sha256
  });

  test("before:<version> with no such backup in the ledger is refused, naming the key", async () => {
    const failure = await refusal({ backup: "before:0.3.0" });
    expect(failure.message).toContain("progressdb:restore.backup before:0.3.0: this stack's backup ledger (its backupLedger output) has no backup taken before upgrading to 0.3.0");
    expect(failure.registrations).toEqual([]);
  });
});

describe("backup ledger", () => {
  test("carries the previous ledger and appends this update's verified backup", async () => {
    const r = await run(undefined, { version: "0.2.0", backupLedger: LEDGER });
    const ledger = r.outputs.backupLedger as BackupRecord[];
    expect(ledger.slice(0, 3)).toEqual(LEDGER);
    // The mocked backup script's result.
    expect(ledger[3]).toEqual({ uri: r.outputs.backupUri, sha256: "b".repeat(64), fromVersion: "0.1.2", toVersion: "0.2.1", at: "" });
  });

  test("keeps the newest entries, and a repeated backup result is not appended twice", async () => {
    const full = Array.from({ length: LEDGER_LIMIT }, (_, i) => ({ ...record(1, "0.2.0"), uri: `${PLACE}/old-${i}.tar.gz` }));
    const r = await run(undefined, { version: "0.2.0", backupLedger: full });
    const ledger = r.outputs.backupLedger as BackupRecord[];
    expect(ledger).toHaveLength(LEDGER_LIMIT);
    expect(ledger[0].uri).toBe(`${PLACE}/old-1.tar.gz`);
    expect(ledger.at(-1)!.uri).toBe(r.outputs.backupUri);
    const again = await run(undefined, { version: "0.2.1", backupLedger: ledger });
    expect(again.outputs.backupLedger).toEqual(ledger);
  });

  test("a stack last updated before the ledger existed starts it from its backupUri and backupSha256 outputs", async () => {
    const uri = `${PLACE}/20250101T000000Z-0.2.0-to-0.2.2.tar.gz`;
    const r = await run({ backup: "before:0.2.2" }, { version: "0.2.2", previousVersion: "0.2.0", backupUri: uri, backupSha256: "c".repeat(64) });
    const create = String(r.byName("progressdb-restore-data").inputs.create);
    expect(create).toContain(`PDB_RESTORE='${uri}'`);
    expect(create).toContain(`PDB_SHA256='${"c".repeat(64)}'`);
  });
});
