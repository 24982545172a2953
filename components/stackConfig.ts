// Reads the stack's config once, validates it, and returns typed settings plus
// the secret values as secret Outputs. The only place that touches pulumi.Config.
import * as pulumi from "@pulumi/pulumi";
import * as runtimeConfig from "@pulumi/pulumi/runtime/config";
import { ConfigError, PLAIN_KEYS, PROJECT, RawConfig, SECRET_KEYS, SECRET_SHAPES, SecretKey, SecretState, secretWellFormed } from "./config";
import { Instance, parseInstances } from "./fleet/instances";

// Exported by the SDK at runtime but missing from its .d.ts.
const { isConfigSecret } = runtimeConfig as unknown as { isConfigSecret(key: string): boolean };

export type Secrets = Record<SecretKey, pulumi.Output<string> | undefined>;

/** The stack's instances (one, unless progressdb:instances lists several), in rollout order, and the secrets they share. */
export function loadStackConfig(): { instances: Instance[]; secrets: Secrets } {
  const config = new pulumi.Config(PROJECT);
  const values: RawConfig["values"] = {};
  for (const key of PLAIN_KEYS) {
    values[key] = key === "version" ? config.get(key) : key === "allowDowngrade" ? config.getBoolean(key) : config.getObject(key);
  }
  // Pulumi.yaml declares optional secrets with an empty default; empty means absent.
  const present = (key: SecretKey) => (config.get(key) ?? "") !== "";
  const state = (key: SecretKey): SecretState =>
    !present(key) ? "absent" : isConfigSecret(`${PROJECT}:${key}`) ? "secret" : "plaintext";
  const secretStates = Object.fromEntries(SECRET_KEYS.map((k) => [k, state(k)])) as Record<SecretKey, SecretState>;
  const malformed = SECRET_KEYS.filter((k) => present(k) && !secretWellFormed(k, config.get(k) ?? ""));
  let instances: Instance[];
  try {
    instances = parseInstances({ values, secrets: secretStates, malformed }, pulumi.getStack());
  } catch (e) {
    // RunError: the engine shows the message alone, without a stack trace.
    throw e instanceof ConfigError ? new pulumi.RunError(e.message) : e;
  }
  // Shaped secrets are used as they were checked: trimmed of the newline a `< file` leaves.
  const value = (k: SecretKey) => (SECRET_SHAPES[k] ? config.requireSecret(k).apply((v) => v.trim()) : config.requireSecret(k));
  const secrets = Object.fromEntries(
    SECRET_KEYS.map((k) => [k, instances[0].settings.secretsPresent[k] ? value(k) : undefined]),
  ) as Secrets;
  return { instances, secrets };
}
