// Stack config → one typed, validated settings object. Pure: no Pulumi calls
// here, so every rejection is unit-tested without mocks. index.ts feeds it the
// raw values and whether each secret key is present and stored encrypted.
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
] as const;
export type PlainKey = (typeof PLAIN_KEYS)[number];

export interface RawConfig {
  values: Partial<Record<PlainKey, unknown>>;
  secrets: Record<SecretKey, SecretState>;
}

const SEMVER = /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?$/;

const versionSchema = z
  .string({ error: "must be a string such as \"0.2.1\"" })
  .transform((v) => v.trim().replace(/^v/, ""))
  .refine((v) => v !== "latest", {
    error: "\"latest\" is not allowed: pin an exact release so the upgrade is reviewable and repeatable",
  })
  .refine((v) => v === "latest" || SEMVER.test(v), {
    error: "must be an exact semver release such as \"0.2.1\"",
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
  service: serviceSchema.default(serviceSchema.parse({})),
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
  version: "pulumi config set progressdb:version 0.2.1",
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
