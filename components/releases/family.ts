// What differs between ProgressDB release families, in one interface. Each
// family is one module (v01.ts, v02.ts); nothing else branches on the version.
// Facts: ../shared/reference/progressdb/releases-as-built.md.

/** The service settings the program owns, rendered into each family's config file. */
export interface ServiceConfig {
  /** host:port the service listens on. */
  listenAddr: string;
  /** The data dir (`db_path`). */
  dbPath: string;
  keys: {
    backend: readonly string[];
    frontend: readonly string[];
    admin: readonly string[];
    signing: readonly string[];
  };
  rateLimit: { rps: number; burst: number };
  /** Largest request body, e.g. "100KB" (0.2.x; 0.1.x has no limit). */
  maxPayloadSize: string;
  /** Message fields encrypted at rest, e.g. ["body"]; [] for none. */
  encryptFields: readonly string[];
  /** Embedded-KMS master key (64 hex), or undefined. */
  kmsMasterKeyHex?: string;
  logLevel: "debug" | "info" | "warn" | "error";
}

/** How a family proves which version answers: its own /readyz, or the host (binary identity). */
export type VersionProof = "readyz" | "host";
/** The data API: 0.1.x `/v1/...`, 0.2.x `/frontend/v1/...`. */
export type ApiDialect = "v1" | "frontend-v1";
/** Where the data lives in the data dir: one Pebble DB at its root (0.1.x) or under store/ (0.2.x). */
export type DataLayout = "root" | "store";

export interface ReleaseFamily {
  /** "0.1" or "0.2". */
  readonly name: string;
  readonly dataLayout: DataLayout;
  readonly versionProof: VersionProof;
  readonly dialect: ApiDialect;
  /** The offline migration tool this family ships (prgcli), if any. */
  readonly migrationTool?: { archiveName(version: string, arch: string): string };
  /** The image tag the real images use for this version. */
  imageTag(version: string): string;
  /** The config file this family reads (it holds secrets: written 0600, sent on stdin). */
  renderConfig(c: ServiceConfig): string;
  /**
   * How the preflight checks a config file the operator manages (deployment.binary.configFile):
   * the key of the data path, and the keys without which this family will not serve.
   */
  readonly operatorConfig: { dbPathKey: string; requiredKeys: readonly string[] };
}

export function splitHostPort(listenAddr: string): { host: string; port: number } {
  const i = listenAddr.lastIndexOf(":");
  return { host: listenAddr.slice(0, i).replace(/^\[|\]$/g, "") || "0.0.0.0", port: Number(listenAddr.slice(i + 1)) };
}
