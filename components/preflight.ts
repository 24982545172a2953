import * as pulumi from "@pulumi/pulumi";
import { PreflightParams, PreflightResult, renderPreflightScript } from "./hostScripts";
import { HostAccess, hostCommand, scriptResult } from "./hostCommand";

/** The preflight script's parameters, and how to reach the host. */
export type PreflightArgs = PreflightParams & HostAccess & { runKey: pulumi.Input<string> };

/**
 * Everything that can be checked before anything is stopped: host tools, free
 * disk, S3 reachability, and the release archive downloaded and its sha256
 * verified into a staging dir.
 */
export class Preflight extends pulumi.ComponentResource {
  public readonly archivePath: pulumi.Output<string>;
  public readonly archiveSha256: pulumi.Output<string>;
  /** What the data dir held: "empty", "root" (0.1.x) or "store" (0.2.x). */
  public readonly layout: pulumi.Output<string>;
  /** The staged, verified migration tool archive ("" when no migration is needed). */
  public readonly toolArchive: pulumi.Output<string>;

  constructor(name: string, args: PreflightArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:deploy:Preflight", name, {}, opts);
    const check = hostCommand(
      `${name}-check`,
      {
        connection: args.connection,
        script: renderPreflightScript(args),
        stdin: args.stdin,
        triggers: [args.runKey],
      },
      { parent: this, dependsOn: opts?.dependsOn },
    );
    const result = scriptResult<PreflightResult>(check);
    this.archivePath = result.archive;
    this.archiveSha256 = result.sha256;
    this.layout = result.layout;
    this.toolArchive = result.tool;
    // The script's stderr streams by while it runs: a warning is repeated in the update's diagnostics.
    result.apply((r) => (r.warnings ?? []).forEach((w) => pulumi.log.warn(w, this)));
    this.registerOutputs({ archivePath: this.archivePath, archiveSha256: this.archiveSha256, layout: this.layout, toolArchive: this.toolArchive });
  }
}
