module github.com/shoal-dev/shoal

go 1.26.0

require (
	github.com/containerd/errdefs v1.0.0
	github.com/opencontainers/go-digest v1.0.0
	go.uber.org/goleak v1.3.0
)
