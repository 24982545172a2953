// Stack config → one typed, validated settings object. Pure: no Pulumi calls
// here, so every rejection is unit-tested without mocks. index.ts feeds it the
// raw values and whether each secret key is present and stored encrypted.
import * as path from "node:path";
import { z } from "zod";
import { familyOf } from "./releases";

export const PROJECT = "progressdb";

/** The secret config keys (`progressdb:<key>`), always read with `config.getSecret`. */
export const SECRET_KEYS = [
  "sshPrivateKey",
  "kmsMasterKeyHex",
  "apiKey",
  "adminApiKey",
  "frontendApiKey",
  "signingKey",
  "s3AccessKeyId",
  "s3SecretAccessKey",
] as const;
export type SecretKey = (typeof SECRET_KEYS)[number];
export type SecretState = "absent" | "secret" | "plaintext";

/** The object/scalar config keys, read with `config.getObject`. */
export const PLAIN_KEYS = [
  "version",
  "deployment",
  "storage",
  "service",
  "kms",
  "backup",
  "health",
  "restore",
  "allowDowngrade",
  "instances",
  "rollout",
  "promotion",
] as const;
export type PlainKey = (typeof PLAIN_KEYS)[number];

export interface RawConfig {
  values: Partial<Record<PlainKey, unknown>>;
  secrets: Record<SecretKey, SecretState>;
  /** Secrets whose (trimmed) value does not have the shape SECRET_SHAPES asks for; never the values. */
  malformed?: SecretKey[];
}

const TOKEN = { shape: /^[\x21-\x7e]+$/, rule: "must be printable characters without spaces or line breaks" };
/**
 * What each secret's value must look like, checked on the value with surrounding whitespace trimmed
 * (`pulumi config set --secret k < file` keeps the file's trailing newline); the program uses it trimmed.
 * The SSH key is a multi-line PEM and is passed as it is.
 */
export const SECRET_SHAPES: Partial<Record<SecretKey, { shape: RegExp; rule: string; fix: string }>> = {
  kmsMasterKeyHex: { shape: /^[0-9a-fA-F]{64}$/, rule: "must be exactly 64 hex characters (a 32-byte key)", fix: `openssl rand -hex 32 | pulumi config set --secret ${PROJECT}:kmsMasterKeyHex` },
  apiKey: { ...TOKEN, fix: `pulumi config set --secret ${PROJECT}:apiKey < backend-key.txt` },
  adminApiKey: { ...TOKEN, fix: `pulumi config set --secret ${PROJECT}:adminApiKey < admin-key.txt` },
  frontendApiKey: { ...TOKEN, fix: `pulumi config set --secret ${PROJECT}:frontendApiKey < frontend-key.txt` },
  signingKey: { ...TOKEN, fix: `pulumi config set --secret ${PROJECT}:signingKey < signing-key.txt` },
  s3AccessKeyId: { ...TOKEN, fix: `pulumi config set --secret ${PROJECT}:s3AccessKeyId < access-key-id.txt` },
  s3SecretAccessKey: { ...TOKEN, fix: `pulumi config set --secret ${PROJECT}:s3SecretAccessKey < secret-access-key.txt` },
};

/** Whether a secret's value has its shape (the SSH key, which has none, always does). */
export function secretWellFormed(key: SecretKey, value: string): boolean {
  return SECRET_SHAPES[key]?.shape.test(value.trim()) ?? true;
}

// Prerelease identifiers per semver.org §9: dot-separated, non-empty, numeric ones without leading zeros.
const PRERELEASE_ID = "(0|[1-9]\\d*|\\d*[A-Za-z-][0-9A-Za-z-]*)";
const SEMVER = new RegExp(`^(0|[1-9]\\d*)\\.(0|[1-9]\\d*)\\.(0|[1-9]\\d*)(-${PRERELEASE_ID}(\\.${PRERELEASE_ID})*)?$`);

const versionSchema = z
  .string({ error: "must be a string such as \"0.2.1\"" })
  .transform((v) => v.trim().replace(/^v/, ""))
  .refine((v) => v !== "latest", {
    error: "\"latest\" is not allowed: pin an exact release so the upgrade is reviewable and repeatable",
  })
  .refine((v) => v === "latest" || SEMVER.test(v), {
    error: "must be an exact semver release such as \"0.2.1\" (a prerelease is dot-separated identifiers, e.g. \"0.2.0-alpha.1\")",
  });

const nonEmpty = z.string().trim().min(1, { error: "must not be empty" });

/** An absolute host path, normalised (`/x//y/../z/` → `/x/z`) so overlaps are compared on what the host sees. */
const hostPath = nonEmpty
  .refine((p) => p.startsWith("/"), { error: "must be an absolute path such as /opt/progressdb" })
  .transform((p) => path.posix.normalize(p).replace(/(.)\/+$/, "$1"));

