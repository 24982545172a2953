// Release families: pick the module that knows a version's config, API,
// data layout and version proof. Adding a family is adding a module here.
import { ReleaseFamily } from "./family";
import { v01 } from "./v01";
import { v02 } from "./v02";

export type { ApiDialect, DataLayout, ReleaseFamily, ServiceConfig, VersionProof } from "./family";

/** The family of an exact version ("0.1.2" → 0.1.x, "0.2.1" → 0.2.x, later 0.x → 0.2.x until a new family exists). */
export function familyOf(version: string): ReleaseFamily {
  const [major, minor] = version.replace(/^v/, "").split(/[.-]/).map(Number);
  return major === 0 && minor < 2 ? v01 : v02;
}

/** True when going from `from` to `to` crosses a data-layout change (0.1 → 0.2 needs the offline migration). */
export function crossesLayout(from: string | undefined, to: string): boolean {
  return from !== undefined && from !== "" && familyOf(from).dataLayout !== familyOf(to).dataLayout;
}
