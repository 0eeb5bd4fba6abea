// Package enclaveclient is the host's connection to the enclave: one
// multiplexed protocol connection that redials with backoff when it drops.
//
// While the enclave is unreachable, calls fail fast (within FailFast, default
// one second) with an error matching protocol.ErrUnavailable, so HTTP routes can
// answer 503 instead of hanging. When the enclave comes back the next redial
// succeeds and service resumes without restarting the host.
//
// # The enclave's Info
//
// The client owns the host's one copy of the enclave's state: the Info (public
// keys, policy, manifest) read on every new connection. [Client.Info] returns
// that snapshot; it is replaced whole on reconnection, never modified, so a
// reader may keep it and cache what it derives from it (the JWKS, the discovery
// document), keyed by the snapshot's pointer. Nothing else on the host keeps its
// own copy.
//
// # The enclave's clock
//
// Every info call (on connection, and each keep-alive) carries the enclave's
// own time, time_ms. The client compares it with the midpoint of its own send
// and receive times and keeps the difference, enclave minus host, as
// [Client.ClockOffset]; the round trip bounds the error to half its length.
// When the offset's size passes ClockOffsetWarn (default 2s) the client logs one
// warning, and one info line when it comes back within, not one per
// measurement. The enclave never takes time from the host: this only compares,
// so that an operator sees a drifting clock before tokens' iat and exp do.
//
// # A sealed enclave
//
// An enclave whose seed is sealed by KMS answers info with seed =
// needs_unseal and refuses everything else until the host unseals it. On such
// a connection the client calls [Config.Unseal] (host/sealedseed provides
// one), then reads the Info again; until that succeeds the enclave counts as
// unreachable.
//
// # The audit log on connect
//
// Config.OnConnect runs on every new connection (after the unseal, if any)
// before anything else may use it: the host presents its audit log there
// (audit.Resume), since the enclave mints nothing until it has. The Info is
// read again after it, so that the snapshot names the audit log the enclave
// keeps (its checkpoint verifier key is chosen by that first audit_resume).
package enclaveclient

import (
	"context"
	"errors"
	"fmt"
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
	// KeepAlive is how often an idle connection is exercised with an info
	// call (default 60s), so that the enclave's idle timeout (--idle-timeout,
	// default 5m) never closes it under a request about to be sent. It must
	// stay well below the enclave's idle timeout.
	KeepAlive time.Duration
	// ClockOffsetWarn is how far the enclave's clock may be from the host's
	// before the client logs a warning (default 2s; see ClockOffset).
	ClockOffsetWarn time.Duration
	// Unseal, if set, is called on a new connection whose Info says the
	// enclave's seed is sealed (protocol.SeedNeedsUnseal), with that
	// connection's Call, within UnsealTimeout (default 2m). The Info is read
	// again once it returns. Without it such an enclave counts as unreachable.
	Unseal        func(ctx context.Context, call CallFunc) error
	UnsealTimeout time.Duration
	// OnConnect, if set, runs on each new connection after info (and unseal)
	// and before any other call may use it (the host resumes the audit log
	// there: audit.Resume). If it fails, the connection is dropped and
	// redialed.
	OnConnect func(ctx context.Context, call CallFunc) error
	Logger    *slog.Logger
}

// CallFunc performs one enclave operation, like [Client.Call].
type CallFunc func(ctx context.Context, op protocol.Op, req, resp any) error

