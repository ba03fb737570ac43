// Package upstream fetches manifests and blobs from OCI registries with the
// credentials shoal was given, through each registry's chain of hosts (its
// mirrors, then itself), over HTTPS unless a host is named insecure.
package upstream
