import { RawConfig, SecretKey, SecretState } from "../../components/config";

/** A host public key as ssh-keyscan prints it (a real ed25519 key's public half; never a secret). */
export const TEST_HOST_KEY = "[127.0.0.1]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk0OkZfwzXhfGsqm0rH/0M9JzU7bStF96knfic8iTx0";

/** A valid binary-mode stack config, as the local stack has it. */
export function binaryConfig(version = "0.1.2"): Record<string, unknown> {
  return {
    version,
    deployment: {
      mode: "binary",
      host: { address: "127.0.0.1", port: 2222, user: "root", hostKey: TEST_HOST_KEY },
      binary: {
        installDir: "/srv/progressdb/opt",
        serviceManager: "process",
        artifactUrl: "http://127.0.0.1:18090/{version}/progressdb_{version}_linux_{arch}.tar.gz",
        checksumsUrl: "http://127.0.0.1:18090/{version}/checksums.txt",
        listenAddr: "127.0.0.1:18080",
      },
    },
    storage: { dbPath: "/srv/progressdb/data" },
    backup: { bucket: "backups", endpoint: "http://127.0.0.1:19000" },
    health: { url: "http://127.0.0.1:18080", timeoutSeconds: 60 },
  };
}

export function containerConfig(version = "0.1.2"): Record<string, unknown> {
  return {
    ...binaryConfig(version),
    deployment: {
      mode: "container",
      host: { address: "10.0.0.5", user: "ops", hostKey: TEST_HOST_KEY.replace("[127.0.0.1]:2222", "10.0.0.5") },
      container: { image: "docker.io/progressdb/progressdb", dockerHost: "ssh://ops@10.0.0.5", ports: [{ internal: 8080, external: 8080 }] },
    },
  };
}

/** Distinctive test secrets, so a leak is unmistakable. */
export const TEST_SECRETS = {
  sshPrivateKey: "-----TEST SSH KEY 7f3a9c-----",
  kmsMasterKeyHex: "9".repeat(64),
  apiKey: "test-backend-key-7f3a9c",
  adminApiKey: "test-admin-key-7f3a9c",
  signingKey: "test-signing-key-7f3a9c",
  s3AccessKeyId: "TESTACCESSKEY7F3A",
  s3SecretAccessKey: "test-s3-secret-7f3a9c",
};

export function rawConfig(values: Record<string, unknown>, secrets: Partial<Record<SecretKey, SecretState>> = {}): RawConfig {
  return {
    values,
    secrets: {
      sshPrivateKey: "secret",
      kmsMasterKeyHex: "secret",
      apiKey: "secret",
      adminApiKey: "secret",
      frontendApiKey: "absent",
      signingKey: "secret",
      s3AccessKeyId: "absent",
      s3SecretAccessKey: "absent",
      ...secrets,
    },
  };
}
