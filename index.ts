// progressdb-upgrades: an upgrade is a change of `progressdb:version` followed
// by `pulumi up`; a rollback is reverting that line. See README.md.
import * as pulumi from "@pulumi/pulumi";
import { downgradeProblem } from "./components/config";
import { loadStackConfig } from "./components/stackConfig";
import { ProgressDb } from "./components/progressDb";

export = async () => {
  const { settings, secrets } = loadStackConfig();

  // The version this stack last deployed (its own `version` output): checked
  // before any resource exists, so a refused downgrade touches nothing.
  const self = new pulumi.StackReference(`${pulumi.getOrganization()}/${pulumi.getProject()}/${pulumi.getStack()}`);
  const deployed = (await self.getOutputValue("version")) as string | undefined;
  const problem = downgradeProblem(settings.version, deployed, settings);
  if (problem) throw new pulumi.RunError(problem);

  const db = new ProgressDb("progressdb", { settings, secrets, stack: pulumi.getStack() });
  return {
    version: db.version,
    previousVersion: db.previousVersion,
    backupUri: db.backupUri,
    backupSha256: db.backupSha256,
    backupSize: db.backupSize,
    healthStatus: db.healthStatus,
    imageRef: db.imageRef,
    previousImageRef: db.previousImageRef,
  };
};