/** A host URL: no `user:pass@`, which would land in the scripts' text, state, `ps` and upgrade.log. */
function withoutUserinfo(url: string): boolean {
  try {
    const u = new URL(url);
    return u.username === "" && u.password === "";
  } catch {
    return true; // the URL check itself reports it
  }
}
const NO_USERINFO = { error: "must not carry credentials (user:pass@): they would be written into the host scripts, state and logs" };
const positiveInt = z.number({ error: "must be a number" }).int({ error: "must be a whole number" }).positive({ error: "must be greater than 0" });
const inPortRange = (n: number) => Number.isInteger(n) && n >= 1 && n <= 65535;
const port = z.number({ error: "must be a number" }).int().min(1, { error: "must be 1–65535" }).max(65535, { error: "must be 1–65535" });

const hostSchema = z.strictObject({
  /** Address of the host that runs ProgressDB (SSH target, also the Docker host in container mode). */
  address: nonEmpty,
  port: port.default(22),
  user: nonEmpty.default("root"),
  /** The aws CLI the host's scripts run (a name on the remote PATH, or an absolute path). */
  awsCli: nonEmpty.default("aws"),
  /** The host's SSH public key, as `ssh-keyscan` prints it (`[host]:port ssh-ed25519 AAAA…`) or bare (`ssh-ed25519 AAAA…`). */
  hostKey: z
    .string()
    .trim()
    .regex(/^(\S+\s+)?(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com)\s+[A-Za-z0-9+/]+={0,2}(\s.*)?$/, {
      error: "must be the host's public key as ssh-keyscan prints it, e.g. \"[10.0.0.5]:22 ssh-ed25519 AAAA…\" — get it with: ssh-keyscan -p <port> -t ed25519 <address>",
    })
    .optional(),
  /** Connect without checking the host key (every run warns): anyone on the path receives the secrets sent on stdin. */
  insecureSkipHostKeyCheck: z.boolean({ error: "must be true or false" }).default(false),
});

const RELEASES = "https://github.com/progressdb/ProgressDB/releases/download/v{version}";

const binarySchema = z.strictObject({
  installDir: hostPath.default("/opt/progressdb"),
  serviceManager: z.enum(["systemd", "supervisor", "process"], { error: "must be one of systemd, supervisor, process" }).default("systemd"),
  serviceName: nonEmpty.default("progressdb"),
  /** `{version}` and `{arch}` are substituted. */
  artifactUrl: nonEmpty.refine(withoutUserinfo, NO_USERINFO).default(`${RELEASES}/progressdb_{version}_linux_{arch}.tar.gz`),
  checksumsUrl: nonEmpty.refine(withoutUserinfo, NO_USERINFO).default(`${RELEASES}/checksums.txt`),
  /** Pinned sha256 of the archive; when set, checksums.txt is not fetched. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/, { error: "must be 64 lowercase hex characters" }).optional(),
  arch: z.enum(["amd64", "arm64"], { error: "must be amd64 or arm64" }).default("amd64"),
  keepReleases: positiveInt.default(3),
  listenAddr: nonEmpty
    .refine((a) => /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d+$/.test(a), { error: "must be host:port such as 0.0.0.0:8080" })
    .refine((a) => !/:\d+$/.test(a) || inPortRange(Number(a.slice(a.lastIndexOf(":") + 1))), { error: "must end in a port 1–65535" })
    .default("0.0.0.0:8080"),
  /** Path of an existing ProgressDB config.yaml on the host, passed as --config. */
  configFile: hostPath.optional(),
  /** Free space the host must have in installDir and next to dbPath before anything stops. */
  minFreeMb: positiveInt.default(512),
  /** The unprivileged user the service runs as (created if absent; owns dbPath). */
  serviceUser: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/, { error: "must be a user name such as \"progressdb\" (lowercase letters, digits, _ and -, at most 32)" }).default("progressdb"),
});

