import * as pulumi from "@pulumi/pulumi";
import { InstallParams, InstallResult, renderInstallScript } from "./hostScripts";
import { HostAccess, hostCommand, scriptResult } from "./hostCommand";

/** The install script's parameters, and how to reach the host. */
export interface BinaryDeploymentArgs extends InstallParams, HostAccess {
  /**
   * The run of the step that stopped the service (the backup). Whenever it ran
   * again, so does the install, even at the same version: otherwise a re-run
   * backup (e.g. after a failed upgrade) would leave the service stopped.
   */
  serviceStoppedBy?: pulumi.Input<string>;
  /**
   * A digest of the service's config and unit settings: a change restarts the
   * service on the same release, with the version proof, and no backup.
   */
  settingsDigest: pulumi.Input<string>;
  /** The upgrade's run key (the version, renewed when the live service drifted): a new one re-runs the install. */
  runKey: pulumi.Input<string>;
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
  /** How the install proved the version answers (the 0.1.x proof is the listening binary's identity). */
  public readonly proof: pulumi.Output<string>;
  /** This run changed the running version (not a restart at the same version on a new config). */
  public readonly switched: pulumi.Output<boolean>;
  /** Changes whenever the install step re-runs; the health check keys on it. */
  public readonly deploymentId: pulumi.Output<string>;

  constructor(name: string, args: BinaryDeploymentArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:deploy:BinaryDeployment", name, {}, opts);
    const install = hostCommand(
      `${name}-install`,
      {
        connection: args.connection,
        script: renderInstallScript(args),
        // (stdin carries the rendered config: its digest is in the triggers.)
        stdin: args.stdin,
        triggers: [args.runKey, args.serviceStoppedBy ?? "", args.settingsDigest],
      },
      { parent: this, dependsOn: opts?.dependsOn },
    );
    const result = scriptResult<InstallResult>(install);
    this.version = result.version;
    this.previousVersion = result.previousVersion;
    this.proof = result.proof;
    this.switched = result.apply((r) => r.switched === true);
    this.deploymentId = install.id;
    this.registerOutputs({ version: this.version, previousVersion: this.previousVersion, deploymentId: this.deploymentId });
  }
}
