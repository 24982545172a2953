// Reads the stack's config once, validates it, and returns typed settings plus
// the secret values as secret Outputs. The only place that touches pulumi.Config.
import * as pulumi from "@pulumi/pulumi";
import * as runtimeConfig from "@pulumi/pulumi/runtime/config";
import { ConfigError, PLAIN_KEYS, PROJECT, RawConfig, SECRET_KEYS, SecretKey, SecretState, Settings, parseSettings } from "./config";

// Exported by the SDK at runtime but missing from its .d.ts.
const { isConfigSecret } = runtimeConfig as unknown as { isConfigSecret(key: string): boolean };

export type Secrets = Record<SecretKey, pulumi.Output<string> | undefined>;

export function loadStackConfig(): { settings: Settings; secrets: Secrets } {
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
  let settings: Settings;
  try {
    settings = parseSettings({ values, secrets: secretStates });
  } catch (e) {
    // RunError: the engine shows the message alone, without a stack trace.
    throw e instanceof ConfigError ? new pulumi.RunError(e.message) : e;
  }
  const secrets = Object.fromEntries(
    SECRET_KEYS.map((k) => [k, settings.secretsPresent[k] ? config.requireSecret(k) : undefined]),
  ) as Secrets;
  return { settings, secrets };
}