const containerSchema = z.strictObject({
  image: nonEmpty.default("docker.io/progressdb/progressdb"),
  /** Optional `sha256:…` digest pinning the tag. */
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/, { error: "must look like sha256:<64 hex>" }).optional(),
  /** unix:///path or ssh://user@host. No tcp://: the program holds no TLS client certificates, so it would be a daemon without TLS. */
  dockerHost: nonEmpty
    .refine((h) => !h.startsWith("tcp://"), {
      error:
        "is a tcp:// daemon, without TLS: anyone who reaches that port runs containers as root on the host, and the traffic carries the service's config. Use ssh://user@host (the daemon stays on its unix socket) — set it with: pulumi config set --path progressdb:deployment.container.dockerHost ssh://<user>@<host>",
    })
    .refine((h) => /^(unix|ssh):\/\/\S+$/.test(h), { error: "must be unix:///var/run/docker.sock or ssh://user@host" })
    .default("unix:///var/run/docker.sock"),
  name: nonEmpty.default("progressdb"),
  ports: z
    .array(z.strictObject({ internal: port.default(8080), external: port }))
    .min(1, { error: "must publish at least one port (the health check and the host steps reach the service through the first)" })
    .refine((ps) => new Set(ps.map((p) => p.external)).size === ps.length, { error: "publishes the same external port twice" })
    .default([{ internal: 8080, external: 8080 }]),
  /** Extra environment of the container. Secrets do not go here: they come from the secret keys, into the 0600 config. */
  env: z
    .record(z.string(), z.string())
    .superRefine((env, ctx) => {
      for (const k of Object.keys(env)) {
        if (!/^[A-Z_][A-Z0-9_]*$/.test(k)) ctx.addIssue({ code: "custom", path: [k], message: "must be an environment variable name: [A-Z_][A-Z0-9_]*" });
        else if (/^PROGRESSDB_.*KEY/.test(k)) {
          ctx.addIssue({
            code: "custom",
            path: [k],
            message:
              "names a secret: keys go into the 0600 service config from the secret keys (progressdb:kmsMasterKeyHex, apiKey, adminApiKey, frontendApiKey, signingKey), never into the container's environment",
          });
        }
      }
    })
    .default({}),
  restart: z.enum(["no", "always", "unless-stopped", "on-failure"]).default("unless-stopped"),
  /** A healthcheck command (Docker `test` form) in place of the image's own; [] keeps the image's (the real images check /healthz). */
  healthcheck: z.array(z.string()).default([]),
});

const deploymentSchema = z
  .strictObject({
    mode: z.enum(["binary", "container"], {
      error: (iss) =>
        iss.input === undefined
          ? "is required — set it with: pulumi config set --path progressdb:deployment.mode binary"
          : "must be \"binary\" or \"container\"",
    }),
    host: hostSchema.optional(),
    binary: binarySchema.default(binarySchema.parse({})),
    container: containerSchema.optional(),
  })
  .superRefine((d, ctx) => {
    if (d.host && !d.host.hostKey && !d.host.insecureSkipHostKeyCheck) {
      ctx.addIssue({
        code: "custom",
        path: ["host", "hostKey"],
        message: `is required: without it anyone who can intercept the SSH connection receives the secrets the program sends — set it with: ssh-keyscan -p ${d.host.port} -t ed25519 ${d.host.address} | pulumi config set --path progressdb:deployment.host.hostKey`,
      });
    }
    if (!d.host) {
      ctx.addIssue({
        code: "custom",
        path: ["host"],
        message: `is required in ${d.mode} mode (backups and ${d.mode === "binary" ? "the install" : "the data directory"} run there over SSH) — set it with: pulumi config set --path progressdb:deployment.host.address <ip-or-name>`,
      });
    }
    if (d.mode === "container" && !d.container) {
      ctx.addIssue({
        code: "custom",
        path: ["container"],
        message: "is required when deployment.mode is \"container\" — set it with: pulumi config set --path progressdb:deployment.container.image docker.io/progressdb/progressdb",
      });
    }
  });

const storageSchema = z.strictObject({
  /** The data dir (`--db`) on the host; in container mode the host directory bind-mounted at /data. */
  dbPath: hostPath.default("/var/lib/progressdb/data"),
  /** v0.1.x embedded-KMS data kept outside dbPath; backed up with it. */
  kmsDataDir: hostPath.optional(),
});

// No external (prgkms) mode: with the prgkms built from the v0.2.1 tag the real 0.2.1 accepts writes and
// fails their reads (releases-as-built §3), and an unreachable prgkms crashes its start.
const kmsSchema = z.strictObject({
  mode: z
    .enum(["embedded", "disabled"], {
      error: (iss) =>
        iss.input === "external"
          ? "\"external\" is not supported: the real 0.2.1 fails reads through prgkms (writes answer 202, reads 500). Use \"embedded\" (the key from progressdb:kmsMasterKeyHex) or \"disabled\""
          : "must be embedded or disabled",
    })
    .default("embedded"),
});

/** The S3 bucket naming rule a name breaks beyond its characters and length, or undefined. */
function bucketRuleBroken(b: string): string | undefined {
  if (b.includes("..")) return "no two adjacent dots";
  if (/\.-|-\./.test(b)) return "no dot next to a hyphen";
  if (/^\d{1,3}(\.\d{1,3}){3}$/.test(b)) return "not formatted like an IP address";
  if (/^(xn--|sthree-|amzn-s3-demo-)/.test(b)) return "no reserved prefix (xn--, sthree-, amzn-s3-demo-)";
  if (/(-s3alias|--ol-s3|\.mrap|--x-s3|--table-s3)$/.test(b)) return "no reserved suffix (-s3alias, --ol-s3, .mrap, --x-s3, --table-s3)";
  return undefined;
}

