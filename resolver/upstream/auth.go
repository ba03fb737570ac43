package upstream

import (
	"fmt"
	"os"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
)

// dockerHubKey is the key docker's config.json files Docker Hub credentials under.
const dockerHubKey = "https://index.docker.io/v1/"

// fileKeychain serves credentials from one docker config.json.
type fileKeychain struct {
	cf *configfile.ConfigFile
}

func loadKeychain(path string) (*fileKeychain, error) {
	if path == "" {
		return &fileKeychain{}, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("registry auth file: %w", err)
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("registry auth file %s: %w", path, err)
	}
	return &fileKeychain{cf: cf}, nil
}

// Resolve implements authn.Keychain.
func (k *fileKeychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	if k.cf == nil {
		return authn.Anonymous, nil
	}
	key := target.RegistryStr()
	if key == "registry-1.docker.io" || key == "index.docker.io" || key == "docker.io" {
		key = dockerHubKey
	}
	ac, err := k.cf.GetAuthConfig(key)
	if err != nil {
		return nil, err
	}
	if ac.Username == "" && ac.Password == "" && ac.Auth == "" && ac.IdentityToken == "" && ac.RegistryToken == "" {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(authn.AuthConfig{
		Username:      ac.Username,
		Password:      ac.Password,
		Auth:          ac.Auth,
		IdentityToken: ac.IdentityToken,
		RegistryToken: ac.RegistryToken,
	}), nil
}
