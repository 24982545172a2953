// Command pulumi-resource-docker is a stand-in for the Pulumi "docker" resource provider,
// written for this repository.
//
// Why it exists: the real provider (github.com/pulumi/pulumi-docker/provider/v4, a
// Terraform-bridged provider built with github.com/pulumi/pulumi-terraform-bridge/v3) is not
// served by the Go module proxy this project can reach (every version answers 403 "This
// module version is not available", for the provider and for the bridge alike), and no other
// reachable registry ships its binary. This stand-in speaks the same gRPC protocol, answers
// to the same plugin name and version as the @pulumi/docker npm SDK pinned in
// package-lock.json, and implements, against the Docker Engine HTTP API (Docker, or podman's
// Docker-compatible socket), the two resources the program uses, with the replacement
// semantics of the real provider:
//
//   - docker:index/remoteImage:RemoteImage  name (replace), platform/triggers/pullTriggers
//     (replace), keepLocally, forceRemove. Pulls when the image is not on the host; outputs
//     imageId and repoDigest; id = imageId + name (as upstream). keepLocally leaves the image
//     on the host when the resource is deleted or replaced.
//   - docker:index/container:Container  name, image, command, entrypoints, envs, ports,
//     volumes (bind mounts and named volumes), labels, user, hostname, networkMode,
//     stopSignal, stopTimeout (these replace, as upstream: ForceNew); restart, maxRetryCount,
//     healthcheck, start, mustRun, wait, waitTimeout, destroyGraceSeconds, removeVolumes
//     (these update in place, as upstream; only restart/maxRetryCount change the container,
//     and mustRun false -> true starts it). envs, labels and volumes are sets (their order is
//     no change), ports are matched by their internal port, with upstream's defaults
//     (ip 0.0.0.0, protocol tcp). A create whose start (or wait) fails returns the container
//     as partially created, so the engine keeps it in state and the next `pulumi up`
//     replaces it.
//
// Held to pulumi-docker v5.1.0 (provider/resources.go: Container is DeleteBeforeReplace) over
// kreuzwerker/terraform-provider-docker v4.5.0 (internal/provider/resource_docker_container.go:
// the schema, which says what replaces; resource_docker_container_funcs.go: create, read,
// update, delete; resource_docker_container_structures.go: ports):
//   - delete stops with destroyGraceSeconds (0 when unset: the stop signal then SIGKILL at
//     once), removes with force and removeVolumes (default true: anonymous volumes go too), then
//     waits for the container to be gone;
//   - ports are sent with HostIp as given, 0.0.0.0 by default;
//   - a refresh of a stopped container keeps it in state with mustRun false (and its exitCode),
//     re-reads its ports when it runs or must run, and drops it only when it no longer exists.
//
// Not copied: upstream's read also writes back restart, stop signal and timeout, command, user,
// hostname, network mode, healthcheck and image from the daemon (on podman, restart "no" reads
// back as "", which upstream would show as an in-place update after a refresh), and upstream's
// Check writes the schema defaults (restart "no", networkMode "bridge", mustRun true, …) into
// state; the stand-in compares with ports' defaults filled in instead, so that existing state
// does not change.
//
// The provider's `host` is unix:///path, tcp://host:port (or http://) or ssh://user@host[:port]
// (runs `ssh … docker system dial-stdio` on the host, like the Docker CLI).
//
// Anything else fails clearly: other resource types, other container properties, invokes.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/diag"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil/rpcerror"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"progressdb-upgrades/tools/providers/kit"
)

// version is set with -ldflags "-X main.version=..." to the @pulumi/docker version from
// package-lock.json.
var version = "0.0.0-dev"

const (
	remoteImage = "docker:index/remoteImage:RemoteImage"
	container   = "docker:index/container:Container"
)

func main() {
	kit.Serve("docker", func(host *provider.HostClient) pulumirpc.ResourceProviderServer {
		return &dockerProvider{Plugin: kit.Plugin{Name: "docker", Version: version}, host: host}
	})
}

type dockerProvider struct {
	kit.Plugin
	host *provider.HostClient

	mu         sync.Mutex
	dockerHost string
	client     *engineClient
}

// ---------------------------------------------------------------------------------------------
// Plugin-level RPCs.

func (p *dockerProvider) CheckConfig(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
	news, err := kit.Unmarshal(req.GetNews())
	if err != nil {
		return nil, err
	}
	var failures []*pulumirpc.CheckFailure
	if h, _, unknown := kit.StringProp(news, "host"); !unknown && h != "" {
		if _, err := parseDockerHost(h); err != nil {
			failures = append(failures, &pulumirpc.CheckFailure{Property: "host", Reason: err.Error()})
		}
	}
	return &pulumirpc.CheckResponse{Inputs: req.GetNews(), Failures: failures}, nil
}

