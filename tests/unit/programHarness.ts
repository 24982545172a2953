// Runs index.ts under Pulumi mocks and records every resource registration as
// the engine would receive it: type, name, parent, explicit dependencies and
// the serialized inputs (where secrets still carry their secret marker).
import * as pulumi from "@pulumi/pulumi";
import * as settingsModule from "@pulumi/pulumi/runtime/settings";
import { vi } from "vitest";

/** Pulumi's marker for a secret value in serialized properties. */
export const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";
const SIG_KEY = "4dabf18193072939515e22adb298388d";

export interface Registration {
  type: string;
  name: string;
  urn: string;
  parent: string;
  custom: boolean;
  dependencies: string[];
  /** Inputs as sent, secrets still wrapped as {SIG_KEY: SECRET_SIG, value}. */
  wire: Record<string, unknown>;
  /** Inputs with secrets unwrapped. */
  inputs: Record<string, unknown>;
  additionalSecretOutputs: string[];
  deleteBeforeReplace: boolean;
  protect: boolean;
  /** The names of the aliases the resource was registered with. */
  aliases: string[];
}

export interface ProgramRun {
  registrations: Registration[];
  outputs: Record<string, unknown>;
  byName(name: string): Registration;
}

/** Plausible stdout for each host script, as the real ones print it. */
function fakeStdout(name: string, inputs: Record<string, unknown>): string {
  const version = /^PDB_VERSION='([^']*)'$/m.exec(String(inputs.create ?? ""))?.[1] ?? "";
  if (name.endsWith("-check")) {
    return `{"archive":"/opt/progressdb/staging/${version}/a.tar.gz","sha256":"${"a".repeat(64)}","reused":false,"layout":"root","plan":"start","tool":""}\n`;
  }
  if (name.endsWith("-migrate-data")) {
    return `{"migrated":true,"kept":"/srv/progressdb/data.v0.1.2-kept-before-v${version}","from":"0.1.2","to":"${version}","threads":2,"messages":4,"at":"2026-01-01T00:00:00Z"}\n`;
  }
  if (name.endsWith("-commit")) return `{"version":"${version}","committed":true}\n`;
  if (name.endsWith("-config")) return `{"config":"/srv/progressdb/data/config.yaml","changed":true,"switching":true}\n`;
  if (name.endsWith("-upload")) {
    return `{"uri":"s3://backups/progressdb-backups/test/20260101T000000Z-0.1.2-to-${version}.tar.gz","key":"k","size":1234,"sha256":"${"b".repeat(64)}","fromVersion":"0.1.2"}\n`;
  }
  if (name.endsWith("-install")) return `{"version":"${version}","previousVersion":"0.1.2","proof":"pid 1 listening on port 18080 runs /srv/progressdb/releases/${version}/progressdb","switched":true}\n`;
  if (name.endsWith("-restore-data")) {
    return `{"restored":"s3://backups/progressdb-backups/test/20260101T000000Z-0.1.2-to-0.2.0.tar.gz","sha256":"${"c".repeat(64)}","size":99,"movedAside":["/srv/progressdb/data.before-restore-20260101T000000Z"],"started":false}\n`;
  }
  return "";
}

export function unwrapSecrets(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(unwrapSecrets);
  if (v && typeof v === "object") {
    const o = v as Record<string, unknown>;
    if (o[SIG_KEY] === SECRET_SIG) return unwrapSecrets(o.value);
    return Object.fromEntries(Object.entries(o).map(([k, x]) => [k, unwrapSecrets(x)]));
  }
  return v;
}

/** An output's value, or its error (apply alone would wait forever on a failed output). */
function settle<T>(o: pulumi.Output<T>): Promise<T> {
  return (o as unknown as { promise(): Promise<T> }).promise();
}

/**
 * Imports a fresh copy of index.ts with the given config (values are JSON-encoded
 * like the engine does) and returns what it registered and exported.
 */
