import * as pulumi from "@pulumi/pulumi";
import { RestoreParams, RestoreResult, renderReplayScript, renderRestoreScript } from "./hostScripts";
import { HostAccess, hostCommand, scriptResult } from "./hostCommand";

/** The restore script's parameters, the request and what it resolved to, and how to reach the host. */
export type RestoreArgs = Omit<RestoreParams, "uri" | "sha256"> & HostAccess & {
  /** progressdb:restore.backup as set (`before:<version>` or the URI): the step runs again only when it changes. */
  request: string;
  /** The object and the sha256 its download must have (known once this update's backup result is). */
  source: pulumi.Input<{ uri: string; sha256: string }>;
};

/**
 * A one-shot restore: runs when progressdb:restore.backup is set or changed,
 * and never again for the same value. The data it replaces is moved aside on
 * the host, never deleted. Removing the request deletes only this resource's
 * state; nothing runs on the host.
 */
export class Restore extends pulumi.ComponentResource {
  /** The `s3://` object that was restored. */
  public readonly restoredUri: pulumi.Output<string>;
  public readonly sha256: pulumi.Output<string>;
  /** Where the replaced data now lives on the host. */
  public readonly movedAside: pulumi.Output<string[]>;
  /** Changes whenever the restore runs; the health check keys on it. */
  public readonly restoreId: pulumi.Output<string>;

  constructor(name: string, args: RestoreArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:backup:Restore", name, {}, opts);
    const run = hostCommand(
      `${name}-data`,
      {
        connection: args.connection,
        script: pulumi.output(args.source).apply(({ uri, sha256 }) => renderRestoreScript({ ...args, uri, sha256 })),
        stdin: args.stdin,
        triggers: [args.request],
        // Later upgrades change the script text (it names the version to run), a key rotation its stdin:
        // never a reason to restore again.
        update: renderReplayScript(args.host.installDir, "restore"),
      },
      { parent: this, dependsOn: opts?.dependsOn },
    );
    const result = scriptResult<RestoreResult>(run);
    this.restoredUri = result.restored;
    this.sha256 = result.sha256;
    this.movedAside = result.movedAside;
    this.restoreId = run.id;
    this.registerOutputs({ restoredUri: this.restoredUri, sha256: this.sha256, movedAside: this.movedAside });
  }
}