func (p *dockerProvider) DiffConfig(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	olds, news, err := kit.DiffInputs(req)
	if err != nil {
		return nil, err
	}
	o, _, _ := kit.StringProp(olds, "host")
	n, _, nu := kit.StringProp(news, "host")
	if nu || o != n {
		// Another daemon: the resources it manages are different objects (upstream: replace).
		return &pulumirpc.DiffResponse{
			Changes: pulumirpc.DiffResponse_DIFF_SOME, Diffs: []string{"host"}, Replaces: []string{"host"},
		}, nil
	}
	return &pulumirpc.DiffResponse{Changes: pulumirpc.DiffResponse_DIFF_NONE}, nil
}

func (p *dockerProvider) Configure(_ context.Context, req *pulumirpc.ConfigureRequest) (*pulumirpc.ConfigureResponse, error) {
	host := ""
	if args := req.GetArgs(); args != nil {
		m, err := kit.Unmarshal(args)
		if err != nil {
			return nil, err
		}
		host, _, _ = kit.StringProp(m, "host")
	}
	if host == "" {
		host = req.GetVariables()["docker:config:host"]
	}
	if host == "" {
		host = os.Getenv("DOCKER_HOST")
	}
	if host == "" {
		host = "unix:///var/run/docker.sock"
	}
	p.mu.Lock()
	p.dockerHost = host
	p.client = nil
	p.mu.Unlock()
	return &pulumirpc.ConfigureResponse{AcceptSecrets: true, SupportsPreview: true}, nil
}

func (p *dockerProvider) engine() (*engineClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.client == nil {
		c, err := newEngineClient(p.dockerHost)
		if err != nil {
			return nil, err
		}
		p.client = c
	}
	return p.client, nil
}

func (p *dockerProvider) log(ctx context.Context, sev diag.Severity, urn, msg string) {
	if p.host != nil {
		_ = p.host.Log(ctx, sev, resource.URN(urn), msg)
	}
}

// ---------------------------------------------------------------------------------------------
// Resource RPCs.

func checkType(urn string) (string, error) {
	switch t := kit.TypeOf(urn); t {
	case remoteImage, container:
		return t, nil
	default:
		return "", fmt.Errorf("resource type %q is not implemented by the stand-in docker provider "+
			"(tools/providers/docker implements %s and %s)", t, remoteImage, container)
	}
}

// Input properties per type, and which of them replace the resource when they change.
var (
	imageInputs   = []resource.PropertyKey{"name", "keepLocally", "forceRemove", "platform", "triggers", "pullTriggers"}
	imageReplaces = map[resource.PropertyKey]bool{"name": true, "platform": true, "triggers": true, "pullTriggers": true}

	containerInputs = []resource.PropertyKey{
		"name", "image", "command", "entrypoints", "envs", "ports", "volumes", "labels", "healthcheck",
		"restart", "maxRetryCount", "user", "hostname", "networkMode", "stopSignal", "stopTimeout",
		"destroyGraceSeconds", "start", "mustRun", "wait", "waitTimeout", "removeVolumes",
	}
	// The container inputs without ForceNew in upstream's schema (resource_docker_container.go).
	containerUpdatable = map[resource.PropertyKey]bool{
		"restart": true, "maxRetryCount": true, "healthcheck": true, "start": true, "mustRun": true,
		"wait": true, "waitTimeout": true, "destroyGraceSeconds": true, "removeVolumes": true,
	}
	// TypeSet in upstream's schema: compared without regard to order (or repetition).
	containerSets = map[resource.PropertyKey]bool{"envs": true, "labels": true, "volumes": true}
)

// normalizeContainer puts a container input in the form upstream's diff compares: sets sorted,
// ports with their schema defaults and matched by internal port (the ports' DiffSuppressFunc).
func normalizeContainer(k resource.PropertyKey, v resource.PropertyValue) resource.PropertyValue {
	switch {
	case containerSets[k]:
		return kit.AsSet(v)
	case k == "ports" && v.IsArray():
		var ports []resource.PropertyValue
		for _, e := range v.ArrayValue() {
			if o := kit.Unsecret(e); o.IsObject() {
				m := o.ObjectValue().Copy()
				if ip, _, _ := kit.StringProp(m, "ip"); ip == "" {
					m["ip"] = resource.NewStringProperty("0.0.0.0")
				}
				if pr, _, _ := kit.StringProp(m, "protocol"); pr == "" {
					m["protocol"] = resource.NewStringProperty("tcp")
				}
				ports = append(ports, resource.NewObjectProperty(m))
				continue
			}
			ports = append(ports, e)
		}
		return kit.AsSet(resource.NewArrayProperty(ports))
	}
	return v
}

func inputsOf(t string) []resource.PropertyKey {
	if t == remoteImage {
		return imageInputs
	}
	return containerInputs
}