const backupSchema = z
  .strictObject({
    enabled: z.boolean({ error: "must be true or false" }).default(true),
    bucket: z
      .string()
      .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, { error: "must be an S3 bucket name: 3–63 lowercase letters, digits, dots and hyphens" })
      .refine((b) => bucketRuleBroken(b) === undefined, { error: (iss) => `must be an S3 bucket name: ${bucketRuleBroken(String(iss.input))}` })
      .optional(),
    prefix: z.string().default("progressdb-backups").transform((p) => p.replace(/^\/+|\/+$/g, "")),
    /** Any S3-compatible endpoint (MinIO, Ceph, R2…); unset means AWS. */
    endpoint: z.url({ protocol: /^https?$/, error: "must be an http(s) URL such as https://s3.example.com" }).refine(withoutUserinfo, NO_USERINFO).optional(),
    region: nonEmpty.default("us-east-1"),
    createBucket: z.boolean({ error: "must be true or false" }).default(false),
    retentionDays: positiveInt.default(30),
    /** When the stack creates the bucket: S3 Object Lock (governance mode) on every backup for this many days. */
    objectLockDays: positiveInt.optional(),
    /**
     * Binary mode: `false` (the default) copies the data beside the data dir while the service runs,
     * completes the copy in the stop, starts the new version and uploads the backup after the start
     * (the update completes only once it is verified in S3): the downtime stays flat in data size.
     * `true` stops the service and uploads and verifies the backup before the new version starts
     * (the downtime grows with the data): the safe choice when the host's own disk must not be the
     * only place holding the pre-upgrade data while the new version runs. Container mode and
     * restores always upload before the start.
     */
    offsiteBeforeStart: z.boolean({ error: "must be true or false" }).default(false),
  })
  .superRefine((b, ctx) => {
    if (b.enabled && !b.bucket) {
      ctx.addIssue({
        code: "custom",
        path: ["bucket"],
        message: "is required when backup.enabled is true — set it with: pulumi config set --path progressdb:backup.bucket <bucket-name>",
      });
    }
  });

const healthSchema = z.strictObject({
  /** Base URL of the instance, e.g. http://10.0.0.5:8080; /healthz and /readyz are appended. */
  url: z.url({
    protocol: /^https?$/,
    error: (iss) =>
      iss.input === undefined
        ? "is required — set it with: pulumi config set --path progressdb:health.url http://<host>:8080"
        : "must be an http:// or https:// URL such as http://10.0.0.5:8080",
  }).refine(withoutUserinfo, NO_USERINFO),
  /**
   * Send API keys (and headers) to a non-loopback http:// url. ProgressDB 0.2.1 serves plain HTTP only:
   * put a TLS proxy in front and use https; this is for networks where that is not possible.
   */
  allowPlaintextHttp: z.boolean({ error: "must be true or false" }).default(false),
  timeoutSeconds: positiveInt.default(120),
  intervalSeconds: positiveInt.default(2),
  requestTimeoutSeconds: positiveInt.default(5),
  headers: z.record(z.string(), z.string()).default({}),
  /** PEM of a CA (or self-signed cert) to trust for an https url. */
  caCertPem: nonEmpty.optional(),
  smokeTest: z.boolean({ error: "must be true or false" }).default(false),
  /** When the new version never becomes ready within timeoutSeconds, the install puts the previous release back. */
  autoRevert: z.boolean({ error: "must be true or false" }).default(true),
  /**
   * The new version must serve the data the old one served (stats and a sample of threads, read
   * through the API with adminApiKey/apiKey). On by default when adminApiKey is set.
   */
  dataContinuity: z.boolean({ error: "must be true or false" }).default(true),
});

/** Settings of the service's own config file, which the program renders per release family. */
const serviceSchema = z.strictObject({
  rateLimit: z
    .strictObject({ rps: positiveInt.default(100), burst: positiveInt.default(200) })
    .default({ rps: 100, burst: 200 }),
  /** Largest request body (0.2.x), a size string such as "100KB" or "1MB". */
  maxPayloadSize: z
    .string()
    .regex(/^[1-9]\d*(B|KB|MB)$/, { error: "must be a size such as \"100KB\" or \"1MB\"" })
    .default("100KB"),
  /** Message fields encrypted at rest with the embedded KMS key, e.g. ["body"]. */
  encryptFields: z.array(z.string().regex(/^[a-z_][a-z0-9_.]*$/, { error: "must be a field path such as \"body\"" })).default([]),
  logLevel: z.enum(["debug", "info", "warn", "error"], { error: "must be debug, info, warn or error" }).default("info"),
});

