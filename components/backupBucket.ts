import * as pulumi from "@pulumi/pulumi";
import * as aws from "@pulumi/aws";

export interface BackupBucketArgs {
  bucket: string;
  region: string;
  /** S3-compatible endpoint URL; unset means AWS. */
  endpoint?: string;
  /** Days after which backups (and old versions) expire. Defaults to 30. */
  retentionDays?: number;
  accessKeyId?: pulumi.Input<string>;
  secretAccessKey?: pulumi.Input<string>;
}

/**
 * The backup bucket, when the stack creates it: versioned, encrypted, public
 * access blocked, expiring after retentionDays. Protected, so `pulumi destroy`
 * never deletes backups.
 */
export class BackupBucket extends pulumi.ComponentResource {
  public readonly bucketName: pulumi.Output<string>;

  constructor(name: string, args: BackupBucketArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:backup:BackupBucket", name, {}, opts);
    const provider = new aws.Provider(
      `${name}-aws`,
      {
        region: args.region as aws.Region,
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
    const bucket = new aws.s3.Bucket(`${name}-bucket`, { bucket: args.bucket }, child);
    new aws.s3.BucketVersioning(`${name}-versioning`, { bucket: bucket.id, versioningConfiguration: { status: "Enabled" } }, child);
    new aws.s3.BucketServerSideEncryptionConfiguration(
      `${name}-encryption`,
      { bucket: bucket.id, rules: [{ applyServerSideEncryptionByDefault: { sseAlgorithm: "AES256" } }] },
      child,
    );
    new aws.s3.BucketPublicAccessBlock(
      `${name}-public-access`,
      { bucket: bucket.id, blockPublicAcls: true, blockPublicPolicy: true, ignorePublicAcls: true, restrictPublicBuckets: true },
      child,
    );
    const days = args.retentionDays ?? 30;
    new aws.s3.BucketLifecycleConfiguration(
      `${name}-expiry`,
      {
        bucket: bucket.id,
        rules: [
          {
            id: "expire-backups",
            status: "Enabled",
            filter: {},
            expiration: { days },
            noncurrentVersionExpiration: { noncurrentDays: days },
          },
        ],
      },
      child,
    );
    this.bucketName = bucket.bucket;
    this.registerOutputs({ bucketName: this.bucketName });
  }
}