func replaces(t string, k resource.PropertyKey) bool {
	if t == remoteImage {
		return imageReplaces[k]
	}
	return !containerUpdatable[k]
}

func (p *dockerProvider) Check(_ context.Context, req *pulumirpc.CheckRequest) (*pulumirpc.CheckResponse, error) {
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
	known := map[resource.PropertyKey]bool{}
	for _, k := range inputsOf(t) {
		known[k] = true
	}
	for k, v := range news {
		if strings.HasPrefix(string(k), "__") || kit.Unsecret(v).IsNull() {
			continue
		}
		if !known[k] {
			fail(string(k), "not supported by the stand-in docker provider (tools/providers/docker)")
		}
	}
	if v, ok := news["name"]; !ok || kit.Unsecret(v).IsNull() {
		fail("name", "missing required property 'name'")
	}
	if t == container {
		if v, ok := news["image"]; !ok || kit.Unsecret(v).IsNull() {
			fail("image", "missing required property 'image'")
		}
		if r, _, unknown := kit.StringProp(news, "restart"); !unknown && r != "" {
			switch r {
			case "no", "on-failure", "always", "unless-stopped":
			default:
				fail("restart", "must be one of no, on-failure, always, unless-stopped")
			}
		}
		if hc, ok := news["healthcheck"]; ok && !hc.ContainsUnknowns() && kit.Unsecret(hc).IsObject() {
			for _, d := range []resource.PropertyKey{"interval", "timeout", "startPeriod"} {
				if s, _, _ := kit.StringProp(kit.Unsecret(hc).ObjectValue(), d); s != "" {
					if _, err := time.ParseDuration(s); err != nil {
						fail("healthcheck."+string(d), fmt.Sprintf("must be a duration such as 10s: %v", err))
					}
				}
			}
		}
	}
	return &pulumirpc.CheckResponse{Inputs: req.GetNews(), Failures: failures}, nil
}

func (p *dockerProvider) Diff(_ context.Context, req *pulumirpc.DiffRequest) (*pulumirpc.DiffResponse, error) {
	t, err := checkType(req.GetUrn())
	if err != nil {
		return nil, err
	}
	var norm func(resource.PropertyKey, resource.PropertyValue) resource.PropertyValue
	if t == container {
		norm = normalizeContainer
	}
	resp, err := kit.DiffWith(req, inputsOf(t), func(k resource.PropertyKey) bool { return replaces(t, k) }, norm)
	if err == nil && t == container && len(resp.Replaces) > 0 {
		// The container name is fixed: a create-before-delete would clash on it. The program
		// sets deleteBeforeReplace; say so here too, as upstream does for named containers.
		resp.DeleteBeforeReplace = true
	}
	return resp, err
}

func (p *dockerProvider) Create(ctx context.Context, req *pulumirpc.CreateRequest) (*pulumirpc.CreateResponse, error) {
	t, err := checkType(req.GetUrn())
	if err != nil {
		return nil, err
	}
	inputs, err := kit.Unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	if t == remoteImage {
		id, outs, err := p.createImage(ctx, req.GetUrn(), inputs, req.GetPreview())
		if err != nil {
			return nil, err
		}
		props, err := kit.Marshal(outs)
		if err != nil {
			return nil, err
		}
		return &pulumirpc.CreateResponse{Id: id, Properties: props}, nil
	}
	id, outs, createErr := p.createContainer(ctx, req.GetUrn(), inputs, req.GetPreview())
	props, err := kit.Marshal(outs)
	if err != nil {
		return nil, err
	}
	if createErr != nil {
		if id == "" {
			return nil, createErr
		}
		// Created but not started/healthy: hand it to the engine as partially created so it
		// is in state (and replaced by the next update) rather than leaked under its name.
		return nil, rpcerror.WithDetails(
			rpcerror.New(codes.Unknown, createErr.Error()),
			&pulumirpc.ErrorResourceInitFailed{Id: id, Properties: props, Reasons: []string{createErr.Error()}, Inputs: req.GetProperties()},
		)
	}
	return &pulumirpc.CreateResponse{Id: id, Properties: props}, nil
}

