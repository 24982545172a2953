/**
 * Host scripts for binary deployments over SSH: pure renderers, no Pulumi.
 *
 * Each renderer returns the full text of a POSIX `sh` script (one file each in
 * `components/scripts/`, with `lib.sh` inlined) preceded by a header of
 * single-quoted `PDB_*=` parameter assignments. The text is meant to be the
 * `create` command of a `@pulumi/command` `remote.Command`: sshd runs it as
 * `<login shell> -c '<text>'`, so the login shell must be POSIX (sh, bash,
 * dash, ksh).
 *
 * Secrets never appear in the text: pass {@link renderSecretsStdin} as the
 * command's `stdin`. Scripts read `KEY=VALUE` lines without eval, then detach
 * stdin. Progress goes to stderr; stdout is exactly one JSON line (safe for
 * state). Exit codes:
 *
 * - 0 success
 * - 1 a check or step failed and nothing was changed on the host (preflight;
 *   backup before the stop; install before the `current` switch)
 * - 2 bad parameters
 * - 3 backup failed after stopping the service; it was restarted on its old version
 * - 4 backup failed after stopping the service and the restart failed (DOWN)
 * - 5 install: new version never became ready; auto-reverted, previous version ready
 * - 6 install: new version never became ready and no ready previous version
 *   (nothing to revert to, or it cannot open the data — restore the backup)
 */
import * as fs from "fs";
import * as path from "path";

export type ServiceManager = "systemd" | "supervisor" | "process" | "docker";

export interface HostParams {
  /** Install root, e.g. /opt/progressdb (releases/, current, staging/, bin/, run/, logs/). */
  installDir: string;
  /** `--db` data dir. */
  dbPath: string;
  /** Separate v0.1.x embedded-KMS data dir, backed up with dbPath. */
  kmsDataDir?: string;
  serviceManager: ServiceManager;
  /** e.g. progressdb: systemd unit / supervisor program / pidfile name / docker container name. */
  serviceName: string;
  /** The user (and group of the same name) the service runs as; created if absent, owns dbPath and kmsDataDir. Not used in docker mode (the image's uid). Defaults to "progressdb". */
  serviceUser?: string;
  /** `--addr`, e.g. 127.0.0.1:18080. */
  listenAddr: string;
  /** `--config` path on the host. */
  configFile?: string;
  /** Defaults to /etc/supervisor/conf.d. */
  supervisorConfDir?: string;
  /** Passed as `supervisorctl -c` when set. */
  supervisorctlConfig?: string;
  /** Directory for the systemd unit. Defaults to /etc/systemd/system. */
  systemdUnitDir?: string;
  /** The aws CLI on the host (name on PATH or absolute path). Defaults to "aws". */
  awsCli?: string;
  /**
   * docker mode: DOCKER_HOST for the docker CLI on the host (e.g. unix:///run/podman/podman.sock).
   * Defaults to the CLI's own default (its context or /var/run/docker.sock).
   */
  dockerHost?: string;
  /** Seconds to wait for a clean exit after SIGTERM (process mode; systemd/supervisor stop timeouts). Defaults to 30. */
  stopTimeoutSeconds?: number;
}

export interface S3Params {
  bucket: string;
  /** Key prefix, e.g. "progressdb-backups" (leading/trailing slashes ignored; may be ""). */
  prefix: string;
  /** S3-compatible endpoint URL (MinIO, R2, ...); omitted for AWS. */
  endpoint?: string;
  region: string;
}

export interface HostSecrets {
  awsAccessKeyId?: string;
  awsSecretAccessKey?: string;
  awsSessionToken?: string;
  /** The service's rendered config file (install), sent base64-encoded. */
  serviceConfig?: string;
}

export interface PreflightParams {
  host: HostParams;
  version: string;
  /** The release archive; "" in container mode (the image is pulled instead). */
  artifactUrl: string;
  checksumsUrl: string;
  archiveName: string;
  /** The data layout the target release reads (its family's). */
  targetLayout: "root" | "store";
  /** The target release's migration tool, staged when the data must cross layouts. */
  migrationTool?: { url: string; archiveName: string };
  /** How to check an operator-managed config file (host.configFile) for the target family. */
  operatorConfig?: { dbPathKey: string; requiredKeys: readonly string[] };
  /** Pinned sha256 of the archive; when set, checksums.txt is not downloaded. */
  sha256?: string;
  minFreeMb: number;
  /** When set, the bucket must be reachable with the host's credentials. */
  s3?: S3Params;
  /** The stack does not manage the bucket: warn when it is not versioned or has no default encryption. */
  checkBucketSettings?: boolean;
  /** The stack created the bucket: tag all but the newest of this stack's backups superseded (its lifecycle rule expires only those). */
  supersedeOlderBackupsOf?: string;
  /** How the backup will be taken (see BackupParams.mode): the preflight says when a snapshot falls back to streaming. */
  backupMode?: BackupMode;
}

