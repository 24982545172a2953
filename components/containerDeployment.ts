import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { Settings } from "./config";
import { HostParams, renderConfigureScript } from "./hostScripts";
import { HostAccess, hostCommand, scriptResult } from "./hostCommand";

type ContainerSettings = NonNullable<Settings["deployment"]["container"]>;

/** Where the host's data dir (storage.dbPath) is mounted in the container (the images' VOLUME). */
export const CONTAINER_DATA_DIR = "/data";
/** The database inside the mount, as the real 0.1.2 image's CMD has it (`--db /data/progressdb`). */
export const CONTAINER_DB_SUBDIR = "progressdb";
export const CONTAINER_DB_PATH = `${CONTAINER_DATA_DIR}/${CONTAINER_DB_SUBDIR}`;
/** The user the real images run as (uid/gid 1000, `progressdb`): the mount must be theirs. */
export const CONTAINER_UID = 1000;
/** Seconds between SIGTERM and SIGKILL when the container is stopped or replaced, unless host.stopTimeoutSeconds says otherwise (0.2.x drains in at most 20 s). */
export const DEFAULT_STOP_TIMEOUT = 30;
/** The label every container of ours carries: the ProgressDB version it runs (read by the host scripts). */
export const VERSION_LABEL = "progressdb.version";
/** The label holding the run of the backup that stopped the previous container (a new one re-creates it). */
export const BACKUP_RUN_LABEL = "progressdb.backup-run";
/** The label holding the digest of the config the container was created with (a new one re-creates it). */
export const SETTINGS_LABEL = "progressdb.settings";
/** The label holding the image reference the container was created from. */
export const IMAGE_LABEL = "progressdb.image";

/** The database dir on the host: `<mount>/progressdb`, seen as /data/progressdb in the container. */
export function hostDbPath(mount: string): string {
  return `${mount.replace(/\/+$/, "")}/${CONTAINER_DB_SUBDIR}`;
}

/** The host directory mounted at /data, from the database dir the host steps use (see {@link hostDbPath}). */
export function dataMountOf(dbPath: string): string {
  const suffix = `/${CONTAINER_DB_SUBDIR}`;
  if (!dbPath.endsWith(suffix) || dbPath.length === suffix.length) {
    throw new Error(`container mode: the host steps' dbPath must be <storage.dbPath>${suffix}, got ${JSON.stringify(dbPath)}`);
  }
  return dbPath.slice(0, -suffix.length);
}

/** `image:tag` (the release family's tag for the version, e.g. `v0.2.1`), or `image@digest` when a digest pins it. */
export function imageRef(c: Pick<ContainerSettings, "image" | "digest">, tag: string): string {
  return c.digest ? `${c.image}@${c.digest}` : `${c.image}:${tag}`;
}

/**
 * The image the previous version ran on, for the rollback note in the outputs:
 * `image:<previous version>` ("" on a first deploy, or when the previous version
 * is unknown or the same). A digest pins only the current version, so the
 * previous one is named by its tag.
 */
export function previousImageRef(c: Pick<ContainerSettings, "image">, version: string, previousVersion: string | undefined, tagOf: (v: string) => string): string {
  const prev = (previousVersion ?? "").trim();
  if (prev === "" || prev === "unknown" || prev === version) return "";
  return `${c.image}:${tagOf(prev)}`;
}

export interface ContainerImageArgs {
  container: ContainerSettings;
  version: string;
  /** The image tag of the version (the real images are tagged `v<version>`). */
  tag: string;
}

/**
 * Pulls the pinned image before anything is stopped. Kept on the host when a
 * newer one replaces it (`keepLocally`), so reverting the version needs no
 * registry: the next `pulumi up` finds the old image locally.
 */
export class ContainerImage extends pulumi.ComponentResource {
  public readonly provider: docker.Provider;
  /** The reference pulled: `image:version` or `image@digest`. */
  public readonly ref: pulumi.Output<string>;
  /** The local image id (`sha256:…`) the container is created from. */
  public readonly imageId: pulumi.Output<string>;
  /** `repo@sha256:…` when the daemon knows the registry digest, else "". */
  public readonly repoDigest: pulumi.Output<string>;