func (p *dockerProvider) Update(ctx context.Context, req *pulumirpc.UpdateRequest) (*pulumirpc.UpdateResponse, error) {
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
	outs := news.Copy()
	if t == remoteImage {
		for _, k := range []resource.PropertyKey{"imageId", "repoDigest"} {
			if v, ok := olds[k]; ok {
				outs[k] = v
			}
		}
	} else if !req.GetPreview() {
		// As upstream's resourceDockerContainerUpdate: mustRun false -> true starts the container
		// (when start); a changed restart policy is updated; nothing else touches the container.
		c, err := p.engine()
		if err != nil {
			return nil, err
		}
		id := url.PathEscape(req.GetId())
		if !boolProp(olds, "mustRun", true) && boolProp(news, "mustRun", true) && boolProp(news, "start", true) {
			if err := c.do(ctx, "POST", "/containers/"+id+"/start", nil, nil, nil); err != nil {
				var he *httpError
				if !(errors.As(err, &he) && he.status == 304) {
					return nil, fmt.Errorf("Unable to start container: %w", err)
				}
			}
		}
		if changed(olds, news, "restart") || changed(olds, news, "maxRetryCount") {
			body := map[string]any{"RestartPolicy": restartPolicy(news)}
			if err := c.do(ctx, "POST", "/containers/"+id+"/update", nil, body, nil); err != nil {
				return nil, fmt.Errorf("Unable to update a container: %w", err)
			}
		}
		for _, k := range []resource.PropertyKey{"exitCode"} {
			if v, ok := olds[k]; ok {
				outs[k] = v
			}
		}
	}
	props, err := kit.Marshal(outs)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.UpdateResponse{Properties: props}, nil
}

func (p *dockerProvider) Delete(ctx context.Context, req *pulumirpc.DeleteRequest) (*emptypb.Empty, error) {
	t, err := checkType(req.GetUrn())
	if err != nil {
		return nil, err
	}
	olds, err := kit.Unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	c, err := p.engine()
	if err != nil {
		return nil, err
	}
	if t == remoteImage {
		if boolProp(olds, "keepLocally", false) {
			name, _, _ := kit.StringProp(olds, "name")
			p.log(ctx, diag.Info, req.GetUrn(), fmt.Sprintf("keepLocally: leaving image %s on the host", name))
			return &emptypb.Empty{}, nil
		}
		name, _, _ := kit.StringProp(olds, "name")
		q := url.Values{}
		if boolProp(olds, "forceRemove", false) {
			q.Set("force", "true")
		}
		err := c.do(ctx, "DELETE", "/images/"+url.PathEscape(name), q, nil, nil)
		var he *httpError
		if err != nil && errors.As(err, &he) && (he.status == 404 || he.status == 409) {
			p.log(ctx, diag.Warning, req.GetUrn(), fmt.Sprintf("image %s not removed: %s", name, he.msg))
			err = nil
		}
		if err != nil {
			return nil, err
		}
		return &emptypb.Empty{}, nil
	}
	// As upstream's resourceDockerContainerDelete: stop with destroyGraceSeconds when it is > 0,
	// else 0 (the stop signal, then SIGKILL at once; stopTimeout plays no part), remove with
	// force and removeVolumes (default true), then wait until it is no longer running.
	id := req.GetId()
	timeout := 0
	if g := intProp(olds, "destroyGraceSeconds", 0); g > 0 {
		timeout = g
	}
	q := url.Values{"t": {strconv.Itoa(timeout)}}
	if err := c.do(ctx, "POST", "/containers/"+url.PathEscape(id)+"/stop", q, nil, nil); err != nil {
		var he *httpError
		if !(errors.As(err, &he) && (he.status == 304 || he.status == 404)) {
			return nil, fmt.Errorf("Error stopping container %s: %w", id, err)
		}
	}
	rmv := "true"
	if !boolProp(olds, "removeVolumes", true) {
		rmv = "false"
	}
	err = c.do(ctx, "DELETE", "/containers/"+url.PathEscape(id), url.Values{"force": {"true"}, "v": {rmv}}, nil, nil)
	var he *httpError
	if err != nil && !(errors.As(err, &he) && (he.status == 404 || he.status == 409)) {
		return nil, fmt.Errorf("Error deleting container %s: %w", id, err)
	}
	err = c.do(ctx, "POST", "/containers/"+url.PathEscape(id)+"/wait", url.Values{"condition": {"not-running"}}, nil, nil)
	if err != nil && !(errors.As(err, &he) && he.status == 404) {
		return nil, fmt.Errorf("Error waiting for container removal '%s': %w", id, err)
	}
	return &emptypb.Empty{}, nil
}