/**
 * How the pre-upgrade backup is taken.
 * - `snapshot`: a warm rsync copy beside the data dir while the service runs; the step that stops
 *   the service completes it (the cold delta); the offsite step uploads it after the start.
 * - `stream`: the service is stopped and the data streamed to S3 and verified before the install.
 */
export type BackupMode = "snapshot" | "stream";

export interface BackupParams {
  host: HostParams;
  version: string;
  /** One per upgrade (version + restore request): a re-run with the same key repeats the recorded result and stops nothing. */
  runKey: string;
  stack: string;
  s3: S3Params;
  /** gzip level 1-9, for a host without zstd. Defaults to 6. */
  gzipLevel?: number;
  /** Defaults to "stream" (the service is stopped for the upload). */
  mode?: BackupMode;
  /** Free MB a snapshot must leave beside the data dir (else the backup streams). Defaults to 0. */
  minFreeMb?: number;
  /** Used to confirm a restart after a failed backup. Defaults to http://<listenAddr> (0.0.0.0 → 127.0.0.1). */
  healthUrl?: string;
}

export interface InstallParams {
  host: HostParams;
  version: string;
  archiveName: string;
  /** Releases to keep, including the new one (the previous one is always kept). Defaults to 3. */
  keepReleases?: number;
  /** Base URL; `/readyz` is appended. */
  healthUrl: string;
  /** 0 disables the wait and the auto-revert. */
  autoRevertSeconds: number;
  /** The pre-upgrade backup, quoted in failure messages. */
  backupUri?: string;
  /** The data layout this release reads: a rollback to a "root" release runs on the data a migration kept. */
  targetLayout: "root" | "store";
  /** A fleet: where the rollout stands when this install fails (printed with the failure). */
  fleetNote?: string;
}

export interface MigrateParams {
  host: HostParams;
  version: string;
  /** The verified prgcli archive the preflight staged. */
  toolArchive: string;
  /** Threads the old version served before the upgrade (the data snapshot), when known. */
  expectThreads?: number;
  /** Message versions the old version held before the upgrade (its /admin/stats), when known. */
  expectMessages?: number;
  /** One per upgrade, as for the backup. */
  runKey: string;
  /** Base URL: a failed migration proves the old version answers again. */
  healthUrl?: string;
}

export interface FinalizeParams {
  host: HostParams;
  version: string;
  /** The version the install replaced ("" on a first install). */
  previousVersion: string;
  /** The HealthCheck's continuity verdict: "passed", "failed" or "skipped: <why>". */
  continuity: string;
  /** What the gate found, when it failed. */
  finding: string;
  healthUrl: string;
}

/** Output of the migration (stdout JSON). */
export type MigrateResult =
  | { migrated: true; kept: string; from: string; to: string; threads: number; messages: number; at: string }
  | { migrated: false; layout: string; from: string; to: string };

export interface RestoreParams {
  host: HostParams;
  /** The backup: `s3://<bucket>/<key>.tar.zst` (or `.tar.gz`). */
  uri: string;
  /** The sha256 the download must have: the one this stack recorded when it took the backup (never the object's metadata). */
  sha256: string;
  /** The version to run on the restored data. */
  version: string;
  /** The endpoint and region of the backups. */
  s3: S3Params;
  /** Base URL; `/readyz` is appended. Defaults to http://<listenAddr>. */
  healthUrl?: string;
}

/** Output of the preflight (stdout JSON). */
export interface PreflightResult {
  archive: string;
  sha256: string;
  reused: boolean;
  /** What the data dir held: "empty", "root" (0.1.x) or "store" (0.2.x). */
  layout: string;
  /** "start" (the target reads the data as it is), "migrate" (offline migration first) or "swap-back" (rollback onto kept data). */
  plan: "start" | "migrate" | "swap-back";
  /** The staged migration tool archive ("" unless plan is migrate). */
  tool: string;
  /** What the operator should fix but that does not stop the upgrade (e.g. an unversioned bucket). */
  warnings: string[];
  /** How the backup will be taken: "snapshot", "stream" (asked for, or the fallback), or "none". */
  backup: string;
}
/** Output of the backup (stdout JSON), and of the offsite step (never `snapshot`). */
export type BackupResult =
  | { uri: string; bucket: string; key: string; size: number; sha256: string; fromVersion: string; toVersion: string; at: string }
  | { snapshot: string; key: string; fromVersion: string; toVersion: string; at: string }
  | { skipped: true; reason: string; fromVersion: string };

export interface OffsiteParams {
  host: HostParams;
  version: string;
  stack: string;
  s3: S3Params;
  /** The upgrade's run key: the backup recorded under it is the one uploaded. */
  runKey: string;
  /** How long to wait for the step that stops the service to complete the snapshot and end. Defaults to 7200. */
  waitSeconds?: number;
}
/** Output of the restore (stdout JSON). */
export interface RestoreResult {
  restored: string;
  sha256: string;
  size: number;
  movedAside: string[];
  started: boolean;
}
/** Output of the install (stdout JSON). */
export interface InstallResult {
  version: string;
  previousVersion: string;
  /** How the install proved the version answers: `/readyz reports "v0.2.1"`, or the listening binary's identity. */
  proof: string;
  /** This run changed the running version (not a restart at the same version). */
  switched: boolean;
}

