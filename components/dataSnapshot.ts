// DataSnapshot: a dynamic resource that reads, from the OLD version before
// anything is stopped, /admin/stats and a sample of threads with their
// messages, and keeps them as salted digests (no user data in clear). The
// HealthCheck's continuity gate compares the new version against it. It
// never fails: a service that is down, or keys that are missing or refused,
// give {available:false, reason} and the gate is skipped with that reason (a
// down service must still be upgradable). The logic lives in ./health
// (pure, serializable).
import * as pulumi from "@pulumi/pulumi";
import { DynamicResource } from "./dynamicResource";
import type { DataSample, Dialect } from "./health/continuity";
import {
  diffSnapshotInputs,
  snapshotInputKeys,
  snapshotOptionsFromInputs,
  snapshotOutputs,
  takeSnapshot,
  validateSnapshotInputs,
  type SnapshotInputs,
} from "./health/snapshot";

export type { DataSample, Dialect, SampleThread } from "./health/continuity";
export { compareSample, digestThread, findSample, readSample } from "./health/continuity";
export { takeSnapshot } from "./health/snapshot";

/** Version of the provider code; bump it when ./health/snapshot.ts or continuity.ts changes behaviour. */
export const SNAPSHOT_PROVIDER_VERSION = "1.0.0";

export interface DataSnapshotArgs {
  /** Base URL of the instance, e.g. http://10.0.0.5:8080. */
  url: pulumi.Input<string>;
  /** API of the version running now (the old one): "v1" (0.1.x) or "frontend-v1" (0.2.x). */
  dialect: pulumi.Input<Dialect>;
  /**
   * Replace trigger: a new reading whenever it changes. Pass the target
   * version of the upgrade, so that each upgrade reads the version still
   * running before it. No other change re-reads (it could read the new
   * version as if it were the old one).
   */
  version: pulumi.Input<string>;
  /** Backend API key (thread reads). Always a secret, never an output. */
  apiKey?: pulumi.Input<string>;
  /** Admin API key (/admin/stats; on 0.2.x the list of thread owners). Always a secret, never an output. */
  adminApiKey?: pulumi.Input<string>;
  /** Extra request headers (e.g. for an auth proxy). Stored as a secret. */
  headers?: pulumi.Input<Record<string, pulumi.Input<string>>>;
  /** PEM of the CA or self-signed certificate to trust for an https url. */
  caCertPem?: pulumi.Input<string>;
  /** Cut for a single HTTP request. Defaults to 5. */
  requestTimeoutSeconds?: pulumi.Input<number>;
  /** Threads to sample. Defaults to 20. */
  sampleSize?: pulumi.Input<number>;
  /** false: record {available:false} without reading. Defaults to true. */
  enabled?: pulumi.Input<boolean>;
}

const logic = { diffSnapshotInputs, snapshotInputKeys, snapshotOptionsFromInputs, snapshotOutputs, takeSnapshot, validateSnapshotInputs };

/** The dynamic provider (uses only globals and `logic`). Exported for the serialization test. */
export const snapshotProvider: pulumi.dynamic.ResourceProvider = {
  async check(_olds: SnapshotInputs, news: SnapshotInputs): Promise<pulumi.dynamic.CheckResult> {
    return { inputs: news, failures: logic.validateSnapshotInputs(news) };
  },

  async diff(_id: string, olds: SnapshotInputs, news: SnapshotInputs): Promise<pulumi.dynamic.DiffResult> {
    return logic.diffSnapshotInputs(olds, news);
  },

  /** The only place that reads data. Never throws. */
  async create(inputs: SnapshotInputs): Promise<pulumi.dynamic.CreateResult> {
    const sample = await logic.takeSnapshot(logic.snapshotOptionsFromInputs(inputs));
    return { id: globalThis.crypto.randomUUID(), outs: logic.snapshotOutputs(inputs, sample) };
  },

  /** Settings changed, same version: keep the sample taken before the upgrade. */
  async update(_id: string, olds: SnapshotInputs, news: SnapshotInputs): Promise<pulumi.dynamic.UpdateResult> {
    const outs: SnapshotInputs = {};
    for (const [k, v] of Object.entries(olds)) if (!logic.snapshotInputKeys().includes(k)) outs[k] = v;
    for (const k of logic.snapshotInputKeys()) if (news[k] !== undefined && news[k] !== null) outs[k] = news[k];
    return { outs };
  },

  /** `pulumi refresh`: the sample is history (the service may run the new version now): unchanged. */
  async read(id: string, props?: SnapshotInputs): Promise<pulumi.dynamic.ReadResult> {
    const state: SnapshotInputs = props ?? {};
    const inputs: SnapshotInputs = {};
    for (const k of logic.snapshotInputKeys()) if (state[k] !== undefined) inputs[k] = state[k];
    return { id, props: state, inputs };
  },

  async delete(): Promise<void> {
    // Nothing to delete.
  },
};

/**
 * A sample of the data of the version running now (type
 * `pulumi-nodejs:dynamic/snapshot:DataSnapshot`). Read once, on create; a
 * new `version` replaces it (a new reading). Order it before anything stops
 * the service (dependsOn), and pass `sample` to the HealthCheck's `baseline`.
 */
export class DataSnapshot extends DynamicResource {
  /** The sample (digests only). `available: false` with `reason` when nothing could be read. */
  declare public readonly sample: pulumi.Output<DataSample>;
  /** Whether the sample holds data to compare. */
  declare public readonly available: pulumi.Output<boolean>;
  /** "" when available; otherwise why not (the continuity gate is skipped with it). */
  declare public readonly reason: pulumi.Output<string>;
  /** ISO time of the reading. */
  declare public readonly takenAt: pulumi.Output<string>;
  /** The `version` input the sample belongs to. */
  declare public readonly version: pulumi.Output<string>;

  constructor(name: string, args: DataSnapshotArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      snapshotProvider,
      name,
      {
        url: args.url,
        dialect: args.dialect,
        version: args.version,
        apiKey: args.apiKey === undefined ? undefined : pulumi.secret(args.apiKey),
        adminApiKey: args.adminApiKey === undefined ? undefined : pulumi.secret(args.adminApiKey),
        headers: args.headers === undefined ? undefined : pulumi.secret(args.headers),
        caCertPem: args.caCertPem,
        requestTimeoutSeconds: args.requestTimeoutSeconds ?? 5,
        sampleSize: args.sampleSize ?? 20,
        enabled: args.enabled ?? true,
        providerVersion: SNAPSHOT_PROVIDER_VERSION,
        // Outputs.
        sample: undefined,
        available: undefined,
        reason: undefined,
        takenAt: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "headers"] },
      "snapshot",
      "DataSnapshot",
    );
  }
}
