/**
 * Test fixture: a rootful podman with its Docker-compatible API socket, on its
 * own storage (a temp dir; the machine's podman storage is never touched), and
 * the ProgressDB images of ./engine.ts built locally from the stand-in, since
 * no image can be pulled from a registry here.
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
import { run, stopChild, tempDir, waitFor, which } from "../fixtures/net";
import { IMAGE, imageTags, writeImageContext, type ContainerEngine } from "./engine";

export { IMAGE, imageTags, probeRun, realCmd } from "./engine";

/**
 * Its `dockerHost` is podman's API behind {@link startDockerFaithfulProxy} (HostIp 0.0.0.0 means
 * all interfaces, as on Docker); `cli` and `spawn` run the podman CLI on this instance's storage.
 */
export interface Podman extends ContainerEngine {
  /** podman's own API socket. */
  socket: string;
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
    kind: "podman",
    dockerHost: `unix://${path.join(dir, "docker.sock")}`,
    socket,
    cli,
    spawn: (args) => spawn("podman", [...global, ...args], { env, stdio: ["ignore", "pipe", "pipe"] }),
    async buildImage(spec) {
      const ctx = path.join(dir, "images", typeof spec === "string" ? spec : spec.version);
      const version = await writeImageContext(spec, ctx);
      const tags = imageTags(version);
      const r = await cli(["build", "--quiet", ...tags.flatMap((t) => ["-t", `${IMAGE}:${t}`]), ctx]);
      if (r.code !== 0) throw new Error(`podman build ${IMAGE}:${tags[0]} failed:\n${r.stderr}`);
      return r.stdout.trim();
    },
    async localTags() {
      const r = await cli(["images", "--format", "{{.Repository}}:{{.Tag}}", IMAGE]);
      return r.stdout.split("\n").map((l) => l.trim()).filter(Boolean).sort();
    },
    async diedExitCodes(id, since) {
      const r = await cli(["events", "--stream=false", "--since", since, "--filter", `container=${id}`, "--filter", "event=died", "--format", "{{.ContainerExitCode}}"]);
      return r.stdout.trim().split("\n").filter(Boolean);
    },
    stop: stopAll,
  };
  return podman;
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