const restoreSchema = z.strictObject({
  /** `s3://bucket/key.tar.zst` (`.tar.gz` for older backups), or `before:<version>` for the backup taken before upgrading to that version. */
  backup: z
    .string()
    .trim()
    .regex(/^(s3:\/\/[^/]+\/.+\.tar\.(zst|gz)|before:\d+\.\d+\.\d+)$/, {
      error: "must be s3://<bucket>/<key>.tar.zst (or .tar.gz) or before:<version>",
    })
    .optional(),
  /**
   * The sha256 of a backup that is not in this stack's backup ledger (another stack's, or copied in by
   * hand): the restore verifies the download against it. Backups this stack took need no hash.
   */
  sha256: z.string().regex(/^[0-9a-f]{64}$/, { error: "must be 64 lowercase hex characters" }).optional(),
});

/** Directories the program must never own, move aside or clean up; and trees it must not write into. */
const rolloutSchema = z.strictObject({
  /** A fleet: how long the canary (the first instance) runs on the new version, re-checked, before the next instance starts. */
  canaryPauseSeconds: z.number({ error: "must be a number of seconds" }).int({ error: "must be a whole number of seconds" }).min(0, { error: "must be 0 or more" }).max(3600, { error: "must be at most 3600 (an hour)" }).default(0),
});

const STACK_PATH = /^[A-Za-z0-9._-]+\/[A-Za-z0-9._-]+\/[A-Za-z0-9._-]+$/;
const promotionSchema = z.strictObject({
  /** `<org>/<project>/<stack>`: a version this stack takes must be in that stack's `verifiedVersions` output. */
  requireVerifiedBy: z.string().regex(STACK_PATH, { error: "must name a stack as <org>/<project>/<stack>, e.g. organization/progressdb/staging" }).optional(),
  /** The one version this stack may take without that stack's verification, and why (shown and exported on every run). */
  override: z
    .strictObject({
      version: versionSchema,
      reason: z.string().trim().min(10, { error: "must say why (at least 10 characters): it is shown on every run and exported as promotionOverride" }),
    })
    .optional(),
});

const SYSTEM_DIRS = new Set(["/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local", "/var", "/var/lib", "/var/log", "/var/tmp"]);
const SYSTEM_TREES = ["/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run", "/sbin", "/sys", "/usr"];

const within = (child: string, parent: string) => parent === "/" || child === parent || child.startsWith(`${parent}/`);

/**
 * The host paths the program owns must not overlap: the install cleans installDir/staging, a restore
 * and a migration move dbPath aside, and one inside another would take the other with it.
 */
function pathProblems(s: { deployment: { binary: { installDir: string } }; storage: { dbPath: string; kmsDataDir?: string } }): { path: string[]; message: string }[] {
  const paths: [string[], string][] = [
    [["deployment", "binary", "installDir"], s.deployment.binary.installDir],
    [["storage", "dbPath"], s.storage.dbPath],
  ];
  if (s.storage.kmsDataDir !== undefined) paths.push([["storage", "kmsDataDir"], s.storage.kmsDataDir]);
  const problems: { path: string[]; message: string }[] = [];
  for (const [key, p] of paths) {
    const tree = SYSTEM_TREES.find((t) => within(p, t) && !within(p, "/usr/local"));
    if (SYSTEM_DIRS.has(p) || tree) {
      problems.push({
        path: key,
        message: `(${p}) is ${SYSTEM_DIRS.has(p) ? "a system directory" : `inside the system directory ${tree}`}: the program moves, cleans and chowns what it owns — give it a directory of its own, e.g. pulumi config set --path ${PROJECT}:${key.join(".")} ${key[1] === "binary" ? "/opt/progressdb" : "/var/lib/progressdb/data"}`,
      });
    }
  }
  for (let i = 0; i < paths.length; i++) {
    for (let j = i + 1; j < paths.length; j++) {
      const [ka, a] = paths[i];
      const [kb, b] = paths[j];
      if (!within(a, b) && !within(b, a)) continue;
      const how = a === b ? "is the same directory as" : within(b, a) ? "contains" : "is inside";
      problems.push({
        path: kb,
        message: `(${b}) overlaps ${PROJECT}:${ka.join(".")} (${a}): ${ka.join(".")} ${how} ${kb.join(".")}, and cleaning or moving one would delete or move the other — use separate directories, e.g. /opt/progressdb and /var/lib/progressdb/data`,
      });
    }
  }
  return problems;
}

const settingsSchema = z.object({
  version: versionSchema,
  deployment: deploymentSchema,
  storage: storageSchema.default(storageSchema.parse({})),
  service: serviceSchema.default(serviceSchema.parse({})),
  kms: kmsSchema.default(kmsSchema.parse({})),
  backup: backupSchema,
  health: healthSchema,
  restore: restoreSchema.default({}),
  allowDowngrade: z.boolean({ error: "must be true or false" }).default(false),
  rollout: rolloutSchema.default(rolloutSchema.parse({})),
  promotion: promotionSchema.default({}),
}).superRefine((s, ctx) => {
  for (const problem of pathProblems(s)) ctx.addIssue({ code: "custom", ...problem });
  if (s.health.intervalSeconds > s.health.timeoutSeconds) {
    ctx.addIssue({
      code: "custom",
      path: ["health", "intervalSeconds"],
      message: `(${s.health.intervalSeconds}) is greater than health.timeoutSeconds (${s.health.timeoutSeconds}): the check would give up before its second try — set it with: pulumi config set --path progressdb:health.intervalSeconds 2`,
    });
  }
  if (s.restore.backup && !s.backup.bucket) {
    ctx.addIssue({
      code: "custom",
      path: ["backup", "bucket"],
      message: "is required when restore.backup is set (the endpoint and region of the backups come from progressdb:backup) — set it with: pulumi config set --path progressdb:backup.bucket <bucket-name>",
    });
  }
});