func (p *dockerProvider) Read(ctx context.Context, req *pulumirpc.ReadRequest) (*pulumirpc.ReadResponse, error) {
	t, err := checkType(req.GetUrn())
	if err != nil {
		return nil, err
	}
	props, err := kit.Unmarshal(req.GetProperties())
	if err != nil {
		return nil, err
	}
	c, err := p.engine()
	if err != nil {
		return nil, err
	}
	var he *httpError
	if t == remoteImage {
		name, _, _ := kit.StringProp(props, "name")
		var img imageInspect
		if err := c.do(ctx, "GET", "/images/"+url.PathEscape(name)+"/json", nil, nil, &img); err != nil {
			if errors.As(err, &he) && he.status == 404 {
				return &pulumirpc.ReadResponse{}, nil // gone: the next update pulls it again
			}
			return nil, err
		}
		props["imageId"] = resource.NewStringProperty(img.ID)
		props["repoDigest"] = resource.NewStringProperty(repoDigest(img, name))
	} else {
		var ci containerInspect
		if err := c.do(ctx, "GET", "/containers/"+url.PathEscape(req.GetId())+"/json", nil, nil, &ci); err != nil {
			if errors.As(err, &he) && he.status == 404 {
				return &pulumirpc.ReadResponse{}, nil // no longer exists: gone from state
			}
			return nil, err
		}
		inputs, err := kit.Unmarshal(req.GetInputs())
		if err != nil {
			return nil, err
		}
		// As upstream's resourceDockerContainerRead: the published ports are read back when the
		// container runs or must run (and the program set ports); a stopped container stays in
		// state with its exit code, and with mustRun false when it must run, so that the next
		// update (mustRun false -> true) starts it.
		mustRun := boolProp(props, "mustRun", true)
		if _, has := props["ports"]; has && (ci.State.Running || mustRun) {
			props["ports"] = readPorts(ci)
			if _, in := inputs["ports"]; in {
				inputs["ports"] = props["ports"]
			}
		}
		if !ci.State.Running {
			props["exitCode"] = resource.NewNumberProperty(float64(ci.State.ExitCode))
			if mustRun {
				props["mustRun"] = resource.NewBoolProperty(false)
				inputs["mustRun"] = resource.NewBoolProperty(false)
			}
		}
		out, err := kit.Marshal(props)
		if err != nil {
			return nil, err
		}
		in, err := kit.Marshal(inputs)
		if err != nil {
			return nil, err
		}
		return &pulumirpc.ReadResponse{Id: ci.ID, Properties: out, Inputs: in}, nil
	}
	out, err := kit.Marshal(props)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.ReadResponse{Id: req.GetId(), Properties: out, Inputs: req.GetInputs()}, nil
}

// ---------------------------------------------------------------------------------------------
// Images.

type imageInspect struct {
	ID          string   `json:"Id"`
	RepoTags    []string `json:"RepoTags"`
	RepoDigests []string `json:"RepoDigests"`
}

func repoDigest(img imageInspect, name string) string {
	repo := name
	if i := strings.Index(repo, "@"); i >= 0 {
		repo = repo[:i]
	} else if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i]
	}
	for _, d := range img.RepoDigests {
		if strings.HasPrefix(d, repo+"@") {
			return d
		}
	}
	if len(img.RepoDigests) > 0 {
		return img.RepoDigests[0]
	}
	return ""
}

// splitRef splits an image reference into what /images/create wants: fromImage and tag
// (a digest goes in fromImage as repo@sha256:…).
func splitRef(ref string) (string, string) {
	if strings.Contains(ref, "@") {
		return ref, ""
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[:i], ref[i+1:]
	}
	return ref, "latest"
}

func (p *dockerProvider) createImage(ctx context.Context, urn string, inputs resource.PropertyMap, preview bool) (string, resource.PropertyMap, error) {
	outs := inputs.Copy()
	name, _, unknown := kit.StringProp(inputs, "name")
	if preview {
		outs["imageId"] = resource.MakeComputed(resource.NewStringProperty(""))
		outs["repoDigest"] = resource.MakeComputed(resource.NewStringProperty(""))
		return "", outs, nil
	}
	if unknown || name == "" {
		return "", nil, errors.New("RemoteImage name is unknown or empty")
	}
	c, err := p.engine()
	if err != nil {
		return "", nil, err
	}
	var img imageInspect
	err = c.do(ctx, "GET", "/images/"+url.PathEscape(name)+"/json", nil, nil, &img)
	var he *httpError
	if err != nil && errors.As(err, &he) && he.status == 404 {
		p.log(ctx, diag.Info, urn, fmt.Sprintf("pulling %s", name))
		from, tag := splitRef(name)
		q := url.Values{"fromImage": {from}}
		if tag != "" {
			q.Set("tag", tag)
		}
		if plat, _, _ := kit.StringProp(inputs, "platform"); plat != "" {
			q.Set("platform", plat)
		}
		if err := c.pull(ctx, q); err != nil {
			return "", nil, fmt.Errorf("pulling %s: %w", name, err)
		}
		err = c.do(ctx, "GET", "/images/"+url.PathEscape(name)+"/json", nil, nil, &img)
	}
	if err != nil {
		return "", nil, fmt.Errorf("inspecting image %s: %w", name, err)
	}
	outs["imageId"] = resource.NewStringProperty(img.ID)
	outs["repoDigest"] = resource.NewStringProperty(repoDigest(img, name))
	return img.ID + name, outs, nil
}

// ---------------------------------------------------------------------------------------------
// Containers.

