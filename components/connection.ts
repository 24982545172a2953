import * as pulumi from "@pulumi/pulumi";
import { types } from "@pulumi/command";
import { Settings } from "./config";
import { HostParams, S3Params } from "./hostScripts";
import { hostDbPath } from "./containerDeployment";

/**
 * SSH connection to the host; fails fast on a dead host instead of hanging. The host key is
 * pinned: a host that shows another key is refused in the handshake, before any stdin is sent.
 */
export function sshConnection(host: Settings["deployment"]["host"], privateKey: pulumi.Input<string>): types.input.remote.ConnectionArgs {
  if (!host.hostKey) {
    pulumi.log.warn(
      `progressdb:deployment.host.insecureSkipHostKeyCheck is true: the SSH host key of ${host.address} is not checked, so anyone who can intercept the connection receives the secrets sent on stdin — pin it with: ssh-keyscan -p ${host.port} -t ed25519 ${host.address} | pulumi config set --path progressdb:deployment.host.hostKey`,
    );
  }
  return {
    host: host.address,
    port: host.port,
    user: host.user,
    privateKey,
    ...(host.hostKey ? { hostKey: host.hostKey } : {}),
    perDialTimeout: 10,
    dialErrorLimit: 3,
  };
}

/** What the host scripts need to know about where ProgressDB lives and how it is run. */
export function hostParams(s: Settings): HostParams {
  const b = s.deployment.binary;
  const c = s.deployment.container;
  if (s.deployment.mode === "container" && c) {
    // The backup runs on the docker host itself: it stops and restarts the container by name
    // with the host's docker CLI (an ssh:// dockerHost means "that host's own daemon").
    // storage.dbPath is the directory mounted at /data; the database the service opens is
    // /data/progressdb, i.e. <dbPath>/progressdb on the host: that is what the host steps
    // look at (layout, backup, migration, restore). The mount root keeps the config file.
    return {
      installDir: b.installDir,
      dbPath: hostDbPath(s.storage.dbPath),
      kmsDataDir: s.storage.kmsDataDir,
      serviceManager: "docker",
      serviceName: c.name,
      listenAddr: `127.0.0.1:${c.ports[0]?.external ?? 8080}`,
      dockerHost: c.dockerHost.startsWith("ssh://") ? undefined : c.dockerHost,
      awsCli: s.deployment.host.awsCli,
    };
  }
  return {
    installDir: b.installDir,
    dbPath: s.storage.dbPath,
    kmsDataDir: s.storage.kmsDataDir,
    serviceManager: b.serviceManager,
    serviceName: b.serviceName,
    listenAddr: b.listenAddr,
    configFile: b.configFile,
    serviceUser: b.serviceUser,
    awsCli: s.deployment.host.awsCli,
  };
}

export function s3Params(s: Settings): S3Params {
  return {
    bucket: s.backup.bucket ?? "",
    prefix: s.backup.prefix,
    endpoint: s.backup.endpoint,
    region: s.backup.region,
  };
}