  constructor(name: string, args: ContainerImageArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:deploy:ContainerImage", name, {}, opts);
    this.provider = new docker.Provider(`${name}-docker`, { host: args.container.dockerHost }, { parent: this });
    const image = new docker.RemoteImage(
      `${name}-pull`,
      { name: imageRef(args.container, args.tag), keepLocally: true },
      { parent: this, provider: this.provider, dependsOn: opts?.dependsOn },
    );
    this.ref = image.name;
    this.imageId = image.imageId;
    this.repoDigest = image.repoDigest.apply((d) => d ?? "");
    this.registerOutputs({ ref: this.ref, imageId: this.imageId, repoDigest: this.repoDigest });
  }
}

export interface ContainerDeploymentArgs extends Omit<HostAccess, "stdin"> {
  container: ContainerSettings;
  image: ContainerImage;
  version: string;
  /**
   * The host's paths, as the host steps use them: `dbPath` is the database dir
   * `<storage.dbPath>/progressdb` ({@link hostDbPath}); its parent is bind-mounted
   * at /data and holds the config file (/data/config.yaml).
   */
  host: HostParams;
  /** The rendered service config (a secret): written to /data/config.yaml, never into the container's environment. */
  configText: pulumi.Input<string>;
  /** Digest of the config: a change re-creates the container on the new config. */
  settingsDigest: pulumi.Input<string>;
  /** The image tag of a version, for `previousImageRef`. */
  tagOf: (version: string) => string;
  /**
   * The version the host ran before this deployment (the Backup's `fromVersion`),
   * for the `previousImageRef` output. Defaults to "" (unknown: no previous image named).
   */
  previousVersion?: pulumi.Input<string>;
  /**
   * The run of the backup, which stopped the container. A new run re-creates
   * the container even at the same image, so a re-run backup never leaves the
   * service stopped.
   */
  serviceStoppedBy?: pulumi.Input<string>;
}

/**
 * The ProgressDB container on the pulled image, with the same data mount,
 * ports, env and restart policy on every version.
 *
 * Replacement: a version change gives a new image id, so the container is
 * replaced, delete first (`deleteBeforeReplace`: its name is fixed, two cannot
 * coexist). The old container is already stopped by then (the Backup stops it)
 * and its data stays on the host bind mount. A replacement without a backup
 * (a config change) stops the running container with SIGTERM and waits up to
 * the stop timeout (`destroyGraceSeconds`) before it is removed, never SIGKILL
 * at once. `pulumi destroy` leaves the container running (`deletedWith` the
 * docker provider, which the destroy deletes too): taking the database down is
 * a `docker stop` the operator runs, not a side effect. If the create or start of the new
 * one fails, the old container is gone but nothing a rollback needs is: the
 * previous image is still on the host (`keepLocally`) and the data dir is
 * untouched, so reverting `progressdb:version` and running `pulumi up` again
 * creates the container on the previous image without a registry.
 */
export class ContainerDeployment extends pulumi.ComponentResource {
  public readonly version: pulumi.Output<string>;
  /** The container id; changes on every replacement (the HealthCheck re-runs on it). */
  public readonly deploymentId: pulumi.Output<string>;
  /** The image reference this version runs (`image:version` or `image@digest`). */
  public readonly imageRef: pulumi.Output<string>;
  /** The local image id (`sha256:…`) the container was created from. */
  public readonly imageId: pulumi.Output<string>;
  /** The image the previous version ran (kept on the host); "" when there was none. */
  public readonly previousImageRef: pulumi.Output<string>;
  /** The version the host ran before ("" when unknown). */
  public readonly previousVersion: pulumi.Output<string>;
  /** This deployment changes the running version (an upgrade, not a restart on a new config). */
  public readonly switched: pulumi.Output<boolean>;
  /** What runs: the container, its image and version label (the version proof where the release has no /readyz). */
  public readonly proof: pulumi.Output<string>;
  /** The container name on the host (for `docker logs`, `docker stop`). */
  public readonly containerName: pulumi.Output<string>;

