// Package kit holds what the stand-in resource providers (../command, ../docker)
// share: the wire format of properties, resource types from URNs, and reading
// properties that may be secret or unknown.
package kit

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/types/known/emptypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pulumi/pulumi/sdk/v3/go/common/resource"
	"github.com/pulumi/pulumi/sdk/v3/go/common/resource/plugin"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/pulumi/provider"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
)

// Plugin answers the plugin-level RPCs the same way for every stand-in: its name and
// version, an empty schema, and no invokes. A provider embeds it and adds resource RPCs.
type Plugin struct {
	pulumirpc.UnimplementedResourceProviderServer
	Name    string
	Version string
}

func (p *Plugin) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: p.Version}, nil
}

func (p *Plugin) GetSchema(context.Context, *pulumirpc.GetSchemaRequest) (*pulumirpc.GetSchemaResponse, error) {
	b, err := json.Marshal(map[string]any{"name": p.Name, "version": p.Version})
	if err != nil {
		return nil, err
	}
	return &pulumirpc.GetSchemaResponse{Schema: string(b)}, nil
}

func (p *Plugin) Invoke(_ context.Context, req *pulumirpc.InvokeRequest) (*pulumirpc.InvokeResponse, error) {
	return nil, fmt.Errorf("%s is not implemented by the stand-in %s provider (tools/providers/%s)", req.GetTok(), p.Name, p.Name)
}

// Serve runs the provider plugin `name` until the engine stops it.
func Serve(name string, newServer func(host *provider.HostClient) pulumirpc.ResourceProviderServer) {
	err := provider.Main(name, func(host *provider.HostClient) (pulumirpc.ResourceProviderServer, error) {
		return newServer(host), nil
	})
	if err != nil {
		cmdutil.ExitError(err.Error())
	}
}

var (
	inOpts  = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true, SkipNulls: true}
	outOpts = plugin.MarshalOptions{KeepUnknowns: true, KeepSecrets: true}
)

// Unmarshal decodes engine properties, keeping unknowns and secrets.
func Unmarshal(s *structpb.Struct) (resource.PropertyMap, error) {
	if s == nil {
		return resource.PropertyMap{}, nil
	}
	return plugin.UnmarshalProperties(s, inOpts)
}

// Marshal encodes properties for the engine, keeping unknowns and secrets.
func Marshal(m resource.PropertyMap) (*structpb.Struct, error) {
	return plugin.MarshalProperties(m, outOpts)
}

// TypeOf is the resource type token of a URN: urn:pulumi:stack::project::[parent$]type::name.
func TypeOf(urn string) string {
	parts := strings.Split(urn, "::")
	if len(parts) < 4 {
		return ""
	}
	t := parts[2]
	if i := strings.LastIndex(t, "$"); i >= 0 {
		t = t[i+1:]
	}
	return t
}

// Unsecret strips any secret wrappers from v.
func Unsecret(v resource.PropertyValue) resource.PropertyValue {
	for v.IsSecret() {
		v = v.SecretValue().Element
	}
	return v
}

// StringProp returns m[k] as a string, whether it was secret, and whether it is unknown.
func StringProp(m resource.PropertyMap, k resource.PropertyKey) (string, bool, bool) {
	v, ok := m[k]
	if !ok {
		return "", false, false
	}
	if v.ContainsUnknowns() {
		return "", v.ContainsSecrets(), true
	}
	u := Unsecret(v)
	if !u.IsString() {
		return "", v.IsSecret(), false
	}
	return u.StringValue(), v.IsSecret(), false
}

// Diff compares the old and new values of the input properties `keys`; a change to a key for
// which replaces(key) is true replaces the resource. Null counts as absent, and a secret
// wrapper alone is no change.
func Diff(req *pulumirpc.DiffRequest, keys []resource.PropertyKey, replaces func(resource.PropertyKey) bool) (*pulumirpc.DiffResponse, error) {
	return DiffWith(req, keys, replaces, nil)
}

