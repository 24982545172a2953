// The promotion gate: a stack with `promotion.requireVerifiedBy` takes only versions that the named
// stack (its staging) verified. Pure: index.ts reads that stack's outputs and asks here.
import { PROJECT, Settings, compareVersions } from "../config";

/** Versions a stack exported as verified, in order, without anything that is not one. */
export function verifiedList(value: unknown): string[] {
  const list = Array.isArray(value) ? value.filter((v): v is string => typeof v === "string" && v !== "") : [];
  return [...new Set(list)].sort(compareVersions);
}

/** What the stack exports after a successful update: the versions it verified before, and this one when it was verified here. */
export function verifiedVersionsAfter(previous: unknown, version: string, verifiedNow: boolean): string[] {
  return verifiedList(verifiedNow ? [...verifiedList(previous), version] : previous);
}

/**
 * Whether this update verified `version`: every instance healthy on it, the data-continuity gate failed
 * nowhere, and the smoke test passed on the canary (a stack that runs no smoke test verifies nothing).
 */
export function verifiedHere(checks: { status: string; smokeResult: string; continuity: string }[]): boolean {
  return (
    checks.length > 0 &&
    checks.every((c) => c.status === "healthy" && c.continuity !== "failed") &&
    checks[0].smokeResult === "passed"
  );
}

export interface PromotionVerdict {
  refusal?: string;
  /** The override in force, shown as a warning and exported as promotionOverride. */
  override?: string;
}

/**
 * The gate, for an update that moves any instance to `target` (`deployed`: what each runs now, per the
 * stack's outputs). `verified` is the gating stack's verifiedVersions output, or the error reading it.
 */
export function promotionVerdict(
  target: string,
  deployed: (string | undefined)[],
  promotion: Settings["promotion"],
  verified: { versions: unknown } | { error: string },
): PromotionVerdict | undefined {
  const gate = promotion.requireVerifiedBy;
  if (!gate || deployed.every((v) => v === target)) return undefined;
  const versions = "versions" in verified ? verifiedList(verified.versions) : [];
  if (versions.includes(target)) return undefined;
  const key = `${PROJECT}:promotion.requireVerifiedBy`;
  const why =
    "error" in verified
      ? `its outputs could not be read (${verified.error})`
      : verified.versions === undefined
        ? "it exports no verifiedVersions (it has not completed an update with this program, or has verified nothing yet)"
        : `it has verified ${versions.length > 0 ? versions.join(", ") : "no version yet"}`;
  if (promotion.override?.version === target) {
    return { override: `${PROJECT}:version ${target} is taken WITHOUT verification by ${gate} (${why}), overridden by ${PROJECT}:promotion.override: "${promotion.override.reason}"` };
  }
  return {
    refusal:
      `${PROJECT}:version ${target} has not been verified by ${gate} (${key}): ${why}. Nothing was changed. ` +
      `Promote through that stack: set ${PROJECT}:version ${target} there and run pulumi up (health, smoke test and data continuity must pass), then preview this stack again. ` +
      `To take it without that, say why, in this stack's config (shown on every run and exported as promotionOverride):\n` +
      `      pulumi config set --path ${PROJECT}:promotion.override.version ${target}\n` +
      `      pulumi config set --path ${PROJECT}:promotion.override.reason "<why>"`,
  };
}
