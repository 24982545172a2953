// ProgressDB 0.2.x: a config file is mandatory and, given with --config, the
// only source (flags and env ignored); struct defaults are never applied, so
// every key it needs is written out. /readyz reports "v<version>"; data under
// store/ index/ wal/ kms/ state/; API under /frontend/v1; prgcli ships beside
// it. releases-as-built.md §1–§3, §6.
import { ReleaseFamily, ServiceConfig, splitHostPort } from "./family";
import { renderYaml } from "./yaml";

export const v02: ReleaseFamily = {
  name: "0.2",
  dataLayout: "store",
  versionProof: "readyz",
  dialect: "frontend-v1",
  migrationTool: { archiveName: (version, arch) => `prgcli_${version}_linux_${arch}.tar.gz` },
  imageTag: (version) => `v${version}`,
  renderConfig(c: ServiceConfig): string {
    const { host, port } = splitHostPort(c.listenAddr);
    const body = renderYaml({
      server: {
        address: host,
        port,
        db_path: c.dbPath,
        max_payload_size: c.maxPayloadSize,
        rate_limit: { rps: c.rateLimit.rps, burst: c.rateLimit.burst },
        api_keys: { backend: c.keys.backend, frontend: c.keys.frontend, admin: c.keys.admin, signing: c.keys.signing },
      },
      logging: { level: c.logLevel },
      // Unset, these panic at start (§3); unset apply batching spins a CPU core on an idle
      // instance (seen on the real 0.2.1). The values are the struct's documented defaults.
      telemetry: { flush_interval: "2s" },
      ingest: { intake: { queue_capacity: 65536 }, apply: { batch_count: 10000, batch_timeout: "1s" } },
      encryption: {
        enabled: c.encryptFields.length > 0,
        fields: c.encryptFields,
        kms: c.kmsMasterKeyHex ? { mode: "embedded", master_key_hex: c.kmsMasterKeyHex } : undefined,
      },
    });
    return `# Managed by progressdb-upgrades for the 0.2.x release family: rewritten on every deploy.\n${body}\n`;
  },
  // Unset, these crash it (signing), 429 every request (rate limit) or panic (§3).
  operatorConfig: {
    dbPathKey: "server.db_path",
    requiredKeys: ["server.api_keys.signing", "server.rate_limit.rps", "telemetry.flush_interval", "ingest.intake.queue_capacity"],
  },
};
