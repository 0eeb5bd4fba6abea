package protocol

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
)

// Client multiplexes concurrent calls over one connection to the enclave. It is
// safe for concurrent use. When the connection fails, every pending and future
// call returns an error matching ErrUnavailable and Done is closed; make a new
// Client on a new connection to recover.
type Client struct {
	conn net.Conn

	wmu sync.Mutex // serialises frame writes

	mu      sync.Mutex
	nextID  uint64
	pending map[uint64]chan *Response
	err     error // set once the connection has failed
	done    chan struct{}
}

// NewClient starts a client on conn. It owns conn from now on.
func NewClient(conn net.Conn) *Client {
	c := &Client{conn: conn, pending: make(map[uint64]chan *Response), done: make(chan struct{})}
	go c.readLoop()
	return c
}

// Done is closed when the connection has failed or the client was closed.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the connection failed, or nil while it is up.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close closes the connection; pending calls fail with ErrUnavailable.
func (c *Client) Close() error {
	c.fail(errors.New("client closed"))
	return nil
}

func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = &Error{Code: CodeUnavailable, Message: err.Error()}
	pending := c.pending
	c.pending = nil
	close(c.done)
	c.mu.Unlock()
	c.conn.Close()
	for _, ch := range pending {
		close(ch)
	}
}

func (c *Client) readLoop() {
	for {
		frame, err := ReadFrame(c.conn)
		if err != nil {
			c.fail(fmt.Errorf("connection to the enclave lost: %w", err))
			return
		}
		resp, err := DecodeResponse(frame)
		if err != nil {
			c.fail(err)
			return
		}
		c.mu.Lock()
		ch, ok := c.pending[resp.ID]
		delete(c.pending, resp.ID)
		c.mu.Unlock()
		if !ok {
			c.fail(fmt.Errorf("protocol: response to unknown request id %d", resp.ID))
			return
		}
		ch <- resp // buffered
	}
}

// Call sends op with req and decodes the answer into resp (which may be nil when
// the response has no body of interest). A wire error is returned as *Error.
func (c *Client) Call(ctx context.Context, op Op, req, resp any) error {
	body, err := Marshal(req)
	if err != nil {
		return fmt.Errorf("protocol: failed to encode %s request: %w", op, err)
	}
	ch := make(chan *Response, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return err
	}
	c.nextID++
	id := c.nextID
	c.pending[id] = ch
	c.mu.Unlock()

	frame, err := Marshal(&Request{Version: Version, ID: id, Op: op, Body: body})
	if err != nil {
		c.forget(id)
		return fmt.Errorf("protocol: failed to encode %s request: %w", op, err)
	}
	if len(frame) > MaxFrameSize {
		c.forget(id)
		return Errorf(CodeBadRequest, "%s request is larger than the frame limit", op)
	}
	c.wmu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	}
	err = WriteFrame(c.conn, frame)
	c.conn.SetWriteDeadline(noDeadline)
	c.wmu.Unlock()
	if err != nil {
		// A partial write leaves the stream unusable.
		c.fail(fmt.Errorf("failed to send to the enclave: %w", err))
		return c.Err()
	}

	select {
	case r, ok := <-ch:
		if !ok {
			return c.Err()
		}
		if r.Err != nil {
			return r.Err
		}
		if resp == nil {
			return nil
		}
		if err := Unmarshal(r.Body, resp); err != nil {
			return fmt.Errorf("protocol: malformed %s response: %w", op, err)
		}
		return nil
	case <-ctx.Done():
		// Leave the id pending: the server answers every id exactly once, and the
		// read loop drops the late answer into the buffered channel. Deleting it
		// here would make that answer look like a protocol violation.
		return ctx.Err()
	}
}

func (c *Client) forget(id uint64) {
	c.mu.Lock()
	if c.pending != nil {
		delete(c.pending, id)
	}
	c.mu.Unlock()
}
