// HealthCheck: a dynamic resource that proves the new ProgressDB version is the
// one answering — /healthz ok, and the version proved by /readyz (0.2.x) or by
// the install step on the host (0.1.x, which has no /readyz) — and, if asked,
// that the API can write/read/delete (smoke test) and that the data the old
// version served is still served (continuity gate, against a DataSnapshot).
// Health and version failures fail `pulumi up` with one readable message; a
// continuity failure does not: it is reported in `continuity` for the host
// step that reverts the upgrade. The logic lives in ./health (pure,
// serializable); the provider below only adapts it to the dynamic-provider
// interface.
import * as pulumi from "@pulumi/pulumi";
import { DynamicResource } from "./dynamicResource";
import type { DataSample, Dialect } from "./health/continuity";
import { continuitySettled, diffInputs, inputKeys, optionsFromInputs, outputsFrom, validateInputs, type HealthInputs } from "./health/inputs";
import { normalizeVersion, pollUntilHealthy, runHealthCheck } from "./health/poll";

export { backoffDelayMs } from "./health/http";
export { pollUntilHealthy, runHealthCheck } from "./health/poll";
export type { HealthOutcome, PollDeps, PollOptions, PollResult, VersionProof } from "./health/poll";
export type { DataSample, Dialect, SampleThread } from "./health/continuity";

/**
 * Version of the provider code. Bump it whenever this file or ./health/*
 * changes behaviour: the engine does not notice code changes, but a changed
 * `providerVersion` input makes every HealthCheck update (re-check).
 */
export const HEALTH_PROVIDER_VERSION = "2.0.0";

export interface HealthCheckArgs {
  /** Base URL, e.g. http://10.0.0.5:8080 (no trailing /healthz). Changing it replaces the check. */
  url: pulumi.Input<string>;
  /** Version to prove. Changing it replaces the check. */
  expectedVersion: pulumi.Input<string>;
  /** Changes whenever the deployment is replaced (e.g. the install command's id); forces a re-check. */
  deploymentId: pulumi.Input<string>;
  /**
   * How the version is proved. "readyz" (0.2.x): /readyz answers 200 with it
   * (a leading "v" ignored). "host" (0.1.x: no /readyz, reports "dev"): the
   * install step proved that the process on the port runs the installed
   * binary (`hostProof`); /healthz must be ok and /readyz must not answer 200
   * (a 200 with a version is a 0.2-family process: the check fails naming it).
   */
  versionProof: pulumi.Input<"readyz" | "host">;
  /** With versionProof "host": the proof the install step printed (required, non-empty). */
  hostProof?: pulumi.Input<string>;
  /** API of the new version: "v1" (0.1.x) or "frontend-v1" (0.2.x). Used by the smoke test and the continuity gate. */
  dialect: pulumi.Input<Dialect>;
  /** Total time to wait for health. Defaults to 120. */
  timeoutSeconds?: pulumi.Input<number>;
  /** Base of the backoff between attempts (may be fractional). Defaults to 2. */
  intervalSeconds?: pulumi.Input<number>;
  /** Cut for a single HTTP request. Defaults to 5. */
  requestTimeoutSeconds?: pulumi.Input<number>;
  /** Extra request headers (e.g. for an auth proxy). Stored as a secret. */
  headers?: pulumi.Input<Record<string, pulumi.Input<string>>>;
  /** PEM of the CA or self-signed certificate to trust for an https url. */
  caCertPem?: pulumi.Input<string>;
  /** After health, create a thread, post a message, read it back, delete both. Defaults to false. */
  smokeTest?: pulumi.Input<boolean>;
  /** Backend API key (smoke test; thread reads of the continuity gate), sent as X-API-Key. Always a secret, never an output. */
  apiKey?: pulumi.Input<string>;
  /** Admin API key (/admin/stats; on 0.2.x the list of thread owners). Always a secret, never an output. */
  adminApiKey?: pulumi.Input<string>;
  /** The DataSnapshot's `sample` of the old version. Without it (or when it is unavailable) the gate is skipped. */
  baseline?: pulumi.Input<DataSample | undefined>;
  /** The version the baseline was read from, for messages (e.g. "0.1.2"). Defaults to what the snapshot saw on /readyz. */
  baselineVersion?: pulumi.Input<string>;
  /** Compare the baseline with what the new version serves. Defaults to true when adminApiKey is given. */
  dataContinuity?: pulumi.Input<boolean>;
  /** A fleet's canary: once healthy, run this long on the new version, then prove health and version again. */
  bakeSeconds?: pulumi.Input<number>;
  /** A fleet: which instance runs which version, appended to a failure so the error says where the rollout stands. */
  fleetNote?: pulumi.Input<string>;
}

