// progressdb:instances → one validated Settings per instance. Pure: no Pulumi calls.
// Each instance is the stack's config with its own overrides laid over it, parsed
// by the same schema, so an instance is checked exactly as a single-instance stack is.
import { z } from "zod";
import { ConfigError, PROJECT, RawConfig, Settings, parseSettings } from "../config";

/** One instance of the fleet, with everything it runs with. */
export interface Instance {
  /** The instance's name (`progressdb:instances[].name`); "default" for a stack without `instances`. */
  name: string;
  /** Its place in the rollout: 0 is the canary. */
  index: number;
  /** The name of its ProgressDb component: "progressdb" for a stack without `instances` (the URNs it always had). */
  resourceName: string;
  /** Where its backups live below the bucket's prefix: `<stack>` alone, or `<stack>/<name>` in a fleet. */
  backupScope: string;
  /** Whether it comes from `progressdb:instances` (false: the single instance of the stack's own config). */
  listed: boolean;
  settings: Settings;
}

/** The name of a stack's one instance when it has no `instances` list. */
export const SINGLE_INSTANCE = "default";

const NAME = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;
const object = z.record(z.string(), z.unknown(), { error: "must be an object" });

const instanceSchema = z.strictObject({
  name: z.string({ error: "is required: a short name such as \"eu-1\"" }).regex(NAME, { error: "must be 1–32 lowercase letters, digits and inner hyphens, such as \"eu-1\"" }),
  /** Laid over deployment.host. */
  host: object.optional(),
  /** Replaces health.url. */
  healthUrl: z.string().optional(),
  /** Laid over deployment (not its mode: a fleet runs one mode). */
  deployment: object.refine((d) => !("mode" in d) && !("host" in d), { error: "may override binary and container settings only (set the host with instances[].host; every instance runs the stack's deployment.mode)" }).optional(),
  /** Laid over storage. */
  storage: object.optional(),
});
type InstanceEntry = z.output<typeof instanceSchema>;

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === "object" && !Array.isArray(v);

/** `over` laid on `base`: objects merge key by key, anything else (arrays too) replaces. */
function overlay(base: unknown, over: unknown): unknown {
  if (!isObject(base) || !isObject(over)) return over === undefined ? base : over;
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(over)) out[k] = overlay(base[k], v);
  return out;
}

/** The stack config as instance `e` sees it. */
function instanceValues(values: RawConfig["values"], e: InstanceEntry): RawConfig["values"] {
  const deployment = overlay(overlay(values.deployment ?? {}, e.deployment ?? {}), e.host ? { host: e.host } : {});
  const health = e.healthUrl === undefined ? values.health : overlay(values.health ?? {}, { url: e.healthUrl });
  return { ...values, deployment, storage: overlay(values.storage ?? {}, e.storage ?? {}), health };
}

/** Where a key of the merged config was set for instance `i`: its own override, named as such, or the stack's key. */
function instanceKey(key: string, i: number, e: InstanceEntry): string {
  const at = (path: string[], o: unknown): boolean => path.length === 0 || (isObject(o) && path[0] in o && at(path.slice(1), o[path[0]]));
  const parts = key.split(".");
  if (key === "health.url" && e.healthUrl !== undefined) return `instances[${i}].healthUrl`;
  if (parts[0] === "deployment" && parts[1] === "host" && at(parts.slice(2), e.host)) return `instances[${i}].host${parts.length > 2 ? `.${parts.slice(2).join(".")}` : ""}`;
  if (parts[0] === "deployment" && at(parts.slice(1), e.deployment)) return `instances[${i}].${key}`;
  if (parts[0] === "storage" && at(parts.slice(1), e.storage)) return `instances[${i}].${key}`;
  return key;
}

/** A problem of the merged config, with the keys the instance overrides renamed to its own (and the fix with them). */
function instanceProblem(problem: string, i: number, e: InstanceEntry): string {
  const renamed = problem.replace(new RegExp(`${PROJECT}:([A-Za-z0-9_.]+)`, "g"), (_m, key: string) => `${PROJECT}:${instanceKey(key, i, e)}`);
  return renamed === problem ? problem : `instance "${e.name}": ${renamed}`;
}