// Client is a reconnecting enclave client. It is safe for concurrent use.
type Client struct {
	cfg Config
	log *slog.Logger

	mu      sync.Mutex
	cur     *protocol.Client       // nil while disconnected
	ready   chan struct{}          // closed when cur becomes non-nil; replaced on disconnect
	info    *protocol.InfoResponse // replaced, never modified
	lastErr error
	clock   clockState

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
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 60 * time.Second
	}
	if cfg.ClockOffsetWarn <= 0 {
		cfg.ClockOffsetWarn = 2 * time.Second
	}
	if cfg.UnsealTimeout <= 0 {
		cfg.UnsealTimeout = 2 * time.Minute
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
		c.keepAlive(pc)
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

// keepAlive returns when pc is done or the client is closed; meanwhile it
// calls info every KeepAlive so the connection is never idle at the enclave.
// A failed keep-alive closes pc, and the loop redials.
func (c *Client) keepAlive(pc *protocol.Client) {
	t := time.NewTicker(c.cfg.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-pc.Done():
			return
		case <-c.ctx.Done():
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(c.ctx, 10*time.Second)
			var info protocol.InfoResponse
			sent := time.Now()
			err := pc.Call(ctx, protocol.OpInfo, protocol.InfoRequest{}, &info)
			received := time.Now()
			cancel()
			if err != nil && c.ctx.Err() == nil {
				c.log.Warn("enclave keep-alive failed; redialing", "err", err)
				pc.Close()
				return
			}
			if err == nil {
				c.measureClock(info, sent, received)
			}
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
	sent := time.Now()
	if err := pc.Call(ctx, protocol.OpInfo, protocol.InfoRequest{}, &info); err != nil {
		pc.Close()
		return nil, protocol.InfoResponse{}, err
	}
	received := time.Now()
	if info.ProtocolVersion != protocol.Version {
		pc.Close()
		return nil, protocol.InfoResponse{}, protocol.Errorf(protocol.CodeUnsupportedVersion, "enclave speaks protocol version %d, host %d", info.ProtocolVersion, protocol.Version)
	}
	c.measureClock(info, sent, received)
	if info.Seed == protocol.SeedNeedsUnseal {
		if err := c.unseal(pc, &info); err != nil {
			pc.Close()
			return nil, protocol.InfoResponse{}, err
		}
	}
	if c.cfg.OnConnect != nil {
		if err := c.cfg.OnConnect(ctx, pc.Call); err != nil {
			pc.Close()
			return nil, protocol.InfoResponse{}, err
		}
		// What OnConnect did may change the Info: the first audit_resume
		// chooses the log whose checkpoint verifier key it reports.
		info = protocol.InfoResponse{}
		if err := pc.Call(ctx, protocol.OpInfo, protocol.InfoRequest{}, &info); err != nil {
			pc.Close()
			return nil, protocol.InfoResponse{}, err
		}
	}
	return pc, info, nil
}

// unseal runs the Unseal hook on a sealed enclave's connection and reads its
// Info again.
func (c *Client) unseal(pc *protocol.Client, info *protocol.InfoResponse) error {
	if c.cfg.Unseal == nil {
		return errors.New("the enclave's seed is sealed (nitro mode) and this host is not configured to unseal it")
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.cfg.UnsealTimeout)
	defer cancel()
	if err := c.cfg.Unseal(ctx, pc.Call); err != nil {
		return fmt.Errorf("failed to unseal the enclave's seed: %w", err)
	}
	*info = protocol.InfoResponse{} // decoding leaves absent fields as they were
	if err := pc.Call(ctx, protocol.OpInfo, protocol.InfoRequest{}, info); err != nil {
		return err
	}
	if info.Seed != "" {
		return fmt.Errorf("the enclave still reports seed %q after unseal", info.Seed)
	}
	return nil
}

// clockState is the last clock comparison, guarded by Client.mu.
type clockState struct {
	offset   time.Duration // enclave minus host
	measured bool
	off      bool // |offset| > ClockOffsetWarn: the warning has been logged
}

// measureClock compares the enclave's time in info with the midpoint of the
// host's send and receive times around the call that returned it, and logs
// when the offset crosses ClockOffsetWarn either way. Only the loop goroutine
// calls it.
func (c *Client) measureClock(info protocol.InfoResponse, sent, received time.Time) {
	if info.Time == 0 {
		return // an enclave that does not report its time
	}
	mid := sent.Add(received.Sub(sent) / 2)
	offset := time.UnixMilli(info.Time).Sub(mid.Round(0)) // wall clocks: Round(0) drops the monotonic reading
	off := offset > c.cfg.ClockOffsetWarn || offset < -c.cfg.ClockOffsetWarn
	c.mu.Lock()
	was := c.clock.off
	c.clock = clockState{offset: offset, measured: true, off: off}
	c.mu.Unlock()
	switch {
	case off && !was:
		c.log.Warn("enclave clock differs from the host's", "offset_ms", offset.Milliseconds(),
			"limit_ms", c.cfg.ClockOffsetWarn.Milliseconds(), "clock_source", info.ClockSource)
	case !off && was:
		c.log.Info("enclave clock back within limit", "offset_ms", offset.Milliseconds(),
			"limit_ms", c.cfg.ClockOffsetWarn.Milliseconds(), "clock_source", info.ClockSource)
	}
}

// ClockOffset returns the enclave's clock minus the host's, as last measured
// (on connection and at each keep-alive), and false before the first
// measurement. It stays at its last value while disconnected.
func (c *Client) ClockOffset() (time.Duration, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.clock.offset, c.clock.measured
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

// Info returns the snapshot of the enclave's Info read on the last
// connection, and false before the first. The snapshot is shared: callers must
// not modify it. A reconnection replaces it with a new pointer, so a pointer
// comparison tells whether it changed.
func (c *Client) Info() (*protocol.InfoResponse, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.info, c.info != nil
}

// Connected reports whether a connection is up now (for /readyz).
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur != nil
}