// ---------------------------------------------------------------------------

/** Quotes a value as one POSIX shell word: single quotes, with ' as '\''. */
export function shQuote(value: string): string {
  if (value.includes("\0")) {
    throw new Error("shell values cannot contain NUL characters");
  }
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

const VERSION_RE = /^[0-9A-Za-z][0-9A-Za-z._+-]*$/;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.@-]*$/;
const USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;

function check(cond: boolean, message: string): void {
  if (!cond) {
    throw new Error(message);
  }
}

function checkAbsolute(field: string, value: string | undefined): void {
  if (value === undefined) return;
  check(value.startsWith("/") && value !== "/", `${field} must be an absolute path other than "/", got ${JSON.stringify(value)}`);
  check(!value.includes("\n") && !value.includes("\0"), `${field} must not contain newlines`);
}

function checkInt(field: string, value: number, min: number, max = Number.MAX_SAFE_INTEGER): void {
  check(Number.isInteger(value) && value >= min && value <= max, `${field} must be an integer in [${min}, ${max}], got ${value}`);
}

function validateHost(h: HostParams): void {
  checkAbsolute("installDir", h.installDir);
  checkAbsolute("dbPath", h.dbPath);
  checkAbsolute("kmsDataDir", h.kmsDataDir);
  checkAbsolute("configFile", h.configFile);
  checkAbsolute("supervisorConfDir", h.supervisorConfDir);
  checkAbsolute("supervisorctlConfig", h.supervisorctlConfig);
  checkAbsolute("systemdUnitDir", h.systemdUnitDir);
  check(["systemd", "supervisor", "process", "docker"].includes(h.serviceManager), `serviceManager must be systemd, supervisor, process or docker, got ${JSON.stringify(h.serviceManager)}`);
  if (h.dockerHost !== undefined) check(/^(unix|tcp|ssh):\/\/\S+$/.test(h.dockerHost), `dockerHost must be unix://, tcp:// or ssh://, got ${JSON.stringify(h.dockerHost)}`);
  check(NAME_RE.test(h.serviceName), `serviceName must match ${NAME_RE}, got ${JSON.stringify(h.serviceName)}`);
  if (h.serviceUser !== undefined) check(USER_RE.test(h.serviceUser), `serviceUser must match ${USER_RE}, got ${JSON.stringify(h.serviceUser)}`);
  check(/^\S+:\d{1,5}$/.test(h.listenAddr), `listenAddr must be host:port, got ${JSON.stringify(h.listenAddr)}`);
  check(h.installDir !== h.dbPath, "installDir and dbPath must differ");
  if (h.awsCli !== undefined) check(h.awsCli.length > 0 && !/\s/.test(h.awsCli), "awsCli must be a command name or path without whitespace");
  if (h.stopTimeoutSeconds !== undefined) checkInt("stopTimeoutSeconds", h.stopTimeoutSeconds, 1, 3600);
}

function validateVersion(field: string, v: string): void {
  check(VERSION_RE.test(v), `${field} must match ${VERSION_RE} (e.g. 0.2.0), got ${JSON.stringify(v)}`);
}

function validateS3(s: S3Params): void {
  check(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(s.bucket), `s3.bucket is not a valid bucket name: ${JSON.stringify(s.bucket)}`);
  check(!/[\n\0]/.test(s.prefix), "s3.prefix must not contain newlines");
  check(/^[a-z0-9-]+$/.test(s.region), `s3.region is not a valid region: ${JSON.stringify(s.region)}`);
  if (s.endpoint !== undefined) check(/^https?:\/\/\S+$/.test(s.endpoint), `s3.endpoint must be an http(s) URL, got ${JSON.stringify(s.endpoint)}`);
}

/** http://<listenAddr>, with a wildcard host replaced by loopback. */
export function defaultHealthUrl(listenAddr: string): string {
  const i = listenAddr.lastIndexOf(":");
  let hostPart = listenAddr.slice(0, i);
  const port = listenAddr.slice(i + 1);
  if (hostPart === "" || hostPart === "0.0.0.0") hostPart = "127.0.0.1";
  if (hostPart === "[::]" || hostPart === "::") hostPart = "[::1]";
  return `http://${hostPart}:${port}`;
}

const scriptCache = new Map<string, string>();

function scriptsDir(): string {
  // __dirname exists under CommonJS (ts-node, tsc output, vitest); when the
  // file is loaded as ESM (e.g. node's type stripping) fall back to the cwd,
  // which is the project root for `pulumi` and `npm` runs.
  const here = typeof __dirname === "string" ? __dirname : undefined;
  const candidates = [
    ...(here
      ? [
          path.join(here, "scripts"),
          // Compiled to bin/components/: the .sh files stay in the source tree.
          path.resolve(here, "..", "..", "components", "scripts"),
        ]
      : []),
    path.resolve(process.cwd(), "components", "scripts"),
  ];
  for (const c of candidates) {
    if (fs.existsSync(path.join(c, "lib.sh"))) return c;
  }
  throw new Error(`host scripts not found (looked in ${candidates.join(", ")})`);
}

