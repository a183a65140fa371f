package stack

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	interp "github.com/compose-spec/compose-go/v2/interpolation"
	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/template"
	"github.com/compose-spec/compose-go/v2/tree"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v4"
)

// MaxFileSize bounds a Compose file (and a secret's or config's file is
// bounded by api.MaxSecretSize).
const MaxFileSize = 4 << 20

// File is one Compose file. Several files are merged in order, each
// overriding the ones before, as `stack deploy -c a.yml -c b.yml` does.
type File struct {
	// Name names the file in messages. When Content is nil, it is the path
	// of the file to read.
	Name string
	// Content is the file's text; nil reads the file at Name.
	Content []byte
}

// ReadFile returns a File with what r holds, named name in messages (for
// a file given on standard input, say). It reads at most MaxFileSize
// bytes.
func ReadFile(name string, r io.Reader) (File, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxFileSize+1))
	if err != nil {
		return File{}, fmt.Errorf("stack: reading %s: %w", name, err)
	}
	if len(b) > MaxFileSize {
		return File{}, fmt.Errorf("%w: %s is larger than %d bytes", ErrInvalidFile, name, MaxFileSize)
	}
	return File{Name: name, Content: b}, nil
}

// Options tune Load. The zero value loads with no variables set.
type Options struct {
	// Env holds the variables for ${VAR} interpolation, for environment
	// entries without a value (environment: [HOME]) and for secrets and
	// configs taken from a variable. Load does not read the process
	// environment by itself: pass Environ(os.Environ()) for that.
	Env map[string]string
	// WorkingDir is where relative paths of the files are resolved (bind
	// mounts, env_file, the files of secrets and configs). Empty means the
	// directory of the first file read from disk, or else the current
	// directory.
	WorkingDir string
	// MapImage, when set, gives the image each service runs for the image
	// its file names (tests map tutorial images to local test images).
	// The service's com.docker.stack.image label keeps the file's image.
	MapImage func(image string) string
}

// Environ turns a list of KEY=VALUE strings, as os.Environ returns, into
// a map for Options.Env.
func Environ(list []string) map[string]string {
	env := make(map[string]string, len(list))
	for _, kv := range list {
		if k, v, ok := strings.Cut(kv, "="); ok && k != "" {
			env[k] = v
		}
	}
	return env
}

// Load reads Compose v3 files (as `docker stack deploy -c` takes them)
// and makes the stack named name of them: service, network, secret and
// config specs named and labelled as Docker names and labels a stack's,
// each checked with the API's Validate.
//
// A file that is not valid Compose gives an error wrapping ErrInvalidFile
// with compose-go's message (file and position); keys and values Shoal
// cannot honour give an *UnsupportedError listing all of them; a missing
// variable gives ErrMissingVariable naming it. Keys that only docker
// compose uses (build, container_name, depends_on ...) are ignored, with a
// Warning in Stack.Warnings.
func Load(ctx context.Context, name string, files []File, opts Options) (*Stack, error) {
	if err := CheckName(name); err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: no compose file given", ErrInvalidFile)
	}
	wd := opts.WorkingDir
	var configs []types.ConfigFile
	for _, f := range files {
		content := f.Content
		if content == nil {
			fl, err := os.Open(f.Name)
			if err != nil {
				return nil, fmt.Errorf("stack: %w", err)
			}
			rf, err := ReadFile(f.Name, fl)
			fl.Close()
			if err != nil {
				return nil, err
			}
			content = rf.Content
			if wd == "" {
				wd = filepath.Dir(f.Name)
			}
		}
		docs, err := parseYAML(f.Name, content)
		if err != nil {
			return nil, err
		}
		for _, d := range docs {
			configs = append(configs, types.ConfigFile{Filename: f.Name, Config: d})
		}
	}
	if wd == "" {
		wd = "."
	}
	if abs, err := filepath.Abs(wd); err == nil {
		wd = abs
	}
	if len(configs) == 0 {
		return nil, fmt.Errorf("%w: %s is empty", ErrInvalidFile, files[0].Name)
	}

	env := types.Mapping{}
	for k, v := range opts.Env {
		env[k] = v
	}
	ip := &interpolator{}
	var found []tree.Path
	project, err := loadProject(ctx, types.ConfigDetails{WorkingDir: wd, ConfigFiles: configs, Environment: env},
		func(o *loader.Options) {
			// compose-go wants a lower-case project name; Shoal names the
			// objects itself, with the stack's name as given.
			o.SetProjectName(composeName(name), true)
			o.SkipNormalization = true // no implicit default network, no names: Docker's naming is done here
			o.SkipExtends = true       // extends and include are refused, as Docker refuses them
			o.SkipInclude = true
			o.Profiles = []string{"*"} // profiles are ignored: every service is deployed
			o.Interpolate.Substitute = ip.substitute
			o.Interpolate.TypeCastMapping = ip.casts(o.Interpolate.TypeCastMapping)
		},
		loader.WithSupportedAttributes(supportedPaths, func(us []loader.UnsupportedAttribute) {
			for _, u := range us {
				found = append(found, u.Path)
			}
		}))
	if err != nil {
		return nil, loadError(err)
	}

	warnings, problems := classify(found)
	for _, v := range ip.unset {
		warnings = append(warnings, Warning{Message: fmt.Sprintf("The %q variable is not set. Defaulting to a blank string.", v)})
	}
	c := &converter{stack: name, project: project, opts: opts, env: env, warnings: warnings, problems: problems}
	st, err := c.convert()
	if err != nil {
		return nil, err
	}
	if err := st.Validate(); err != nil {
		return nil, err
	}
	return st, nil
}

