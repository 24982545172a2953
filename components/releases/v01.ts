// ProgressDB 0.1.x: optional config file (flags > PROGRESSDB_* env > file), no
// /readyz, reports "dev", one Pebble DB at the data dir's root, API under /v1,
// dies at once on SIGTERM. releases-as-built.md §1, §3.
import { ReleaseFamily, ServiceConfig, splitHostPort } from "./family";
import { renderYaml } from "./yaml";

export const v01: ReleaseFamily = {
  name: "0.1",
  dataLayout: "root",
  versionProof: "host",
  dialect: "v1",
  imageTag: (version) => `v${version}`,
  renderConfig(c: ServiceConfig): string {
    const { host, port } = splitHostPort(c.listenAddr);
    const body = renderYaml({
      server: { address: host, port },
      storage: { db_path: c.dbPath },
      security: {
        encryption_key: c.kmsMasterKeyHex,
        fields: c.encryptFields.length > 0 ? c.encryptFields.map((path) => ({ path, algorithm: "aes-gcm" })) : undefined,
        rate_limit: { rps: c.rateLimit.rps, burst: c.rateLimit.burst },
        // 0.1.x signs frontend users with the backend keys themselves: it has no signing keys.
        api_keys: { backend: c.keys.backend, frontend: c.keys.frontend, admin: c.keys.admin },
      },
      logging: { level: c.logLevel },
    });
    return `# Managed by progressdb-upgrades for the 0.1.x release family: rewritten on every deploy.\n${body}\n`;
  },
  operatorConfig: { dbPathKey: "storage.db_path", requiredKeys: [] },
};
