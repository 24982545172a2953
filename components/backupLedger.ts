// The stack's ledger of its verified backups, carried in its own outputs from
// one update to the next, and what a restore request resolves to. Pure: no
// Pulumi calls, so index.ts can refuse a restore before any resource exists.
import { PROJECT, Settings } from "./config";

/** One backup this stack took and verified. */
export interface BackupRecord {
  /** `s3://bucket/key.tar.zst` (`.tar.gz` for older backups) */
  uri: string;
  /** The sha256 the backup computed while streaming it and verified in S3: what a restore checks the download against. */
  sha256: string;
  /** The version the host ran when it was taken ("unknown" when none answered). */
  fromVersion: string;
  /** The version the upgrade it was taken for went to. */
  toVersion: string;
  /** When it was taken (UTC); "" when not known. */
  at: string;
}

/** How many backups the ledger keeps (the newest). */
export const LEDGER_LIMIT = 50;

const SHA256 = /^[0-9a-f]{64}$/;

function isRecord(x: unknown): x is BackupRecord {
  const r = x as Record<string, unknown> | null;
  return !!r && typeof r.uri === "string" && r.uri.startsWith("s3://") && typeof r.sha256 === "string" && SHA256.test(r.sha256) &&
    typeof r.fromVersion === "string" && typeof r.toVersion === "string" && typeof r.at === "string";
}

/**
 * The ledger from the stack's last outputs. A stack last updated before the ledger existed starts it
 * with the one backup its outputs name (`backupUri`, `backupSha256`, taken for `version`).
 */
export function ledgerFromOutputs(outputs: { backupLedger?: unknown; backupUri?: unknown; backupSha256?: unknown; version?: unknown; previousVersion?: unknown }): BackupRecord[] {
  if (Array.isArray(outputs.backupLedger)) return outputs.backupLedger.filter(isRecord);
  const seed = { uri: outputs.backupUri, sha256: outputs.backupSha256, fromVersion: outputs.previousVersion ?? "", toVersion: outputs.version ?? "", at: "" };
  return isRecord(seed) ? [seed] : [];
}

/** The ledger with `record` appended (once: a re-run that repeats a backup's result adds nothing), the newest LEDGER_LIMIT kept. */
export function appendBackup(ledger: readonly BackupRecord[], record: BackupRecord): BackupRecord[] {
  if (!isRecord(record) || ledger.some((r) => r.uri === record.uri)) return [...ledger];
  return [...ledger, record].slice(-LEDGER_LIMIT);
}

/** Where this stack's backups live: `s3://<bucket>/<prefix>/<stack>/`. */
function backupPlace(s: Pick<Settings, "backup">, stack: string): string {
  return `s3://${s.backup.bucket}/${s.backup.prefix ? `${s.backup.prefix}/` : ""}${stack}/`;
}

/**
 * Whether the request is `before:<this version>`, which may name the backup this update's chain already
 * holds in state: the one the last update to this version took before it failed (a failed update writes
 * no outputs, so that backup is not in the ledger yet). Such a request is resolved once that backup's
 * result is known. (A URI names its object, so it is found in the ledger or refused at once.)
 */
export function mayNameThisVersionsBackup(s: Pick<Settings, "restore" | "backup" | "version">): boolean {
  return s.backup.enabled && s.restore.backup === `before:${s.version}`;
}

/** What a restore request resolves to: the object and the sha256 its download must have. */
export interface RestoreSource {
  /** progressdb:restore.backup as set (the step runs again only when it changes). */
  request: string;
  uri: string;
  sha256: string;
}

/**
 * Resolves progressdb:restore.backup through the ledger: `before:<version>` is the newest backup taken
 * for the upgrade to that version; an `s3://` URI takes the sha256 recorded for it. A URI the ledger
 * does not hold is restored only with progressdb:restore.sha256 (the object's own metadata is no proof:
 * whoever can write the object can write that too). Returns the source, the refusal, or undefined when
 * no restore is requested.
 */
export function resolveRestore(s: Pick<Settings, "restore" | "backup">, stack: string, ledger: readonly BackupRecord[]): RestoreSource | { refusal: string } | undefined {
  const request = s.restore.backup;
  if (!request) return undefined;
  const given = s.restore.sha256;
  const place = backupPlace(s, stack);
  const key = `${PROJECT}:restore.backup`;
  const known = ledger.slice(-5).map((r) => `${r.uri} (${r.fromVersion} → ${r.toVersion})`).join(", ") || "none";
  if (request.startsWith("before:")) {
    const version = request.slice("before:".length);
    const record = ledger.filter((r) => r.toVersion === version).at(-1);
    if (!record) {
      return {
        refusal:
          `${key} ${request}: this stack's backup ledger (its backupLedger output) has no backup taken before upgrading to ${version}; its newest: ${known}. ` +
          `Name the backup by its URI instead: pulumi config set --path ${key} s3://<bucket>/<key>.tar.zst`,
      };
    }
    return { request, uri: record.uri, sha256: record.sha256 };
  }
  const record = ledger.find((r) => r.uri === request);
  if (record) {
    if (given !== undefined && given !== record.sha256) {
      return {
        refusal: `${PROJECT}:restore.sha256 (${given}) is not the sha256 this stack recorded for ${request} when it took that backup (${record.sha256}) — remove it: pulumi config rm --path ${PROJECT}:restore.sha256`,
      };
    }
    return { request, uri: request, sha256: record.sha256 };
  }
  if (given !== undefined) return { request, uri: request, sha256: given };
  const where = request.startsWith(place)
    ? `is under this stack's backups (${place}) but not in its backup ledger (its backupLedger output), so no sha256 was recorded for it`
    : `is not one of this stack's backups (${place}…, listed in its backupLedger output)`;
  return {
    refusal:
      `${key} (${request}) ${where}: a restore checks the download against a sha256 the stack recorded, never the object's own metadata. ` +
      `Restore one of this stack's backups (${known}), or give the sha256 that was recorded when this one was taken: pulumi config set --path ${PROJECT}:restore.sha256 <sha256>`,
  };
}
