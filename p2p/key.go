package p2p

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/containerd/errdefs"
	"golang.org/x/crypto/hkdf"
)

// ClusterKeySize is the size of a generated cluster key and the least a
// loaded one may have.
const ClusterKeySize = 32

// clusterKeyFileMax bounds what LoadClusterKey reads.
const clusterKeyFileMax = 4096

// GenerateClusterKey returns a new random cluster key. Store it with
// EncodeClusterKey.
func GenerateClusterKey() ([]byte, error) {
	key := make([]byte, ClusterKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("generate cluster key: %w", err)
	}
	return key, nil
}

// EncodeClusterKey renders a key as the text LoadClusterKey reads: standard
// base64 and a newline, fit for a file or a Kubernetes Secret.
func EncodeClusterKey(key []byte) []byte {
	return []byte(base64.StdEncoding.EncodeToString(key) + "\n")
}

// LoadClusterKey reads a cluster key file written by EncodeClusterKey
// (`shoal keygen`): base64 text, surrounding white space ignored, decoding
// to at least ClusterKeySize bytes.
func LoadClusterKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("cluster key: %w", err)
	}
	defer f.Close()
	text, err := io.ReadAll(io.LimitReader(f, clusterKeyFileMax+1))
	if err != nil {
		return nil, fmt.Errorf("cluster key %s: %w", path, err)
	}
	if len(text) > clusterKeyFileMax {
		return nil, fmt.Errorf("cluster key %s: %w: file exceeds %d bytes", path, errdefs.ErrInvalidArgument, clusterKeyFileMax)
	}
	text = bytes.TrimSpace(text)
	key, err := base64.StdEncoding.DecodeString(string(text))
	if err != nil {
		key, err = base64.RawStdEncoding.DecodeString(string(text))
	}
	if err != nil {
		return nil, fmt.Errorf("cluster key %s: %w: not base64", path, errdefs.ErrInvalidArgument)
	}
	if len(key) < ClusterKeySize {
		return nil, fmt.Errorf("cluster key %s: %w: %d bytes, want at least %d", path, errdefs.ErrInvalidArgument, len(key), ClusterKeySize)
	}
	return key, nil
}

// HKDF labels: each derived key is bound to its use, so no two uses share
// key material.
const (
	infoGossip = "shoal/v1/memberlist-aes256"
	infoPSK    = "shoal/v1/libp2p-pnet"
)

// deriveKey derives a 32-byte key for one use from the cluster key.
func deriveKey(secret []byte, info string) []byte {
	out := make([]byte, 32)
	r := hkdf.New(sha256.New, secret, nil, []byte(info))
	if _, err := io.ReadFull(r, out); err != nil {
		// HKDF-SHA256 yields up to 255*32 bytes; 32 cannot fail.
		panic(err)
	}
	return out
}

// ErrLooseKey reports a key file that users other than its owner may read
// or write: a secret anyone on the host can copy.
var ErrLooseKey = errors.New("key file is open to group or others")

// CheckKeyFile fails with an error wrapping ErrLooseKey when the key file at
// path may be read or written by its group or by others, and says which
// chmod fixes it.
func CheckKeyFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%s: %w (mode %04o): run chmod 600 %s", path, ErrLooseKey, perm, path)
	}
	return nil
}
