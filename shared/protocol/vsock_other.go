//go:build !linux

package protocol

import (
	"context"
	"errors"
	"net"
)

var errNoVsock = errors.New("vsock is available on linux only")

func listenVsock(port uint32) (net.Listener, error) { return nil, errNoVsock }

func dialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) { return nil, errNoVsock }
