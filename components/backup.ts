import * as pulumi from "@pulumi/pulumi";
import { BackupParams, renderBackupScript } from "./hostScripts";
import { HostAccess, hostCommand, scriptResult } from "./hostCommand";

/** The backup script's parameters, and how to reach the host. */
export type BackupArgs = Omit<BackupParams, "runKey"> & HostAccess & { runKey: pulumi.Input<string> };

interface BackupResult {
  uri?: string;
  key?: string;
  size?: number;
  sha256?: string;
  fromVersion?: string;
  at?: string;
  skipped?: boolean;
  reason?: string;
}

/**
 * Stops the service, streams the data dir (and a separate KMS dir) as tar.gz
 * straight to S3 with its sha256 computed in the stream, then verifies the
 * uploaded object. The embedded KMS master key never enters the archive.
 */
export class Backup extends pulumi.ComponentResource {
  /** `s3://bucket/key`, or "" when there was nothing to back up (fresh host). */
  public readonly uri: pulumi.Output<string>;
  public readonly sha256: pulumi.Output<string>;
  public readonly size: pulumi.Output<number>;
  /** The version the host ran when the backup was taken ("" on a fresh host). */
  public readonly fromVersion: pulumi.Output<string>;
  /** When it was taken (UTC); "" for a result recorded before backups said so. */
  public readonly at: pulumi.Output<string>;
  /** Changes whenever the backup runs, which leaves the service stopped: the deployment keys on it. */
  public readonly runId: pulumi.Output<string>;

  constructor(name: string, args: BackupArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:backup:Backup", name, {}, opts);
    const upload = hostCommand(
      `${name}-upload`,
      {
        connection: args.connection,
        script: pulumi.output(args.runKey).apply((runKey) => renderBackupScript({ ...args, runKey })),
        stdin: args.stdin,
        triggers: [args.runKey],
      },
      { parent: this, dependsOn: opts?.dependsOn },
    );
    const result = scriptResult<BackupResult>(upload);
    this.uri = result.apply((r) => r.uri ?? "");
    this.sha256 = result.apply((r) => r.sha256 ?? "");
    this.size = result.apply((r) => r.size ?? 0);
    this.fromVersion = result.apply((r) => r.fromVersion ?? "");
    this.at = result.apply((r) => r.at ?? "");
    this.runId = upload.id;
    this.registerOutputs({ uri: this.uri, sha256: this.sha256, size: this.size, fromVersion: this.fromVersion, at: this.at });
  }
}
