# shellcheck shell=sh
# Source this file (bash, zsh, dash) to use the tools built by scripts/tools.sh:
#
#   scripts/tools.sh && . scripts/tools-env.sh
#
# It changes nothing but environment variables and builds nothing. From a shell that is not
# bash, source it from the repository root or set TOOLS_ROOT=<repo> first.
#
#   PATH          .tools/bin (pulumi, minio) and node_modules/.bin (node 24, tsc) first
#   PULUMI_HOME   .tools/pulumi-home: its plugins/ holds the command provider; `pulumi login`
#                 state also lands there, away from ~/.pulumi
#   PULUMI_SKIP_UPDATE_CHECK=true                     no version check against the network
#   PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true  never download plugins: the aws/docker
#                 providers are not built, and a program that imports @pulumi/aws or
#                 @pulumi/docker without creating their resources must not try to fetch them
#   PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK=true     the Automation API accepts our CLI version

if [ -n "${TOOLS_ROOT:-}" ]; then
  _tools_root=$TOOLS_ROOT
elif [ -n "${BASH_SOURCE:-}" ]; then
  # shellcheck disable=SC3028,SC3054
  _tools_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
else
  _tools_root=$(pwd)
fi

if [ ! -x "$_tools_root/.tools/bin/pulumi" ]; then
  echo "tools-env.sh: $_tools_root/.tools/bin/pulumi not found; run scripts/tools.sh first" >&2
fi

case ":$PATH:" in
  *":$_tools_root/.tools/bin:$_tools_root/node_modules/.bin:"*) ;;
  *) PATH="$_tools_root/.tools/bin:$_tools_root/node_modules/.bin:$PATH" ;;
esac
export PATH
export PULUMI_HOME="$_tools_root/.tools/pulumi-home"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK=true
unset _tools_root
