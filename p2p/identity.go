package p2p

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// identityFile is the name of the libp2p private key in Config.DataDir.
const identityFile = "identity.key"

// loadIdentity reads the node's Ed25519 key from dir, creating it (0600) if
// absent. An empty dir yields a fresh key that is not kept.
func loadIdentity(dir string, allowLoose bool, log *slog.Logger) (crypto.PrivKey, error) {
	if dir == "" {
		log.Warn("no data directory: the peer ID changes at every restart")
		return generateIdentity()
	}
	path := filepath.Join(dir, identityFile)
	data, err := os.ReadFile(path)
	switch {
	case err == nil:
		key, err := crypto.UnmarshalPrivateKey(data)
		if err != nil {
			return nil, fmt.Errorf("identity %s: %w", path, err)
		}
		if err := CheckKeyFile(path); err != nil {
			if !allowLoose {
				return nil, fmt.Errorf("identity: %w", err)
			}
			log.Warn("identity key is open to group or others", "path", path, "err", err)
		}
		return key, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("identity: %w", err)
	}

	key, err := generateIdentity()
	if err != nil {
		return nil, err
	}
	data, err = crypto.MarshalPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	// Write aside and rename, so a crash never leaves a half-written key.
	tmp, err := os.CreateTemp(dir, identityFile+".*")
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("identity: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	log.Info("created identity", "path", path)
	return key, nil
}

func generateIdentity() (crypto.PrivKey, error) {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return key, nil
}