/** Two instances that would share what only one may own: the same data dir, install dir, service or health URL. */
function collisions(instances: Instance[]): string[] {
  const problems: string[] = [];
  const claims = new Map<string, string>();
  const claim = (what: string, id: string, inst: Instance, fix: string) => {
    const other = claims.get(`${what}\0${id}`);
    if (other) problems.push(`${PROJECT}:instances: "${other}" and "${inst.name}" have the same ${what} (${id}): one would stop, move or overwrite the other's — ${fix}`);
    else claims.set(`${what}\0${id}`, inst.name);
  };
  for (const inst of instances) {
    const d = inst.settings.deployment;
    const host = `${d.host.address}:${d.host.port}`;
    claim("health URL", new URL(inst.settings.health.url).href, inst, `give each its own with instances[${inst.index}].healthUrl`);
    claim("data dir", `${host} ${inst.settings.storage.dbPath}`, inst, `set instances[${inst.index}].storage.dbPath`);
    if (d.mode === "binary") {
      claim("install dir", `${host} ${d.binary.installDir}`, inst, `set instances[${inst.index}].deployment.binary.installDir`);
      claim("service name", `${host} ${d.binary.serviceName}`, inst, `set instances[${inst.index}].deployment.binary.serviceName`);
    } else {
      claim("container name", `${d.container?.dockerHost ?? host} ${d.container?.name}`, inst, `set instances[${inst.index}].deployment.container.name`);
    }
  }
  return problems;
}

/**
 * The instances a stack deploys, in rollout order. Without `progressdb:instances` the stack's own
 * config is a fleet of one, named "default", with the resource names and backup keys it always had.
 * Throws a ConfigError listing every problem, each naming its key and the fix.
 */
export function parseInstances(raw: RawConfig, stack: string): Instance[] {
  const listed = raw.values.instances;
  // Empty is Pulumi.yaml's default: no list.
  if (listed === undefined || listed === null || (Array.isArray(listed) && listed.length === 0)) {
    return [{ name: SINGLE_INSTANCE, index: 0, resourceName: PROJECT, backupScope: stack, listed: false, settings: parseSettings(raw) }];
  }
  const list = z.array(instanceSchema, { error: "must be a list of instances: [{name, host, healthUrl, deployment?, storage?}]" }).safeParse(listed);
  if (!list.success) throw new ConfigError(list.error.issues.map((issue) => `${PROJECT}:instances${issue.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`)).join("")} ${issue.message}`));
  const problems = new Set<string>();
  const seen = new Set<string>();
  const instances: Instance[] = [];
  list.data.forEach((e, i) => {
    if (seen.has(e.name)) problems.add(`${PROJECT}:instances[${i}].name "${e.name}" is used twice: instance names are part of resource names and backup keys — rename one`);
    seen.add(e.name);
    if (e.host?.address !== undefined && e.host.hostKey === undefined && e.host.insecureSkipHostKeyCheck === undefined) {
      problems.add(
        `${PROJECT}:instances[${i}].host.hostKey is required when the instance has its own address: the stack's hostKey is another host's — set it with: ssh-keyscan -t ed25519 ${String(e.host.address)} | pulumi config set --path '${PROJECT}:instances[${i}].host.hostKey'`,
      );
    }
    try {
      const settings = parseSettings({ ...raw, values: instanceValues(raw.values, e) });
      instances.push({ name: e.name, index: i, resourceName: `${PROJECT}-${e.name}`, backupScope: `${stack}/${e.name}`, listed: true, settings });
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      for (const p of err.problems) problems.add(instanceProblem(p, i, e));
    }
  });
  if (problems.size === 0) for (const p of collisions(instances)) problems.add(p);
  if (problems.size > 0) throw new ConfigError([...problems]);
  return instances;
}