// The provider closure must capture plain functions, never an imported module
// object (serializing a captured import breaks, notably under vitest).
const logic = { continuitySettled, diffInputs, inputKeys, normalizeVersion, optionsFromInputs, outputsFrom, pollUntilHealthy, runHealthCheck, validateInputs };

/**
 * The dynamic provider. Its methods use only globals and `logic` (functions
 * from ./health that themselves use only globals). Exported for the
 * serialization test.
 */
export const healthProvider: pulumi.dynamic.ResourceProvider = {
  async check(_olds: HealthInputs, news: HealthInputs): Promise<pulumi.dynamic.CheckResult> {
    return { inputs: news, failures: logic.validateInputs(news) };
  },

  async diff(_id: string, olds: HealthInputs, news: HealthInputs): Promise<pulumi.dynamic.DiffResult> {
    return logic.diffInputs(olds, news);
  },

  async create(inputs: HealthInputs): Promise<pulumi.dynamic.CreateResult> {
    const result = await logic.pollUntilHealthy(logic.optionsFromInputs(inputs));
    return { id: globalThis.crypto.randomUUID(), outs: logic.outputsFrom(inputs, result, globalThis.crypto.randomUUID()) };
  },

  /** Re-checks in place. The continuity of an unchanged baseline that already passed is not compared again. */
  async update(_id: string, olds: HealthInputs, news: HealthInputs): Promise<pulumi.dynamic.UpdateResult> {
    const settled = logic.continuitySettled(olds, news);
    const opts = logic.optionsFromInputs(news);
    if (settled) opts.dataContinuity = false;
    const result = await logic.pollUntilHealthy(opts);
    if (settled) {
      result.continuity = "passed";
      result.continuityMessage = "";
    }
    return { outs: logic.outputsFrom(news, result, globalThis.crypto.randomUUID()) };
  },

  /**
   * `pulumi refresh`: re-check health and version (no smoke test, no
   * continuity: the API keys are not in the state; budget capped at 15 s). A
   * still-healthy instance returns the state unchanged (no spurious diff, same
   * runId); otherwise `status` becomes "unhealthy" (and `reportedVersion`,
   * `message`, `checkedAt` say why), which also makes the next `pulumi up`
   * re-check.
   */
  async read(id: string, props?: HealthInputs): Promise<pulumi.dynamic.ReadResult> {
    const state: HealthInputs = props ?? {};
    const inputs: HealthInputs = {};
    for (const k of logic.inputKeys()) if (state[k] !== undefined) inputs[k] = state[k];
    if (typeof state["url"] !== "string" || typeof state["expectedVersion"] !== "string") {
      return { id, props: state, inputs };
    }
    const opts = logic.optionsFromInputs(state);
    opts.smokeTest = false;
    opts.apiKey = undefined;
    opts.adminApiKey = undefined;
    opts.dataContinuity = false;
    opts.timeoutMs = Math.min(opts.timeoutMs, 15000);
    const o = await logic.runHealthCheck(opts);
    const before = typeof state["reportedVersion"] === "string" ? state["reportedVersion"] : "";
    if (o.ok && state["status"] === "healthy" && logic.normalizeVersion(o.reportedVersion) === logic.normalizeVersion(before)) {
      return { id, props: state, inputs };
    }
    return {
      id,
      props: {
        ...state,
        status: o.ok ? "healthy" : "unhealthy",
        reportedVersion: o.reportedVersion || before,
        checkedAt: o.checkedAt,
        message: o.message,
      },
      inputs,
    };
  },

  async delete(): Promise<void> {
    // Nothing to delete: the check owns no infrastructure.
  },
};

