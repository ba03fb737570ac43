package containerdplugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	versionapi "github.com/containerd/containerd/api/services/version/v1"
	"github.com/containerd/errdefs"
	"github.com/containerd/errdefs/pkg/errgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Defaults of Config.
const (
	DefaultSocket      = "/run/containerd/containerd.sock"
	DefaultNamespace   = "k8s.io"
	DefaultDialTimeout = 5 * time.Second
)

// namespaceHeader is the gRPC metadata key containerd reads the namespace from.
const namespaceHeader = "containerd-namespace"

// maxMsgSize matches containerd's own client: content List batches carry
// labels, and image records can be large.
const maxMsgSize = 16 << 20

// Config says which containerd to talk to and how.
type Config struct {
	// Socket is the path of containerd's gRPC socket. Zero means DefaultSocket.
	Socket string
	// Namespace is the containerd namespace whose content and images are
	// read; CRI (kubelet) uses "k8s.io". Zero means DefaultNamespace.
	Namespace string
	// ContentDir, when set, is containerd's content store directory
	// (<containerd root>/io.containerd.content.v1.content), mounted into
	// shoal. Open and Stat then read blob files directly, which is much
	// faster than streaming over the socket. The directory is shared by all
	// namespaces, so a blob found there may belong to another namespace;
	// that is harmless for serving bytes by digest. Zero means use the API.
	ContentDir string
	// DialTimeout bounds how long New waits for containerd to answer and
	// how long one connection attempt may take. Zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// Logger receives connection and fallback events. Nil discards them.
	Logger *slog.Logger
}

// DefaultConfig returns the settings for a Kubernetes node.
func DefaultConfig() Config {
	return Config{
		Socket:      DefaultSocket,
		Namespace:   DefaultNamespace,
		DialTimeout: DefaultDialTimeout,
	}
}

// withDefaults fills zero fields and validates the rest.
func (cfg Config) withDefaults() (Config, error) {
	if cfg.Socket == "" {
		cfg.Socket = DefaultSocket
	}
	// grpc's unix resolver wants an absolute path, and so do error messages
	// that tell an operator which file is missing.
	abs, err := filepath.Abs(cfg.Socket)
	if err != nil {
		return cfg, fmt.Errorf("containerd socket %q: %w", cfg.Socket, errdefs.ErrInvalidArgument)
	}
	cfg.Socket = abs
	if cfg.Namespace == "" {
		cfg.Namespace = DefaultNamespace
	}
	if cfg.ContentDir != "" {
		if cfg.ContentDir, err = filepath.Abs(cfg.ContentDir); err != nil {
			return cfg, fmt.Errorf("containerd content dir %q: %w", cfg.ContentDir, errdefs.ErrInvalidArgument)
		}
	}
	if cfg.DialTimeout < 0 {
		return cfg, fmt.Errorf("containerd dial timeout %v: %w", cfg.DialTimeout, errdefs.ErrInvalidArgument)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return cfg, nil
}

// Client reads containerd's content and image stores. It is safe for
// concurrent use. While containerd is unreachable every method fails fast
// with an error wrapping errdefs.ErrUnavailable, and the client reconnects by
// itself once containerd is back.
type Client struct {
	cfg  Config
	log  *slog.Logger
	conn *grpc.ClientConn
}

// New connects to containerd and checks, within cfg.DialTimeout, that it
// answers. When the socket is missing or containerd does not answer, it
// returns an error wrapping errdefs.ErrUnavailable that says what to do.
// A daemon that must run without containerd uses NewLazy instead.
func New(ctx context.Context, cfg Config) (*Client, error) {
	c, err := NewLazy(cfg)
	if err != nil {
		return nil, err
	}
	if c.cfg.ContentDir != "" {
		if fi, err := os.Stat(c.cfg.ContentDir); err != nil || !fi.IsDir() {
			_ = c.Close()
			return nil, fmt.Errorf("containerd content dir %s is not a directory; mount <containerd root>/io.containerd.content.v1.content or leave it unset: %w",
				c.cfg.ContentDir, errdefs.ErrInvalidArgument)
		}
	}
	if _, err := os.Stat(c.cfg.Socket); errors.Is(err, fs.ErrNotExist) {
		_ = c.Close()
		return nil, c.missingSocket()
	}
	pctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	// WaitForReady so that a containerd still starting up gets the whole
	// timeout instead of failing on the first refused connection.
	if err := c.ping(pctx, grpc.WaitForReady(true)); err != nil {
		_ = c.Close()
		if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
			return nil, fmt.Errorf("containerd at %s did not answer within %v; is containerd running? set --containerd-sock: %w",
				c.cfg.Socket, c.cfg.DialTimeout, errdefs.ErrUnavailable)
		}
		return nil, err
	}
	return c, nil
}