/** Reads a script and inlines lib.sh in place of the `# @inline lib.sh` line. */
type ScriptName = "preflight.sh" | "backup.sh" | "offsite.sh" | "migrate.sh" | "install.sh" | "finalize.sh" | "restore.sh" | "configure.sh";

export function loadScript(name: ScriptName): string {
  const cached = scriptCache.get(name);
  if (cached !== undefined) return cached;
  const dir = scriptsDir();
  const lib = fs
    .readFileSync(path.join(dir, "lib.sh"), "utf8")
    .split("\n")
    .filter((l) => !l.startsWith("# shellcheck shell="))
    .join("\n");
  const lines = fs.readFileSync(path.join(dir, name), "utf8").split("\n");
  check(lines[0].startsWith("#!"), `${name} must start with a shebang`);
  const out: string[] = [];
  let inlined = false;
  for (const line of lines.slice(1)) {
    if (/#\s*@inline lib\.sh\s*$/.test(line)) {
      out.push(`# ---- lib.sh (inlined) ----`, lib.trimEnd(), `# ---- end of lib.sh ----`);
      inlined = true;
    } else if (line.startsWith("# shellcheck source=")) {
      continue;
    } else {
      out.push(line);
    }
  }
  check(inlined, `${name} has no "# @inline lib.sh" line`);
  const text = out.join("\n");
  scriptCache.set(name, text);
  return text;
}

type ParamValue = string | number | undefined;

function render(name: ScriptName, params: Record<string, ParamValue>): string {
  const header = [`# progressdb-upgrades ${name} (rendered by components/hostScripts.ts; secrets arrive on stdin)`];
  header.push(`PDB_SCRIPT=${shQuote(name.replace(/\.sh$/, ""))}`);
  for (const [k, v] of Object.entries(params)) {
    check(/^PDB_[A-Z0-9_]+$/.test(k), `bad parameter name ${k}`);
    header.push(`${k}=${shQuote(v === undefined ? "" : String(v))}`);
  }
  return `${header.join("\n")}\n${loadScript(name)}`;
}

/** Host parameters each script uses (others are left out of its header). */
// Every script that may start the service (svc_start) needs what own_service_files uses:
// PDB_SERVICE_USER, PDB_KMS_DATA_DIR, PDB_CONFIG_FILE.
const HOST_VARS_USED: Record<ScriptName, readonly string[]> = {
  "preflight.sh": ["PDB_INSTALL_DIR", "PDB_DB_PATH", "PDB_KMS_DATA_DIR", "PDB_SERVICE_MANAGER", "PDB_SERVICE_NAME", "PDB_SERVICE_USER", "PDB_CONFIG_FILE", "PDB_SUPERVISOR_CONF_DIR", "PDB_SUPERVISORCTL_CONFIG", "PDB_SYSTEMD_UNIT_DIR", "PDB_AWS"],
  "backup.sh": ["PDB_INSTALL_DIR", "PDB_DB_PATH", "PDB_KMS_DATA_DIR", "PDB_SERVICE_MANAGER", "PDB_SERVICE_NAME", "PDB_SERVICE_USER", "PDB_LISTEN_ADDR", "PDB_CONFIG_FILE", "PDB_SUPERVISOR_CONF_DIR", "PDB_SUPERVISORCTL_CONFIG", "PDB_SYSTEMD_UNIT_DIR", "PDB_AWS", "PDB_STOP_TIMEOUT", "PDB_DOCKER_HOST"],
  "offsite.sh": ["PDB_INSTALL_DIR", "PDB_DB_PATH", "PDB_KMS_DATA_DIR", "PDB_AWS"],
  "restore.sh": ["PDB_INSTALL_DIR", "PDB_DB_PATH", "PDB_KMS_DATA_DIR", "PDB_SERVICE_MANAGER", "PDB_SERVICE_NAME", "PDB_SERVICE_USER", "PDB_LISTEN_ADDR", "PDB_CONFIG_FILE", "PDB_SUPERVISORCTL_CONFIG", "PDB_AWS", "PDB_STOP_TIMEOUT", "PDB_DOCKER_HOST"],
  "migrate.sh": ["PDB_INSTALL_DIR", "PDB_DB_PATH", "PDB_KMS_DATA_DIR", "PDB_SERVICE_MANAGER", "PDB_SERVICE_NAME", "PDB_SERVICE_USER", "PDB_LISTEN_ADDR", "PDB_CONFIG_FILE", "PDB_SUPERVISORCTL_CONFIG", "PDB_STOP_TIMEOUT", "PDB_DOCKER_HOST"],
  "configure.sh": ["PDB_INSTALL_DIR", "PDB_DB_PATH", "PDB_SERVICE_NAME", "PDB_SERVICE_MANAGER"],
  "finalize.sh": ["PDB_INSTALL_DIR", "PDB_DB_PATH", "PDB_KMS_DATA_DIR", "PDB_SERVICE_MANAGER", "PDB_SERVICE_NAME", "PDB_SERVICE_USER", "PDB_LISTEN_ADDR", "PDB_CONFIG_FILE", "PDB_SUPERVISORCTL_CONFIG", "PDB_STOP_TIMEOUT", "PDB_DOCKER_HOST"],
  "install.sh": ["PDB_INSTALL_DIR", "PDB_DB_PATH", "PDB_KMS_DATA_DIR", "PDB_SERVICE_MANAGER", "PDB_SERVICE_NAME", "PDB_SERVICE_USER", "PDB_LISTEN_ADDR", "PDB_CONFIG_FILE", "PDB_SUPERVISOR_CONF_DIR", "PDB_SUPERVISORCTL_CONFIG", "PDB_SYSTEMD_UNIT_DIR", "PDB_STOP_TIMEOUT"],
};