export async function runProgram(
  config: Record<string, unknown>,
  secretKeys: string[] = [],
  /** The stack's own outputs from its last update (what the StackReference to itself reads). */
  previousOutputs: Record<string, unknown> = {},
  /** Other stacks' outputs, by `<org>/<project>/<stack>`, for the StackReferences to them. */
  otherStacks: Record<string, Record<string, unknown>> = {},
): Promise<ProgramRun> {
  const registrations: Registration[] = [];
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        const state: Record<string, unknown> = { ...args.inputs };
        if (args.type === "pulumi:pulumi:StackReference") {
          const name = String(args.inputs.name);
          if (name !== "organization/progressdb/test" && !(name in otherStacks)) throw new Error(`unknown stack ${name}`);
          Object.assign(state, { outputs: otherStacks[name] ?? previousOutputs, secretOutputNames: [] });
        }
        if (args.type === "command:remote:Command") state.stdout = fakeStdout(args.name, args.inputs);
        if (args.type === "pulumi-nodejs:dynamic/health:HealthCheck") {
          Object.assign(state, {
            status: "healthy",
            reportedVersion: args.inputs.expectedVersion,
            attempts: 1,
            elapsedMs: 5,
            checkedAt: "2026-01-01T00:00:00Z",
            versionProof: "readyz",
            continuity: "passed",
            continuityMessage: "",
            runId: "run-1",
          });
        }
        if (args.type === "pulumi-nodejs:dynamic/probe:ServiceProbe") state.epoch = "e1";
        if (args.type === "pulumi-nodejs:dynamic/snapshot:DataSnapshot") {
          Object.assign(state, { sample: { available: true, reason: "", dialect: "v1", servedVersion: "", takenAt: "2026-01-01T00:00:00Z", salt: "s", stats: { threads: 2, messages: 2 }, threadsListed: 2, threads: [] }, takenAt: "2026-01-01T00:00:00Z" });
        }
        return { id: `${args.name}-id`, state };
      },
      call(args) {
        throw new Error(`unexpected invoke in unit test: ${args.token}`);
      },
    },
    "progressdb",
    "test",
    false,
    "organization",
  );
  const monitor = settingsModule.getMonitor() as unknown as {
    registerResource(req: RegisterRequest, cb: (err: unknown, resp: unknown) => void): Promise<void>;
  };
  const original = monitor.registerResource.bind(monitor);
  monitor.registerResource = async (req, cb) => {
    const wire = req.getObject()?.toJavaScript() ?? {};
    const rec: Registration = {
      type: req.getType(),
      name: req.getName(),
      urn: "",
      parent: req.getParent(),
      custom: req.getCustom(),
      dependencies: req.getDependenciesList(),
      wire,
      inputs: unwrapSecrets(wire) as Record<string, unknown>,
      additionalSecretOutputs: req.getAdditionalsecretoutputsList(),
      deleteBeforeReplace: req.getDeletebeforereplace(),
      protect: req.getProtect?.() ?? false,
      aliases: (req.getAliasesList?.() ?? []).map((a) => a.getSpec?.()?.getName?.() ?? ""),
    };
    registrations.push(rec);
    return original(req, (err, resp) => {
      rec.urn = (resp as { getUrn(): string } | undefined)?.getUrn() ?? "";
      cb(err, resp);
    });
  };
  const encoded = Object.fromEntries(
    Object.entries(config).map(([k, v]) => [`progressdb:${k}`, typeof v === "string" ? v : JSON.stringify(v)]),
  );
  pulumi.runtime.setAllConfig(encoded, secretKeys.map((k) => `progressdb:${k}`));
  vi.resetModules();
  const main = ((await import("../../index.js")) as { default: () => Promise<Record<string, unknown>> }).default;
  let program: Record<string, unknown>;
  try {
    program = await main();
  } catch (e) {
    throw Object.assign(e as Error, { registrations });
  }
  const outputs: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(program)) {
    if (pulumi.Output.isInstance(v)) outputs[k] = await settle(v as pulumi.Output<unknown>);
  }
  // Let the program's last registrations (component outputs) reach this run's monitor.
  await (settingsModule as unknown as { waitForRPCs(): Promise<void> }).waitForRPCs();
  return {
    registrations,
    outputs,
    byName(name: string) {
      const r = registrations.find((x) => x.name === name);
      if (!r) throw new Error(`no resource named ${name}; have: ${registrations.map((x) => x.name).join(", ")}`);
      return r;
    },
  };
}

interface RegisterRequest {
  getType(): string;
  getName(): string;
  getParent(): string;
  getCustom(): boolean;
  getDependenciesList(): string[];
  getObject(): { toJavaScript(): Record<string, unknown> } | undefined;
  getAdditionalsecretoutputsList(): string[];
  getDeletebeforereplace(): boolean;
  getProtect?(): boolean;
  getAliasesList?(): { getSpec?(): { getName?(): string } | undefined }[];
}
