/**
 * What the container-mode e2e needs from a container engine, whichever it is
 * (podman's Docker-compatible API in ./podman.ts, Debian's dockerd in
 * ./dockerd.ts), and the ProgressDB image both build: the stand-in shaped like
 * the real images (releases-as-built.md §2, goreleaser.Dockerfile): user
 * `progressdb` uid/gid 1000, WORKDIR /home/progressdb (its home, owned by it),
 * ENTRYPOINT /usr/local/bin/progressdb, VOLUME /data, port 8080, and the
 * release's own CMD (0.1.x `--db /data/progressdb`, 0.2.x `--config
 * /data/config.yaml`); tagged as the real ones: `v<version>` (and `<version>`
 * for 0.1.x only). Differences: `FROM scratch` with the static stand-in instead
 * of debian:bookworm-slim, hence no shell, no curl and no HEALTHCHECK.
 */
import type { ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { buildStandin, isV2, type BuildSpec } from "../fixtures/releases";
import type { RunResult } from "../fixtures/net";

export const IMAGE = "docker.io/progressdb/progressdb";

export interface ContainerEngine {
  kind: "podman" | "dockerd";
  /** unix:///…: the provider's `dockerHost`, and DOCKER_HOST for the docker CLI the host scripts run. */
  dockerHost: string;
  /** Runs the engine's CLI (podman, or docker against this dockerd) on this instance. */
  cli(args: string[], opts?: { timeoutMs?: number }): Promise<RunResult>;
  /** Starts the engine's CLI (stdout/stderr piped), for long-running commands such as `logs -f`. */
  spawn(args: string[]): ChildProcess;
  /** Builds the stand-in for `spec` into an image shaped like the real one, tagged as the real one ({@link imageTags}). */
  buildImage(spec: BuildSpec): Promise<string>;
  /** The IMAGE:<tag> references present locally, sorted. */
  localTags(): Promise<string[]>;
  /** The exit codes the engine recorded for container `id` dying since `since` (ISO time). */
  diedExitCodes(id: string, since: string): Promise<string[]>;
  stop(): Promise<void>;
}

/** The tags the real image of `version` has: `v<version>`, and `<version>` too for 0.1.x (releases-as-built.md §2). */
export function imageTags(version: string): string[] {
  return isV2(version) ? [`v${version}`] : [`v${version}`, version];
}

/** The real CMD of a release's image: 0.1.x `--db /data/progressdb`, 0.2.x `--config /data/config.yaml`. */
export function realCmd(version: string): string[] {
  return isV2(version) ? ["--config", "/data/config.yaml"] : ["--db", "/data/progressdb"];
}

/** Writes the build context of the stand-in image for `spec` into `ctx` (a Containerfile, also named Dockerfile); returns its version. */
export async function writeImageContext(spec: BuildSpec, ctx: string): Promise<string> {
  const version = typeof spec === "string" ? spec : spec.version;
  fs.mkdirSync(path.join(ctx, "home"), { recursive: true });
  await buildStandin(spec, path.join(ctx, "progressdb"));
  fs.writeFileSync(path.join(ctx, "passwd"), "root:x:0:0:root:/root:/sbin/nologin\nprogressdb:x:1000:1000::/home/progressdb:/sbin/nologin\n");
  fs.writeFileSync(path.join(ctx, "group"), "root:x:0:\nprogressdb:x:1000:\n");
  fs.writeFileSync(path.join(ctx, "home", ".profile"), "");
  const file = [
    "# written by tests/container/engine.ts: the real image's layout on the stand-in binary",
    "FROM scratch",
    "COPY passwd group /etc/",
    "COPY --chown=1000:1000 home /home/progressdb",
    "COPY progressdb /usr/local/bin/progressdb",
    "USER progressdb",
    "WORKDIR /home/progressdb",
    'VOLUME ["/data"]',
    "EXPOSE 8080",
    'ENTRYPOINT ["/usr/local/bin/progressdb"]',
    `CMD ${JSON.stringify(realCmd(version))}`,
    "",
  ].join("\n");
  fs.writeFileSync(path.join(ctx, "Containerfile"), file);
  fs.writeFileSync(path.join(ctx, "Dockerfile"), file);
  return version;
}

/**
 * Proves a container can actually run on `e` (not only that the engine is installed): runs one
 * from `image` and removes it. Returns the exact error when it cannot.
 */
export async function probeRun(e: ContainerEngine, image: string): Promise<string | undefined> {
  const r = await e.cli(["run", "--rm", "--network", "none", image, "--version"], { timeoutMs: 60_000 });
  // The stand-in has no --version flag: any exit from the process itself proves the runtime works.
  if (/OCI|crun|runc|cgroup|setrlimit|permission denied|Error response from daemon/i.test(r.stderr)) return r.stderr.trim();
  return undefined;
}
