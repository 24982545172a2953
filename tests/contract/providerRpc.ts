/**
 * Drives a resource provider plugin (the stand-ins in tools/providers, as scripts/tools.sh
 * installs them) over its gRPC interface, the way the Pulumi engine does, without the
 * engine: a fake engine records what the plugin logs (Log, with its `ephemeral` flag), and
 * each RPC is one call. Properties go over the wire as the engine sends them: secrets as
 * the signature object, unknowns as the unknown sentinel.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import { Empty } from "google-protobuf/google/protobuf/empty_pb";
import { Struct } from "google-protobuf/google/protobuf/struct_pb";
import * as engineRpc from "@pulumi/pulumi/proto/engine_grpc_pb";
import * as enginePb from "@pulumi/pulumi/proto/engine_pb";
import * as providerRpc from "@pulumi/pulumi/proto/provider_grpc_pb";
import * as providerPb from "@pulumi/pulumi/proto/provider_pb";
import { toolsEnv } from "../../scripts/lib/pulumiCli";

/** The secret signature of Pulumi's wire format (sdk/go/common/resource/sig). */
const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";
const SIG_KEY = "4dabf18193072939515e22adb298388d";

/** A secret value, as the engine sends it. */
export function secret(value: unknown): Record<string, unknown> {
  return { [SIG_KEY]: SECRET_SIG, value };
}

/** Whether a wire value is a secret. */
export function isSecret(v: unknown): boolean {
  return typeof v === "object" && v !== null && (v as Record<string, unknown>)[SIG_KEY] === SECRET_SIG;
}

/** The value without its secret wrapper. */
export function plain(v: unknown): unknown {
  return isSecret(v) ? (v as { value: unknown }).value : v;
}

export type Props = Record<string, unknown>;

export interface LogEntry {
  severity: "debug" | "info" | "warning" | "error";
  message: string;
  urn: string;
  ephemeral: boolean;
}

/** The stand-in plugin binary `name` in the PULUMI_HOME the CLI uses, or undefined. */
export function pluginPath(name: "command" | "docker"): string | undefined {
  const plugins = path.join(toolsEnv().PULUMI_HOME!, "plugins");
  if (!existsSync(plugins)) return undefined;
  const dir = readdirSync(plugins).find((d) => new RegExp(`^resource-${name}-v[0-9.]+$`).test(d) && existsSync(path.join(plugins, d, `pulumi-resource-${name}`)));
  return dir ? path.join(plugins, dir, `pulumi-resource-${name}`) : undefined;
}

export function urnOf(type: string, name: string): string {
  return `urn:pulumi:contract::providers::${type}::${name}`;
}

const toStruct = (p: Props | undefined) => Struct.fromJavaScript((p ?? {}) as never);
const fromStruct = (s: Struct | undefined): Props => (s ? (s.toJavaScript() as Props) : {});

export interface DiffResult {
  changes: "none" | "some" | "unknown";
  diffs: string[];
  replaces: string[];
  deleteBeforeReplace: boolean;
}

/** One running plugin, and the engine it logs to. */
export class ProviderPlugin {
  private constructor(
    private readonly child: ChildProcess,
    private readonly client: providerRpc.ResourceProviderClient,
    private readonly engine: grpc.Server,
    /** Everything the plugin logged to the engine, in order. */
    readonly logs: LogEntry[],
  ) {}

