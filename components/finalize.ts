import * as pulumi from "@pulumi/pulumi";
import { FinalizeParams, renderFinalizeScript } from "./hostScripts";
import { HostAccess, hostCommand, scriptResult } from "./hostCommand";

type Inputs<T> = { [K in keyof T]: pulumi.Input<T[K]> };

/** The finalize step's parameters (known once the HealthCheck ran), and how to reach the host. */
export type FinalizeArgs = Omit<FinalizeParams, "previousVersion" | "continuity" | "finding"> &
  Inputs<Pick<FinalizeParams, "previousVersion" | "continuity" | "finding">> &
  HostAccess & {
    /** The HealthCheck run this step follows: a new one runs it again. */
    checkRunId: pulumi.Input<string>;
  };

/**
 * After the HealthCheck: commits the upgrade, or, when the data-continuity
 * gate failed, puts the previous release back on its own data and fails the
 * update with what the gate found.
 */
export class Finalize extends pulumi.ComponentResource {
  /** The version that is now committed. */
  public readonly version: pulumi.Output<string>;

  constructor(name: string, args: FinalizeArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:deploy:Finalize", name, {}, opts);
    const { connection, stdin, checkRunId, previousVersion, continuity, finding, ...params } = args;
    const run = hostCommand(
      `${name}-commit`,
      {
        connection,
        script: pulumi
          .all([previousVersion, continuity, finding])
          .apply(([prev, verdict, found]) => renderFinalizeScript({ ...params, previousVersion: prev, continuity: verdict, finding: found })),
        stdin,
        triggers: [checkRunId],
      },
      { parent: this, dependsOn: opts?.dependsOn },
    );
    this.version = scriptResult<{ version: string }>(run).version;
    this.registerOutputs({ version: this.version });
  }
}