type Parsed = z.output<typeof settingsSchema>;

/** The validated stack settings. `host` and `container` are non-optional where the mode needs them. */
export interface Settings extends Omit<Parsed, "deployment"> {
  deployment: Omit<Parsed["deployment"], "host"> & { host: z.output<typeof hostSchema> };
  /** Which secrets the stack holds (values are read separately as secret Outputs). */
  secretsPresent: Record<SecretKey, boolean>;
}

export class ConfigError extends Error {
  constructor(public readonly problems: string[]) {
    super(`Invalid stack configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

const REQUIRED_HINT: Partial<Record<PlainKey, string>> = {
  version: "pulumi config set progressdb:version 0.2.1",
  deployment: "pulumi config set --path progressdb:deployment.mode binary",
  backup: "pulumi config set --path progressdb:backup.bucket <bucket-name>",
  health: "pulumi config set --path progressdb:health.url http://<host>:8080",
};

function keyOf(path: PropertyKey[]): string {
  return `${PROJECT}:${path.map(String).join(".")}`;
}

const LOOPBACK = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/;

/**
 * The health check and the continuity reads send the API keys (and any headers) to health.url: over
 * http:// to another machine, anyone on the path reads them. Loopback never leaves the host.
 */
function plaintextHealthProblem(raw: RawConfig, s: Parsed): string | undefined {
  const url = new URL(s.health.url);
  if (url.protocol !== "http:" || LOOPBACK.test(url.hostname) || s.health.allowPlaintextHttp) return undefined;
  const sent = [
    ...(["apiKey", "adminApiKey"] as const).filter((k) => raw.secrets[k] !== "absent").map((k) => `${PROJECT}:${k}`),
    ...(Object.keys(s.health.headers).length > 0 ? [`${PROJECT}:health.headers`] : []),
  ];
  if (sent.length === 0) return undefined;
  return (
    `${PROJECT}:health.url is plain http:// to ${url.host}, and the health check sends ${sent.join(" and ")} there: anyone on the path reads them. ` +
    `ProgressDB serves plain HTTP only: put a TLS proxy in front of it and set: pulumi config set --path ${PROJECT}:health.url https://${url.host} ` +
    `(with progressdb:health.caCertPem for a private CA); on a network where that is not possible, accept it with: pulumi config set --path ${PROJECT}:health.allowPlaintextHttp true`
  );
}

function secretProblems(raw: RawConfig, s: Parsed): string[] {
  const problems: string[] = [];
  for (const key of SECRET_KEYS) {
    if (raw.secrets[key] === "plaintext") {
      problems.push(
        `${PROJECT}:${key} is stored in plain text — remove it and set it as a secret: pulumi config rm ${PROJECT}:${key} && pulumi config set --secret ${PROJECT}:${key} < <file>`,
      );
    }
  }
  for (const key of raw.malformed ?? []) {
    const shape = SECRET_SHAPES[key];
    if (shape) problems.push(`${PROJECT}:${key} ${shape.rule} — set it again with: ${shape.fix}`);
  }
  const need = (key: SecretKey, why: string, how: string) => {
    if (raw.secrets[key] === "absent") problems.push(`${PROJECT}:${key} is required${why.startsWith(":") ? "" : " "}${why} — set it with: ${how}`);
  };
  need("sshPrivateKey", "to reach the host over SSH", `pulumi config set --secret ${PROJECT}:sshPrivateKey < ~/.ssh/id_ed25519`);
  if (s.kms.mode === "embedded") {
    need(
      "kmsMasterKeyHex",
      "when kms.mode is \"embedded\" (without it the data cannot be decrypted)",
      `pulumi config set --secret ${PROJECT}:kmsMasterKeyHex < master-key.hex`,
    );
  }
  const managed = s.deployment.mode === "container" || !s.deployment.binary.configFile;
  const why = (what: string) =>
    managed ? `: it goes into the service config the program writes (${what})` : `when health.smokeTest is true (${what})`;
  if (managed || s.health.smokeTest) {
    need("apiKey", why("the backend API key; the smoke test and continuity reads use it"), `pulumi config set --secret ${PROJECT}:apiKey < backend-key.txt`);
  }
  if (managed) {
    need("adminApiKey", why("the admin API key; the data-continuity gate reads /admin/stats with it"), `pulumi config set --secret ${PROJECT}:adminApiKey < admin-key.txt`);
    if (!s.version.startsWith("0.1.")) {
      need(
        "signingKey",
        `when version is ${s.version}: 0.2.x will not start without a signing key (server.api_keys.signing)`,
        `pulumi config set --secret ${PROJECT}:signingKey < signing-key.txt`,
      );
    }
  }
  if (s.service.encryptFields.length > 0 && s.kms.mode !== "embedded") {
    problems.push(`${PROJECT}:service.encryptFields needs kms.mode "embedded" (the fields are encrypted with kmsMasterKeyHex) — set it with: pulumi config set --path ${PROJECT}:kms.mode embedded`);
  }
  const plaintext = plaintextHealthProblem(raw, s);
  if (plaintext) problems.push(plaintext);
  const hasId = raw.secrets.s3AccessKeyId !== "absent";
  const hasSecret = raw.secrets.s3SecretAccessKey !== "absent";
  if (hasId !== hasSecret) {
    problems.push(
      `${PROJECT}:s3AccessKeyId and ${PROJECT}:s3SecretAccessKey go together — set both with pulumi config set --secret, or neither to use the host's own credentials`,
    );
  }
  return problems;
}

/** The one string key that may hold line breaks: a PEM certificate. */
const MULTILINE_KEYS = new Set(["health.caCertPem"]);

/* eslint-disable no-control-regex -- finding control characters is the point */
const CONTROL = /[\x00-\x1f\x7f]/;
const CONTROL_BUT_LINE_ENDS = /[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]/;
/* eslint-enable no-control-regex */

/**
 * Control characters in any string value or map key. A `\r` in a path is a line end to systemd and
 * supervisor, so it would inject lines into the unit or program the install writes.
 */
function controlCharacterProblems(value: unknown, at: string[] = []): string[] {
  const problem = (what: string, found: string) =>
    `${keyOf(at)} ${what} a control character (\\x${found.charCodeAt(0).toString(16).padStart(2, "0")}): it could inject lines into the service unit or program the install writes — set the value again without it: pulumi config set --path ${keyOf(at)} <value>`;
  if (typeof value === "string") {
    const found = (MULTILINE_KEYS.has(at.join(".")) ? CONTROL_BUT_LINE_ENDS : CONTROL).exec(value);
    return found ? [problem("contains", found[0])] : [];
  }
  if (Array.isArray(value)) return value.flatMap((v, i) => controlCharacterProblems(v, [...at, String(i)]));
  if (value === null || typeof value !== "object") return [];
  return Object.entries(value).flatMap(([k, v]) => {
    const found = CONTROL.exec(k);
    return found ? [problem("has a key with", found[0])] : controlCharacterProblems(v, [...at, k]);
  });
}

/** Validates raw stack config. Throws a ConfigError listing every problem, each naming its key and the fix. */
export function parseSettings(raw: RawConfig): Settings {
  const control = controlCharacterProblems(raw.values);
  if (control.length > 0) throw new ConfigError(control);
  const result = settingsSchema.safeParse(raw.values);
  if (!result.success) {
    const problems = result.error.issues.map((issue) => {
      const top = issue.path[0] as PlainKey | undefined;
      if (issue.path.length === 1 && raw.values[top as PlainKey] === undefined && top && REQUIRED_HINT[top]) {
        return `${keyOf(issue.path)} is required — set it with: ${REQUIRED_HINT[top]}`;
      }
      return `${keyOf(issue.path)} ${issue.message}`;
    });
    throw new ConfigError(problems);
  }
  const parsed = result.data;
  const problems = secretProblems(raw, parsed);
  if (problems.length > 0) throw new ConfigError(problems);
  const secretsPresent = Object.fromEntries(SECRET_KEYS.map((k) => [k, raw.secrets[k] !== "absent"])) as Record<SecretKey, boolean>;
  return { ...parsed, deployment: { ...parsed.deployment, host: parsed.deployment.host! }, secretsPresent };
}

/** Substitutes `{version}` and `{arch}` in an artifact or checksums URL template. */
export function expandUrl(template: string, version: string, arch: string): string {
  return template.replaceAll("{version}", version).replaceAll("{arch}", arch);
}

/** The release archive's file name, as listed in checksums.txt. */
export function archiveName(version: string, arch: string): string {
  return `progressdb_${version}_linux_${arch}.tar.gz`;
}

/** Compares two semver versions (pre-release tags sort before the release). */
export function compareVersions(a: string, b: string): number {
  const parse = (v: string) => {
    const [core, pre] = v.replace(/^v/, "").split("-", 2);
    return { nums: core.split(".").map(Number), pre };
  };
  const x = parse(a);
  const y = parse(b);
  for (let i = 0; i < 3; i++) {
    if (x.nums[i] !== y.nums[i]) return Math.sign((x.nums[i] ?? 0) - (y.nums[i] ?? 0));
  }
  if (x.pre === y.pre) return 0;
  if (x.pre === undefined) return 1;
  if (y.pre === undefined) return -1;
  return x.pre < y.pre ? -1 : 1;
}

/**
 * Why an upgrade across the 0.1 → 0.2 data format cannot go ahead, or undefined.
 * The real 0.2.1 prgcli copies field-encrypted 0.1 bodies still sealed with the
 * 0.1 key; the real 0.2.1 then answers 500 for them (with its KMS on) or serves
 * the ciphertext (seen on the real releases).
 */
export function crossingProblem(requested: string, deployed: string | undefined, s: Pick<Settings, "service">): string | undefined {
  if (!deployed || familyOf(deployed).dataLayout === familyOf(requested).dataLayout || s.service.encryptFields.length === 0) return undefined;
  return (
    `${PROJECT}:version ${requested} crosses the 0.1 → 0.2 data format, and ${PROJECT}:service.encryptFields is ${JSON.stringify(s.service.encryptFields)}: ` +
    `prgcli ${requested} copies field-encrypted bodies still sealed with the 0.1 key, and ${requested} cannot serve them (HTTP 500). ` +
    `Nothing was changed; ${deployed} keeps running. There is no safe automatic path for encrypted fields: keep ${deployed}, ` +
    `or export the data through the API and import it into a fresh ${requested}.`
  );
}

/** What the downgrade guard says: a refusal stops the update before any resource exists; a warning is shown and it goes on. */
export interface GuardVerdict {
  refusal?: string;
  warning?: string;
}

/**
 * Whether going from `deployed` to `requested` needs the operator's say-so.
 * Within a release family the data format is the same: a plain downgrade
 * needs allowDowngrade (or a restore). Back across the 0.1 → 0.2 data format,
 * the data the migration kept is the way back: the version line alone does
 * it, with a warning that writes made since are not in it; without kept data
 * only a restore of the pre-upgrade backup can.
 */
export function downgradeProblem(
  requested: string,
  deployed: string | undefined,
  s: Pick<Settings, "allowDowngrade" | "restore">,
  kept?: { path: string; version: string; at: string },
): GuardVerdict | undefined {
  if (!deployed || compareVersions(requested, deployed) >= 0) return undefined;
  if (s.restore.backup) return undefined;
  const restore = `      pulumi config set --path ${PROJECT}:restore.backup before:${deployed}`;
  if (familyOf(requested).dataLayout !== familyOf(deployed).dataLayout) {
    if (kept && kept.version === requested && kept.path) {
      return {
        warning:
          `${PROJECT}:version ${requested} is a rollback across the data format: ${requested} will run on its own data, kept at ${kept.path} ` +
          `when ${deployed} was installed (${kept.at}). Writes made after ${kept.at} are NOT in it (they stay in the ${deployed} data, moved aside). ` +
          `To keep them, restore instead:\n${restore}`,
      };
    }
    return {
      refusal:
        `${PROJECT}:version ${requested} is lower than the deployed ${deployed} and on the other side of the 0.1 → 0.2 data format: ` +
        `${requested} cannot read the data ${deployed} wrote, and no data was kept from before the upgrade. ` +
        `Restore the backup taken before the upgrade to ${deployed} and run ${requested} on it:\n${restore}`,
    };
  }
  if (s.allowDowngrade) return undefined;
  return {
    refusal:
      `${PROJECT}:version ${requested} is lower than the deployed ${deployed}. Both read the same data format, but ${deployed} may have written ` +
      `data ${requested} does not expect. Either:\n` +
      `  - restore the backup taken before the upgrade to ${deployed} and run ${requested} on it:\n${restore}\n` +
      `  - or allow the plain downgrade (the data stays as it is):\n` +
      `      pulumi config set ${PROJECT}:allowDowngrade true`,
  };
}

/** Every leaf key of the stack config (`deployment.binary.listenAddr`, …) and every secret key. */
export function settingsKeys(): string[] {
  type Def = { type: string; shape?: Record<string, { _zod: { def: Def } }>; innerType?: { _zod: { def: Def } }; in?: { _zod: { def: Def } } };
  const walk = (def: Def, prefix: string): string[] => {
    if (def.type === "object" && def.shape) return Object.entries(def.shape).flatMap(([k, v]) => walk(v._zod.def, prefix ? `${prefix}.${k}` : k));
    if (def.innerType) return walk(def.innerType._zod.def, prefix);
    if (def.type === "pipe" && def.in) return walk(def.in._zod.def, prefix);
    return [prefix];
  };
  return [...walk((settingsSchema as unknown as { _zod: { def: Def } })._zod.def, ""), ...SECRET_KEYS];
}
