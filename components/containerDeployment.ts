import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { Settings } from "./config";

type ContainerSettings = NonNullable<Settings["deployment"]["container"]>;

/** Where the host's data dir is mounted, and the flags the container runs with. */
export const CONTAINER_DATA_DIR = "/data";
export const CONTAINER_DB_PATH = "/data/progressdb";
/** The label every container of ours carries: the ProgressDB version it runs (read by the host scripts). */
export const VERSION_LABEL = "progressdb.version";
/** The label holding the run of the backup that stopped the previous container (a new one re-creates it). */
export const BACKUP_RUN_LABEL = "progressdb.backup-run";
/** The label holding the image reference the container was created from. */
export const IMAGE_LABEL = "progressdb.image";

/** `image:version`, or `image@digest` when a digest pins it. */
export function imageRef(c: Pick<ContainerSettings, "image" | "digest">, version: string): string {
  return c.digest ? `${c.image}@${c.digest}` : `${c.image}:${version}`;
}

/**
 * The image the previous version ran on, for the rollback note in the outputs:
 * `image:<previous version>` ("" on a first deploy, or when the previous version
 * is unknown or the same). A digest pins only the current version, so the
 * previous one is named by its tag.
 */
export function previousImageRef(c: Pick<ContainerSettings, "image">, version: string, previousVersion: string | undefined): string {
  const prev = (previousVersion ?? "").trim();
  if (prev === "" || prev === "unknown" || prev === version) return "";
  return `${c.image}:${prev}`;
}

export interface ContainerImageArgs {
  container: ContainerSettings;
  version: string;
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
      { name: imageRef(args.container, args.version), keepLocally: true },
      { parent: this, provider: this.provider, dependsOn: opts?.dependsOn },
    );
    this.ref = image.name;
    this.imageId = image.imageId;
    this.repoDigest = image.repoDigest.apply((d) => d ?? "");
    this.registerOutputs({ ref: this.ref, imageId: this.imageId, repoDigest: this.repoDigest });
  }
}

export interface ContainerDeploymentArgs {
  container: ContainerSettings;
  image: ContainerImage;
  version: string;
  /** Host directory bind-mounted at /data (the db lives in /data/progressdb, config at /data/config.yaml). */
  hostDataDir: string;
  /** Embedded-KMS master key, passed as container env (a secret). */
  kmsMasterKeyHex?: pulumi.Input<string>;
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
 * and its data stays on the host bind mount. If the create or start of the new
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
  /** The container name on the host (for `docker logs`, `docker stop`). */
  public readonly containerName: pulumi.Output<string>;

  constructor(name: string, args: ContainerDeploymentArgs, opts?: pulumi.ComponentResourceOptions) {
    super("progressdb:deploy:ContainerDeployment", name, {}, opts);
    const c = args.container;
    const plainEnv = Object.entries(c.env).map(([k, v]) => `${k}=${v}`);
    const envs = args.kmsMasterKeyHex
      ? pulumi.secret(pulumi.output(args.kmsMasterKeyHex).apply((key) => [...plainEnv, `PROGRESSDB_KMS_MASTER_KEY_HEX=${key}`]))
      : plainEnv;
    const container = new docker.Container(
      `${name}-container`,
      {
        name: c.name,
        image: args.image.imageId,
        command: ["--db", CONTAINER_DB_PATH, "--addr", "0.0.0.0:8080"],
        envs,
        ports: c.ports.map((p) => ({ internal: p.internal, external: p.external })),
        volumes: [{ hostPath: args.hostDataDir, containerPath: CONTAINER_DATA_DIR }],
        restart: c.restart,
        healthcheck:
          c.healthcheck.length > 0 ? { tests: c.healthcheck, interval: "10s", timeout: "3s", retries: 3, startPeriod: "20s" } : undefined,
        labels: [
          { label: VERSION_LABEL, value: args.version },
          { label: IMAGE_LABEL, value: imageRef(c, args.version) },
          { label: BACKUP_RUN_LABEL, value: args.serviceStoppedBy ?? "" },
        ],
      },
      { parent: this, provider: args.image.provider, deleteBeforeReplace: true, dependsOn: opts?.dependsOn },
    );
    this.version = pulumi.output(args.version);
    this.deploymentId = container.id;
    this.imageRef = args.image.ref;
    this.imageId = args.image.imageId;
    this.previousImageRef = pulumi.output(args.previousVersion ?? "").apply((prev) => previousImageRef(c, args.version, prev));
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
