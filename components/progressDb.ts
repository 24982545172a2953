import * as crypto from "node:crypto";
import * as pulumi from "@pulumi/pulumi";
import { Settings, archiveName, expandUrl } from "./config";
import { Secrets } from "./stackConfig";
import { hostParams, s3Params, sshConnection } from "./connection";
import { renderSecretsStdin } from "./hostScripts";
import { familyOf, ReleaseFamily, ServiceConfig } from "./releases";
import { Preflight } from "./preflight";
import { Restore } from "./restore";
import { BackupRecord, appendBackup, resolveRestore } from "./backupLedger";
import { Backup, backupModeOf } from "./backup";
import { Offsite } from "./offsite";
import { BackupBucket } from "./backupBucket";
import { Migrate } from "./migrate";
import { BinaryDeployment } from "./binaryDeployment";
import { CONTAINER_DB_PATH, ContainerDeployment, ContainerImage } from "./containerDeployment";
import { HealthCheck } from "./healthCheck";
import { DataSnapshot } from "./dataSnapshot";
import { Finalize } from "./finalize";
import { ServiceProbe } from "./serviceProbe";

export interface ProgressDbArgs {
  settings: Settings;
  secrets: Secrets;
  /** The stack name; part of every backup key. */
  stack: string;
  /** The version this stack last deployed (its own `version` output), if any. */
  deployedVersion?: string;
  /**
   * The version the current upgrade comes from: the deployed one while the config names another, and
   * after the upgrade the stack's `previousVersion`, so a re-run sees the same inputs. The data
   * snapshot reads that version's API, and the continuity gate names it.
   */
  fromVersion?: string;
  /** The stack's last `keptData` output: carried on until a new migration keeps other data. */
  previousKeptData?: KeptData;
  /** The stack's ledger of verified backups from its last outputs: carried on, with this update's backup appended. */
  backupLedger?: BackupRecord[];
  /**
   * A fleet: what the first step that stops this instance must wait for — every instance's preflight
   * (nothing stops before all are known good) and the instance before it in the rollout.
   */
  stopAfter?: Promise<pulumi.Resource[]>;
  /** A fleet's first instance: the smoke test is mandatory (with an API key), and it bakes this long before the next starts. */
  canary?: { bakeSeconds: number };
  /** A fleet: the rollout's order and what a failure here leaves where, appended to a failed health check. */
  fleetNote?: string;
}

/** Data a migration kept beside the migrated data dir, for a rollback across the data format. */
export interface KeptData {
  path: string;
  /** The version whose data it is. */
  version: string;
  /** When it was kept: writes after that are not in it. */
  at: string;
}

/** The service's config for a release family, rendered from stack settings and secrets (a secret Output). */
export function serviceConfig(s: Settings, secrets: Secrets, listenAddr: string, dbPath: string): pulumi.Output<ServiceConfig> {
  const key = (k: keyof Secrets) => secrets[k] ?? pulumi.output("");
  return pulumi
    .all([key("apiKey"), key("frontendApiKey"), key("adminApiKey"), key("signingKey"), key("kmsMasterKeyHex")])
    .apply(([backend, frontend, admin, signing, kms]) => ({
      listenAddr,
      dbPath,
      keys: { backend: [backend].filter(Boolean), frontend: [frontend].filter(Boolean), admin: [admin].filter(Boolean), signing: [signing].filter(Boolean) },
      rateLimit: s.service.rateLimit,
      maxPayloadSize: s.service.maxPayloadSize,
      encryptFields: s.service.encryptFields,
      kmsMasterKeyHex: s.kms.mode === "embedded" && kms !== "" ? kms : undefined,
      logLevel: s.service.logLevel,
    }));
}

function digest(text: string): string {
  return crypto.createHash("sha256").update(text).digest("hex").slice(0, 16);
}

/**
 * One ProgressDB instance: Preflight → DataSnapshot → Backup → (Migrate) →
 * Deployment → HealthCheck → Finalize, in that order. A version change (or a
 * restore request) runs the whole chain; a change of the service's own
 * settings re-runs the deployment (a restart with the version proof) and the
 * checks after it; anything else runs nothing that stops the service.
 */
