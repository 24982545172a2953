import * as pulumi from "@pulumi/pulumi";
import * as docker from "@pulumi/docker";
import { Settings } from "./config";

type ContainerSettings = NonNullable<Settings["deployment"]["container"]>;

/** Where the host's data dir is mounted, and the flags the container runs with. */
export const CONTAINER_DATA_DIR = "/data";
export const CONTAINER_DB_PATH = "/data/progressdb";

/** `image:version`, or `image@digest` when a digest pins it. */
export function imageRef(c: ContainerSettings, version: string): string {
  return c.digest ? `${c.image}@${c.digest}` : `${c.image}:${version}`;
}

export interface ContainerImageArgs {
  container: ContainerSettings;
  version: string;
}

/**
 * Pulls the pinned image before anything is stopped. Kept on the host when a
 * newer one replaces it, so reverting the version needs no registry.
 */
export class ContainerImage extends pulumi.ComponentResource {
  public readonly provider: docker.Provider;
  public readonly ref: pulumi.Output<string>;
  public readonly imageId: pulumi.Output<string>;

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
    this.registerOutputs({ ref: this.ref, imageId: this.imageId });
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
}

/**
 * The ProgressDB container on the pulled image, with the same data mount,
 * ports, env and restart policy on every version. A version change replaces
 * it (delete first: the name is fixed); the previous image stays on the host.
 */
export class ContainerDeployment extends pulumi.ComponentResource {
  public readonly version: pulumi.Output<string>;
  public readonly deploymentId: pulumi.Output<string>;
  public readonly imageRef: pulumi.Output<string>;

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
        healthcheck: {
          tests: ["CMD-SHELL", "wget -qO- http://127.0.0.1:8080/healthz || exit 1"],
          interval: "10s",
          timeout: "3s",
          retries: 3,
          startPeriod: "20s",
        },
        labels: [{ label: "progressdb.version", value: args.version }],
      },
      { parent: this, provider: args.image.provider, deleteBeforeReplace: true, dependsOn: opts?.dependsOn },
    );
    this.version = pulumi.output(args.version);
    this.deploymentId = container.id;
    this.imageRef = args.image.ref;
    this.registerOutputs({ version: this.version, deploymentId: this.deploymentId, imageRef: this.imageRef });
  }
}
