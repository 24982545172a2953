import * as pulumi from "@pulumi/pulumi";
import type * as Aws from "@pulumi/aws";

// Loaded only by a stack that manages its bucket: @pulumi/aws takes ~0.1 s to load, on every preview.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const loadAws = (): typeof Aws => require("@pulumi/aws");

export interface BackupBucketArgs {
  bucket: string;
  region: string;
  /** S3-compatible endpoint URL; unset means AWS. */
  endpoint?: string;
  /** Days after which superseded backups (and old versions) expire. Defaults to 30. */
  retentionDays?: number;
  /** S3 Object Lock in governance mode on every new object for this many days; unset: no lock. */
  objectLockDays?: number;
  accessKeyId?: pulumi.Input<string>;
  secretAccessKey?: pulumi.Input<string>;
}

/** The tag backup.sh puts on an instance's older backups once a newer one is verified. */
export const SUPERSEDED_TAG = { key: "progressdb-backup", value: "superseded" } as const;

/**
 * The backup bucket, when the stack creates it: versioned, encrypted, public
 * access blocked, TLS only, incomplete uploads aborted, and superseded backups
 * expiring after retentionDays (the newest backup of an instance is never
 * tagged, so never expires); optionally object-locked. Protected, so
 * `pulumi destroy` never deletes backups.
 */
export class BackupBucket extends pulumi.ComponentResource {
  public readonly bucketName: pulumi.Output<string>;

  constructor(name: string, args: BackupBucketArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:backup:BackupBucket", name, {}, opts);
    const aws = loadAws();
    const provider = new aws.Provider(
      `${name}-aws`,
      {
        region: args.region as Aws.Region,
        accessKey: args.accessKeyId,
        secretKey: args.secretAccessKey,
        ...(args.endpoint
          ? {
              endpoints: [{ s3: args.endpoint }],
              s3UsePathStyle: true,
              skipCredentialsValidation: true,
              skipRequestingAccountId: true,
              skipMetadataApiCheck: true,
              skipRegionValidation: true,
            }
          : {}),
      },
      { parent: this },
    );
    const child = { parent: this, provider, protect: true };
    const lockDays = args.objectLockDays;
    // objectLockEnabled is read at creation only; on an existing (versioned) bucket the lock
    // configuration below turns it on, so a later objectLockDays never replaces the bucket.
    const bucket = new aws.s3.Bucket(
      `${name}-bucket`,
      { bucket: args.bucket, ...(lockDays ? { objectLockEnabled: true } : {}) },
      { ...child, ignoreChanges: ["objectLockEnabled"] },
    );
    const versioning = new aws.s3.BucketVersioning(`${name}-versioning`, { bucket: bucket.id, versioningConfiguration: { status: "Enabled" } }, child);
    if (lockDays) {
      new aws.s3.BucketObjectLockConfiguration(
        `${name}-object-lock`,
        { bucket: bucket.id, objectLockEnabled: "Enabled", rule: { defaultRetention: { mode: "GOVERNANCE", days: lockDays } } },
        { ...child, dependsOn: [versioning] },
      );
    }
    new aws.s3.BucketServerSideEncryptionConfiguration(
      `${name}-encryption`,
      { bucket: bucket.id, rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "AES256" } }] },
      child,
    );
    const publicAccess = new aws.s3.BucketPublicAccessBlock(
      `${name}-public-access`,
      { bucket: bucket.id, blockPublicAcls: true, blockPublicPolicy: true, ignorePublicAcls: true, restrictPublicBuckets: true },
      child,
    );
    if (args.endpoint?.startsWith("http://")) {
      pulumi.log.warn(
        `progressdb:backup.endpoint is plain http (${args.endpoint}): the bucket gets no TLS-only policy, and backups and S3 credentials cross the network unencrypted — use an https endpoint`,
        this,
      );
    } else {
      new aws.s3.BucketPolicy(
        `${name}-tls-only`,
        { bucket: bucket.id, policy: pulumi.jsonStringify(tlsOnlyPolicy(bucket.arn)) },
        { ...child, dependsOn: [publicAccess] },
      );
    }
    const days = args.retentionDays ?? 30;
    new aws.s3.BucketLifecycleConfiguration(
      `${name}-expiry`,
      {
        bucket: bucket.id,
        rules: [
          { id: "abort-incomplete-uploads", status: "Enabled", filter: {}, abortIncompleteMultipartUpload: { daysAfterInitiation: 1 } },
          {
            id: "expire-superseded-backups",
            status: "Enabled",
            filter: { tag: { ...SUPERSEDED_TAG } },
            expiration: { days },
            noncurrentVersionExpiration: { noncurrentDays: days },
          },
        ],
      },
      { ...child, dependsOn: [versioning] },
    );
    this.bucketName = bucket.bucket;
    this.registerOutputs({ bucketName: this.bucketName });
  }
}

/** Denies every request to the bucket and its objects that does not arrive over TLS. */
function tlsOnlyPolicy(arn: pulumi.Output<string>) {
  return {
    Version: "2012-10-17",
    Statement: [
      {
        Sid: "DenyInsecureTransport",
        Effect: "Deny",
        Principal: "*",
        Action: "s3:*",
        Resource: [arn, pulumi.interpolate`${arn}/*`],
        Condition: { Bool: { "aws:SecureTransport": "false" } },
      },
    ],
  };
}
