// progressdb-upgrades: an upgrade is a change of `progressdb:version` followed
// by `pulumi up`; a rollback is reverting that line. See README.md.
import * as pulumi from "@pulumi/pulumi";
import { crossingProblem, downgradeProblem } from "./components/config";
import { loadStackConfig } from "./components/stackConfig";
import { mayNameThisVersionsBackup, resolveRestore } from "./components/backupLedger";
import { READ_BACK, StackOutputs, instanceHistory } from "./components/fleet/history";
import { liveVersion } from "./components/fleet/live";
import { promotionVerdict, verifiedHere, verifiedVersionsAfter } from "./components/fleet/promotion";
import { RolloutMember, rollOut } from "./components/fleet/rollout";

export = async () => {
  const { instances, secrets } = loadStackConfig();
  // Stack-wide: every instance runs the same version, rollout and promotion settings.
  const { version, rollout, promotion } = instances[0].settings;
  const listed = instances[0].listed;

  // What this stack last deployed (its own outputs): checked before any resource exists, so a
  // refused update touches nothing.
  const self = new pulumi.StackReference(`${pulumi.getOrganization()}/${pulumi.getProject()}/${pulumi.getStack()}`);
  const outputs: StackOutputs = Object.fromEntries(await Promise.all(READ_BACK.map(async (k) => [k, await self.getOutputValue(k)])));

  const refusals: string[] = [];
  const members: RolloutMember[] = [];
  for (const instance of instances) {
    const s = instance.settings;
    const history = instanceHistory(outputs, instance, version);
    const where = listed ? `instance "${instance.name}": ` : "";
    // A rollout that failed part-way wrote no outputs: what answers may be newer than they say.
    const live = listed ? await liveVersion(s) : undefined;
    const deployed = live ?? history.deployed;
    const behind = live !== undefined && live !== history.deployed ? `${where}runs ${live}, though the stack's last outputs say ${history.deployed ?? "nothing was deployed"} (an earlier rollout stopped part-way). ` : "";
    const guard = downgradeProblem(version, deployed, s, history.keptData);
    if (guard?.refusal) refusals.push(`${behind || where}${guard.refusal}`);
    if (guard?.warning) pulumi.log.warn(`${behind || where}${guard.warning}`);
    const crossing = crossingProblem(version, deployed, s);
    if (crossing) refusals.push(`${where}${crossing}`);
    // The backups this instance took, with the sha256 each was verified with: a restore trusts nothing else.
    // Refused here, before any resource exists, unless this version's own backup (in state) may answer it.
    const restore = resolveRestore(s, instance.backupScope, history.ledger);
    if (restore && "refusal" in restore && !mayNameThisVersionsBackup(s)) refusals.push(`${where}${restore.refusal}`);
    members.push({ instance, history, deployed });
  }
  if (refusals.length > 0) throw new pulumi.RunError(refusals.join("\n"));

  // Production takes only what staging verified.
  let promotionOverride = "";
  if (promotion.requireVerifiedBy) {
    const verified = await new pulumi.StackReference(promotion.requireVerifiedBy)
      .getOutputValue("verifiedVersions")
      .then((versions) => ({ versions }), (e: unknown) => ({ error: e instanceof Error ? e.message : String(e) }));
    const verdict = promotionVerdict(version, members.map((m) => m.deployed), promotion, verified);
    if (verdict?.refusal) throw new pulumi.RunError(verdict.refusal);
    if (verdict?.override) {
      pulumi.log.warn(verdict.override);
      promotionOverride = verdict.override;
    }
  }

  const dbs = rollOut(members, { secrets, stack: pulumi.getStack(), canaryBakeSeconds: rollout.canaryPauseSeconds });
  const perInstance = Object.fromEntries(
    instances.map((instance, i) => {
      const db = dbs[i];
      return [
        instance.name,
        {
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
        },
      ];
    }),
  );
  const fleetVersion = pulumi.all(dbs.map((db) => db.version)).apply((vs) => vs[0]);
  const stackOutputs = {
    version: fleetVersion,
    instances: perInstance,
    fleet: pulumi.all(dbs.map((db) => db.version)).apply((vs) => ({ version: vs[0], instances: instances.map((inst, i) => `${inst.name} ${vs[i]}`) })),
    // The versions that passed health, smoke and continuity here: what a stack gated on this one may take.
    verifiedVersions: pulumi.all(dbs.map((db) => db.checks)).apply((checks) => verifiedVersionsAfter(outputs.verifiedVersions, version, verifiedHere(checks))),
    ...(promotionOverride ? { promotionOverride } : {}),
  };
  // A stack without `instances` also keeps the outputs it always had, at the top level.
  return listed ? stackOutputs : { ...perInstance[instances[0].name], ...stackOutputs };
};
