import * as pulumi from "@pulumi/pulumi";
import { OffsiteParams, renderOffsiteScript } from "./hostScripts";
import { HostAccess, hostCommand, scriptResult } from "./hostCommand";

/** The offsite step's parameters, and how to reach the host. */
export type OffsiteArgs = Omit<OffsiteParams, "runKey"> & HostAccess & { runKey: pulumi.Input<string> };

interface OffsiteResult {
  uri?: string;
  size?: number;
  sha256?: string;
  fromVersion?: string;
  at?: string;
}

/**
 * The upgrade's backup in S3, verified. A streamed backup (container mode, a restore,
 * `backup.offsiteBeforeStart`, or the fallback) is already there: its result is repeated. A
 * snapshot is uploaded once the step that stopped the service has completed it and the service
 * runs again, and the local copy is removed once the upload is verified.
 *
 * It depends on the backup alone, so the engine runs it beside the migration and the install:
 * when the install fails (and reverts), this step still ends and its result is in state, where a
 * `restore.backup: before:<version>` finds it. Finalize depends on it: an update completes only
 * with its backup verified offsite.
 */
export class Offsite extends pulumi.ComponentResource {
  /** `s3://bucket/key`, or "" when there was nothing to back up (fresh host). */
  public readonly uri: pulumi.Output<string>;
  public readonly sha256: pulumi.Output<string>;
  public readonly size: pulumi.Output<number>;
  /** The version the host ran when the backup was taken ("" on a fresh host). */
  public readonly fromVersion: pulumi.Output<string>;
  /** When it was taken (UTC). */
  public readonly at: pulumi.Output<string>;

  constructor(name: string, args: OffsiteArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:backup:Offsite", name, {}, opts);
    const upload = hostCommand(
      `${name}-upload`,
      {
        connection: args.connection,
        script: pulumi.output(args.runKey).apply((runKey) => renderOffsiteScript({ ...args, runKey })),
        stdin: args.stdin,
        triggers: [args.runKey],
      },
      { parent: this, dependsOn: opts?.dependsOn },
    );
    const result = scriptResult<OffsiteResult>(upload);
    this.uri = result.apply((r) => r.uri ?? "");
    this.sha256 = result.apply((r) => r.sha256 ?? "");
    this.size = result.apply((r) => r.size ?? 0);
    this.fromVersion = result.apply((r) => r.fromVersion ?? "");
    this.at = result.apply((r) => r.at ?? "");
    this.registerOutputs({ uri: this.uri, sha256: this.sha256, size: this.size, fromVersion: this.fromVersion, at: this.at });
  }
}