export class ProgressDb extends pulumi.ComponentResource {
  public readonly version: pulumi.Output<string>;
  public readonly previousVersion: pulumi.Output<string>;
  public readonly backupUri: pulumi.Output<string>;
  public readonly backupSha256: pulumi.Output<string>;
  public readonly backupSize: pulumi.Output<number>;
  /** The verified backups this stack took (the newest 50): what a restore resolves and checks against. */
  public readonly backupLedger: pulumi.Output<BackupRecord[]>;
  public readonly healthStatus: pulumi.Output<string>;
  /** How the running version was proved: `/readyz reports "v0.2.1"`, or the listening binary's identity. */
  public readonly versionProof: pulumi.Output<string>;
  /** The data-continuity gate's verdict: "passed", "skipped: …" or "failed". */
  public readonly dataContinuity: pulumi.Output<string>;
  /** Data a migration kept for a rollback: { path, version, at } ("" fields when none). */
  public readonly keptData: pulumi.Output<{ path: string; version: string; at: string }>;
  /** Container mode: the image this version runs (`image:tag` or `image@digest`); "" in binary mode. */
  public readonly imageRef: pulumi.Output<string>;
  /** Container mode: the image the previous version ran, kept on the host for a rollback; "" otherwise. */
  public readonly previousImageRef: pulumi.Output<string>;
  /** What runs before anything stops (the preflight, and the image pull in container mode): a fleet waits for every instance's. */
  public readonly prepared: pulumi.Resource[];
  /** The last step: the next instance of a fleet starts after it. */
  public readonly done: pulumi.Resource;
  /** What the health check found: a stack's verifiedVersions is made of these. */
  public readonly checks: pulumi.Output<{ status: string; smokeResult: string; continuity: string }>;

