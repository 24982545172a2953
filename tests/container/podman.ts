/**
 * Test fixture: a rootful podman with its Docker-compatible API socket, on its
 * own storage (a temp dir; the machine's podman storage is never touched), and
 * ProgressDB images built locally from the stand-in, since no image can be
 * pulled from a registry here. They are shaped like the real images
 * (releases-as-built.md §2, goreleaser.Dockerfile): user `progressdb` uid/gid
 * 1000, WORKDIR /home/progressdb (its home, owned by it), ENTRYPOINT
 * /usr/local/bin/progressdb, VOLUME /data, port 8080, and the release's own
 * CMD (0.1.x `--db /data/progressdb`, 0.2.x `--config /data/config.yaml`);
 * tagged as the real ones: `v<version>` (and `<version>` for 0.1.x only: the
 * 0.2.x images have no bare-version tag). Differences: `FROM scratch` with the
 * static stand-in instead of debian:bookworm-slim, hence no shell, no curl and
 * no HEALTHCHECK (the real one runs `curl -fsS …/healthz`).
 *
 * The containers.conf written here makes podman work in this VM: runc (crun
 * refuses the hybrid cgroup v1/v2 layout: "cgroups in hybrid mode not
 * supported, drop all controllers from cgroupv2"), cgroupfs, and default
 * ulimits below the VM's hard limits (the defaults fail with "setrlimit
 * `RLIMIT_NOFILE`: Operation not permitted").
 */
import { spawn, type ChildProcess } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { buildStandin, isV2, type BuildSpec } from "../fixtures/releases";
import { run, stopChild, tempDir, waitFor, which, type RunResult } from "../fixtures/net";

export const IMAGE = "docker.io/progressdb/progressdb";

