// ServiceProbe: drift detection for the upgrade chain. A dynamic resource whose
// `diff` (run by the engine on every preview and up) looks at the live
// service: when the configured version is not the one answering — the service
// was stopped outside Pulumi, or the continuity gate reverted the last
// upgrade — it asks to be replaced, and its new `epoch` is part of the run key
// of every host step, so `pulumi up` runs the chain again instead of reporting
// a healthy no-op. When the service answers as configured, it changes nothing.
import * as pulumi from "@pulumi/pulumi";
import { DynamicResource } from "./dynamicResource";
import { probeService } from "./health/probe";

export const PROBE_PROVIDER_VERSION = "1.0.0";

export interface ServiceProbeArgs {
  url: pulumi.Input<string>;
  expectedVersion: pulumi.Input<string>;
  /** "readyz" (0.2.x) or "host" (0.1.x: no /readyz). */
  versionProofMode: pulumi.Input<string>;
  headers?: pulumi.Input<Record<string, pulumi.Input<string>>>;
  caCertPem?: pulumi.Input<string>;
}

type Inputs = Record<string, unknown>;
const INPUT_KEYS = ["url", "expectedVersion", "versionProofMode", "headers", "caCertPem", "providerVersion"];
const logic = { probeService };

export const probeProvider: pulumi.dynamic.ResourceProvider = {
  /** Runs on every preview and up: looks at the live service and records what answers as `drift` ("" when as configured). */
  async check(olds: Inputs, news: Inputs): Promise<pulumi.dynamic.CheckResult> {
    if (typeof news["url"] !== "string" || typeof news["expectedVersion"] !== "string") return { inputs: news };
    const live = await logic.probeService({
      // A new URL (a listen-address change) is where the service will be after this update's
      // restart: until then it answers at the old one.
      url: typeof olds["url"] === "string" && olds["url"] !== "" ? olds["url"] : news["url"],
      expectedVersion: news["expectedVersion"],
      versionProofMode: String(news["versionProofMode"]),
      headers: (news["headers"] as Record<string, string> | undefined) ?? undefined,
      caCertPem: typeof news["caCertPem"] === "string" ? news["caCertPem"] : undefined,
    });
    return { inputs: { ...news, drift: live.ok ? "" : `${news["expectedVersion"]} is not the version answering: ${live.seen}` } };
  },

  async create(inputs: Inputs): Promise<pulumi.dynamic.CreateResult> {
    return { id: globalThis.crypto.randomUUID(), outs: { ...inputs, epoch: globalThis.crypto.randomUUID().slice(0, 8) } };
  },

  /** A drift replaces the probe (a new epoch: the chain runs again); anything else is recorded in place. */
  async diff(_id: string, olds: Inputs, news: Inputs): Promise<pulumi.dynamic.DiffResult> {
    if (news["drift"]) return { changes: true, replaces: ["drift"], deleteBeforeReplace: false };
    const changed = INPUT_KEYS.some((k) => JSON.stringify(olds[k] ?? null) !== JSON.stringify(news[k] ?? null));
    return { changes: changed, replaces: [] };
  },

  async update(_id: string, olds: Inputs, news: Inputs): Promise<pulumi.dynamic.UpdateResult> {
    return { outs: { ...news, epoch: olds["epoch"] } };
  },

  async read(id: string, props?: Inputs): Promise<pulumi.dynamic.ReadResult> {
    const state = props ?? {};
    const inputs: Inputs = {};
    for (const k of INPUT_KEYS) if (state[k] !== undefined) inputs[k] = state[k];
    return { id, props: state, inputs };
  },

  async delete(): Promise<void> {
    // Nothing to delete.
  },
};

/** Type `pulumi-nodejs:dynamic/probe:ServiceProbe`. `epoch` changes whenever the live service drifted. */
export class ServiceProbe extends DynamicResource {
  declare public readonly epoch: pulumi.Output<string>;

  constructor(name: string, args: ServiceProbeArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      probeProvider,
      name,
      {
        url: args.url,
        expectedVersion: args.expectedVersion,
        versionProofMode: args.versionProofMode,
        headers: args.headers === undefined ? undefined : pulumi.secret(args.headers),
        caCertPem: args.caCertPem,
        providerVersion: PROBE_PROVIDER_VERSION,
        drift: "",
        epoch: undefined,
      },
      { ...opts, additionalSecretOutputs: ["headers"] },
      "probe",
      "ServiceProbe",
    );
  }
}
