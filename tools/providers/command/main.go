// Command pulumi-resource-command is a stand-in for the Pulumi "command" resource
// provider, written for this repository.
//
// Why it exists: the real provider (github.com/pulumi/pulumi-command/provider) is not
// served by the Go module proxy this project can reach, and no other reachable
// registry ships its binary. This stand-in speaks the same gRPC protocol, answers
// to the same plugin name and version as the @pulumi/command npm SDK pinned in
// package-lock.json, and implements the two resources the program uses:
//
//   - command:local:Command  create/update/delete, environment, dir, interpreter,
//     stdin, triggers (replace on change), addPreviousOutputInEnv, logging;
//     outputs stdout/stderr (one trailing newline trimmed, like the real provider).
//   - command:remote:Command the same over SSH: connection host/port/user/password/
//     privateKey/privateKeyPassword/agentSocketPath/dialErrorLimit/perDialTimeout/hostKey/
//     proxy; environment via SSH Setenv only (needs AcceptEnv on the server), and a refused
//     variable fails the step, as upstream.
//
// Held to pulumi-command v1.2.1 (provider/pkg/provider/remote/{commandOutputs,connection,
// commandController}.go, util/util.go; secrets and computedness as pulumi-go-provider v1.3.0's
// infer wires them by default): stdout and stderr are never secret in state (no input has
// their name); output streams as ephemeral status lines; a failure's error embeds the command
// text and the interleaved stdout and stderr whatever `logging` says; dialing makes
// dialErrorLimit+1 attempts (-1: unlimited) 0.1 s apart with a 1.5 backoff (at most 5 s),
// retries every error including a refused authentication, and times out only the TCP dial
// (perDialTimeout; 0 = none), never the SSH handshake. Create's id is the resource name plus
// 8 hex digits (resource.NewUniqueHex), as upstream's.
//
// Left different on purpose: upstream never closes the SSH client after a run and does not
// interrupt a running command when the engine cancels; the stand-in closes it and ends the
// session (SIGTERM), so cancelled test runs do not leak connections or hang. Not written into
// state either: the schema defaults upstream's Check adds (user root, port 22, dialErrorLimit
// 10, perDialTimeout 15); the stand-in applies the same defaults when it dials.
//
// Not implemented (fails clearly when used): local assetPaths/archivePaths,
// remote CopyToRemote/CopyFile, the local.run invoke.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"progressdb-upgrades/tools/providers/kit"
)

// version is set with -ldflags "-X main.version=..." by scripts/tools.sh to the
// @pulumi/command version from package-lock.json.
var version = "0.0.0-dev"

const (
	localCommand  = "command:local:Command"
	remoteCommand = "command:remote:Command"
)

func main() {
	kit.Serve("command", func(host *provider.HostClient) pulumirpc.ResourceProviderServer {
		return &commandProvider{Plugin: kit.Plugin{Name: "command", Version: version}, host: host}
	})
}

type commandProvider struct {
	kit.Plugin
	host *provider.HostClient

	mu      sync.Mutex
	cancels []context.CancelFunc
}

// ---------------------------------------------------------------------------------------------
// Plugin-level RPCs.

func (p *commandProvider) CheckConfig(
	_ context.Context, req *pulumirpc.CheckRequest,
) (*pulumirpc.CheckResponse, error) {
	return &pulumirpc.CheckResponse{Inputs: req.GetNews()}, nil
}

func (p *commandProvider) DiffConfig(context.Context, *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

func (p *commandProvider) Configure(
	context.Context, *pulumirpc.ConfigureRequest,
) (*pulumirpc.ConfigureResponse, error) {
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true}, nil
}

func (p *commandProvider) Cancel(context.Context, *emptypb.Empty) (*emptypb.Empty, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.cancels {
		c()
	}
	return &emptypb.Empty{}, nil
}

// ---------------------------------------------------------------------------------------------
// Resource RPCs.

func checkType(urn string) (string, error) {
	switch t := kit.TypeOf(urn); t {
	case localCommand, remoteCommand:
		return t, nil
	default:
		return "", fmt.Errorf("resource type %q is not implemented by the stand-in command provider "+
			"(tools/providers/command implements %s and %s)", t, localCommand, remoteCommand)
	}
}

