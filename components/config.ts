// Stack config → one typed, validated settings object. Pure: no Pulumi calls
// here, so every rejection is unit-tested without mocks. index.ts feeds it the
// raw values and whether each secret key is present and stored encrypted.
import { z } from "zod";

export const PROJECT = "progressdb";

/** The secret config keys (`progressdb:<key>`), always read with `config.getSecret`. */
export const SECRET_KEYS = [
  "sshPrivateKey",
  "kmsMasterKeyHex",
  "apiKey",
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
  "kms",
  "backup",
  "health",
  "restore",
  "allowDowngrade",
] as const;
export type PlainKey = (typeof PLAIN_KEYS)[number];

export interface RawConfig {
  values: Partial<Record<PlainKey, unknown>>;
  secrets: Record<SecretKey, SecretState>;
}

const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$/;

const versionSchema = z
  .string({ error: "must be a string such as \"0.2.0\"" })
  .transform((v) => v.trim().replace(/^v/, ""))
  .refine((v) => v !== "latest", {
    error: "\"latest\" is not allowed: pin an exact release so the upgrade is reviewable and repeatable",
  })
  .refine((v) => v === "latest" || SEMVER.test(v), {
    error: "must be an exact semver release such as \"0.2.0\"",
  });

const nonEmpty = z.string().trim().min(1, { error: "must not be empty" });
const positiveInt = z.number({ error: "must be a number" }).int({ error: "must be a whole number" }).positive({ error: "must be greater than 0" });
const port = z.number({ error: "must be a number" }).int().min(1, { error: "must be 1–65535" }).max(65535, { error: "must be 1–65535" });

const hostSchema = z.strictObject({
  /** Address of the host that runs ProgressDB (SSH target, also the Docker host in container mode). */
  address: nonEmpty,
  port: port.default(22),
  user: nonEmpty.default("root"),
  /** The aws CLI the host's scripts run (a name on the remote PATH, or an absolute path). */
  awsCli: nonEmpty.default("aws"),
});

const RELEASES = "https://github.com/progressdb/ProgressDB/releases/download/v{version}";

const binarySchema = z.strictObject({
  installDir: nonEmpty.default("/opt/progressdb"),
  serviceManager: z.enum(["systemd", "supervisor", "process"], { error: "must be one of systemd, supervisor, process" }).default("systemd"),
  serviceName: nonEmpty.default("progressdb"),
  /** `{version}` and `{arch}` are substituted. */
  artifactUrl: nonEmpty.default(`${RELEASES}/progressdb_{version}_linux_{arch}.tar.gz`),
  checksumsUrl: nonEmpty.default(`${RELEASES}/checksums.txt`),
  /** Pinned sha256 of the archive; when set, checksums.txt is not fetched. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/, { error: "must be 64 lowercase hex characters" }).optional(),
  arch: z.enum(["amd64", "arm64"], { error: "must be amd64 or arm64" }).default("amd64"),
  keepReleases: positiveInt.default(3),
  listenAddr: nonEmpty.default("0.0.0.0:8080"),
  /** Path of an existing ProgressDB config.yaml on the host, passed as --config. */
  configFile: nonEmpty.optional(),
  /** Free space the host must have in installDir and next to dbPath before anything stops. */
  minFreeMb: positiveInt.default(512),
});

const containerSchema = z.strictObject({
  image: nonEmpty.default("docker.io/progressdb/progressdb"),
  /** Optional `sha256:…` digest pinning the tag. */
  digest: z.string().regex(/^sha256:[0-9a-f]{64}$/, { error: "must look like sha256:<64 hex>" }).optional(),
  dockerHost: nonEmpty.default("unix:///var/run/docker.sock"),
  name: nonEmpty.default("progressdb"),
  ports: z.array(z.strictObject({ internal: port.default(8080), external: port })).default([{ internal: 8080, external: 8080 }]),
  env: z.record(z.string(), z.string()).default({}),
  restart: z.enum(["no", "always", "unless-stopped", "on-failure"]).default("unless-stopped"),
  /** The container's own healthcheck command (Docker `test` form); [] disables it, e.g. for an image without a shell. */
  healthcheck: z.array(z.string()).default(["CMD-SHELL", "wget -qO- http://127.0.0.1:8080/healthz || exit 1"]),
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
  dbPath: nonEmpty.default("/var/lib/progressdb/data"),
  /** v0.1.x embedded-KMS data kept outside dbPath; backed up with it. */
  kmsDataDir: nonEmpty.optional(),
});

const kmsSchema = z
  .strictObject({
    mode: z.enum(["embedded", "external", "disabled"], { error: "must be embedded, external or disabled" }).default("embedded"),
    /** host:port of the external prgkms daemon. */
    endpoint: nonEmpty.optional(),
  })
  .superRefine((k, ctx) => {
    if (k.mode === "external" && !k.endpoint) {
      ctx.addIssue({
        code: "custom",
        path: ["endpoint"],
        message: "is required when kms.mode is \"external\" — set it with: pulumi config set --path progressdb:kms.endpoint 127.0.0.1:6820",
      });
    }
  });