type containerInspect struct {
	ID              string `json:"Id"`
	NetworkSettings struct {
		Ports map[string][]struct {
			HostIP   string `json:"HostIp"`
			HostPort string `json:"HostPort"`
		} `json:"Ports"`
	} `json:"NetworkSettings"`
	State struct {
		Status   string `json:"Status"`
		Running  bool   `json:"Running"`
		ExitCode int    `json:"ExitCode"`
		Error    string `json:"Error"`
		Health   *struct {
			Status string `json:"Status"`
		} `json:"Health"`
	} `json:"State"`
}

// readPorts is upstream's flattenContainerPorts: one entry per binding, sorted by port and
// protocol, with the HostIp the daemon reports.
func readPorts(ci containerInspect) resource.PropertyValue {
	keys := make([]string, 0, len(ci.NetworkSettings.Ports))
	for k := range ci.NetworkSettings.Ports {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		pi, qi, _ := strings.Cut(keys[i], "/")
		pj, qj, _ := strings.Cut(keys[j], "/")
		ni, _ := strconv.Atoi(pi)
		nj, _ := strconv.Atoi(pj)
		if ni != nj {
			return ni < nj
		}
		return qi < qj
	})
	var out []resource.PropertyValue
	for _, k := range keys {
		port, proto, _ := strings.Cut(k, "/")
		internal, _ := strconv.Atoi(port)
		for _, b := range ci.NetworkSettings.Ports[k] {
			external, _ := strconv.Atoi(b.HostPort)
			out = append(out, resource.NewObjectProperty(resource.PropertyMap{
				"internal": resource.NewNumberProperty(float64(internal)),
				"external": resource.NewNumberProperty(float64(external)),
				"ip":       resource.NewStringProperty(b.HostIP),
				"protocol": resource.NewStringProperty(proto),
			}))
		}
	}
	if out == nil {
		out = []resource.PropertyValue{}
	}
	return resource.NewArrayProperty(out)
}

func changed(olds, news resource.PropertyMap, k resource.PropertyKey) bool {
	o, hasO := olds[k]
	n, hasN := news[k]
	if hasO != hasN {
		return true
	}
	return hasO && !kit.Unsecret(o).DeepEquals(kit.Unsecret(n))
}

func restartPolicy(m resource.PropertyMap) map[string]any {
	r, _, _ := kit.StringProp(m, "restart")
	if r == "" {
		r = "no"
	}
	pol := map[string]any{"Name": r}
	if r == "on-failure" {
		pol["MaximumRetryCount"] = intProp(m, "maxRetryCount", 0)
	}
	return pol
}

func durationNs(m resource.PropertyMap, k resource.PropertyKey) int64 {
	s, _, _ := kit.StringProp(m, k)
	if s == "" {
		return 0
	}
	d, _ := time.ParseDuration(s)
	return int64(d)
}

// containerBody renders the /containers/create request from known (unsecreted) inputs.
func containerBody(in resource.PropertyMap) map[string]any {
	image, _, _ := kit.StringProp(in, "image")
	body := map[string]any{"Image": image}
	hostConfig := map[string]any{"RestartPolicy": restartPolicy(in)}
	if v := stringList(in, "command"); v != nil {
		body["Cmd"] = v
	}
	if v := stringList(in, "entrypoints"); v != nil {
		body["Entrypoint"] = v
	}
	if v := stringList(in, "envs"); v != nil {
		body["Env"] = v
	}
	for k, f := range map[resource.PropertyKey]string{"user": "User", "hostname": "Hostname", "stopSignal": "StopSignal"} {
		if s, _, _ := kit.StringProp(in, k); s != "" {
			body[f] = s
		}
	}
	if st := intProp(in, "stopTimeout", 0); st != 0 {
		body["StopTimeout"] = st // upstream: only when set (GetOk: not zero)
	}
	if s, _, _ := kit.StringProp(in, "networkMode"); s != "" {
		hostConfig["NetworkMode"] = s
	}
	labels := map[string]string{}
	for _, l := range objectList(in, "labels") {
		k, _, _ := kit.StringProp(l, "label")
		v, _, _ := kit.StringProp(l, "value")
		labels[k] = v
	}
	body["Labels"] = labels
	exposed := map[string]any{}
	bindings := map[string][]map[string]string{}
	for _, pt := range objectList(in, "ports") {
		proto, _, _ := kit.StringProp(pt, "protocol")
		if proto == "" {
			proto = "tcp"
		}
		key := fmt.Sprintf("%d/%s", intProp(pt, "internal", 0), proto)
		exposed[key] = map[string]any{}
		// As upstream (the ip's schema default, and portSetToDockerPorts): HostIp "0.0.0.0"
		// unless another ip is given. (podman 4.3's Docker API takes that literally as a DNAT
		// destination: tests/container/podman.ts puts a Docker-faithful proxy in front of it.)
		ip, _, _ := kit.StringProp(pt, "ip")
		if ip == "" {
			ip = "0.0.0.0"
		}
		hp := ""
		if e := intProp(pt, "external", 0); e > 0 {
			hp = strconv.Itoa(e)
		}
		bindings[key] = append(bindings[key], map[string]string{"HostIp": ip, "HostPort": hp})
	}
	if len(exposed) > 0 {
		body["ExposedPorts"] = exposed
		hostConfig["PortBindings"] = bindings
	}
	var binds []string
	for _, v := range objectList(in, "volumes") {
		src, _, _ := kit.StringProp(v, "hostPath")
		if src == "" {
			src, _, _ = kit.StringProp(v, "volumeName")
		}
		dst, _, _ := kit.StringProp(v, "containerPath")
		b := src + ":" + dst
		if boolProp(v, "readOnly", false) {
			b += ":ro"
		}
		binds = append(binds, b)
	}
	if binds != nil {
		hostConfig["Binds"] = binds
	}
	if hc, ok := in["healthcheck"]; ok && kit.Unsecret(hc).IsObject() {
		h := kit.Unsecret(hc).ObjectValue()
		body["Healthcheck"] = map[string]any{
			"Test":        stringList(h, "tests"),
			"Interval":    durationNs(h, "interval"),
			"Timeout":     durationNs(h, "timeout"),
			"StartPeriod": durationNs(h, "startPeriod"),
			"Retries":     intProp(h, "retries", 0),
		}
	}
	body["HostConfig"] = hostConfig
	return body
}