export interface Podman {
  /**
   * unix:///…/docker.sock — the provider's `dockerHost`, and DOCKER_HOST for the docker CLI: podman's
   * API behind {@link startDockerFaithfulProxy} (HostIp 0.0.0.0 means all interfaces, as on Docker).
   */
  dockerHost: string;
  /** podman's own API socket. */
  socket: string;
  /** Runs the podman CLI on this instance's storage. */
  cli(args: string[], opts?: { timeoutMs?: number }): Promise<RunResult>;
  /** Starts the podman CLI on this instance's storage (stdout/stderr piped), for long-running commands such as `logs -f`. */
  spawn(args: string[]): ChildProcess;
  /** Builds the stand-in for `spec` into an image shaped like the real one, tagged as the real one ({@link imageTags}). */
  buildImage(spec: BuildSpec): Promise<string>;
  /** The IMAGE:<tag> references present locally, sorted. */
  localTags(): Promise<string[]>;
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

/** The Containerfile of the stand-in image for `version`, laid out as goreleaser.Dockerfile. */
function containerfile(version: string): string {
  return [
    "# written by tests/container/podman.ts: the real image's layout on the stand-in binary",
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
}

/** Why podman cannot be used here, or undefined. Cheap checks only. */
export function podmanUnavailable(): string | undefined {
  if (!which("podman")) return "podman is not installed (apt-get install podman runc)";
  if (!which("runc")) return "runc is not installed (apt-get install runc): crun cannot run containers on this VM's hybrid cgroup layout";
  if (process.getuid?.() !== 0) return "the podman fixture runs rootful podman and needs root";
  // The host scripts stop and start the container with the host's docker CLI (here: against podman's socket).
  if (!which("docker")) return "no docker CLI on this host (apt-get install docker.io, or podman-docker)";
  return undefined;
}

const CONTAINERS_CONF = `# written by tests/container/podman.ts
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=4096:4096"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
`;

export async function startPodman(): Promise<Podman> {
  const dir = tempDir("podman");
  const conf = path.join(dir, "containers.conf");
  fs.writeFileSync(conf, CONTAINERS_CONF);
  const socket = path.join(dir, "podman.sock");
  const global = ["--root", path.join(dir, "root"), "--runroot", path.join(dir, "runroot"), "--tmpdir", path.join(dir, "tmp")];
  const env = { ...process.env, CONTAINERS_CONF: conf };
  const cli = (args: string[], opts: { timeoutMs?: number } = {}) => run("podman", [...global, ...args], { env, timeoutMs: opts.timeoutMs ?? 120_000 });

  const logFile = path.join(dir, "service.log");
  const log = fs.openSync(logFile, "a");
  let service: ChildProcess | undefined = spawn("podman", [...global, "system", "service", "--time=0", `unix://${socket}`], {
    env,
    stdio: ["ignore", log, log],
  });
  const stop = async () => {
    await cli(["rm", "--all", "--force", "--time", "2"]).catch(() => undefined);
    await cli(["rmi", "--all", "--force"]).catch(() => undefined);
    await stopChild(service);
    service = undefined;
    // Not `podman system reset`: that also deletes the machine's podman networks. Unmount
    // whatever this instance's storage still has mounted under its temp dir, then delete it.
    const mounts = fs.readFileSync("/proc/mounts", "utf8").split("\n").map((l) => l.split(" ")[1]).filter((m) => m?.startsWith(`${dir}/`));
    for (const m of mounts.reverse()) await run("umount", ["-l", m]).catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitFor("the podman API socket", async () => {
      if (!fs.existsSync(socket)) return false;
      const r = await run("curl", ["-sf", "--unix-socket", socket, "http://d/_ping"], { timeoutMs: 5000 });
      return r.code === 0 && r.stdout.trim() === "OK";
    }, 30_000, 200);
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\n${fs.existsSync(logFile) ? fs.readFileSync(logFile, "utf8").slice(-2000) : ""}`, { cause: e });
  }

  let proxy: http.Server;
  try {
    proxy = await startDockerFaithfulProxy(socket, path.join(dir, "docker.sock"));
  } catch (e) {
    await stop();
    throw e;
  }
  const stopAll = async () => {
    await new Promise<void>((resolve) => proxy.close(() => resolve()));
    await stop();
  };

  const podman: Podman = {
    dockerHost: `unix://${path.join(dir, "docker.sock")}`,
    socket,
    cli,
    spawn: (args) => spawn("podman", [...global, ...args], { env, stdio: ["ignore", "pipe", "pipe"] }),
    async buildImage(spec) {
      const version = typeof spec === "string" ? spec : spec.version;
      const ctx = path.join(dir, "images", version);
      fs.mkdirSync(path.join(ctx, "home"), { recursive: true });
      await buildStandin(spec, path.join(ctx, "progressdb"));
      fs.writeFileSync(path.join(ctx, "passwd"), "root:x:0:0:root:/root:/sbin/nologin\nprogressdb:x:1000:1000::/home/progressdb:/sbin/nologin\n");
      fs.writeFileSync(path.join(ctx, "group"), "root:x:0:\nprogressdb:x:1000:\n");
      fs.writeFileSync(path.join(ctx, "home", ".profile"), "");
      fs.writeFileSync(path.join(ctx, "Containerfile"), containerfile(version));
      const tags = imageTags(version);
      const r = await cli(["build", "--quiet", ...tags.flatMap((t) => ["-t", `${IMAGE}:${t}`]), ctx]);
      if (r.code !== 0) throw new Error(`podman build ${IMAGE}:${tags[0]} failed:\n${r.stderr}`);
      return r.stdout.trim();
    },
    async localTags() {
      const r = await cli(["images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE]);
      return r.stdout.split("\n").map((l) => l.trim()).filter(Boolean).sort();
    },
    stop: stopAll,
  };
  return podman;
}

/**
 * Proves a container can actually run here (not only that podman is installed):
 * creates and starts one from `image` through the Docker API, then removes it.
 * Returns the exact error when it cannot.
 */
export async function probeRun(p: Podman, image: string): Promise<string | undefined> {
  const name = `pdb-probe-${process.pid}`;
  const r = await p.cli(["run", "--rm", "--name", name, "--network", "none", image, "--version"], { timeoutMs: 60_000 });
  // The stand-in has no --version flag: any exit from the process itself proves the runtime works.
  if (/OCI|crun|runc|cgroup|setrlimit|permission denied/i.test(r.stderr)) return r.stderr.trim();
  return undefined;
}

/**
 * A proxy in front of podman's Docker API that makes one thing behave as Docker does: a port
 * binding's HostIp "0.0.0.0". The docker provider sends exactly that (upstream's default `ip`,
 * kreuzwerker terraform-provider-docker v4.5.0), Docker publishes it on every IPv4 interface and
 * reports it back as "0.0.0.0"; podman 4.3's compat API instead takes it as a DNAT destination
 * match (`-d 0.0.0.0/32`, measured on this VM), so nothing published is reachable. The proxy
 * sends podman "" (its "all interfaces") for "0.0.0.0" in POST /containers/create, and reports
 * "" back as "0.0.0.0" in GET /containers/{id}/json. Everything else passes through unchanged.
 */
export async function startDockerFaithfulProxy(
  podmanSocket: string,
  listenSocket: string,
  /** Sees each request as the client sent it (before any rewriting). */
  onRequest?: (req: { method: string; url: string; body: string }) => void,
): Promise<http.Server> {
  const rewriteBindings = (bindings: unknown, from: string, to: string) => {
    if (!bindings || typeof bindings !== "object") return;
    for (const list of Object.values(bindings as Record<string, unknown>)) {
      if (!Array.isArray(list)) continue;
      for (const b of list as Array<{ HostIp?: string }>) if (b && b.HostIp === from) b.HostIp = to;
    }
  };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      let body = Buffer.concat(chunks);
      const url = req.url ?? "/";
      onRequest?.({ method: req.method ?? "GET", url, body: body.toString("utf8") });
      const pathname = url.split("?")[0];
      if (req.method === "POST" && /\/containers\/create$/.test(pathname) && body.length > 0) {
        try {
          const spec = JSON.parse(body.toString("utf8")) as { HostConfig?: { PortBindings?: unknown } };
          rewriteBindings(spec.HostConfig?.PortBindings, "0.0.0.0", "");
          body = Buffer.from(JSON.stringify(spec));
        } catch {
          /* not JSON: podman answers it */
        }
      }
      const headers = { ...req.headers };
      delete headers["transfer-encoding"];
      if (body.length > 0 || headers["content-length"] !== undefined) headers["content-length"] = String(body.length);
      const inspect = req.method === "GET" && /\/containers\/[^/]+\/json$/.test(pathname);
      const up = http.request({ socketPath: podmanSocket, method: req.method, path: url, headers }, (ures) => {
        if (!inspect || ures.statusCode !== 200) {
          res.writeHead(ures.statusCode ?? 502, ures.headers);
          ures.pipe(res);
          return;
        }
        const out: Buffer[] = [];
        ures.on("data", (c: Buffer) => out.push(c));
        ures.on("end", () => {
          let data = Buffer.concat(out);
          try {
            const ci = JSON.parse(data.toString("utf8")) as { NetworkSettings?: { Ports?: unknown }; HostConfig?: { PortBindings?: unknown } };
            rewriteBindings(ci.NetworkSettings?.Ports, "", "0.0.0.0");
            rewriteBindings(ci.HostConfig?.PortBindings, "", "0.0.0.0");
            data = Buffer.from(JSON.stringify(ci));
          } catch {
            /* pass it on as it came */
          }
          const h = { ...ures.headers };
          delete h["transfer-encoding"];
          h["content-length"] = String(data.length);
          res.writeHead(200, h);
          res.end(data);
        });
      });
      up.on("error", (e) => {
        if (!res.headersSent) res.writeHead(502, { "content-type": "application/json" });
        res.end(JSON.stringify({ message: `docker-faithful proxy: ${e.message}` }));
      });
      up.end(body);
    });
  });
  fs.rmSync(listenSocket, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(listenSocket, () => resolve());
  });
  return server;
}