  static async start(binary: string): Promise<ProviderPlugin> {
    const logs: LogEntry[] = [];
    const engine = new grpc.Server();
    const sev = ["debug", "info", "warning", "error"] as const;
    engine.addService(engineRpc.EngineService, {
      log(call: grpc.ServerUnaryCall<enginePb.LogRequest, Empty>, cb: grpc.sendUnaryData<Empty>) {
        const r = call.request;
        logs.push({ severity: sev[r.getSeverity()] ?? "info", message: r.getMessage(), urn: r.getUrn(), ephemeral: r.getEphemeral() });
        cb(null, new Empty());
      },
    } as never);
    const enginePort = await new Promise<number>((resolve, reject) =>
      engine.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
    );
    const child = spawn(binary, [`127.0.0.1:${enginePort}`], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const port = await new Promise<number>((resolve, reject) => {
      let out = "";
      const timer = setTimeout(() => reject(new Error(`${binary} did not print its port in 20 s: ${stderr}`)), 20_000);
      child.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /^(\d+)\s*$/m.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      child.on("exit", (code) => reject(new Error(`${binary} exited (${code}) before serving: ${stderr}`)));
    });
    const client = new providerRpc.ResourceProviderClient(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    return new ProviderPlugin(child, client, engine, logs);
  }

  private call<Res>(method: string, req: unknown): Promise<Res> {
    const client = this.client as unknown as Record<string, (req: unknown, cb: (err: grpc.ServiceError | null, res: Res) => void) => void>;
    // A failed call rejects with the provider's own message (without gRPC's "2 UNKNOWN: " prefix).
    return new Promise((resolve, reject) =>
      client[method].call(this.client, req, (err, res) => (err ? reject(Object.assign(new Error(err.details), { code: err.code })) : resolve(res))),
    );
  }

  async configure(args: Props = {}): Promise<void> {
    const req = new providerPb.ConfigureRequest();
    req.setArgs(toStruct(args));
    req.setAcceptsecrets(true);
    req.setAcceptresources(true);
    await this.call<providerPb.ConfigureResponse>("configure", req);
  }

  async check(urn: string, news: Props, olds: Props = {}): Promise<{ inputs: Props; failures: string[] }> {
    const req = new providerPb.CheckRequest();
    req.setUrn(urn);
    req.setNews(toStruct(news));
    req.setOlds(toStruct(olds));
    const res = await this.call<providerPb.CheckResponse>("check", req);
    return { inputs: fromStruct(res.getInputs()), failures: res.getFailuresList().map((f) => `${f.getProperty()}: ${f.getReason()}`) };
  }

  async diff(urn: string, id: string, oldInputs: Props, news: Props, olds: Props = oldInputs): Promise<DiffResult> {
    const req = new providerPb.DiffRequest();
    req.setUrn(urn);
    req.setId(id);
    req.setOlds(toStruct(olds));
    req.setOldInputs(toStruct(oldInputs));
    req.setNews(toStruct(news));
    const res = await this.call<providerPb.DiffResponse>("diff", req);
    const kinds = { 0: "unknown", 1: "none", 2: "some" } as const;
    return {
      changes: kinds[res.getChanges() as 0 | 1 | 2],
      diffs: res.getDiffsList(),
      replaces: res.getReplacesList(),
      deleteBeforeReplace: res.getDeletebeforereplace(),
    };
  }

  async create(urn: string, properties: Props, opts: { preview?: boolean; timeoutS?: number } = {}): Promise<{ id: string; properties: Props }> {
    const req = new providerPb.CreateRequest();
    req.setUrn(urn);
    req.setProperties(toStruct(properties));
    req.setPreview(opts.preview ?? false);
    req.setTimeout(opts.timeoutS ?? 300);
    const res = await this.call<providerPb.CreateResponse>("create", req);
    return { id: res.getId(), properties: fromStruct(res.getProperties()) };
  }

  async read(urn: string, id: string, properties: Props, inputs: Props): Promise<{ id: string; properties: Props; inputs: Props }> {
    const req = new providerPb.ReadRequest();
    req.setUrn(urn);
    req.setId(id);
    req.setProperties(toStruct(properties));
    req.setInputs(toStruct(inputs));
    const res = await this.call<providerPb.ReadResponse>("read", req);
    return { id: res.getId(), properties: fromStruct(res.getProperties()), inputs: fromStruct(res.getInputs()) };
  }

  async update(urn: string, id: string, olds: Props, news: Props, oldInputs: Props = olds): Promise<Props> {
    const req = new providerPb.UpdateRequest();
    req.setUrn(urn);
    req.setId(id);
    req.setOlds(toStruct(olds));
    req.setOldInputs(toStruct(oldInputs));
    req.setNews(toStruct(news));
    req.setTimeout(300);
    const res = await this.call<providerPb.UpdateResponse>("update", req);
    return fromStruct(res.getProperties());
  }

  async delete(urn: string, id: string, properties: Props): Promise<void> {
    const req = new providerPb.DeleteRequest();
    req.setUrn(urn);
    req.setId(id);
    req.setProperties(toStruct(properties));
    req.setTimeout(300);
    await this.call<Empty>("delete", req);
  }

  async stop(): Promise<void> {
    this.client.close();
    if (this.child.exitCode === null) {
      const exited = new Promise<void>((resolve) => this.child.once("exit", () => resolve()));
      this.child.kill("SIGKILL");
      await exited;
    }
    await new Promise<void>((resolve) => this.engine.tryShutdown(() => resolve()));
  }
}
