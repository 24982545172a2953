// progressdb-upgrades: an upgrade is a change of `progressdb:version` followed
// by `pulumi up`; a rollback is reverting that line. See README.md.
import * as pulumi from "@pulumi/pulumi";
import { crossingProblem, downgradeProblem } from "./components/config";
import { loadStackConfig } from "./components/stackConfig";
import { KeptData, ProgressDb } from "./components/progressDb";
import { ledgerFromOutputs, mayNameThisVersionsBackup, resolveRestore } from "./components/backupLedger";

export = async () => {
  const { settings, secrets } = loadStackConfig();

  // What this stack last deployed (its own outputs): checked before any
  // resource exists, so a refused downgrade touches nothing.
  const self = new pulumi.StackReference(`${pulumi.getOrganization()}/${pulumi.getProject()}/${pulumi.getStack()}`);
  const normalize = (v: unknown) => (typeof v === "string" && v !== "" ? v.replace(/^v/, "") : undefined);
  const deployed = normalize(await self.getOutputValue("version"));
  const from = deployed !== undefined && deployed !== settings.version ? deployed : (normalize(await self.getOutputValue("previousVersion")) ?? "");
  const keptData = (await self.getOutputValue("keptData")) as KeptData | undefined;
  const guard = downgradeProblem(settings.version, deployed, settings, keptData);
  if (guard?.refusal) throw new pulumi.RunError(guard.refusal);
  if (guard?.warning) pulumi.log.warn(guard.warning);
  const crossing = crossingProblem(settings.version, deployed, settings);
  if (crossing) throw new pulumi.RunError(crossing);
  // The backups this stack took, with the sha256 each was verified with: a restore trusts nothing else.
  const out = (name: string) => self.getOutputValue(name) as Promise<unknown>;
  const ledger = ledgerFromOutputs({
    backupLedger: await out("backupLedger"),
    backupUri: await out("backupUri"),
    backupSha256: await out("backupSha256"),
    version: deployed,
    previousVersion: normalize(await out("previousVersion")),
  });
  // Refused here, before any resource exists, unless this version's own backup (in state) may answer it.
  const restore = resolveRestore(settings, pulumi.getStack(), ledger);
  if (restore && "refusal" in restore && !mayNameThisVersionsBackup(settings)) throw new pulumi.RunError(restore.refusal);

  const db = new ProgressDb("progressdb", { settings, secrets, stack: pulumi.getStack(), deployedVersion: deployed, fromVersion: from, previousKeptData: keptData, backupLedger: ledger });
  return {
    version: db.version,
    previousVersion: db.previousVersion,
    backupUri: db.backupUri,
    backupSha256: db.backupSha256,
    backupSize: db.backupSize,
    backupLedger: db.backupLedger,
    healthStatus: db.healthStatus,
    versionProof: db.versionProof,
    dataContinuity: db.dataContinuity,
    keptData: db.keptData,
    imageRef: db.imageRef,
    previousImageRef: db.previousImageRef,
  };
};
