import * as pulumi from "@pulumi/pulumi";
import { Settings, archiveName, expandUrl } from "./config";
import { Secrets } from "./stackConfig";
import { hostParams, s3Params, sshConnection } from "./connection";
import { renderSecretsStdin } from "./hostScripts";
import { Preflight } from "./preflight";
import { Restore } from "./restore";
import { Backup } from "./backup";
import { BackupBucket } from "./backupBucket";
import { BinaryDeployment } from "./binaryDeployment";
import { ContainerDeployment, ContainerImage } from "./containerDeployment";
import { HealthCheck } from "./healthCheck";

export interface ProgressDbArgs {
  settings: Settings;
  secrets: Secrets;
  /** The stack name; part of every backup key. */
  stack: string;
}

/**
 * One ProgressDB instance: Preflight → Backup → Deployment → HealthCheck, in
 * that order, each re-run by a change of version (or restore request) only.
 */
export class ProgressDb extends pulumi.ComponentResource {
  public readonly version: pulumi.Output<string>;
  public readonly previousVersion: pulumi.Output<string>;
  public readonly backupUri: pulumi.Output<string>;
  public readonly backupSha256: pulumi.Output<string>;
  public readonly backupSize: pulumi.Output<number>;
  public readonly healthStatus: pulumi.Output<string>;
  public readonly reportedVersion: pulumi.Output<string>;
  /** Container mode: the image this version runs (`image:tag` or `image@digest`); "" in binary mode. */
  public readonly imageRef: pulumi.Output<string>;
  /** Container mode: the image the previous version ran, kept on the host for a rollback; "" otherwise. */
  public readonly previousImageRef: pulumi.Output<string>;

  constructor(name: string, args: ProgressDbArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:index:ProgressDb", name, {}, opts);
    const s = args.settings;
    const { secrets } = args;
    const version = s.version;
    const connection = sshConnection(s.deployment.host, secrets.sshPrivateKey ?? "");
    const host = hostParams(s);
    const s3 = s.backup.enabled ? s3Params(s) : undefined;
    const s3Stdin = pulumi
      .all([secrets.s3AccessKeyId, secrets.s3SecretAccessKey])
      .apply(([awsAccessKeyId, awsSecretAccessKey]) => renderSecretsStdin({ awsAccessKeyId, awsSecretAccessKey }));
    const serviceStdin = pulumi
      .all([secrets.kmsMasterKeyHex])
      .apply(([kmsMasterKeyHex]) => renderSecretsStdin({ kmsMasterKeyHex }));
    const child = { parent: this };

    const bucket =
      s.backup.enabled && s.backup.createBucket
        ? new BackupBucket(
            `${name}-bucket`,
            {
              bucket: s.backup.bucket!,
              region: s.backup.region,
              endpoint: s.backup.endpoint,
              retentionDays: s.backup.retentionDays,
              accessKeyId: secrets.s3AccessKeyId,
              secretAccessKey: secrets.s3SecretAccessKey,
            },
            child,
          )
        : undefined;
    const afterBucket = bucket ? [bucket] : [];

    // 1. Everything checkable before anything stops.
    const binary = s.deployment.binary;
    const archive = archiveName(version, binary.arch);
    const prepared: pulumi.Resource[] =
      s.deployment.mode === "binary"
        ? [
            new Preflight(
              `${name}-preflight`,
              {
                connection,
                host,
                version,
                artifactUrl: expandUrl(binary.artifactUrl, version, binary.arch),
                checksumsUrl: expandUrl(binary.checksumsUrl, version, binary.arch),
                archiveName: archive,
                sha256: binary.sha256,
                minFreeMb: binary.minFreeMb,
                s3,
                stdin: s3Stdin,
              },
              { ...child, dependsOn: afterBucket },
            ),
          ]
        : [new ContainerImage(`${name}-image`, { container: s.deployment.container!, version }, { ...child, dependsOn: afterBucket })];

    // 2. The verified backup (stops the service).
    const backup = s3
      ? new Backup(
          `${name}-backup`,
          { connection, host, version, stack: args.stack, s3, stdin: s3Stdin },
          { ...child, dependsOn: prepared },
        )
      : undefined;

    // 2b. A requested restore puts a backup in place of the data (the data it replaces is moved aside).
    const restore = s.restore.backup
      ? new Restore(
          `${name}-restore`,
          { connection, host, request: s.restore.backup, version, stack: args.stack, s3: s3Params(s), healthUrl: s.health.url, stdin: s3Stdin },
          { ...child, dependsOn: backup ? [backup] : prepared },
        )
      : undefined;
    const beforeInstall = restore ? [restore] : backup ? [backup] : prepared;

    // 3. The new version.
    let deployment: BinaryDeployment | ContainerDeployment;
    if (s.deployment.mode === "binary") {
      deployment = new BinaryDeployment(
        `${name}-deploy`,
        {
          connection,
          host,
          version,
          archiveName: archive,
          keepReleases: binary.keepReleases,
          healthUrl: s.health.url,
          autoRevertSeconds: s.health.autoRevert ? s.health.timeoutSeconds : 0,
          stdin: serviceStdin,
          serviceStoppedBy: backup?.runId,
        },
        { ...child, dependsOn: beforeInstall },
      );
    } else {
      deployment = new ContainerDeployment(
        `${name}-deploy`,
        {
          container: s.deployment.container!,
          image: prepared[0] as ContainerImage,
          version,
          hostDataDir: s.storage.dbPath,
          kmsMasterKeyHex: secrets.kmsMasterKeyHex,
          previousVersion: backup?.fromVersion,
          serviceStoppedBy: backup?.runId,
        },
        { ...child, dependsOn: beforeInstall },
      );
    }

    // 4. Proof that the new version is the one answering.
    const health = new HealthCheck(
      `${name}-health`,
      {
        url: s.health.url,
        expectedVersion: version,
        // A restore at the same version restarts the service: check it again.
        deploymentId: restore ? pulumi.interpolate`${deployment.deploymentId}+${restore.restoreId}` : deployment.deploymentId,
        timeoutSeconds: s.health.timeoutSeconds,
        intervalSeconds: s.health.intervalSeconds,
        requestTimeoutSeconds: s.health.requestTimeoutSeconds,
        headers: s.health.headers,
        caCertPem: s.health.caCertPem,
        smokeTest: s.health.smokeTest,
        apiKey: secrets.apiKey,
      },
      { ...child, dependsOn: [deployment] },
    );

    this.version = health.reportedVersion;
    this.previousVersion =
      deployment instanceof BinaryDeployment ? deployment.previousVersion : (backup?.fromVersion ?? pulumi.output(""));
    this.backupUri = backup?.uri ?? pulumi.output("");
    this.backupSha256 = backup?.sha256 ?? pulumi.output("");
    this.backupSize = backup?.size ?? pulumi.output(0);
    this.healthStatus = health.status;
    this.reportedVersion = health.reportedVersion;
    const container = deployment instanceof ContainerDeployment ? deployment : undefined;
    this.imageRef = container?.imageRef ?? pulumi.output("");
    this.previousImageRef = container?.previousImageRef ?? pulumi.output("");
    this.registerOutputs({
      version: this.version,
      previousVersion: this.previousVersion,
      backupUri: this.backupUri,
      backupSha256: this.backupSha256,
      backupSize: this.backupSize,
      healthStatus: this.healthStatus,
      imageRef: this.imageRef,
      previousImageRef: this.previousImageRef,
    });
  }
}
