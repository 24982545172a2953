//go:build tools

// Package tools pins the Pulumi CLI (built by scripts/tools.sh with
// `go build github.com/pulumi/pulumi/pkg/v3/cmd/pulumi`).
package tools

import (
	_ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"
)
