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
//     proxy; environment via SSH Setenv (needs AcceptEnv on the server, as upstream).
//
// Not implemented (fails clearly when used): local assetPaths/archivePaths,
// remote CopyToRemote/CopyFile, the local.run invoke.
package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
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
	return &pulumirpc.CheckResponse{Inputs: req.GetNews(), Failures: failures}, nil
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
	id := "preview"
	if !req.GetPreview() {
		id, err = newID()
		if err != nil {
			return nil, err
		}
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
// `create`; an absent `delete` does nothing.
func (p *commandProvider) runPhase(
	ctx context.Context, urn, typ, phase string, inputs, olds resource.PropertyMap, preview bool,
) (resource.PropertyMap, error) {
	outs := inputs.Copy()
	script, scriptSecret, scriptUnknown := kit.StringProp(inputs, resource.PropertyKey(phase))
	if phase == "update" && script == "" && !scriptUnknown {
		script, scriptSecret, scriptUnknown = kit.StringProp(inputs, "create")
	}
	if phase == "delete" {
		outs = olds
		if script == "" {
			return outs, nil
		}
	}
	secretOut := scriptSecret || anySecret(inputs, "environment", "stdin")
	setOut := func(stdout, stderr resource.PropertyValue) {
		if phase == "delete" {
			return
		}
		if secretOut {
			stdout, stderr = resource.MakeSecret(stdout), resource.MakeSecret(stderr)
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
	addPrev := true
	if v, ok := inputs["addPreviousOutputInEnv"]; ok && kit.Unsecret(v).IsBool() {
		addPrev = kit.Unsecret(v).BoolValue()
	}
	if addPrev && olds != nil && phase != "create" {
		if s, _, _ := kit.StringProp(olds, "stdout"); s != "" {
			env["PULUMI_COMMAND_STDOUT"] = s
		}
		if s, _, _ := kit.StringProp(olds, "stderr"); s != "" {
			env["PULUMI_COMMAND_STDERR"] = s
		}
	}
	stdin, _, _ := kit.StringProp(inputs, "stdin")
	logging, _, _ := kit.StringProp(inputs, "logging")
	if logging == "" {
		// Secret inputs silence the default logging; an explicit choice is the program's word
		// that the chosen streams carry no secret.
		logging = "stdoutAndStderr"
		if secretOut {
			logging = "none"
		}
	}

	runCtx, cancel := context.WithCancel(ctx)
	p.mu.Lock()
	p.cancels = append(p.cancels, cancel)
	p.mu.Unlock()
	defer cancel()

	var stdout, stderr bytes.Buffer
	outW := io.Writer(&stdout)
	errW := io.Writer(&stderr)
	if logging == "stdout" || logging == "stdoutAndStderr" {
		outW = io.MultiWriter(&stdout, &lineLogger{ctx: ctx, host: p.host, urn: urn})
	}
	if logging == "stderr" || logging == "stdoutAndStderr" {
		errW = io.MultiWriter(&stderr, &lineLogger{ctx: ctx, host: p.host, urn: urn})
	}

	var runErr error
	switch typ {
	case localCommand:
		runErr = runLocal(runCtx, inputs, script, env, stdin, outW, errW)
	case remoteCommand:
		runErr = p.runRemote(runCtx, urn, inputs, script, env, stdin, outW, errW)
	}
	so := strings.TrimSuffix(stdout.String(), "\n")
	se := strings.TrimSuffix(stderr.String(), "\n")
	if runErr != nil {
		// The error carries the streams that may be logged (never the script text: it can be long).
		msg := fmt.Sprintf("%s command failed: %v", phase, runErr)
		if logging == "stdout" || logging == "stdoutAndStderr" {
			msg += "\n" + so
		}
		if logging == "stderr" || logging == "stdoutAndStderr" {
			msg += "\n" + se
		}
		return nil, errors.New(msg)
	}
	setOut(resource.NewStringProperty(so), resource.NewStringProperty(se))
	return outs, nil
}

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
	ctx context.Context, urn string, inputs resource.PropertyMap, script string, env map[string]string,
	stdin string, stdout, stderr io.Writer,
) error {
	conn, ok := inputs["connection"]
	if !ok || !kit.Unsecret(conn).IsObject() {
		return errors.New("connection is required")
	}
	client, err := dialChain(ctx, kit.Unsecret(conn).ObjectValue())
	if err != nil {
		return err
	}
	defer client.Close()
	session, err := client.NewSession()
	if err != nil {
		return fmt.Errorf("opening SSH session: %w", err)
	}
	defer session.Close()
	keys := make([]string, 0, len(env))
	for k := range env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if err := session.Setenv(k, env[k]); err != nil && p.host != nil {
			_ = p.host.Log(ctx, diag.Warning, resource.URN(urn), fmt.Sprintf(
				"Unable to set %q. This only works if your SSH server is configured to accept these "+
					"variables via AcceptEnv. Alternatively, prefix the command itself with 'VAR=value'.", k))
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
		var missing *ssh.ExitMissingError
		if errors.As(err, &missing) {
			return fmt.Errorf("lost the SSH connection before the remote command reported its exit status (%w)", err)
		}
		return err
	case <-ctx.Done():
		_ = session.Signal(ssh.SIGTERM)
		_ = session.Close()
		return ctx.Err()
	}
}

// dialChain connects to conn, through conn.proxy (recursively) when set.
func dialChain(ctx context.Context, conn resource.PropertyMap) (*ssh.Client, error) {
	cfg, addr, limit, timeout, err := sshConfig(conn)
	if err != nil {
		return nil, err
	}
	var via *ssh.Client
	if pv, ok := conn["proxy"]; ok && kit.Unsecret(pv).IsObject() {
		if via, err = dialChain(ctx, kit.Unsecret(pv).ObjectValue()); err != nil {
			return nil, fmt.Errorf("connecting to proxy: %w", err)
		}
	}
	var lastErr error
	for attempt := 1; limit < 0 || attempt <= limit; attempt++ {
		var c net.Conn
		if via != nil {
			c, lastErr = via.Dial("tcp", addr)
		} else {
			c, lastErr = (&net.Dialer{Timeout: timeout}).DialContext(ctx, "tcp", addr)
		}
		if lastErr == nil {
			_ = c.SetDeadline(time.Now().Add(timeout))
			sc, chans, reqs, err := ssh.NewClientConn(c, addr, cfg)
			if err == nil {
				_ = c.SetDeadline(time.Time{})
				return ssh.NewClient(sc, chans, reqs), nil
			}
			_ = c.Close()
			lastErr = err
			if strings.Contains(err.Error(), "unable to authenticate") {
				break // retrying won't help
			}
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(min(attempt, 5)) * time.Second):
		}
	}
	return nil, fmt.Errorf("ssh: failed to dial %s: %w", addr, lastErr)
}

func sshConfig(conn resource.PropertyMap) (*ssh.ClientConfig, string, int, time.Duration, error) {
	host, _, _ := kit.StringProp(conn, "host")
	if host == "" {
		return nil, "", 0, 0, errors.New("connection.host is required")
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

	var auths []ssh.AuthMethod
	if key, _, _ := kit.StringProp(conn, "privateKey"); key != "" {
		pass, _, _ := kit.StringProp(conn, "privateKeyPassword")
		var signer ssh.Signer
		var err error
		if pass != "" {
			signer, err = ssh.ParsePrivateKeyWithPassphrase([]byte(key), []byte(pass))
		} else {
			signer, err = ssh.ParsePrivateKey([]byte(key))
		}
		if err != nil {
			return nil, "", 0, 0, fmt.Errorf("parsing connection.privateKey: %w", err)
		}
		auths = append(auths, ssh.PublicKeys(signer))
	}
	if pw, _, _ := kit.StringProp(conn, "password"); pw != "" {
		auths = append(auths, ssh.Password(pw), ssh.KeyboardInteractive(
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
		if c, err := net.Dial("unix", sock); err == nil {
			auths = append(auths, ssh.PublicKeysCallback(agent.NewClient(c).Signers))
		}
	}
	if len(auths) == 0 {
		return nil, "", 0, 0, errors.New("connection needs a privateKey, a password or an SSH agent")
	}
	// As upstream (provider/pkg/provider/remote/connection.go, SSHConfig, since PR #794): a hostKey
	// in authorized_keys or known_hosts form pins the key and its algorithm; without one, any key is
	// accepted.
	hostKeyCallback := ssh.InsecureIgnoreHostKey() // #nosec G106
	var hostKeyAlgorithms []string
	if hk, _, _ := kit.StringProp(conn, "hostKey"); hk != "" {
		pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(hk))
		if err != nil {
			return nil, "", 0, 0, fmt.Errorf("failed to parse host key: %w", err)
		}
		hostKeyCallback = ssh.FixedHostKey(pub)
		hostKeyAlgorithms = []string{pub.Type()}
	}
	cfg := &ssh.ClientConfig{
		User:              user,
		Auth:              auths,
		HostKeyCallback:   hostKeyCallback,
		HostKeyAlgorithms: hostKeyAlgorithms,
		Timeout:           timeout,
	}
	return cfg, net.JoinHostPort(host, strconv.Itoa(port)), limit, timeout, nil
}

// ---------------------------------------------------------------------------------------------
// Helpers.

func isUnknown(v resource.PropertyValue) bool {
	return v.ContainsUnknowns()
}

func anySecret(m resource.PropertyMap, keys ...resource.PropertyKey) bool {
	for _, k := range keys {
		if v, ok := m[k]; ok && v.ContainsSecrets() {
			return true
		}
	}
	return false
}

func newID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// lineLogger forwards complete lines of command output to the engine as info messages.
type lineLogger struct {
	ctx  context.Context
	host *provider.HostClient
	urn  string
	buf  []byte
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.buf = append(l.buf, b...)
	for {
		i := bytes.IndexByte(l.buf, '\n')
		if i < 0 {
			break
		}
		line := string(l.buf[:i])
		l.buf = l.buf[i+1:]
		if l.host != nil {
			_ = l.host.Log(l.ctx, diag.Info, resource.URN(l.urn), line)
		}
	}
	return len(b), nil
}
