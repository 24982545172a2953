import * as pulumi from "@pulumi/pulumi";
import { types } from "@pulumi/command";
import { HostParams, renderInstallScript } from "./hostScripts";
import { hostCommand, scriptResult } from "./hostCommand";

export interface BinaryDeploymentArgs {
  connection: pulumi.Input<types.input.remote.ConnectionArgs>;
  host: HostParams;
  version: string;
  /** The staged, verified archive's file name (see Preflight). */
  archiveName: string;
  /** Releases kept under installDir/releases. Defaults to 3. */
  keepReleases?: number;
  /** Base URL the install step polls (/readyz) before declaring the new version up. */
  healthUrl: string;
  /** Seconds to wait for the new version before switching back to the previous release; 0 disables. */
  autoRevertSeconds: number;
  /** Secrets for the service (KMS master key), as KEY=VALUE lines. */
  stdin: pulumi.Input<string>;
  /**
   * The run of the step that stopped the service (the backup). Whenever it ran
   * again, so does the install, even at the same version: otherwise a re-run
   * backup (e.g. after a failed upgrade) would leave the service stopped.
   */
  serviceStoppedBy?: pulumi.Input<string>;
}

/**
 * Installs the staged release under installDir/releases/<version>, switches
 * the `current` symlink atomically (previous releases kept), and starts the
 * service with the configured service manager.
 */
export class BinaryDeployment extends pulumi.ComponentResource {
  public readonly version: pulumi.Output<string>;
  /** The version that ran before this install ("" on a first install). */
  public readonly previousVersion: pulumi.Output<string>;
  /** Changes whenever the install step re-runs; the health check keys on it. */
  public readonly deploymentId: pulumi.Output<string>;

  constructor(name: string, args: BinaryDeploymentArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:deploy:BinaryDeployment", name, {}, opts);
    const install = hostCommand(
      `${name}-install`,
      {
        connection: args.connection,
        script: renderInstallScript({
          host: args.host,
          version: args.version,
          archiveName: args.archiveName,
          keepReleases: args.keepReleases ?? 3,
          healthUrl: args.healthUrl,
          autoRevertSeconds: args.autoRevertSeconds,
        }),
        stdin: args.stdin,
        triggers: [args.version, args.serviceStoppedBy ?? ""],
      },
      { parent: this, dependsOn: opts?.dependsOn },
    );
    const result = scriptResult<{ version: string; previousVersion: string }>(install);
    this.version = result.version;
    this.previousVersion = result.previousVersion;
    this.deploymentId = install.id;
    this.registerOutputs({ version: this.version, previousVersion: this.previousVersion, deploymentId: this.deploymentId });
  }
}
