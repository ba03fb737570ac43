// Package upstream fetches manifests and blobs from OCI registries with the
// credentials shoal was given, over HTTPS unless a registry is named insecure.
package upstream
