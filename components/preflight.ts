import * as pulumi from "@pulumi/pulumi";
import { types } from "@pulumi/command";
import { HostParams, S3Params, renderPreflightScript } from "./hostScripts";
import { hostCommand, scriptResult } from "./hostCommand";

export interface PreflightArgs {
  connection: pulumi.Input<types.input.remote.ConnectionArgs>;
  host: HostParams;
  version: string;
  /** Release archive URL and the checksums.txt that lists it (already expanded). */
  artifactUrl: string;
  checksumsUrl: string;
  archiveName: string;
  /** Pinned archive sha256; when set, checksums.txt is not consulted. */
  sha256?: string;
  minFreeMb: number;
  /** The backup bucket whose reachability is checked, when backups are on. */
  s3?: S3Params;
  /** Secrets for the host (S3 credentials), as KEY=VALUE lines. */
  stdin: pulumi.Input<string>;
}

/**
 * Everything that can be checked before anything is stopped: host tools, free
 * disk, S3 reachability, and the release archive downloaded and its sha256
 * verified into a staging dir.
 */
export class Preflight extends pulumi.ComponentResource {
  public readonly archivePath: pulumi.Output<string>;
  public readonly archiveSha256: pulumi.Output<string>;

  constructor(name: string, args: PreflightArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:deploy:Preflight", name, {}, opts);
    const check = hostCommand(
      `${name}-check`,
      {
        connection: args.connection,
        script: renderPreflightScript({
          host: args.host,
          version: args.version,
          artifactUrl: args.artifactUrl,
          checksumsUrl: args.checksumsUrl,
          archiveName: args.archiveName,
          sha256: args.sha256,
          minFreeMb: args.minFreeMb,
          s3: args.s3,
        }),
        stdin: args.stdin,
        triggers: [args.version],
      },
      { parent: this, dependsOn: opts?.dependsOn },
    );
    const result = scriptResult<{ archive: string; sha256: string }>(check);
    this.archivePath = result.archive;
    this.archiveSha256 = result.sha256;
    this.registerOutputs({ archivePath: this.archivePath, archiveSha256: this.archiveSha256 });
  }
}