// loadProject runs compose-go, turning its panics (it has had some on odd
// input) into errors: Load never panics on input.
func loadProject(ctx context.Context, details types.ConfigDetails, opts ...func(*loader.Options)) (p *types.Project, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = nil, fmt.Errorf("%w: compose-go failed on this input: %v", ErrInvalidFile, r)
		}
	}()
	return loader.LoadWithContext(ctx, details, opts...)
}

// composeName is a project name compose-go accepts for a stack name.
func composeName(stack string) string {
	if n := loader.NormalizeProjectName(stack); n != "" {
		return n
	}
	return "stack"
}

// parseYAML reads a file's YAML documents as compose-go does, with its
// parser and its message for an error ("failed to parse FILE: yaml: line
// 3: ..."). It takes out what compose-go would log through its global
// logger instead of returning: `version` (obsolete for docker compose, but
// not for a stack file) and `external: {name: ...}` (Compose v3 syntax).
func parseYAML(name string, content []byte) ([]map[string]any, error) {
	var docs []map[string]any
	dec := yaml.NewDecoder(bytes.NewReader(content))
	for {
		var raw any
		err := decode(dec, &raw)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: failed to parse %s: %w", ErrInvalidFile, name, err)
		}
		if raw == nil {
			continue
		}
		m, ok := raw.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: %s: top-level object must be a mapping", ErrInvalidFile, name)
		}
		delete(m, "version")
		for _, section := range []string{"networks", "volumes", "secrets", "configs"} {
			objs, _ := m[section].(map[string]any)
			for _, o := range objs {
				if obj, ok := o.(map[string]any); ok {
					adoptExternalName(obj)
				}
			}
		}
		docs = append(docs, m)
	}
	return docs, nil
}

// decode is the YAML decoder guarded against panics.
func decode(dec *yaml.Decoder, v any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("yaml: %v", r)
		}
	}()
	return dec.Decode(v)
}

// adoptExternalName rewrites `external: {name: N}` as `name: N, external:
// true`, as compose-go does (but without its warning to the global
// logger: the syntax is Compose v3's own).
func adoptExternalName(obj map[string]any) {
	ext, ok := obj["external"].(map[string]any)
	if !ok {
		return
	}
	obj["external"] = true
	if n, ok := ext["name"]; ok {
		if _, named := obj["name"]; !named {
			obj["name"] = n
		}
	}
}

// loadError makes compose-go's error Load's: missing variables wrap
// ErrMissingVariable and name them with the key that needed them; the
// rest wraps ErrInvalidFile with compose-go's message.
func loadError(err error) error {
	var lines []string
	for _, e := range leaves(err) {
		var unset *unsetError
		var req *template.MissingRequiredError
		switch {
		case errors.As(e, &unset):
			lines = append(lines, fmt.Sprintf("%s: variable %s is not set, and the key needs a value (set it, or write ${%s:-default})",
				interpolationPath(e), strings.Join(unset.names, ", "), unset.names[0]))
		case errors.As(e, &req):
			lines = append(lines, fmt.Sprintf("%s: %s", interpolationPath(e), req.Error()))
		}
	}
	if len(lines) > 0 {
		return fmt.Errorf("%w: %s", ErrMissingVariable, strings.Join(lines, "; "))
	}
	msg := err.Error()
	if h := misindentHint(msg); h != "" {
		return fmt.Errorf("%w: %w (%s)", ErrInvalidFile, err, h)
	}
	return fmt.Errorf("%w: %w", ErrInvalidFile, err)
}

