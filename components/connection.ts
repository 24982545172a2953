import * as pulumi from "@pulumi/pulumi";
import { types } from "@pulumi/command";
import { Settings } from "./config";
import { HostParams, S3Params } from "./hostScripts";

/** SSH connection to the host; fails fast on a dead host instead of hanging. */
export function sshConnection(host: Settings["deployment"]["host"], privateKey: pulumi.Input<string>): types.input.remote.ConnectionArgs {
  return {
    host: host.address,
    port: host.port,
    user: host.user,
    privateKey,
    perDialTimeout: 10,
    dialErrorLimit: 3,
  };
}

/** What the host scripts need to know about where ProgressDB lives and how it is run. */
export function hostParams(s: Settings): HostParams {
  const b = s.deployment.binary;
  return {
    installDir: b.installDir,
    dbPath: s.storage.dbPath,
    kmsDataDir: s.storage.kmsDataDir,
    serviceManager: b.serviceManager,
    serviceName: b.serviceName,
    listenAddr: b.listenAddr,
    configFile: b.configFile,
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
