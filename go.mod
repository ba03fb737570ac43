module github.com/shoal-dev/shoal

go 1.26.0

require github.com/opencontainers/go-digest v1.0.0