// DiffWith is Diff with each value passed through normalize(key, value) first (when not nil):
// defaults filled in, or the elements of a set sorted so that their order is no change.
func DiffWith(
	req *pulumirpc.DiffRequest, keys []resource.PropertyKey, replaces func(resource.PropertyKey) bool,
	normalize func(resource.PropertyKey, resource.PropertyValue) resource.PropertyValue,
) (*pulumirpc.DiffResponse, error) {
	olds, news, err := DiffInputs(req)
	if err != nil {
		return nil, err
	}
	if normalize != nil {
		olds, news = olds.Copy(), news.Copy()
		for _, k := range keys {
			if v, ok := olds[k]; ok && !v.ContainsUnknowns() {
				olds[k] = normalize(k, Unsecret(v))
			}
			if v, ok := news[k]; ok && !v.ContainsUnknowns() {
				news[k] = normalize(k, Unsecret(v))
			}
		}
	}
	var changed, repl []string
	detailed := map[string]*pulumirpc.PropertyDiff{}
	for _, k := range keys {
		o, hasO := olds[k]
		n, hasN := news[k]
		hasO = hasO && !Unsecret(o).IsNull()
		hasN = hasN && !Unsecret(n).IsNull()
		if !hasO && !hasN {
			continue
		}
		if hasO && hasN && !n.ContainsUnknowns() && Unsecret(o).DeepEquals(Unsecret(n)) {
			continue
		}
		kind := pulumirpc.PropertyDiff_UPDATE
		switch {
		case !hasO:
			kind = pulumirpc.PropertyDiff_ADD
		case !hasN:
			kind = pulumirpc.PropertyDiff_DELETE
		}
		if replaces(k) {
			repl = append(repl, string(k))
			kind++ // ADD_REPLACE / DELETE_REPLACE / UPDATE_REPLACE (each follows its plain kind)
		}
		changed = append(changed, string(k))
		detailed[string(k)] = &pulumirpc.PropertyDiff{Kind: kind, InputDiff: true}
	}
	sort.Strings(changed)
	resp := &pulumirpc.DiffResponse{
		Changes: pulumirpc.DiffResponse_DIFF_NONE, Diffs: changed, Replaces: repl,
		DetailedDiff: detailed, HasDetailedDiff: true,
	}
	if len(changed) > 0 {
		resp.Changes = pulumirpc.DiffResponse_DIFF_SOME
	}
	return resp, nil
}

// DiffInputs decodes a diff request's old and new inputs.
func DiffInputs(req *pulumirpc.DiffRequest) (resource.PropertyMap, resource.PropertyMap, error) {
	olds, err := Unmarshal(req.GetOldInputs())
	if err != nil {
		return nil, nil, err
	}
	if len(olds) == 0 {
		// Old engines don't send old inputs; the state holds the inputs as well.
		if olds, err = Unmarshal(req.GetOlds()); err != nil {
			return nil, nil, err
		}
	}
	news, err := Unmarshal(req.GetNews())
	return olds, news, err
}

// AsSet is v (an array) as a Terraform set: its elements without secret wrappers, without
// duplicates, in a fixed order, so that neither order nor repetition is a change.
func AsSet(v resource.PropertyValue) resource.PropertyValue {
	v = Unsecret(v)
	if !v.IsArray() {
		return v
	}
	seen := map[string]resource.PropertyValue{}
	for _, e := range v.ArrayValue() {
		e = plainValue(e)
		b, err := json.Marshal(e.Mappable())
		if err != nil {
			return v
		}
		seen[string(b)] = e
	}
	keys := make([]string, 0, len(seen))
	for k := range seen {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	out := make([]resource.PropertyValue, 0, len(keys))
	for _, k := range keys {
		out = append(out, seen[k])
	}
	return resource.NewArrayProperty(out)
}

// plainValue strips secret wrappers at every depth.
func plainValue(v resource.PropertyValue) resource.PropertyValue {
	v = Unsecret(v)
	switch {
	case v.IsArray():
		out := make([]resource.PropertyValue, 0, len(v.ArrayValue()))
		for _, e := range v.ArrayValue() {
			out = append(out, plainValue(e))
		}
		return resource.NewArrayProperty(out)
	case v.IsObject():
		out := resource.PropertyMap{}
		for k, e := range v.ObjectValue() {
			out[k] = plainValue(e)
		}
		return resource.NewObjectProperty(out)
	}
	return v
}