var inputKeys = map[string][]resource.PropertyKey{
	localCommand: {
		"create", "update", "delete", "environment", "triggers", "dir", "interpreter", "stdin",
		"addPreviousOutputInEnv", "logging", "assetPaths", "archivePaths",
	},
	remoteCommand: {
		"connection", "create", "update", "delete", "environment", "triggers", "stdin",
		"addPreviousOutputInEnv", "logging",
	},
}

func (p *commandProvider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	t, err := checkType(req.GetUrn())
	if err != nil {
		return nil, err
	}
	news, err := kit.Unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	fail := func(prop, reason string) {
		failures = append(failures, &pulumirpc.CheckFailure{Property: prop, Reason: reason})
	}
	for _, k := range []resource.PropertyKey{"create", "update", "delete", "dir", "stdin", "logging"} {
		if v, ok := news[k]; ok && !isUnknown(v) && !kit.Unsecret(v).IsString() {
			fail(string(k), "must be a string")
		}
	}
	if t == localCommand {
		for _, k := range []resource.PropertyKey{"assetPaths", "archivePaths"} {
			if v, ok := news[k]; ok && !kit.Unsecret(v).IsNull() {
				fail(string(k), "not supported by the stand-in command provider")
			}
		}
	}
	if t == remoteCommand {
		if v, ok := news["connection"]; !ok || kit.Unsecret(v).IsNull() {
			fail("connection", "missing required property")
		}
	}
	if v, ok := news["logging"]; ok && kit.Unsecret(v).IsString() {
		switch kit.Unsecret(v).StringValue() {
		case "stdout", "stderr", "stdoutAndStderr", "none":
		default:
			fail("logging", "must be one of stdout, stderr, stdoutAndStderr, none")
		}
	}
	if len(failures) > 0 {
		return &pulumirpc.CheckResponse{Inputs: req.GetNews(), Failures: failures}, nil
	}
	if t == remoteCommand {
		// Upstream's CommandInputs tag `connection` (and password, privateKey and
		// privateKeyPassword in it and in its proxy) provider:"secret": Check returns them secret.
		if c, ok := news["connection"]; ok && !c.ContainsUnknowns() {
			news["connection"] = secretConnection(c)
		}
	}
	checked, err := kit.Marshal(news)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CheckResponse{Inputs: checked}, nil
}

// secretConnection marks a connection secret as upstream's struct tags do, down into its proxy.
func secretConnection(v resource.PropertyValue) resource.PropertyValue {
	u := kit.Unsecret(v)
	if !u.IsObject() {
		return resource.MakeSecret(u)
	}
	m := u.ObjectValue().Copy()
	for _, k := range []resource.PropertyKey{"password", "privateKey", "privateKeyPassword"} {
		if e, ok := m[k]; ok && !kit.Unsecret(e).IsNull() {
			m[k] = resource.MakeSecret(kit.Unsecret(e))
		}
	}
	if pr, ok := m["proxy"]; ok && kit.Unsecret(pr).IsObject() {
		m["proxy"] = kit.Unsecret(secretConnection(pr))
	}
	return resource.MakeSecret(resource.NewObjectProperty(m))
}

func (p *commandProvider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	t, err := checkType(req.GetUrn())
	if err != nil {
		return nil, err
	}
	return kit.Diff(req, inputKeys[t], func(k resource.PropertyKey) bool { return k == "triggers" })
}

func (p *commandProvider) Create(
	ctx context.Context, req *pulumirpc.CreateRequest,
) (*pulumirpc.CreateResponse, error) {
	t, err := checkType(req.GetUrn())
	if err != nil {
		return nil, err
	}
	inputs, err := kit.Unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	// upstream remote/commandController.go: resource.NewUniqueHex(name, 8, 0), preview or not.
	id, err := resource.NewUniqueHex(resource.URN(req.GetUrn()).Name(), 8, 0)
	if err != nil {
		return nil, err
	}
	outs, err := p.runPhase(ctx, req.GetUrn(), t, "create", inputs, nil, req.GetPreview())
	if err != nil {
		return nil, err
	}
	props, err := kit.Marshal(outs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: props}, nil
}