// NewLazy returns a client that connects on first use. It fails only on an
// invalid Config; a missing socket shows up as errdefs.ErrUnavailable from
// the methods, until containerd starts.
func NewLazy(cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ns := cfg.Namespace
	conn, err := grpc.NewClient("unix://"+cfg.Socket,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			// gRPC's default backoff grows to two minutes; a restarted
			// containerd should be picked up within seconds.
			Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
			MinConnectTimeout: cfg.DialTimeout,
		}),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize), grpc.MaxCallSendMsgSize(maxMsgSize)),
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(withNamespace(ctx, ns), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(withNamespace(ctx, ns), desc, cc, method, opts...)
		}),
	)
	if err != nil {
		return nil, fmt.Errorf("containerd socket %s: %w: %w", cfg.Socket, err, errdefs.ErrInvalidArgument)
	}
	return &Client{cfg: cfg, log: cfg.Logger, conn: conn}, nil
}

// withNamespace sets the containerd namespace header, replacing any other.
func withNamespace(ctx context.Context, ns string) context.Context {
	md, ok := metadata.FromOutgoingContext(ctx)
	if !ok {
		return metadata.AppendToOutgoingContext(ctx, namespaceHeader, ns)
	}
	md = md.Copy()
	md.Set(namespaceHeader, ns)
	return metadata.NewOutgoingContext(ctx, md)
}

// Close releases the connection. Blobs opened through the API fail afterwards.
func (c *Client) Close() error {
	return c.conn.Close()
}

// Socket returns the socket path in use, for status output.
func (c *Client) Socket() string { return c.cfg.Socket }

// Namespace returns the containerd namespace in use.
func (c *Client) Namespace() string { return c.cfg.Namespace }

// Ping checks that containerd answers, for readiness and status.
func (c *Client) Ping(ctx context.Context) error {
	return c.ping(ctx)
}

func (c *Client) ping(ctx context.Context, opts ...grpc.CallOption) error {
	_, err := versionapi.NewVersionClient(c.conn).Version(ctx, &emptypb.Empty{}, opts...)
	return c.rpcErr(err, "containerd version")
}

// Version returns containerd's version and revision strings.
func (c *Client) Version(ctx context.Context) (version, revision string, err error) {
	resp, err := versionapi.NewVersionClient(c.conn).Version(ctx, &emptypb.Empty{})
	if err != nil {
		return "", "", c.rpcErr(err, "containerd version")
	}
	return resp.Version, resp.Revision, nil
}

// rpcErr turns a gRPC error into an errdefs one, prefixed by what was asked.
// Unavailability gets the operator-facing explanation.
func (c *Client) rpcErr(err error, what string) error {
	if err == nil {
		return nil
	}
	err = errgrpc.ToNative(err)
	if errdefs.IsUnavailable(err) {
		if _, serr := os.Stat(c.cfg.Socket); errors.Is(serr, fs.ErrNotExist) {
			return fmt.Errorf("%s: %w", what, c.missingSocket())
		}
		return fmt.Errorf("%s: containerd at %s: %w", what, c.cfg.Socket, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func (c *Client) missingSocket() error {
	return fmt.Errorf("containerd socket %s: no such file; is containerd running? set --containerd-sock: %w",
		c.cfg.Socket, errdefs.ErrUnavailable)
}