func (p *dockerProvider) createContainer(ctx context.Context, urn string, inputs resource.PropertyMap, preview bool) (string, resource.PropertyMap, error) {
	outs := inputs.Copy()
	if preview {
		return "", outs, nil
	}
	if inputs.ContainsUnknowns() {
		return "", outs, errors.New("cannot create a container whose inputs are still unknown")
	}
	c, err := p.engine()
	if err != nil {
		return "", outs, err
	}
	name, _, _ := kit.StringProp(inputs, "name")
	var created struct {
		ID       string   `json:"Id"`
		Warnings []string `json:"Warnings"`
	}
	if err := c.do(ctx, "POST", "/containers/create", url.Values{"name": {name}}, containerBody(inputs), &created); err != nil {
		return "", outs, fmt.Errorf("creating container %s: %w", name, err)
	}
	for _, w := range created.Warnings {
		p.log(ctx, diag.Warning, urn, w)
	}
	id := created.ID
	if !boolProp(inputs, "start", true) {
		return id, outs, nil
	}
	if err := c.do(ctx, "POST", "/containers/"+url.PathEscape(id)+"/start", nil, nil, nil); err != nil {
		return id, outs, fmt.Errorf("starting container %s (%s): %w", name, id[:min(12, len(id))], err)
	}
	if boolProp(inputs, "wait", false) {
		deadline := time.Now().Add(time.Duration(intProp(inputs, "waitTimeout", 60)) * time.Second)
		for {
			var ci containerInspect
			if err := c.do(ctx, "GET", "/containers/"+url.PathEscape(id)+"/json", nil, nil, &ci); err != nil {
				return id, outs, err
			}
			if ci.State.Health == nil {
				return id, outs, errors.New("you have supplied a 'wait' argument, but the container does not have a healthcheck defined. Please remove the 'wait' argument or add a 'healthcheck' attribute")
			}
			if ci.State.Health.Status == "healthy" {
				break
			}
			if time.Now().After(deadline) {
				return id, outs, fmt.Errorf("container %s failed to be in healthy state in time (status %s, health %s)", name, ci.State.Status, ci.State.Health.Status)
			}
			time.Sleep(time.Second)
		}
	}
	return id, outs, nil
}

// ---------------------------------------------------------------------------------------------
// Docker Engine API client.

type engineClient struct {
	http *http.Client
	base string
}

type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return fmt.Sprintf("docker API %d: %s", e.status, e.msg) }

type dockerEndpoint struct {
	scheme, addr, user, port string
}

func parseDockerHost(h string) (dockerEndpoint, error) {
	u, err := url.Parse(h)
	if err != nil {
		return dockerEndpoint{}, fmt.Errorf("host %q is not a URL: %v", h, err)
	}
	switch u.Scheme {
	case "unix":
		if u.Path == "" {
			return dockerEndpoint{}, fmt.Errorf("host %q has no socket path", h)
		}
		return dockerEndpoint{scheme: "unix", addr: u.Path}, nil
	case "tcp", "http":
		return dockerEndpoint{scheme: "tcp", addr: u.Host}, nil
	case "ssh":
		return dockerEndpoint{scheme: "ssh", addr: u.Hostname(), user: u.User.Username(), port: u.Port()}, nil
	default:
		return dockerEndpoint{}, fmt.Errorf("host %q: scheme must be unix://, tcp:// or ssh:// (the stand-in does not do TLS)", h)
	}
}