function serviceUserOf(h: HostParams): string {
  return h.serviceUser ?? "progressdb";
}

function hostVars(script: ScriptName, h: HostParams): Record<string, ParamValue> {
  const all: Record<string, ParamValue> = {
    PDB_INSTALL_DIR: h.installDir,
    PDB_DB_PATH: h.dbPath,
    PDB_KMS_DATA_DIR: h.kmsDataDir,
    PDB_SERVICE_MANAGER: h.serviceManager,
    PDB_SERVICE_NAME: h.serviceName,
    PDB_SERVICE_USER: serviceUserOf(h),
    PDB_LISTEN_ADDR: h.listenAddr,
    PDB_CONFIG_FILE: h.configFile,
    PDB_SUPERVISOR_CONF_DIR: h.supervisorConfDir ?? "/etc/supervisor/conf.d",
    PDB_SUPERVISORCTL_CONFIG: h.supervisorctlConfig,
    PDB_SYSTEMD_UNIT_DIR: h.systemdUnitDir ?? "/etc/systemd/system",
    PDB_AWS: h.awsCli ?? "aws",
    PDB_STOP_TIMEOUT: h.stopTimeoutSeconds ?? 30,
    PDB_DOCKER_HOST: h.dockerHost,
  };
  return Object.fromEntries(HOST_VARS_USED[script].map((k) => [k, all[k]]));
}

function s3Vars(s: S3Params | undefined, withPrefix: boolean): Record<string, ParamValue> {
  return {
    PDB_S3_BUCKET: s?.bucket,
    ...(withPrefix ? { PDB_S3_PREFIX: s?.prefix } : {}),
    PDB_S3_ENDPOINT: s?.endpoint,
    PDB_S3_REGION: s?.region ?? "us-east-1",
  };
}

/** stdin for every script: `KEY=VALUE` lines for the secrets that are set. */
export function renderSecretsStdin(s: HostSecrets): string {
  const lines: string[] = [];
  const add = (key: string, value: string | undefined) => {
    if (value === undefined || value === "") return;
    if (/[\r\n\0]/.test(value)) throw new Error(`secret ${key} must be a single line`);
    lines.push(`${key}=${value}`);
  };
  add("AWS_ACCESS_KEY_ID", s.awsAccessKeyId);
  add("AWS_SECRET_ACCESS_KEY", s.awsSecretAccessKey);
  add("AWS_SESSION_TOKEN", s.awsSessionToken);
  if (s.serviceConfig !== undefined) add("PDB_SERVICE_CONFIG_B64", Buffer.from(s.serviceConfig, "utf8").toString("base64"));
  return lines.length ? `${lines.join("\n")}\n` : "";
}

/**
 * Preflight: tools, disk, S3, download + verify into
 * `<installDir>/staging/<version>/<archiveName>`. Stdout: {@link PreflightResult}.
 */
export function renderPreflightScript(p: PreflightParams): string {
  validateHost(p.host);
  validateVersion("version", p.version);
  const fileName = /^[A-Za-z0-9._+-]+$/;
  const url = /^(https?|file):\/\/\S+$/;
  if (p.artifactUrl !== "") {
    check(fileName.test(p.archiveName), `archiveName must be a file name, got ${JSON.stringify(p.archiveName)}`);
    check(url.test(p.artifactUrl), `artifactUrl must be a URL, got ${JSON.stringify(p.artifactUrl)}`);
  }
  if (p.migrationTool) {
    check(fileName.test(p.migrationTool.archiveName), `migration tool archive must be a file name, got ${JSON.stringify(p.migrationTool.archiveName)}`);
    check(url.test(p.migrationTool.url), `migration tool URL must be a URL, got ${JSON.stringify(p.migrationTool.url)}`);
  }
  if (p.sha256 === undefined || p.migrationTool) {
    check(/^(https?|file):\/\/\S+$/.test(p.checksumsUrl), `checksumsUrl must be a URL when sha256 is not pinned, got ${JSON.stringify(p.checksumsUrl)}`);
  } else {
    check(/^[0-9a-fA-F]{64}$/.test(p.sha256), "sha256 must be 64 hex characters");
  }
  checkInt("minFreeMb", p.minFreeMb, 0);
  if (p.s3) validateS3(p.s3);
  return render("preflight.sh", {
    ...hostVars("preflight.sh", p.host),
    PDB_VERSION: p.version,
    PDB_ARTIFACT_URL: p.artifactUrl,
    PDB_CHECKSUMS_URL: p.checksumsUrl,
    PDB_ARCHIVE_NAME: p.archiveName,
    PDB_SHA256: p.sha256,
    PDB_MIN_FREE_MB: p.minFreeMb,
    ...s3Vars(p.s3, false),
    PDB_S3_CHECK_SETTINGS: p.checkBucketSettings ? 1 : undefined,
    PDB_SUPERSEDE_PREFIX: p.s3 && p.supersedeOlderBackupsOf ? `${p.s3.prefix ? `${p.s3.prefix}/` : ""}${p.supersedeOlderBackupsOf}/` : undefined,
    PDB_LISTEN_ADDR: p.host.listenAddr,
    PDB_TARGET_LAYOUT: p.targetLayout,
    PDB_TOOL_URL: p.migrationTool?.url,
    PDB_TOOL_ARCHIVE: p.migrationTool?.archiveName,
    PDB_CFG_DB_KEY: p.operatorConfig?.dbPathKey,
    PDB_CFG_REQUIRED: p.operatorConfig?.requiredKeys.join(" "),
    PDB_BACKUP_MODE: p.s3 ? p.backupMode : undefined,
  });
}

