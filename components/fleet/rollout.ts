// A rolling upgrade: one ProgressDb per instance, in list order. Every instance's preflight runs
// first; then each instance goes through its whole chain (backup, migration, install, health,
// continuity, finalize) before the next one stops. The engine starts nothing that depends on a
// failed step, so the first failure leaves the later instances untouched.
import * as pulumi from "@pulumi/pulumi";
import { PROJECT } from "../config";
import type { Secrets } from "../stackConfig";
import { ProgressDb } from "../progressDb";
import { Instance } from "./instances";
import { InstanceHistory } from "./history";

export interface RolloutMember {
  instance: Instance;
  history: InstanceHistory;
  /** The version it runs (its outputs, or what answers when a failed rollout left the outputs behind). */
  deployed?: string;
}

/**
 * The rollout's order and what a failure at `i` leaves where, appended to that instance's failure.
 * It depends only on the list and the version, so the steps that carry it see no change between runs.
 */
export function fleetNote(names: string[], i: number, version: string): string {
  const before = names.slice(0, i);
  const after = names.slice(i + 1);
  return (
    `rollout of ${version} over ${names.join(" → ")}, one at a time: ${before.length > 0 ? `${before.join(", ")} run${before.length === 1 ? "s" : ""} ${version}; ` : ""}` +
    `${names[i]} failed and is back on the version it ran${after.length > 0 ? `; not touched, on the version each ran: ${after.join(", ")}` : ""}. ` +
    `Fix the cause and run pulumi up again: the rollout continues at ${names[i]}.`
  );
}

export function rollOut(members: RolloutMember[], common: { secrets: Secrets; stack: string; canaryBakeSeconds: number }): ProgressDb[] {
  const fleet = members.length > 1;
  let allPrepared!: (r: pulumi.Resource[]) => void;
  const prepared = new Promise<pulumi.Resource[]>((resolve) => (allPrepared = resolve));
  const dbs: ProgressDb[] = [];
  members.forEach((m, i) => {
    const before = dbs.at(-1);
    const version = m.instance.settings.version;
    dbs.push(
      new ProgressDb(
        m.instance.resourceName,
        {
          settings: m.instance.settings,
          secrets: common.secrets,
          stack: m.instance.backupScope,
          deployedVersion: m.deployed,
          fromVersion: m.history.from,
          previousKeptData: m.history.keptData,
          backupLedger: m.history.ledger,
          stopAfter: fleet ? prepared.then((all) => (before ? [...all, before.done] : all)) : undefined,
          canary: fleet && i === 0 ? { bakeSeconds: common.canaryBakeSeconds } : undefined,
          fleetNote: fleet ? fleetNote(members.map((x) => x.instance.name), i, version) : undefined,
        },
        // A stack that had one instance keeps its resources when it lists instances: the first takes them over.
        m.instance.listed && i === 0 ? { aliases: [{ name: PROJECT }] } : undefined,
      ),
    );
  });
  allPrepared(dbs.flatMap((db) => db.prepared));
  return dbs;
}
