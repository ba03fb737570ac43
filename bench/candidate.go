package bench

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Candidate is a mirror the real mode compares with the built-ins: a shell
// command run on every node, inside the node's namespace, for the whole run.
// Its placeholders are filled in per node (see [Placeholders]).
type Candidate struct {
	// Name labels the candidate's records; [a-z0-9_.-], not a built-in.
	Name string
	// Command starts the mirror. It must listen on 127.0.0.1:{mirror_port}
	// inside the namespace; the run waits until that port accepts.
	Command string
	// Setup writes the node's hosts.toml once the mirror listens. Empty
	// means [DefaultSetup].
	Setup string
}

// DefaultSetup points containerd at the mirror with shoal's own
// configure command, which every mirror that speaks the OCI pull API can
// use: the mirror first, the registry as the server.
const DefaultSetup = "{shoal} configure containerd --hosts-dir {hosts_dir} --mirror http://127.0.0.1:{mirror_port}" +
	" --registry http://{registry} --containerd-config {containerd_config}"

// MirrorPort is where a candidate's mirror listens inside each node's
// namespace: {mirror_port}. Nodes do not share a namespace, so every node
// uses the same port.
const MirrorPort = 7500

// Placeholders are the names a candidate's Command and Setup may use, each
// replaced verbatim (unquoted; the values hold no spaces) for every node.
var Placeholders = []string{
	"ip",                // the node's IP address
	"node",              // the node's index, from 0
	"containerd_sock",   // the node's containerd socket
	"containerd_config", // the node's containerd config.toml
	"content_dir",       // containerd's content store (blobs/sha256/…)
	"hosts_dir",         // containerd's registry hosts directory (config_path)
	"data_dir",          // an empty directory of the candidate's own on this node
	"registry",          // the registry, host:port
	"seed_ip",           // node 0's IP, for meshes that need a seed
	"mirror_port",       // MirrorPort
	"shoal",             // the shoal binary
}

var (
	candidateName = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,31}$`)
	placeholder   = regexp.MustCompile(`\{[a-z_]+\}`)
)

// ParseCandidate reads a --candidate or --candidate-setup value,
// NAME=COMMAND.
func ParseCandidate(s string) (name, command string, err error) {
	name, command, ok := strings.Cut(s, "=")
	name, command = strings.TrimSpace(name), strings.TrimSpace(command)
	switch {
	case !ok || command == "":
		return "", "", fmt.Errorf("%q: want NAME=COMMAND", s)
	case !candidateName.MatchString(name):
		return "", "", fmt.Errorf("%q: name %q: want [a-z0-9_.-], at most 32 bytes", s, name)
	}
	return name, command, nil
}

// check validates the candidate's templates.
func (c Candidate) check() error {
	if !candidateName.MatchString(c.Name) {
		return fmt.Errorf("candidate %q: want a name of [a-z0-9_.-], at most 32 bytes", c.Name)
	}
	if c.Name == CandidateDirect || c.Name == CandidateShoal {
		return fmt.Errorf("candidate %q: the name of a built-in", c.Name)
	}
	if strings.TrimSpace(c.Command) == "" {
		return fmt.Errorf("candidate %s: empty command", c.Name)
	}
	for _, t := range []string{c.Command, c.setup()} {
		if err := checkTemplate(t); err != nil {
			return fmt.Errorf("candidate %s: %w", c.Name, err)
		}
	}
	return nil
}

func (c Candidate) setup() string {
	if strings.TrimSpace(c.Setup) == "" {
		return DefaultSetup
	}
	return c.Setup
}

// checkTemplate rejects a placeholder that would be left in the command.
// "${x}" is the shell's, not ours.
func checkTemplate(t string) error {
	for _, loc := range placeholder.FindAllStringIndex(t, -1) {
		if loc[0] > 0 && t[loc[0]-1] == '$' {
			continue
		}
		name := t[loc[0]+1 : loc[1]-1]
		if !slices.Contains(Placeholders, name) {
			return fmt.Errorf("unknown placeholder {%s}; known: {%s}", name, strings.Join(Placeholders, "}, {"))
		}
	}
	return nil
}

// expand fills a template's placeholders from vars, a value per name in
// Placeholders, leaving the shell's "${x}" alone.
func expand(t string, vars map[string]string) string {
	var b strings.Builder
	last := 0
	for _, loc := range placeholder.FindAllStringIndex(t, -1) {
		v, ok := vars[t[loc[0]+1:loc[1]-1]]
		if !ok || (loc[0] > 0 && t[loc[0]-1] == '$') {
			continue
		}
		b.WriteString(t[last:loc[0]])
		b.WriteString(v)
		last = loc[1]
	}
	b.WriteString(t[last:])
	return b.String()
}