  constructor(name: string, args: ProgressDbArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:index:ProgressDb", name, {}, opts);
    const s = args.settings;
    const { secrets } = args;
    const version = s.version;
    const family: ReleaseFamily = familyOf(version);
    const from = args.fromVersion ?? "";
    const fromFamily = from ? familyOf(from) : family;
    const deployedFamily = args.deployedVersion ? familyOf(args.deployedVersion) : family;
    // Drift detection: every preview and up looks at the live service; when the configured
    // version is not the one answering (stopped outside Pulumi, or the continuity gate reverted
    // the last upgrade), the probe gets a new epoch and the chain below runs again.
    const probe = new ServiceProbe(
      `${name}-probe`,
      { url: s.health.url, expectedVersion: version, versionProofMode: family.versionProof, headers: s.health.headers, caCertPem: s.health.caCertPem },
      { parent: this },
    );
    // One backup (and migration) per upgrade: a restore at the same version does not take another.
    const runKey = pulumi.interpolate`${version}.${probe.epoch}`;
    const connection = sshConnection(s.deployment.host, secrets.sshPrivateKey ?? "");
    const host = hostParams(s);
    const s3 = s.backup.enabled ? s3Params(s) : undefined;
    const s3Stdin = pulumi
      .all([secrets.s3AccessKeyId, secrets.s3SecretAccessKey])
      .apply(([awsAccessKeyId, awsSecretAccessKey]) => renderSecretsStdin({ awsAccessKeyId, awsSecretAccessKey }));
    const container = s.deployment.container;
    const managedConfig = container !== undefined || !host.configFile;
    // In a container the service listens on the internal port and keeps its data under the /data mount.
    const [listenAddr, dbPath] = container ? [`0.0.0.0:${container.ports[0]?.internal ?? 8080}`, CONTAINER_DB_PATH] : [host.listenAddr, host.dbPath];
    const rendered = managedConfig ? serviceConfig(s, secrets, listenAddr, dbPath).apply((c) => family.renderConfig(c)) : pulumi.output("");
    const serviceStdin = pulumi.secret(rendered.apply((text) => renderSecretsStdin(text ? { serviceConfig: text } : {})));
    // A change of the service's own settings restarts it (no backup): the digest is secret, as the config is.
    const settingsDigest = pulumi.secret(rendered.apply((text) => digest(`${text}\n${host.configFile ?? ""}\n${host.listenAddr}\n${host.serviceName}\n${host.serviceUser ?? ""}`)));
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
              objectLockDays: s.backup.objectLockDays,
              accessKeyId: secrets.s3AccessKeyId,
              secretAccessKey: secrets.s3SecretAccessKey,
            },
            child,
          )
        : undefined;
    const afterBucket = bucket ? [bucket] : [];

    // 1. Everything checkable before anything stops: tools, disk, S3, the verified
    //    archive (and prgcli when the data must be migrated), the data layout.
    const binary = s.deployment.binary;
    const crossing = deployedFamily.dataLayout !== family.dataLayout;
    // Present for every release of a family that ships a migration tool: it migrates only data it finds
    // in the old layout, so the step is stable across that family's releases (no spurious diffs).
    const tool = family.migrationTool;
    if (crossing) {
      pulumi.log.info(
        family.migrationTool
          ? `${args.deployedVersion} → ${version} crosses the data format (${deployedFamily.name}.x → ${family.name}.x): the data is migrated offline with prgcli ${version}, and the ${args.deployedVersion} data is kept beside it`
          : `${args.deployedVersion} → ${version} goes back across the data format: ${version} runs on the data kept when ${args.deployedVersion} was installed`,
        this,
      );
    }
    const preflight = new Preflight(
      `${name}-preflight`,
      {
        connection,
        host,
        version,
        runKey,
        artifactUrl: s.deployment.mode === "binary" ? expandUrl(binary.artifactUrl, version, binary.arch) : "",
        checksumsUrl: expandUrl(binary.checksumsUrl, version, binary.arch),
        archiveName: archiveName(version, binary.arch),
        sha256: binary.sha256,
        minFreeMb: binary.minFreeMb,
        targetLayout: family.dataLayout,
        migrationTool: tool && { url: expandUrl(binary.artifactUrl, version, binary.arch).replace(/[^/]+$/, tool.archiveName(version, binary.arch)), archiveName: tool.archiveName(version, binary.arch) },
        operatorConfig: host.configFile ? family.operatorConfig : undefined,
        s3,
        checkBucketSettings: !s.backup.createBucket,
        supersedeOlderBackupsOf: s.backup.createBucket ? args.stack : undefined,
        backupMode: backupModeOf(s),
        stdin: s3Stdin,
      },
      { ...child, dependsOn: [...afterBucket, probe] },
    );
    const image =
      s.deployment.mode === "container"
        ? new ContainerImage(`${name}-image`, { container: s.deployment.container!, version, tag: family.imageTag(version) }, { ...child, dependsOn: [preflight] })
        : undefined;
    const prepared: pulumi.Resource[] = image ? [preflight, image] : [preflight];
    this.prepared = prepared;
    const stopAfter = args.stopAfter;
    const afterPrepared = (...more: pulumi.Resource[]): pulumi.Input<pulumi.Resource[]> =>
      stopAfter ? stopAfter.then((after) => [...prepared, ...after, ...more]) : [...prepared, ...more];

    // 2. What the running version serves, read through its API before anything stops.
    // Off for a restore, and for a rollback onto the data a migration kept (its later writes are
    // knowingly left behind: the guard said so).
    const rollbackOntoKeptData = fromFamily.dataLayout !== family.dataLayout && !family.migrationTool;
    const continuityOn = s.health.dataContinuity && secrets.adminApiKey !== undefined && !s.restore.backup && !rollbackOntoKeptData;
    const snapshot = continuityOn
      ? new DataSnapshot(
          `${name}-snapshot`,
          {
            url: s.health.url,
            dialect: fromFamily.dialect,
            version: runKey,
            apiKey: secrets.apiKey,
            adminApiKey: secrets.adminApiKey,
            headers: s.health.headers,
            caCertPem: s.health.caCertPem,
            requestTimeoutSeconds: s.health.requestTimeoutSeconds,
          },
          { ...child, dependsOn: afterPrepared() },
        )
      : undefined;
    const beforeBackup = snapshot ? afterPrepared(snapshot) : afterPrepared();

    // 3. The backup: a warm snapshot (binary mode), or streamed to S3 with the service stopped.
    const backup = s3
      ? new Backup(
          `${name}-backup`,
          { connection, host, version, runKey, stack: args.stack, s3, mode: backupModeOf(s), minFreeMb: binary.minFreeMb, stdin: s3Stdin },
          { ...child, dependsOn: beforeBackup },
        )
      : undefined;
    // The backup in S3, verified: a snapshot is uploaded once the service runs again. It depends on
    // the backup alone, so it runs beside the migration and the install and ends (in state) even
    // when they fail; finalize waits for it.
    const offsite = backup && s3 ? new Offsite(`${name}-offsite`, { connection, host, version, runKey, stack: args.stack, s3, stdin: s3Stdin }, { ...child, dependsOn: [backup] }) : undefined;

    // The ledger of verified backups, this update's own appended (in state even when the update that took it failed).
    const ledger = args.backupLedger ?? [];
    this.backupLedger = offsite
      ? pulumi
          .all([offsite.uri, offsite.sha256, offsite.fromVersion, offsite.at])
          .apply(([uri, sha256, fromVersion, at]) => (uri ? appendBackup(ledger, { uri, sha256, fromVersion, toVersion: version, at }) : ledger))
      : pulumi.output(ledger);

    // 3b. A requested restore puts a backup in place of the data (the data it replaces is moved aside),
    // resolved through the ledger: the download must have the sha256 this stack recorded.
    const request = s.restore.backup;
    const restore = request
      ? new Restore(
          `${name}-restore`,
          { connection, host, request, source: restoreSource(s, args.stack, ledger, this.backupLedger), version, s3: s3Params(s), healthUrl: s.health.url, stdin: s3Stdin },
          { ...child, dependsOn: backup ? [backup] : beforeBackup },
        )
      : undefined;
    const afterBackup: pulumi.Input<pulumi.Resource[]> = restore ? [restore] : backup ? [backup] : beforeBackup;

    // 3c. Crossing the data format: the offline migration, old data kept.
    const migrate = tool
      ? new Migrate(
          `${name}-migrate`,
          {
            connection,
            host,
            version,
            runKey,
            toolArchive: `${host.installDir}/staging/${version}/${tool.archiveName(version, binary.arch)}`,
            healthUrl: s.health.url,
            expectThreads: snapshot?.sample.apply((x) => (x.available ? x.threadsListed : undefined)),
            expectMessages: snapshot?.sample.apply((x) => (x.available ? x.stats.messages : undefined)),
            stdin: s3Stdin,
          },
          { ...child, dependsOn: afterBackup },
        )
      : undefined;
    const beforeInstall = migrate ? [migrate] : afterBackup;

    // 4. The new version.
    let deployment: BinaryDeployment | ContainerDeployment;
    if (s.deployment.mode === "binary") {
      deployment = new BinaryDeployment(
        `${name}-deploy`,
        {
          connection,
          host,
          version,
          archiveName: archiveName(version, binary.arch),
          keepReleases: binary.keepReleases,
          healthUrl: s.health.url,
          autoRevertSeconds: s.health.autoRevert ? s.health.timeoutSeconds : 0,
          targetLayout: family.dataLayout,
          fleetNote: args.fleetNote,
          stdin: serviceStdin,
          serviceStoppedBy: backup?.runId,
          settingsDigest,
          runKey,
        },
        { ...child, dependsOn: beforeInstall },
      );
    } else {
      deployment = new ContainerDeployment(
        `${name}-deploy`,
        {
          connection,
          host,
          container: container!,
          image: image!,
          version,
          configText: pulumi.secret(rendered),
          settingsDigest,
          tagOf: (v) => familyOf(v).imageTag(v),
          // A re-run at the same version (a drift repair) backs up "from" that version: the
          // previous version is still the one the upgrade came from.
          previousVersion: backup?.fromVersion.apply((f) => (f && f !== version ? f : from)),
          serviceStoppedBy: backup?.runId,
        },
        { ...child, dependsOn: beforeInstall },
      );
    }

    // 5. Proof that the new version is the one answering, and serves the old data.
    const restoreRun = restore ? pulumi.interpolate`+${restore.restoreId}` : "";
    const health = new HealthCheck(
      `${name}-health`,
      {
        url: s.health.url,
        expectedVersion: version,
        deploymentId: pulumi.interpolate`${deployment.deploymentId}${restoreRun}`,
        versionProof: family.versionProof,
        hostProof: deployment.proof,
        dialect: family.dialect,
        timeoutSeconds: s.health.timeoutSeconds,
        intervalSeconds: s.health.intervalSeconds,
        requestTimeoutSeconds: s.health.requestTimeoutSeconds,
        headers: s.health.headers,
        caCertPem: s.health.caCertPem,
        smokeTest: s.health.smokeTest || (args.canary !== undefined && secrets.apiKey !== undefined),
        bakeSeconds: args.canary?.bakeSeconds || undefined,
        fleetNote: args.fleetNote,
        apiKey: secrets.apiKey,
        adminApiKey: secrets.adminApiKey,
        // Only when this update changed the running version: a restart on a new config compares
        // nothing (the baseline is from before the last upgrade, and the data has moved on since).
        dataContinuity: continuityOn ? deployment.switched : false,
        baseline: snapshot?.sample,
        baselineVersion: from,
      },
      { ...child, dependsOn: [deployment] },
    );

    // 6. Commit, or revert when the new version does not serve the old data.
    const finalize = new Finalize(
      `${name}-finalize`,
      {
        connection,
        host,
        version,
        previousVersion: deployment.previousVersion,
        continuity: health.continuity,
        finding: health.continuityMessage,
        healthUrl: s.health.url,
        checkRunId: health.runId,
        stdin: "",
      },
      { ...child, dependsOn: offsite ? [health, offsite] : [health] },
    );

    // The configured version, once the health check proved it and the finalize step committed it.
    this.version = pulumi.all([finalize.version, health.reportedVersion]).apply(([committed]) => committed);
    this.previousVersion = deployment.previousVersion;
    this.backupUri = offsite?.uri ?? pulumi.output("");
    this.backupSha256 = offsite?.sha256 ?? pulumi.output("");
    this.backupSize = offsite?.size ?? pulumi.output(0);
    this.healthStatus = pulumi.all([finalize.version, health.status]).apply(([, status]) => status);
    this.versionProof = health.versionProof;
    this.dataContinuity = health.continuity;
    const none = { path: "", version: "", at: "" };
    // A rollback across the format runs on the kept data: it is no longer kept.
    const carried = crossing && !family.migrationTool ? none : (args.previousKeptData ?? none);
    this.keptData = migrate
      ? pulumi.all([migrate.keptDir, migrate.keptFor, migrate.migratedAt]).apply(([path, v, at]) => (path ? { path, version: v, at } : carried))
      : pulumi.output(carried);
    const containerDeployment = deployment instanceof ContainerDeployment ? deployment : undefined;
    this.imageRef = containerDeployment?.imageRef ?? pulumi.output("");
    this.previousImageRef = containerDeployment?.previousImageRef ?? pulumi.output("");
    this.done = finalize;
    this.checks = pulumi.all([finalize.version, health.status, health.smokeResult, health.continuity]).apply(([, status, smokeResult, continuity]) => ({ status, smokeResult, continuity }));
    this.registerOutputs({
      version: this.version,
      previousVersion: this.previousVersion,
      backupUri: this.backupUri,
      backupSha256: this.backupSha256,
      backupSize: this.backupSize,
      backupLedger: this.backupLedger,
      healthStatus: this.healthStatus,
      versionProof: this.versionProof,
      dataContinuity: this.dataContinuity,
      keptData: this.keptData,
      imageRef: this.imageRef,
      previousImageRef: this.previousImageRef,
    });
  }
}

/**
 * The restore request resolved through the ledger of the last update's outputs; failing that, through
 * the one with this update's backup appended (a backup whose update failed is only in state). A
 * refusal fails the update before the restore runs.
 */
function restoreSource(s: Settings, stack: string, previous: BackupRecord[], withThisBackup: pulumi.Output<BackupRecord[]>): pulumi.Input<{ uri: string; sha256: string }> {
  const known = resolveRestore(s, stack, previous);
  if (known && !("refusal" in known)) return { uri: known.uri, sha256: known.sha256 };
  return withThisBackup.apply((ledger) => {
    const source = resolveRestore(s, stack, ledger);
    if (!source || "refusal" in source) throw new pulumi.RunError(source?.refusal ?? "no restore was requested");
    return { uri: source.uri, sha256: source.sha256 };
  });
}