const backupSchema = z
  .strictObject({
    enabled: z.boolean({ error: "must be true or false" }).default(true),
    bucket: z
      .string()
      .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, { error: "must be an S3 bucket name: 3–63 lowercase letters, digits, dots and hyphens" })
      .optional(),
    prefix: z.string().default("progressdb-backups").transform((p) => p.replace(/^\/+|\/+$/g, "")),
    /** Any S3-compatible endpoint (MinIO, Ceph, R2…); unset means AWS. */
    endpoint: z.url({ protocol: /^https?$/, error: "must be an http(s) URL such as https://s3.example.com" }).optional(),
    region: nonEmpty.default("us-east-1"),
    createBucket: z.boolean({ error: "must be true or false" }).default(false),
    retentionDays: positiveInt.default(30),
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
  }),
  timeoutSeconds: positiveInt.default(120),
  intervalSeconds: positiveInt.default(2),
  requestTimeoutSeconds: positiveInt.default(5),
  headers: z.record(z.string(), z.string()).default({}),
  /** PEM of a CA (or self-signed cert) to trust for an https url. */
  caCertPem: nonEmpty.optional(),
  smokeTest: z.boolean({ error: "must be true or false" }).default(false),
  /** When the new version never becomes ready within timeoutSeconds, the install puts the previous release back. */
  autoRevert: z.boolean({ error: "must be true or false" }).default(true),
});

const restoreSchema = z.strictObject({
  /** `s3://bucket/key.tar.gz`, or `before:<version>` for the backup taken before upgrading to that version. */
  backup: z
    .string()
    .trim()
    .regex(/^(s3:\/\/[^/]+\/.+\.tar\.gz|before:\d+\.\d+\.\d+)$/, {
      error: "must be s3://<bucket>/<key>.tar.gz or before:<version>",
    })
    .optional(),
});

const settingsSchema = z.object({
  version: versionSchema,
  deployment: deploymentSchema,
  storage: storageSchema.default(storageSchema.parse({})),
  kms: kmsSchema.default(kmsSchema.parse({})),
  backup: backupSchema,
  health: healthSchema,
  restore: restoreSchema.default({}),
  allowDowngrade: z.boolean({ error: "must be true or false" }).default(false),
}).superRefine((s, ctx) => {
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
  version: "pulumi config set progressdb:version 0.2.0",
  deployment: "pulumi config set --path progressdb:deployment.mode binary",
  backup: "pulumi config set --path progressdb:backup.bucket <bucket-name>",
  health: "pulumi config set --path progressdb:health.url http://<host>:8080",
};

function keyOf(path: PropertyKey[]): string {
  return `${PROJECT}:${path.map(String).join(".")}`;
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
  const need = (key: SecretKey, why: string, how: string) => {
    if (raw.secrets[key] === "absent") problems.push(`${PROJECT}:${key} is required ${why} — set it with: ${how}`);
  };
  need("sshPrivateKey", "to reach the host over SSH", `pulumi config set --secret ${PROJECT}:sshPrivateKey < ~/.ssh/id_ed25519`);
  if (s.kms.mode === "embedded") {
    need(
      "kmsMasterKeyHex",
      "when kms.mode is \"embedded\" (without it the data cannot be decrypted)",
      `pulumi config set --secret ${PROJECT}:kmsMasterKeyHex < master-key.hex`,
    );
  }
  if (s.health.smokeTest) {
    need("apiKey", "when health.smokeTest is true (a backend API key)", `pulumi config set --secret ${PROJECT}:apiKey < api-key.txt`);
  }
  const hasId = raw.secrets.s3AccessKeyId !== "absent";
  const hasSecret = raw.secrets.s3SecretAccessKey !== "absent";
  if (hasId !== hasSecret) {
    problems.push(
      `${PROJECT}:s3AccessKeyId and ${PROJECT}:s3SecretAccessKey go together — set both with pulumi config set --secret, or neither to use the host's own credentials`,
    );
  }
  return problems;
}

/** Validates raw stack config. Throws a ConfigError listing every problem, each naming its key and the fix. */
export function parseSettings(raw: RawConfig): Settings {
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
 * Why going from `deployed` to `requested` needs the operator's say-so, or
 * undefined when it doesn't (not a downgrade, a restore is requested, or the
 * override is set).
 */
export function downgradeProblem(
  requested: string,
  deployed: string | undefined,
  s: Pick<Settings, "allowDowngrade" | "restore">,
): string | undefined {
  if (!deployed || compareVersions(requested, deployed) >= 0) return undefined;
  if (s.allowDowngrade || s.restore.backup) return undefined;
  return (
    `${PROJECT}:version ${requested} is lower than the deployed ${deployed}. ProgressDB 0.2+ migrates its data on start ` +
    `and an older binary may refuse to open migrated data, so swapping the binary back can leave the instance down. Either:\n` +
    `  - restore the backup taken before the upgrade to ${deployed} and run ${requested} on it:\n` +
    `      pulumi config set --path ${PROJECT}:restore.backup before:${deployed}\n` +
    `  - or, if no data migration happened between ${requested} and ${deployed}, allow the plain downgrade:\n` +
    `      pulumi config set ${PROJECT}:allowDowngrade true`
  );
}