/**
 * Proves a ProgressDB instance is healthy at `expectedVersion` (type
 * `pulumi-nodejs:dynamic/health:HealthCheck`). Re-runs when the version, the
 * deployment or the URL changes (replace) or when any other setting or the
 * provider code changes (update); `pulumi refresh` re-checks health.
 */
export class HealthCheck extends DynamicResource {
  // `declare`, not `!`: with target es2022 a `!` field is re-initialized to
  // undefined after super() and would wipe the outputs the SDK assigned.
  /** "healthy" (after `pulumi refresh`: "unhealthy" if the re-check failed). */
  declare public readonly status: pulumi.Output<string>;
  /** The version /readyz reported; with versionProof "host", expectedVersion. */
  declare public readonly reportedVersion: pulumi.Output<string>;
  /** How the version was proved: `readyz reported "v0.2.1"` or `host: <hostProof>`. */
  declare public readonly versionProof: pulumi.Output<string>;
  /** Poll attempts the successful check took. */
  declare public readonly attempts: pulumi.Output<number>;
  /** How long the check took, in milliseconds. */
  declare public readonly elapsedMs: pulumi.Output<number>;
  /** ISO time of the check. */
  declare public readonly checkedAt: pulumi.Output<string>;
  /** "passed" or "skipped". */
  declare public readonly smokeResult: pulumi.Output<string>;
  /** "passed", "failed" or "skipped: <why>". On "failed" the upgrade is to be reverted (the check itself does not fail). */
  declare public readonly continuity: pulumi.Output<string>;
  /** "" unless continuity is "failed": the numbers, e.g. "0.2.1 serves 0 threads where 0.1.2 served 3: data missing". */
  declare public readonly continuityMessage: pulumi.Output<string>;
  /** A fresh random id on every create and update (not on refresh): the next host step keys on it. */
  declare public readonly runId: pulumi.Output<string>;
  /** "" when healthy; after a failed refresh, why. */
  declare public readonly message: pulumi.Output<string>;

  constructor(name: string, args: HealthCheckArgs, opts?: pulumi.CustomResourceOptions) {
    super(
      healthProvider,
      name,
      {
        url: args.url,
        expectedVersion: args.expectedVersion,
        deploymentId: args.deploymentId,
        // The mode travels as versionProofMode: the output `versionProof` is the proof itself.
        versionProofMode: args.versionProof,
        hostProof: args.hostProof,
        dialect: args.dialect,
        timeoutSeconds: args.timeoutSeconds ?? 120,
        intervalSeconds: args.intervalSeconds ?? 2,
        requestTimeoutSeconds: args.requestTimeoutSeconds ?? 5,
        // Headers may carry credentials: secret in the inputs and (below) in the outputs.
        headers: args.headers === undefined ? undefined : pulumi.secret(args.headers),
        caCertPem: args.caCertPem,
        smokeTest: args.smokeTest ?? false,
        apiKey: args.apiKey === undefined ? undefined : pulumi.secret(args.apiKey),
        adminApiKey: args.adminApiKey === undefined ? undefined : pulumi.secret(args.adminApiKey),
        baseline: args.baseline,
        baselineVersion: args.baselineVersion,
        dataContinuity: args.dataContinuity,
        bakeSeconds: args.bakeSeconds,
        fleetNote: args.fleetNote,
        providerVersion: HEALTH_PROVIDER_VERSION,
        // Outputs.
        status: undefined,
        reportedVersion: undefined,
        versionProof: undefined,
        attempts: undefined,
        elapsedMs: undefined,
        checkedAt: undefined,
        smokeResult: undefined,
        continuity: undefined,
        continuityMessage: undefined,
        runId: undefined,
        message: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "headers"] },
      "health",
      "HealthCheck",
    );
  }
}
