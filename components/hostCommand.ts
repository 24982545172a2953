import * as pulumi from "@pulumi/pulumi";
import { remote, types } from "@pulumi/command";

/** How a host step reaches the host: the SSH connection and the secrets it reads on stdin. */
export interface HostAccess {
  connection: pulumi.Input<types.input.remote.ConnectionArgs>;
  /** `KEY=VALUE` lines with the secrets the script needs (see renderSecretsStdin). */
  stdin: pulumi.Input<string>;
}

export interface HostCommandArgs {
  connection: pulumi.Input<types.input.remote.ConnectionArgs>;
  /** The rendered host script (no secrets in it: it becomes the remote command line). */
  script: pulumi.Input<string>;
  /** `KEY=VALUE` lines with the secrets the script needs; a secret Output. */
  stdin: pulumi.Input<string>;
  /** What re-runs the step: the version (or the restore request), nothing incidental. */
  triggers: pulumi.Input<unknown[]>;
  /**
   * What runs when another input changes (the provider's `update`). Unset, the
   * provider runs the script again: every script is idempotent on the host.
   */
  update?: pulumi.Input<string>;
}

/**
 * One host script run over SSH. stdout (one JSON line, never secret) and stderr
 * (progress) land in state in plaintext (the command provider never marks them
 * secret), so neither may ever carry a secret: the secrets come on stdin, which
 * is kept secret. Only stderr is logged; a failure's error shows the script
 * text and both streams whatever `logging` says.
 */
export function hostCommand(name: string, args: HostCommandArgs, opts: pulumi.CustomResourceOptions): remote.Command {
  return new remote.Command(
    name,
    {
      connection: args.connection,
      create: args.script,
      update: args.update,
      stdin: pulumi.secret(args.stdin),
      triggers: args.triggers,
      logging: "stderr",
    },
    { ...opts, additionalSecretOutputs: ["stdin"] },
  );
}

/**
 * A host script's result: its one stdout JSON line. The scripts never print a
 * secret there; stdout is plain in state (`unsecret` only guards against a
 * provider that would mark it secret).
 */
export function scriptResult<T>(cmd: remote.Command): pulumi.Output<T> {
  return pulumi.unsecret(cmd.stdout).apply((out) => parseScriptResult<T>(out));
}

/** The last non-empty stdout line of a host script, parsed as JSON. */
export function parseScriptResult<T>(stdout: string): T {
  const line = stdout.trim().split("\n").filter((l) => l.trim() !== "").pop();
  if (line === undefined) throw new Error("the host script printed no result line on stdout");
  return JSON.parse(line) as T;
}