// leaves returns the errors that errors.Join put together (recursively).
func leaves(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}

// interpolationPath is the key of compose-go's "error while interpolating
// KEY: ..." message.
func interpolationPath(err error) string {
	rest, ok := strings.CutPrefix(err.Error(), "error while interpolating ")
	if !ok {
		return "interpolation"
	}
	p, _, _ := strings.Cut(rest, ": ")
	return showPath(tree.Path(p))
}

// misindentRE matches compose-go's message for a scalar where a network
// (volume, secret, config) definition belongs.
var misindentRE = regexp.MustCompile(`\b(networks|volumes|secrets|configs)\.([^ .]+) must be a mapping or null`)

// attributes of the top-level objects: a name among these that is not a
// mapping was meant to be indented under the object above it.
var attributes = map[string][]string{
	"networks": {"driver", "driver_opts", "attachable", "internal", "external", "labels", "ipam", "name", "enable_ipv6"},
	"volumes":  {"driver", "driver_opts", "external", "labels", "name"},
	"secrets":  {"file", "environment", "external", "labels", "name", "driver"},
	"configs":  {"file", "environment", "content", "external", "labels", "name"},
}

// misindentHint explains the misprint of the tutorials ("driver: overlay"
// at the level of the network names).
func misindentHint(msg string) string {
	m := misindentRE.FindStringSubmatch(msg)
	if m == nil {
		return ""
	}
	kind := strings.TrimSuffix(m[1], "s")
	if slices.Contains(attributes[m[1]], m[2]) {
		return fmt.Sprintf("%q is an attribute of a %s, not a %s name: indent it under the %s it belongs to", m[2], kind, kind, kind)
	}
	return fmt.Sprintf("each of %s must be a mapping of its attributes (or empty)", m[1])
}

// interpolator substitutes ${VAR} as compose-go does, but records the
// variables that are not set (Docker warns about them) instead of logging
// them through compose-go's global logger, and tells a missing variable
// from a bad value where the key needs a number or a boolean.
type interpolator struct {
	unset []string
	// last are the unset variables of the value substituted last: compose-go
	// casts a value right after substituting it.
	last []string
}

// plainVarRE matches a reference without a default or a required mark:
// $VAR or ${VAR}.
var plainVarRE = regexp.MustCompile(`^\$(?:([_a-zA-Z][_a-zA-Z0-9]*)|\{([_a-zA-Z][_a-zA-Z0-9]*)\})`)

func (ip *interpolator) substitute(s string, mapping template.Mapping) (string, error) {
	ip.last = nil
	return template.SubstituteWithOptions(s, mapping, template.WithoutLogging,
		template.WithReplacementFunction(func(sub string, mapping template.Mapping, cfg *template.Config) (string, error) {
			if m := plainVarRE.FindStringSubmatch(sub); m != nil {
				v := m[1] + m[2]
				if _, ok := mapping(v); !ok {
					ip.last = append(ip.last, v)
					if !slices.Contains(ip.unset, v) {
						ip.unset = append(ip.unset, v)
					}
				}
			}
			return template.DefaultReplacementFunc(sub, mapping, cfg)
		}))
}

// unsetError is a cast that failed on a value made empty by unset
// variables.
type unsetError struct {
	names []string
	err   error
}

func (e *unsetError) Error() string {
	return fmt.Sprintf("variable %s is not set: %v", strings.Join(e.names, ", "), e.err)
}

func (e *unsetError) Unwrap() error { return e.err }

// casts wraps compose-go's casts (numbers, booleans) so that a value left
// empty by unset variables says so.
func (ip *interpolator) casts(in map[tree.Path]interp.Cast) map[tree.Path]interp.Cast {
	out := make(map[tree.Path]interp.Cast, len(in))
	for p, cast := range in {
		out[p] = func(v string) (any, error) {
			r, err := cast(v)
			if err != nil && len(ip.last) > 0 && strings.TrimSpace(v) == "" {
				return r, &unsetError{names: slices.Clone(ip.last), err: err}
			}
			return r, err
		}
	}
	return out
}
