// progressdb-upgrades: an upgrade is a change of `progressdb:version` followed
// by `pulumi up`; a rollback is reverting that line. See README.md.
import * as pulumi from "@pulumi/pulumi";
import { loadStackConfig } from "./components/stackConfig";
import { ProgressDb } from "./components/progressDb";

const { settings, secrets } = loadStackConfig();
const db = new ProgressDb("progressdb", { settings, secrets, stack: pulumi.getStack() });

export const version = db.version;
export const previousVersion = db.previousVersion;
export const backupUri = db.backupUri;
export const backupSha256 = db.backupSha256;
export const backupSize = db.backupSize;
export const healthStatus = db.healthStatus;
