// progressdb-upgrades: an upgrade is a change of `progressdb:version` followed
// by `pulumi up`; a rollback is reverting that line. See README.md.
import * as pulumi from "@pulumi/pulumi";
import { loadStackConfig } from "./components/stackConfig";
import { ProgressDb } from "./components/progressDb";

const { settings, secrets } = loadStackConfig();
// This stack's own last outputs: the version it deployed, for the downgrade guard.
const self = new pulumi.StackReference(`${pulumi.getOrganization()}/${pulumi.getProject()}/${pulumi.getStack()}`);
const deployedVersion = self.getOutput("version") as pulumi.Output<string | undefined>;
const db = new ProgressDb("progressdb", { settings, secrets, stack: pulumi.getStack(), deployedVersion });

export const version = db.version;
export const previousVersion = db.previousVersion;
export const backupUri = db.backupUri;
export const backupSha256 = db.backupSha256;
export const backupSize = db.backupSize;
export const healthStatus = db.healthStatus;
