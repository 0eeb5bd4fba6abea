// Package enclaveclient is the host's connection to the enclave: one
// multiplexed protocol connection that redials with backoff when it drops.
//
// While the enclave is unreachable, calls fail fast (within FailFast, default
// one second) with an error matching protocol.ErrUnavailable, so HTTP routes can
// answer 503 instead of hanging. When the enclave comes back the next redial
// succeeds and service resumes without restarting the host.
//
// The client also caches the enclave's Info (public keys, policy), refreshed on
// every new connection, so the JWKS and discovery routes are served from memory.
// Config.OnConnect runs on every new connection before anything else may use
// it: the host presents its audit log there (audit.Resume), since the
// enclave mints nothing until it has.
package enclaveclient

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/agentkeys/broker/shared/protocol"
)

// Config configures a Client.
type Config struct {
	// Dial opens a new connection to the enclave (see protocol.Dialer).
	Dial func(ctx context.Context) (net.Conn, error)
	// FailFast bounds how long a call waits for a connection (default 1s).
	FailFast time.Duration
	// MinBackoff and MaxBackoff bound the redial delay (default 50ms and 2s).
	MinBackoff, MaxBackoff time.Duration
	Logger                 *slog.Logger
	// OnInfo, if set, is called with the enclave's Info after each (re)connection.
	OnInfo func(protocol.InfoResponse)
	// OnConnect, if set, runs on each new connection after info and before
	// any other call may use it (the host resumes the audit log there:
	// audit.Resume). If it fails, the connection is dropped and redialed.
	OnConnect func(ctx context.Context, call func(ctx context.Context, op protocol.Op, req, resp any) error) error
}

// Client is a reconnecting enclave client. It is safe for concurrent use.
type Client struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	cur     *protocol.Client // nil while disconnected
	ready   chan struct{}    // closed when cur becomes non-nil; replaced on disconnect
	info    *protocol.InfoResponse
	lastErr error

	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// New starts a client that connects in the background.
func New(cfg Config) *Client {
	if cfg.FailFast <= 0 {
		cfg.FailFast = time.Second
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 50 * time.Millisecond
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 2 * time.Second
	}
	c := &Client{cfg: cfg, log: cfg.Logger, ready: make(chan struct{}), done: make(chan struct{})}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.lastErr = errors.New("not connected yet")
	c.ctx, c.cancel = context.WithCancel(context.Background())
	go c.loop()
	return c
}

// Close stops redialing and closes the connection.
func (c *Client) Close() error {
	c.cancel()
	<-c.done
	return nil
}

func (c *Client) loop() {
	defer close(c.done)
	backoff := c.cfg.MinBackoff
	for c.ctx.Err() == nil {
		pc, info, err := c.connect()
		if err != nil {
			c.mu.Lock()
			c.lastErr = err
			c.mu.Unlock()
			c.log.Warn("enclave unreachable; retrying", "err", err, "retry_in", backoff.String())
			select {
			case <-time.After(backoff):
			case <-c.ctx.Done():
				return
			}
			backoff = min(2*backoff, c.cfg.MaxBackoff)
			continue
		}
		backoff = c.cfg.MinBackoff
		c.mu.Lock()
		c.cur, c.info = pc, &info
		close(c.ready)
		c.mu.Unlock()
		c.log.Info("connected to the enclave", "mode", info.Mode, "signing_kid", info.SigningKid)
		if c.cfg.OnInfo != nil {
			c.cfg.OnInfo(info)
		}
		select {
		case <-pc.Done():
		case <-c.ctx.Done():
		}
		c.mu.Lock()
		c.cur = nil
		c.ready = make(chan struct{})
		c.lastErr = pc.Err()
		c.mu.Unlock()
		pc.Close()
		if c.ctx.Err() == nil {
			c.log.Warn("lost the enclave connection; redialing", "err", pc.Err())
		}
	}
}

func (c *Client) connect() (*protocol.Client, protocol.InfoResponse, error) {
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	conn, err := c.cfg.Dial(ctx)
	if err != nil {
		return nil, protocol.InfoResponse{}, err
	}
	pc := protocol.NewClient(conn)
	var info protocol.InfoResponse
	if err := pc.Call(ctx, protocol.OpInfo, protocol.InfoRequest{}, &info); err != nil {
		pc.Close()
		return nil, protocol.InfoResponse{}, err
	}
	if info.ProtocolVersion != protocol.Version {
		pc.Close()
		return nil, protocol.InfoResponse{}, protocol.Errorf(protocol.CodeUnsupportedVersion, "enclave speaks protocol version %d, host %d", info.ProtocolVersion, protocol.Version)
	}
	if c.cfg.OnConnect != nil {
		if err := c.cfg.OnConnect(ctx, pc.Call); err != nil {
			pc.Close()
			return nil, protocol.InfoResponse{}, err
		}
	}
	return pc, info, nil
}

// conn returns the current connection, waiting at most FailFast for one.
func (c *Client) conn(ctx context.Context) (*protocol.Client, error) {
	c.mu.Lock()
	cur, ready := c.cur, c.ready
	c.mu.Unlock()
	if cur != nil {
		return cur, nil
	}
	t := time.NewTimer(c.cfg.FailFast)
	defer t.Stop()
	select {
	case <-ready:
		c.mu.Lock()
		cur = c.cur
		c.mu.Unlock()
		if cur != nil {
			return cur, nil
		}
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c.mu.Lock()
	err := c.lastErr
	c.mu.Unlock()
	return nil, &protocol.Error{Code: protocol.CodeUnavailable, Message: "enclave unreachable: " + errString(err)}
}

func errString(err error) string {
	if err == nil {
		return "connection closed"
	}
	return err.Error()
}

// Call performs one enclave operation. A connection failure surfaces as an
// error matching protocol.ErrUnavailable.
func (c *Client) Call(ctx context.Context, op protocol.Op, req, resp any) error {
	pc, err := c.conn(ctx)
	if err != nil {
		return err
	}
	return pc.Call(ctx, op, req, resp)
}

// Info returns the Info cached from the last connection, if any.
func (c *Client) Info() (protocol.InfoResponse, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.info == nil {
		return protocol.InfoResponse{}, false
	}
	return *c.info, true
}

// Connected reports whether a connection is up now (for /readyz).
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}
