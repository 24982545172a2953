import * as pulumi from "@pulumi/pulumi";
import { MigrateParams, MigrateResult, renderMigrateScript } from "./hostScripts";
import { HostAccess, hostCommand, scriptResult } from "./hostCommand";

/** The migration's parameters (the expected counts may come from the data snapshot), and how to reach the host. */
export type MigrateArgs = Omit<MigrateParams, "expectThreads" | "expectMessages" | "runKey"> &
  HostAccess & {
    expectThreads?: pulumi.Input<number | undefined>;
    expectMessages?: pulumi.Input<number | undefined>;
    runKey: pulumi.Input<string>;
  };

/**
 * The offline 0.1.x → 0.2.x data migration with the target release's prgcli,
 * after the backup and before the install. The old data dir is kept beside
 * the new one; it does nothing when the data is already in the new layout.
 */
export class Migrate extends pulumi.ComponentResource {
  /** Where the pre-migration data was kept ("" when nothing was migrated). */
  public readonly keptDir: pulumi.Output<string>;
  /** ISO time of the migration ("" when nothing was migrated): later writes are not in keptDir. */
  public readonly migratedAt: pulumi.Output<string>;
  /** The version whose data was kept ("" when nothing was migrated). */
  public readonly keptFor: pulumi.Output<string>;

  constructor(name: string, args: MigrateArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:deploy:Migrate", name, {}, opts);
    const { expectThreads, expectMessages, connection, stdin, runKey, ...params } = args;
    const run = hostCommand(
      `${name}-data`,
      {
        connection,
        script: pulumi
          .all([expectThreads, expectMessages, runKey])
          .apply(([threads, messages, key]) => renderMigrateScript({ ...params, expectThreads: threads, expectMessages: messages, runKey: key })),
        stdin,
        triggers: [args.runKey],
      },
      { parent: this, dependsOn: opts?.dependsOn },
    );
    const result = scriptResult<MigrateResult>(run);
    this.keptDir = result.apply((r) => (r.migrated ? r.kept : ""));
    this.migratedAt = result.apply((r) => (r.migrated ? r.at : ""));
    this.keptFor = result.apply((r) => (r.migrated ? r.from : ""));
    this.registerOutputs({ keptDir: this.keptDir, migratedAt: this.migratedAt, keptFor: this.keptFor });
  }
}