/** Where an instance's backups live below the prefix: `<stack>`, or `<stack>/<instance>` in a fleet. */
function validateBackupScope(scope: string): void {
  check(/^(?!\.\.?(\/|$))[A-Za-z0-9._-]+(\/[a-z0-9-]+)?$/.test(scope), `stack must match [A-Za-z0-9._-]+(/<instance>)? and not be . or .., got ${JSON.stringify(scope)}`);
}

/** What the backup and offsite steps share: the host, the version, the backup scope, S3 and the run key. */
function validateBackupStep(p: Pick<BackupParams, "host" | "version" | "stack" | "s3" | "runKey">): void {
  validateHost(p.host);
  validateVersion("version", p.version);
  validateBackupScope(p.stack);
  validateS3(p.s3);
  check(/^[A-Za-z0-9._-]+$/.test(p.runKey), `runKey must match [A-Za-z0-9._-]+, got ${JSON.stringify(p.runKey)}`);
}

/**
 * Backup, for `s3://<bucket>/<prefix>/<stack>/<YYYYmmddTHHMMSSZ>-<from>-to-<to>.tar.zst`
 * (`.tar.gz` on a host without zstd). `stream`: stop, stream to S3 with the sha256 measured in
 * the stream, verify the size, write the `.sha256` sidecar; leaves the service stopped on
 * success. `snapshot`: the warm copy beside the data dir, nothing stopped (the offsite step
 * uploads it). Stdout: {@link BackupResult}.
 */
export function renderBackupScript(p: BackupParams): string {
  validateBackupStep(p);
  const gzipLevel = p.gzipLevel ?? 6;
  checkInt("gzipLevel", gzipLevel, 1, 9);
  const minFreeMb = p.minFreeMb ?? 0;
  checkInt("minFreeMb", minFreeMb, 0);
  return render("backup.sh", {
    ...hostVars("backup.sh", p.host),
    PDB_VERSION: p.version,
    PDB_STACK: p.stack,
    ...s3Vars(p.s3, true),
    PDB_GZIP_LEVEL: gzipLevel,
    PDB_RUN_KEY: p.runKey,
    PDB_BACKUP_MODE: p.mode ?? "stream",
    PDB_MIN_FREE_MB: minFreeMb,
    PDB_HEALTH_URL: (p.healthUrl ?? defaultHealthUrl(p.host.listenAddr)).replace(/\/+$/, ""),
  });
}

/**
 * Offsite: the backup of this run key in S3, verified: repeats a streamed backup's result, or
 * uploads the snapshot once the step that stopped the service has completed it and ended.
 * Stdout: {@link BackupResult}.
 */
export function renderOffsiteScript(p: OffsiteParams): string {
  validateBackupStep(p);
  const waitSeconds = p.waitSeconds ?? 7200;
  checkInt("waitSeconds", waitSeconds, 1);
  return render("offsite.sh", {
    ...hostVars("offsite.sh", p.host),
    PDB_VERSION: p.version,
    PDB_STACK: p.stack,
    ...s3Vars(p.s3, false),
    PDB_RUN_KEY: p.runKey,
    PDB_WAIT_SECONDS: waitSeconds,
  });
}

/**
 * Restore: download a backup, check its sha256 against the expected one,
 * move the current data aside, put the backup in place, and start the service
 * if `current` already is `version`. Stdout: {@link RestoreResult}.
 */