  constructor(name: string, args: ContainerDeploymentArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:deploy:ContainerDeployment", name, {}, opts);
    const c = args.container;
    const mount = dataMountOf(args.host.dbPath);
    const grace = args.host.stopTimeoutSeconds ?? DEFAULT_STOP_TIMEOUT;
    // The config file goes to the mount root (/data/config.yaml), and the whole mount (the
    // database, a migration's output and the data it kept) is chowned to the image's user.
    const configure = hostCommand(
      `${name}-config`,
      {
        connection: args.connection,
        script: renderConfigureScript({ ...args.host, dbPath: mount }, CONTAINER_UID, args.version),
        stdin: pulumi.output(args.configText).apply((text) => `PDB_SERVICE_CONFIG_B64=${Buffer.from(text, "utf8").toString("base64")}\n`),
        triggers: [args.version, args.settingsDigest, args.serviceStoppedBy ?? ""],
      },
      { parent: this, dependsOn: opts?.dependsOn },
    );
    // The same file beside the release it belongs to, as in binary mode
    // (<installDir>/releases/<version>/config.yaml, 0600, root's): the offline
    // migration of a later upgrade reads the old release's encryption key there
    // (migrate.sh), and by then the mount holds the new version's config.
    const releaseConfig = hostCommand(
      `${name}-release-config`,
      {
        connection: args.connection,
        script: renderConfigureScript({ ...args.host, dbPath: `${args.host.installDir}/releases/${args.version}` }, 0),
        stdin: pulumi.output(args.configText).apply((text) => `PDB_SERVICE_CONFIG_B64=${Buffer.from(text, "utf8").toString("base64")}\n`),
        triggers: [args.version, args.settingsDigest],
      },
      { parent: this, dependsOn: opts?.dependsOn },
    );
    this.switched = scriptResult<{ switching?: boolean }>(configure).apply((r) => r.switching === true);
    const container = new docker.Container(
      `${name}-container`,
      {
        name: c.name,
        image: args.image.imageId,
        // Both families read the rendered file (0.1.x has flags too, but a file keeps one source).
        command: ["--config", `${CONTAINER_DATA_DIR}/config.yaml`],
        envs: Object.entries(c.env).map(([k, v]) => `${k}=${v}`),
        ports: c.ports.map((p) => ({ internal: p.internal, external: p.external })),
        volumes: [{ hostPath: mount, containerPath: CONTAINER_DATA_DIR }],
        restart: c.restart,
        healthcheck:
          c.healthcheck.length > 0 ? { tests: c.healthcheck, interval: "10s", timeout: "3s", retries: 3, startPeriod: "20s" } : undefined,
        // A stop (`docker stop`, the daemon's shutdown) and a replacement give the service its
        // SIGTERM grace: 0.2.x drains its queue and exits 0. The provider's default grace on
        // delete is 0 s: a force remove, i.e. SIGKILL.
        stopSignal: "SIGTERM",
        stopTimeout: grace,
        destroyGraceSeconds: grace,
        labels: [
          { label: VERSION_LABEL, value: args.version },
          { label: IMAGE_LABEL, value: args.image.ref },
          { label: BACKUP_RUN_LABEL, value: args.serviceStoppedBy ?? "" },
          { label: SETTINGS_LABEL, value: args.settingsDigest },
        ],
      },
      {
        parent: this,
        provider: args.image.provider,
        deleteBeforeReplace: true,
        // The docker provider updates a healthcheck change in place (no ForceNew upstream), and
        // that update leaves the running container as it was: replace it, so the new check runs.
        replaceOnChanges: ["healthcheck"],
        dependsOn: [configure, releaseConfig],
        // `pulumi destroy` deletes the provider too: then the container is not deleted, so the
        // database keeps running (and its data stays on the host mount). A replacement (new image,
        // config, ports…) still deletes the old container, with the grace above.
        deletedWith: args.image.provider,
      },
    );
    this.version = pulumi.output(args.version);
    this.deploymentId = container.id;
    this.imageRef = args.image.ref;
    this.imageId = args.image.imageId;
    this.previousImageRef = pulumi.output(args.previousVersion ?? "").apply((prev) => previousImageRef(c, args.version, prev, args.tagOf));
    this.previousVersion = pulumi.output(args.previousVersion ?? "");
    this.proof = pulumi.interpolate`container ${container.name} (${container.id}) runs ${args.image.ref} (${args.image.imageId}), labelled progressdb.version=${args.version}`;
    this.containerName = container.name;
    this.registerOutputs({
      version: this.version,
      deploymentId: this.deploymentId,
      imageRef: this.imageRef,
      imageId: this.imageId,
      previousImageRef: this.previousImageRef,
      containerName: this.containerName,
    });
  }
}
