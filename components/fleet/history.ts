// What each instance deployed, from the stack's own outputs of its last update. Pure.
import type { KeptData } from "../progressDb";
import { BackupRecord, ledgerFromOutputs } from "../backupLedger";
import { Instance, SINGLE_INSTANCE } from "./instances";

/** The stack outputs the program reads back (its own, through a StackReference). */
export const READ_BACK = ["version", "previousVersion", "keptData", "backupLedger", "backupUri", "backupSha256", "instances", "verifiedVersions"] as const;
export type StackOutputs = Partial<Record<(typeof READ_BACK)[number], unknown>>;

export interface InstanceHistory {
  /** The version it last deployed. */
  deployed?: string;
  /** The version its current upgrade comes from: the deployed one while the config names another, and after the upgrade its previous version (so a re-run sees the same inputs). */
  from: string;
  keptData?: KeptData;
  /** Its verified backups. */
  ledger: BackupRecord[];
}

const normalize = (v: unknown) => (typeof v === "string" && v !== "" ? v.replace(/^v/, "") : undefined);
const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

/**
 * The last outputs of `inst`: its entry in `instances`. A stack updated before fleets existed has its one
 * instance's outputs at the top level; they belong to its single instance, or to the first listed one
 * (which takes over its resources through an alias).
 */
function outputsOf(outputs: StackOutputs, inst: Instance): Record<string, unknown> {
  const per = isObject(outputs.instances) ? outputs.instances : undefined;
  if (per && isObject(per[inst.name])) return per[inst.name] as Record<string, unknown>;
  if (inst.index !== 0) return {};
  if (per && isObject(per[SINGLE_INSTANCE])) return per[SINGLE_INSTANCE] as Record<string, unknown>;
  return per ? {} : (outputs as Record<string, unknown>);
}

export function instanceHistory(outputs: StackOutputs, inst: Instance, configured: string): InstanceHistory {
  const own = outputsOf(outputs, inst);
  const deployed = normalize(own.version);
  const previous = normalize(own.previousVersion);
  return {
    deployed,
    from: deployed !== undefined && deployed !== configured ? deployed : (previous ?? ""),
    keptData: own.keptData as KeptData | undefined,
    ledger: ledgerFromOutputs({ backupLedger: own.backupLedger, backupUri: own.backupUri, backupSha256: own.backupSha256, version: deployed, previousVersion: previous }),
  };
}