export function renderRestoreScript(p: RestoreParams): string {
  validateHost(p.host);
  validateVersion("version", p.version);
  check(/^s3:\/\/[^/\s]+\/\S+$/.test(p.uri), `restore uri must be s3://<bucket>/<key>, got ${JSON.stringify(p.uri)}`);
  check(/^[0-9a-f]{64}$/.test(p.sha256), `restore sha256 must be 64 lowercase hex characters, got ${JSON.stringify(p.sha256)}`);
  validateS3(p.s3);
  return render("restore.sh", {
    ...hostVars("restore.sh", p.host),
    PDB_RESTORE: p.uri,
    PDB_SHA256: p.sha256,
    PDB_VERSION: p.version,
    PDB_S3_ENDPOINT: p.s3.endpoint,
    PDB_S3_REGION: p.s3.region,
    PDB_HEALTH_URL: (p.healthUrl ?? defaultHealthUrl(p.host.listenAddr)).replace(/\/+$/, ""),
  });
}

/**
 * Install: extract into releases/<version>, write the env file from stdin,
 * switch `current`, start via the service manager, wait for /readyz to report
 * the version, auto-revert otherwise. Stdout: {@link InstallResult}.
 */
export function renderInstallScript(p: InstallParams): string {
  validateHost(p.host);
  validateVersion("version", p.version);
  check(/^[A-Za-z0-9._+-]+$/.test(p.archiveName), `archiveName must be a file name, got ${JSON.stringify(p.archiveName)}`);
  const keep = p.keepReleases ?? 3;
  checkInt("keepReleases", keep, 1, 1000);
  checkInt("autoRevertSeconds", p.autoRevertSeconds, 0, 3600);
  check(/^https?:\/\/\S+$/.test(p.healthUrl), `healthUrl must be an http(s) URL, got ${JSON.stringify(p.healthUrl)}`);
  const unit =
    p.host.serviceManager === "systemd"
      ? renderSystemdUnit(p.host)
      : p.host.serviceManager === "supervisor"
        ? renderSupervisorProgram(p.host)
        : "";
  return render("install.sh", {
    ...hostVars("install.sh", p.host),
    PDB_SERVICE_UNIT: unit,
    PDB_VERSION: p.version,
    PDB_ARCHIVE_NAME: p.archiveName,
    PDB_KEEP_RELEASES: keep,
    PDB_HEALTH_URL: p.healthUrl.replace(/\/+$/, ""),
    PDB_AUTO_REVERT_SECONDS: p.autoRevertSeconds,
    PDB_BACKUP_URI: p.backupUri,
    PDB_TARGET_LAYOUT: p.targetLayout,
    // Only in a fleet: a stack of one renders the script it always did.
    ...(p.fleetNote ? { PDB_FLEET_NOTE: p.fleetNote } : {}),
  });
}

/** Migrate: the offline 0.1.x → 0.2.x crossing with prgcli, old data kept. Stdout: {@link MigrateResult}. */
export function renderMigrateScript(p: MigrateParams): string {
  validateHost(p.host);
  validateVersion("version", p.version);
  checkAbsolute("toolArchive", p.toolArchive);
  if (p.expectThreads !== undefined) checkInt("expectThreads", p.expectThreads, 0);
  if (p.expectMessages !== undefined) checkInt("expectMessages", p.expectMessages, 0);
  return render("migrate.sh", {
    ...hostVars("migrate.sh", p.host),
    PDB_VERSION: p.version,
    PDB_TOOL_ARCHIVE: p.toolArchive,
    PDB_EXPECT_THREADS: p.expectThreads,
    PDB_EXPECT_MESSAGES: p.expectMessages,
    PDB_RUN_KEY: p.runKey,
    PDB_HEALTH_URL: (p.healthUrl ?? defaultHealthUrl(p.host.listenAddr)).replace(/\/+$/, ""),
  });
}

/**
 * The `update` command of a run-once step (the restore): a change of its other
 * inputs (connection, credentials) must not run it again; this prints the
 * result the step recorded on the host, so its outputs stay as they were.
 */
export function renderReplayScript(installDir: string, step: "restore"): string {
  checkAbsolute("installDir", installDir);
  const file = `${installDir}/run/${step}-last.json`;
  return [
    `# progressdb-upgrades: replay of the ${step} step's recorded result (nothing runs again)`,
    `f=${shQuote(file)}`,
    `if [ -s "$f" ]; then cat -- "$f"; else echo "no recorded ${step} result at $f: the ${step} ran before this program recorded results; remove progressdb:restore.backup and set it again to run it" >&2; exit 1; fi`,
    "",
  ].join("\n");
}

/** Configure (container mode): the rendered config into the data mount, owned by the image's uid. */
export function renderConfigureScript(host: HostParams, uid = 1000, version?: string): string {
  validateHost(host);
  checkInt("uid", uid, 0, 2 ** 31);
  if (version !== undefined) validateVersion("version", version);
  return render("configure.sh", { ...hostVars("configure.sh", host), PDB_UID: uid, PDB_VERSION: version });
}