func (p *commandProvider) Update(
	ctx context.Context, req *pulumirpc.UpdateRequest,
) (*pulumirpc.UpdateResponse, error) {
	t, err := checkType(req.GetUrn())
	if err != nil {
		return nil, err
	}
	olds, err := kit.Unmarshal(req.GetOlds())
	if err != nil {
		return nil, err
	}
	news, err := kit.Unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	outs, err := p.runPhase(ctx, req.GetUrn(), t, "update", news, olds, req.GetPreview())
	if err != nil {
		return nil, err
	}
	props, err := kit.Marshal(outs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

func (p *commandProvider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	t, err := checkType(req.GetUrn())
	if err != nil {
		return nil, err
	}
	olds, err := kit.Unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	if _, err := p.runPhase(ctx, req.GetUrn(), t, "delete", olds, olds, false); err != nil {
		return nil, err
	}
	return &emptypb.Empty{}, nil
}

func (p *commandProvider) Read(_ context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	if _, err := checkType(req.GetUrn()); err != nil {
		return nil, err
	}
	// Commands have no remote state to read back: refresh keeps what we have.
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: req.GetProperties(), Inputs: req.GetInputs()}, nil
}

// ---------------------------------------------------------------------------------------------
// Running commands.

// runPhase runs the command for phase (create, update or delete) and returns the new
// state: the inputs plus stdout and stderr. For update, an absent `update` falls back to
// `create`; an absent `delete` does nothing. As upstream (remote/commandController.go): an
// update keeps the previous stdout and stderr until the command succeeds, and the previous
// ones are what PULUMI_COMMAND_STDOUT/STDERR carry into an update or a delete.
func (p *commandProvider) runPhase(
	ctx context.Context, urn, typ, phase string, inputs, olds resource.PropertyMap, preview bool,
) (resource.PropertyMap, error) {
	outs := inputs.Copy()
	script, _, scriptUnknown := kit.StringProp(inputs, resource.PropertyKey(phase))
	if phase == "update" && script == "" && !scriptUnknown {
		script, _, scriptUnknown = kit.StringProp(inputs, "create")
	}
	if phase == "delete" {
		outs = olds
		if script == "" {
			return outs, nil
		}
	}
	// stdout and stderr are plain strings in state, secret inputs or not: pulumi-go-provider's
	// default wiring flows secretness only from an input to the output of the same name, and no
	// input is called stdout or stderr. A program that prints secrets marks them itself
	// (additionalSecretOutputs).
	setOut := func(stdout, stderr resource.PropertyValue) {
		if phase == "delete" {
			return
		}
		outs["stdout"], outs["stderr"] = stdout, stderr
	}
	if preview || scriptUnknown || inputs.ContainsUnknowns() {
		if preview {
			setOut(resource.MakeComputed(resource.NewStringProperty("")),
				resource.MakeComputed(resource.NewStringProperty("")))
			return outs, nil
		}
		return nil, errors.New("cannot run a command whose inputs are still unknown")
	}
	if script == "" {
		setOut(resource.NewStringProperty(""), resource.NewStringProperty(""))
		return outs, nil
	}

	env := map[string]string{}
	if v, ok := inputs["environment"]; ok && kit.Unsecret(v).IsObject() {
		for k, e := range kit.Unsecret(v).ObjectValue() {
			if s := kit.Unsecret(e); s.IsString() {
				env[string(k)] = s.StringValue()
			}
		}
	}
	prev := map[string]string{}
	addPrev := true
	if v, ok := inputs["addPreviousOutputInEnv"]; ok && kit.Unsecret(v).IsBool() {
		addPrev = kit.Unsecret(v).BoolValue()
	}
	if addPrev && olds != nil && phase != "create" {
		if s, _, _ := kit.StringProp(olds, "stdout"); s != "" {
			prev["PULUMI_COMMAND_STDOUT"] = s
		}
		if s, _, _ := kit.StringProp(olds, "stderr"); s != "" {
			prev["PULUMI_COMMAND_STDERR"] = s
		}
	}
	stdin, _, _ := kit.StringProp(inputs, "stdin")
	logging, _, _ := kit.StringProp(inputs, "logging")
	// Unset means both streams are logged (upstream's Logging.ShouldLogStdout/ShouldLogStderr),
	// secret inputs or not.
	logStdout := logging == "" || logging == "stdout" || logging == "stdoutAndStderr"
	logStderr := logging == "" || logging == "stderr" || logging == "stdoutAndStderr"

	runCtx, cancel := context.WithCancel(ctx)
	p.mu.Lock()
	p.cancels = append(p.cancels, cancel)
	p.mu.Unlock()
	defer cancel()

	// As upstream: each stream is kept alone and interleaved with the other (the error shows the
	// interleaved text); the logged ones go, line by line, to the engine as ephemeral status.
	var stdout, stderr bytes.Buffer
	both := &lockedBuffer{}
	logger := &lineLogger{ctx: ctx, host: p.host, urn: urn}
	outWs := []io.Writer{&stdout, both}
	errWs := []io.Writer{&stderr, both}
	if logStdout {
		outWs = append(outWs, logger)
	}
	if logStderr {
		errWs = append(errWs, logger)
	}
	outW, errW := io.MultiWriter(outWs...), io.MultiWriter(errWs...)

	var runErr error
	switch typ {
	case localCommand:
		for k, v := range prev {
			env[k] = v
		}
		runErr = runLocal(runCtx, inputs, script, env, stdin, outW, errW)
	case remoteCommand:
		runErr = p.runRemote(runCtx, urn, inputs, script, env, prev, stdin, outW, errW)
	}
	logger.flush()
	if runErr != nil {
		var setenv *setenvError
		var dial *dialError
		if errors.As(runErr, &setenv) || errors.As(runErr, &dial) {
			return nil, runErr // upstream returns these before the command runs, unwrapped
		}
		// upstream remote/commandOutputs.go: "%w: running %q:\n%s" with the whole command text
		// and the interleaved output, whatever `logging` says.
		return nil, fmt.Errorf("%w: running %q:\n%s", runErr, script, both.String())
	}
	setOut(resource.NewStringProperty(strings.TrimSuffix(stdout.String(), "\n")),
		resource.NewStringProperty(strings.TrimSuffix(stderr.String(), "\n")))
	return outs, nil
}

// lockedBuffer is a bytes.Buffer both output streams may write to at once.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// setenvError is a variable of `environment` that the SSH server refused (upstream:
// logAndWrapSetenvErr in remote/commandOutputs.go).
type setenvError struct {
	key string
	err error
}

func (e *setenvError) Error() string {
	return fmt.Sprintf("could not set environment variable %q: %v", e.key, e.err)
}
func (e *setenvError) Unwrap() error { return e.err }

// dialError is a connection that could not be made (upstream returns Dial's error as it is).
type dialError struct{ err error }

func (e *dialError) Error() string { return e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func runLocal(
	ctx context.Context, inputs resource.PropertyMap, script string, env map[string]string, stdin string,
	stdout, stderr io.Writer,
) error {
	interp := []string{"/bin/sh", "-c"}
	if v, ok := inputs["interpreter"]; ok && kit.Unsecret(v).IsArray() {
		interp = nil
		for _, e := range kit.Unsecret(v).ArrayValue() {
			if s := kit.Unsecret(e); s.IsString() {
				interp = append(interp, s.StringValue())
			}
		}
		if len(interp) == 0 {
			return errors.New("interpreter must not be empty")
		}
	}
	args := append(append([]string{}, interp[1:]...), script)
	cmd := exec.CommandContext(ctx, interp[0], args...) // #nosec G204 -- running the user's command is the job
	if dir, _, _ := kit.StringProp(inputs, "dir"); dir != "" {
		cmd.Dir = dir
	}
	cmd.Env = os.Environ()
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	cmd.Stdout, cmd.Stderr = stdout, stderr
	cmd.WaitDelay = 5 * time.Second
	return cmd.Run()
}

func (p *commandProvider) runRemote(
	ctx context.Context, urn string, inputs resource.PropertyMap, script string, env, prev map[string]string,
	stdin string, stdout, stderr io.Writer,
) error {
	conn, ok := inputs["connection"]
	if !ok || !kit.Unsecret(conn).IsObject() {
		return &dialError{errors.New("connection is required")}
	}
	client, err := p.dial(ctx, urn, kit.Unsecret(conn).ObjectValue())
	if err != nil {
		return &dialError{err}
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return &dialError{err}
	}
	defer session.Close()
	// upstream remote/commandOutputs.go: `environment` only through SSH Setenv, and a variable the
	// server refuses (no AcceptEnv for it) fails the step before the command runs; the previous
	// stdout/stderr are set optimistically, with a warning when refused.
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := session.Setenv(k, env[k]); err != nil {
			p.logf(ctx, diag.Error, urn, setenvMessage(k))
			return &setenvError{key: k, err: err}
		}
	}
	for _, k := range []string{"PULUMI_COMMAND_STDOUT", "PULUMI_COMMAND_STDERR"} {
		if v, ok := prev[k]; ok {
			if err := session.Setenv(k, v); err != nil {
				p.logf(ctx, diag.Warning, urn, setenvMessage(k))
			}
		}
	}
	if stdin != "" {
		session.Stdin = strings.NewReader(stdin)
	}
	session.Stdout, session.Stderr = stdout, stderr
	done := make(chan error, 1)
	go func() { done <- session.Run(script) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		// (Upstream does not interrupt a running command on cancellation; the stand-in ends its
		// session so a cancelled test run does not hang.)
		_ = session.Signal(ssh.SIGTERM)
		_ = session.Close()
		return ctx.Err()
	}
}

func setenvMessage(k string) string {
	return fmt.Sprintf("Unable to set '%s'. This only works if your SSH server is configured to accept these "+
		"variables via AcceptEnv. Alternatively, prefix the command itself with 'VAR=value'.", k)
}

func (p *commandProvider) logf(ctx context.Context, sev diag.Severity, urn, msg string) {
	if p.host != nil {
		_ = p.host.Log(ctx, sev, resource.URN(urn), msg)
	}
}

func (p *commandProvider) status(ctx context.Context, urn, msg string) {
	if p.host != nil {
		_ = p.host.LogStatus(ctx, diag.Info, resource.URN(urn), msg)
	}
}

// Dial retry timing, as pulumi/sdk go/common/util/retry.Until's defaults, which upstream uses.
var (
	retryDelay    = 100 * time.Millisecond
	retryBackoff  = 1.5
	retryMaxDelay = 5 * time.Second
)

// withRetry runs f until it succeeds or has failed limit+1 times (limit -1: no limit), waiting
// 0.1 s, 0.15 s, 0.225 s, … (at most 5 s) between attempts, whatever the error: upstream's
// dialWithRetry (remote/connection.go) over retry.Until.
func withRetry[T any](ctx context.Context, p *commandProvider, urn, what string, limit int, f func() (T, error)) (T, error) {
	var zero T
	delay := retryDelay
	for try := 0; ; try++ {
		v, err := f()
		if err == nil {
			return v, nil
		}
		dials := try + 1
		if limit > -1 && dials > limit {
			return zero, fmt.Errorf("after %d failed attempts: %w", try, err)
		}
		of := "inf"
		if limit != -1 {
			of = strconv.Itoa(limit)
		}
		p.status(ctx, urn, fmt.Sprintf("%s %d/%s failed: retrying", what, dials, of))
		if delay > retryMaxDelay {
			delay = retryMaxDelay
		}
		select {
		case <-ctx.Done():
			return zero, ctx.Err()
		case <-time.After(delay):
		}
		delay = time.Duration(float64(delay) * retryBackoff)
	}
}

// dial connects as upstream's Connection.Dial: ssh.Dial (TCP dial bounded by perDialTimeout, the
// handshake unbounded), through conn.proxy when set.
func (p *commandProvider) dial(ctx context.Context, urn string, conn resource.PropertyMap) (*ssh.Client, error) {
	cfg, addr, limit, err := sshConfig(conn)
	if err != nil {
		return nil, err
	}
	pv, hasProxy := conn["proxy"]
	if !hasProxy || !kit.Unsecret(pv).IsObject() {
		return withRetry(ctx, p, urn, "Dial", limit, func() (*ssh.Client, error) {
			return ssh.Dial("tcp", addr, cfg)
		})
	}
	pcfg, paddr, plimit, err := sshConfig(kit.Unsecret(pv).ObjectValue())
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	proxy, err := withRetry(ctx, p, urn, "Dial proxy", plimit, func() (*ssh.Client, error) {
		return ssh.Dial("tcp", paddr, pcfg)
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	c, err := withRetry(ctx, p, urn, "Dial from proxy", limit, func() (net.Conn, error) {
		return proxy.Dial("tcp", addr)
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	var chans <-chan ssh.NewChannel
	var reqs <-chan *ssh.Request
	sc, err := withRetry(ctx, p, urn, "Dial", limit, func() (ssh.Conn, error) {
		cc, ch, rq, err := ssh.NewClientConn(c, addr, cfg)
		chans, reqs = ch, rq
		return cc, err
	})
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	return ssh.NewClient(sc, chans, reqs), nil
}

// sshConfig is upstream's SSHConfig (remote/connection.go) over our property map: the address,
// the dial error limit (default 10) and perDialTimeout (default 15 s; 0 = no limit) as the TCP
// dial's timeout.
func sshConfig(conn resource.PropertyMap) (*ssh.ClientConfig, string, int, error) {
	host, _, _ := kit.StringProp(conn, "host")
	if host == "" {
		return nil, "", 0, errors.New("connection.host is required")
	}
	port := 22
	if v, ok := conn["port"]; ok && kit.Unsecret(v).IsNumber() {
		port = int(kit.Unsecret(v).NumberValue())
	}
	user, _, _ := kit.StringProp(conn, "user")
	if user == "" {
		user = "root"
	}
	limit := 10
	if v, ok := conn["dialErrorLimit"]; ok && kit.Unsecret(v).IsNumber() {
		limit = int(kit.Unsecret(v).NumberValue())
	}
	timeout := 15 * time.Second
	if v, ok := conn["perDialTimeout"]; ok && kit.Unsecret(v).IsNumber() {
		timeout = time.Duration(kit.Unsecret(v).NumberValue()) * time.Second
	}
	// As upstream (since PR #794): a hostKey in authorized_keys or known_hosts form pins the key
	// and its algorithm; without one, any key is accepted.
	hostKeyCallback := ssh.InsecureIgnoreHostKey() // #nosec G106
	var hostKeyAlgorithms []string
	if hk, _, _ := kit.StringProp(conn, "hostKey"); hk != "" {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hk))
		if err != nil {
			return nil, "", 0, fmt.Errorf("failed to parse host key: %w", err)
		}
		hostKeyCallback = ssh.FixedHostKey(pub)
		hostKeyAlgorithms = []string{pub.Type()}
	}
	cfg := &ssh.ClientConfig{
		User:              user,
		HostKeyCallback:   hostKeyCallback,
		HostKeyAlgorithms: hostKeyAlgorithms,
		Timeout:           timeout,
	}
	if key, _, _ := kit.StringProp(conn, "privateKey"); key != "" {
		pass, _, _ := kit.StringProp(conn, "privateKeyPassword")
		pv, passSet := conn["privateKeyPassword"]
		var signer ssh.Signer
		var err error
		if passSet && !kit.Unsecret(pv).IsNull() {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(key), []byte(pass))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(key))
		}
		if err != nil {
			return nil, "", 0, err
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeys(signer))
	}
	if pw, _, _ := kit.StringProp(conn, "password"); pw != "" {
		cfg.Auth = append(cfg.Auth, ssh.Password(pw), ssh.KeyboardInteractive(
			func(_, _ string, questions []string, _ []bool) ([]string, error) {
				answers := make([]string, len(questions))
				for i := range answers {
					answers[i] = pw
				}
				return answers, nil
			}))
	}
	sock, _, _ := kit.StringProp(conn, "agentSocketPath")
	if sock == "" {
		sock = os.Getenv("SSH_AUTH_SOCK")
	}
	if sock != "" {
		c, err := net.Dial("unix", sock)
		if err != nil {
			return nil, "", 0, err
		}
		cfg.Auth = append(cfg.Auth, ssh.PublicKeysCallback(agent.NewClient(c).Signers))
	}
	// No auth method at all is not refused here: upstream lets the handshake fail ("unable to
	// authenticate"), and retries it like any other dial error.
	return cfg, net.JoinHostPort(host, strconv.Itoa(port)), limit, nil
}

// ---------------------------------------------------------------------------------------------
// Helpers.

func isUnknown(v resource.PropertyValue) bool {
	return v.ContainsUnknowns()
}

// lineLogger forwards lines of command output to the engine as ephemeral info status, as
// upstream's util.LogOutput does (InfoStatus); flush sends a last line without a newline.
type lineLogger struct {
	ctx  context.Context
	host *provider.HostClient
	urn  string
	mu   sync.Mutex
	buf  []byte
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		line := string(l.buf[:i])
		l.buf = l.buf[i+1:]
		l.send(line)
	}
	return len(b), nil
}

func (l *lineLogger) flush() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.buf) > 0 {
		l.send(string(l.buf))
		l.buf = nil
	}
}

func (l *lineLogger) send(line string) {
	if l.host != nil {
		_ = l.host.LogStatus(l.ctx, diag.Info, resource.URN(l.urn), line)
	}
}
