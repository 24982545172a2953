// HealthCheck: a dynamic resource that proves the new ProgressDB version is the
// one answering — /healthz ok, /readyz ok at `expectedVersion` — and, if asked,
// that the API can write/read/delete (smoke test). Fails `pulumi up` with one
// readable message. The logic lives in ./healthPoll (pure, serializable); the
// provider below only adapts it to the dynamic-provider interface.
import * as pulumi from "@pulumi/pulumi";
import {
  diffInputs,
  inputKeys,
  normalizeVersion,
  optionsFromInputs,
  outputsFrom,
  pollUntilHealthy,
  runHealthCheck,
  validateInputs,
  type HealthInputs,
} from "./healthPoll";

export { backoffDelayMs, pollUntilHealthy, runHealthCheck } from "./healthPoll";
export type { HealthOutcome, PollDeps, PollOptions, PollResult } from "./healthPoll";

/**
 * Version of the provider code. Bump it whenever this file or healthPoll.ts
 * changes behaviour: the engine does not notice code changes, but a changed
 * `providerVersion` input makes every HealthCheck update (re-check).
 */
export const HEALTH_PROVIDER_VERSION = "1.0.0";

export interface HealthCheckArgs {
  /** Base URL, e.g. http://10.0.0.5:8080 (no trailing /healthz). Changing it replaces the check. */
  url: pulumi.Input<string>;
  /** Version /readyz must report. Changing it replaces the check. */
  expectedVersion: pulumi.Input<string>;
  /** Changes whenever the deployment is replaced (e.g. the install command's id); forces a re-check. */
  deploymentId: pulumi.Input<string>;
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
  /** Backend API key for the smoke test (sent as X-API-Key). Always stored as a secret, never an output. */
  apiKey?: pulumi.Input<string>;
}

// The provider closure must capture plain functions, never an imported module
// object (serializing a captured import breaks, notably under vitest).
const logic = { diffInputs, inputKeys, normalizeVersion, optionsFromInputs, outputsFrom, pollUntilHealthy, runHealthCheck, validateInputs };

/**
 * The dynamic provider. Its methods use only globals and `logic` (functions
 * from ./healthPoll that themselves use only globals). Exported for the
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
    return { id: globalThis.crypto.randomUUID(), outs: logic.outputsFrom(inputs, result) };
  },

  async update(_id: string, _olds: HealthInputs, news: HealthInputs): Promise<pulumi.dynamic.UpdateResult> {
    const result = await logic.pollUntilHealthy(logic.optionsFromInputs(news));
    return { outs: logic.outputsFrom(news, result) };
  },

  /**
   * `pulumi refresh`: re-check health and version (no smoke test: the API key
   * is not in the state; budget capped at 15 s). A still-healthy instance
   * returns the state unchanged (no spurious diff); otherwise `status`
   * becomes "unhealthy" (and `reportedVersion`, `message`, `checkedAt` say
   * why), which also makes the next `pulumi up` re-check.
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
 * provider code changes (update); `pulumi refresh` re-checks.
 */
export class HealthCheck extends pulumi.dynamic.Resource {
  // `declare`, not `!`: with target es2022 a `!` field is re-initialized to
  // undefined after super() and would wipe the outputs the SDK assigned.
  /** "healthy" (after `pulumi refresh`: "unhealthy" if the re-check failed). */
  declare public readonly status: pulumi.Output<string>;
  /** The version /readyz reported. */
  declare public readonly reportedVersion: pulumi.Output<string>;
  /** Poll attempts the successful check took. */
  declare public readonly attempts: pulumi.Output<number>;
  /** How long the check took, in milliseconds. */
  declare public readonly elapsedMs: pulumi.Output<number>;
  /** ISO time of the check. */
  declare public readonly checkedAt: pulumi.Output<string>;
  /** "passed" or "skipped". */
  declare public readonly smokeResult: pulumi.Output<string>;
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
        timeoutSeconds: args.timeoutSeconds ?? 120,
        intervalSeconds: args.intervalSeconds ?? 2,
        requestTimeoutSeconds: args.requestTimeoutSeconds ?? 5,
        // Headers may carry credentials: secret in the inputs and (below) in the outputs.
        headers: args.headers === undefined ? undefined : pulumi.secret(args.headers),
        caCertPem: args.caCertPem,
        smokeTest: args.smokeTest ?? false,
        apiKey: args.apiKey === undefined ? undefined : pulumi.secret(args.apiKey),
        providerVersion: HEALTH_PROVIDER_VERSION,
        // Outputs.
        status: undefined,
        reportedVersion: undefined,
        attempts: undefined,
        elapsedMs: undefined,
        checkedAt: undefined,
        smokeResult: undefined,
        message: undefined,
      },
      { ...opts, additionalSecretOutputs: [...(opts?.additionalSecretOutputs ?? []), "headers"] },
      "health",
      "HealthCheck",
    );
  }
}