/** Finalize: commit the upgrade, or revert it when the continuity gate failed. */
export function renderFinalizeScript(p: FinalizeParams): string {
  validateHost(p.host);
  validateVersion("version", p.version);
  if (p.previousVersion !== "") validateVersion("previousVersion", p.previousVersion);
  check(!/[\0]/.test(p.finding), "finding must not contain NUL");
  return render("finalize.sh", {
    ...hostVars("finalize.sh", p.host),
    PDB_VERSION: p.version,
    PDB_PREVIOUS_VERSION: p.previousVersion,
    PDB_CONTINUITY: p.continuity,
    PDB_FINDING: p.finding.replace(/[\r\n]+/g, " "),
    PDB_HEALTH_URL: p.healthUrl.replace(/\/+$/, ""),
  });
}

/** One systemd ExecStart/Environment word: quoted when needed, % and $ escaped. */
function systemdWord(value: string): string {
  const escaped = value.replace(/%/g, "%%").replace(/\$/g, "$$$$");
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(value)) return escaped;
  return `"${escaped.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/** Path value for single-path settings (EnvironmentFile=, WorkingDirectory=). */
function systemdPath(value: string): string {
  return value.replace(/%/g, "%%");
}

/** A path in a list setting (ReadWritePaths=): % escaped, C-quoted when needed ($ is not expanded there). */
function systemdListPath(value: string): string {
  const escaped = value.replace(/%/g, "%%");
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(value)) return escaped;
  return `"${escaped.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/** The listen port, from host:port. */
function portOf(listenAddr: string): number {
  return Number(listenAddr.slice(listenAddr.lastIndexOf(":") + 1));
}

/** The systemd unit the install writes to `<systemdUnitDir>/<serviceName>.service`. */
export function renderSystemdUnit(host: HostParams): string {
  validateHost(host);
  const args = [`${host.installDir}/current/progressdb`, "--config", host.configFile ?? `${host.installDir}/current/config.yaml`];
  const stop = host.stopTimeoutSeconds ?? 30;
  const user = serviceUserOf(host);
  // ProtectHome=yes hides /home, /root and /run/user even from ReadWritePaths=: read-only when a path lives there.
  const inHome = [host.installDir, host.dbPath, host.kmsDataDir, host.configFile].some((p) => p !== undefined && /^\/(home|root|run\/user)(\/|$)/.test(p));
  const writable = [host.dbPath, host.kmsDataDir].filter((p): p is string => p !== undefined);
  return [
    "# Managed by progressdb-upgrades (install.sh) — local edits are overwritten on the next upgrade.",
    "[Unit]",
    `Description=ProgressDB (${host.serviceName})`,
    "Documentation=https://github.com/progressdb/ProgressDB",
    "After=network-online.target",
    "Wants=network-online.target",
    "",
    "[Service]",
    "Type=simple",
    // The release dir: no stray ./.env or ./config.yaml is read. No EnvironmentFile: secrets live
    // in the 0600 config file, never in the environment (0.2.x crash dumps print it).
    `WorkingDirectory=${systemdPath(`${host.installDir}/current`)}`,
    `ExecStart=${args.map(systemdWord).join(" ")}`,
    "Restart=on-failure",
    "RestartSec=2s",
    "KillSignal=SIGTERM",
    `TimeoutStopSec=${stop}s`,
    "LimitNOFILE=65536",
    `User=${user}`,
    `Group=${user}`,
    // The service writes only its data dirs; logs go to the journal.
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    ...writable.map((p) => `ReadWritePaths=${systemdListPath(p)}`),
    `ProtectHome=${inHome ? "read-only" : "yes"}`,
    "PrivateTmp=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectControlGroups=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    ...(portOf(host.listenAddr) < 1024 ? ["CapabilityBoundingSet=CAP_NET_BIND_SERVICE", "AmbientCapabilities=CAP_NET_BIND_SERVICE"] : ["CapabilityBoundingSet="]),
    "",
    "[Install]",
    "WantedBy=multi-user.target",
    "",
  ].join("\n");
}

/** A supervisor config value: % escaped; quoted (shlex) when it has spaces or quotes. */
function supervisorWord(value: string): string {
  const escaped = value.replace(/%/g, "%%");
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(value)) return escaped;
  return `"${escaped.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

/** The supervisor program the install writes to `<supervisorConfDir>/<serviceName>.conf`. */
export function renderSupervisorProgram(host: HostParams): string {
  validateHost(host);
  const stop = host.stopTimeoutSeconds ?? 30;
  return [
    "; Managed by progressdb-upgrades (install.sh) — local edits are overwritten on the next upgrade.",
    "; The launcher execs <installDir>/current/progressdb --config … with a clean environment.",
    `[program:${host.serviceName}]`,
    `command=${supervisorWord(`${host.installDir}/bin/${host.serviceName}-launch`)}`,
    `directory=${host.installDir.replace(/%/g, "%%")}`,
    "autostart=true",
    "autorestart=unexpected",
    "exitcodes=0",
    "startsecs=1",
    "startretries=2",
    "stopsignal=TERM",
    `stopwaitsecs=${stop}`,
    "killasgroup=true",
    "redirect_stderr=true",
    `stdout_logfile=${host.installDir.replace(/%/g, "%%")}/logs/${host.serviceName}.log`,
    "stdout_logfile_maxbytes=50MB",
    "stdout_logfile_backups=5",
    "",
  ].join("\n");
}
