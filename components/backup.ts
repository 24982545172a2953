import * as pulumi from "@pulumi/pulumi";
import { Settings } from "./config";
import { BackupMode, BackupParams, renderBackupScript } from "./hostScripts";
import { HostAccess, hostCommand, scriptResult } from "./hostCommand";

/** The backup script's parameters, and how to reach the host. */
export type BackupArgs = Omit<BackupParams, "runKey"> & HostAccess & { runKey: pulumi.Input<string> };

/**
 * How this update's backup is taken: a snapshot uploaded after the start in binary mode; streamed
 * with the service stopped in container mode (the docker provider, not a host script, starts the
 * new container), for a restore (rare; its own ledger lookups need the backup's result before it
 * runs), and when `backup.offsiteBeforeStart` asks for the upload before the start.
 */
export function backupModeOf(s: Pick<Settings, "deployment" | "restore" | "backup">): BackupMode {
  return s.deployment.mode === "container" || s.restore.backup !== undefined || s.backup.offsiteBeforeStart ? "stream" : "snapshot";
}

/** What of the backup step's result the later steps use (the backup itself is {@link Offsite}'s to report). */
interface BackupResult {
  fromVersion?: string;
}

/**
 * The pre-upgrade backup of the data dir (and a separate KMS dir). `snapshot` mode: a warm copy
 * beside the data dir while the service runs, completed by the step that stops it and uploaded
 * by {@link Offsite}; `stream` mode: stops the service and streams tar.zst straight to S3 with its
 * sha256 computed in the stream, then verifies the object. The embedded KMS master key never
 * enters a backup.
 */
export class Backup extends pulumi.ComponentResource {
  /** The version the host ran when the backup was taken ("" on a fresh host). */
  public readonly fromVersion: pulumi.Output<string>;
  /** Changes whenever the backup runs (a streamed one leaves the service stopped): the deployment keys on it. */
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
    this.fromVersion = scriptResult<BackupResult>(upload).apply((r) => r.fromVersion ?? "");
    this.runId = upload.id;
    this.registerOutputs({ fromVersion: this.fromVersion });
  }
}