// sshConn runs `ssh … docker system dial-stdio` and speaks HTTP over its stdin/stdout.
type sshConn struct {
	cmd *exec.Cmd
	io.Reader
	io.WriteCloser
}

func (s *sshConn) Close() error {
	_ = s.WriteCloser.Close()
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	return nil
}
func (s *sshConn) LocalAddr() net.Addr              { return &net.UnixAddr{Name: "ssh", Net: "unix"} }
func (s *sshConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Name: "ssh", Net: "unix"} }
func (s *sshConn) SetDeadline(time.Time) error      { return nil }
func (s *sshConn) SetReadDeadline(time.Time) error  { return nil }
func (s *sshConn) SetWriteDeadline(time.Time) error { return nil }

func newEngineClient(host string) (*engineClient, error) {
	ep, err := parseDockerHost(host)
	if err != nil {
		return nil, err
	}
	var dial func(ctx context.Context, _, _ string) (net.Conn, error)
	switch ep.scheme {
	case "unix":
		dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "unix", ep.addr)
		}
	case "tcp":
		dial = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: 10 * time.Second}).DialContext(ctx, "tcp", ep.addr)
		}
	case "ssh":
		dial = func(_ context.Context, _, _ string) (net.Conn, error) {
			args := []string{"-o", "BatchMode=yes", "-o", "ConnectTimeout=10"}
			if ep.port != "" {
				args = append(args, "-p", ep.port)
			}
			target := ep.addr
			if ep.user != "" {
				target = ep.user + "@" + target
			}
			cmd := exec.Command("ssh", append(args, "--", target, "docker", "system", "dial-stdio")...)
			in, err := cmd.StdinPipe()
			if err != nil {
				return nil, err
			}
			out, err := cmd.StdoutPipe()
			if err != nil {
				return nil, err
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				return nil, fmt.Errorf("ssh to the docker host: %w", err)
			}
			return &sshConn{cmd: cmd, Reader: out, WriteCloser: in}, nil
		}
	}
	tr := &http.Transport{DialContext: dial, DisableKeepAlives: ep.scheme == "ssh"}
	return &engineClient{http: &http.Client{Transport: tr}, base: "http://docker"}, nil
}

func (c *engineClient) do(ctx context.Context, method, path string, q url.Values, body any, out any) error {
	u := c.base + path
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("docker API %s %s: %w", method, path, err)
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	if res.StatusCode >= 300 {
		var e struct {
			Message string `json:"message"`
		}
		msg := strings.TrimSpace(string(data))
		if json.Unmarshal(data, &e) == nil && e.Message != "" {
			msg = e.Message
		}
		return &httpError{status: res.StatusCode, msg: msg}
	}
	if out != nil && len(data) > 0 {
		return json.Unmarshal(data, out)
	}
	return nil
}

// pull streams POST /images/create and fails on an error line in the progress stream.
func (c *engineClient) pull(ctx context.Context, q url.Values) error {
	req, err := http.NewRequestWithContext(ctx, "POST", c.base+"/images/create?"+q.Encode(), nil)
	if err != nil {
		return err
	}
	res, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	if res.StatusCode >= 300 {
		data, _ := io.ReadAll(res.Body)
		return &httpError{status: res.StatusCode, msg: strings.TrimSpace(string(data))}
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var line struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(sc.Bytes(), &line) == nil && line.Error != "" {
			return errors.New(line.Error)
		}
	}
	return sc.Err()
}

// ---------------------------------------------------------------------------------------------
// Property helpers.

func boolProp(m resource.PropertyMap, k resource.PropertyKey, def bool) bool {
	if v, ok := m[k]; ok && kit.Unsecret(v).IsBool() {
		return kit.Unsecret(v).BoolValue()
	}
	return def
}

func intProp(m resource.PropertyMap, k resource.PropertyKey, def int) int {
	if v, ok := m[k]; ok && kit.Unsecret(v).IsNumber() {
		return int(kit.Unsecret(v).NumberValue())
	}
	return def
}

func stringList(m resource.PropertyMap, k resource.PropertyKey) []string {
	v, ok := m[k]
	if !ok || !kit.Unsecret(v).IsArray() {
		return nil
	}
	out := []string{}
	for _, e := range kit.Unsecret(v).ArrayValue() {
		if s := kit.Unsecret(e); s.IsString() {
			out = append(out, s.StringValue())
		}
	}
	return out
}

func objectList(m resource.PropertyMap, k resource.PropertyKey) []resource.PropertyMap {
	v, ok := m[k]
	if !ok || !kit.Unsecret(v).IsArray() {
		return nil
	}
	var out []resource.PropertyMap
	for _, e := range kit.Unsecret(v).ArrayValue() {
		if o := kit.Unsecret(e); o.IsObject() {
			out = append(out, o.ObjectValue())
		}
	}
	return out
}
