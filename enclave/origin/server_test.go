package origin

import (
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

// readClosed waits (a minute at most) for the server to close c.
func readClosed(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the server left the connection open")
	}
}

// TestServerLimits: a connection beyond MaxConns is closed at once, and a
// fresh client is served once the slot is free.
func TestServerLimits(t *testing.T) {
	o, _ := newOrigin(t, "https://issuer.example.com", true)
	addr := serve(t, o, &Server{MaxConns: 1, ReadTimeout: 5 * time.Minute})

	held, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// While held occupies the only slot, others are closed; once it is
	// closed, the slot is free again.
	refused := false
	for i := 0; i < 100 && !refused; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err = c.Read(make([]byte, 1))
		c.Close()
		var ne net.Error
		refused = err != nil && !(errors.As(err, &ne) && ne.Timeout())
	}
	if !refused {
		t.Fatal("no connection was refused beyond MaxConns")
	}
	held.Close()

	deadline := time.Now().Add(time.Minute)
	for {
		c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "issuer.example.com"})
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a fresh client after the cap: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestServerSilentClientTimesOut: a half-sent ClientHello is closed after
// ReadTimeout.
func TestServerSilentClientTimesOut(t *testing.T) {
	o, _ := newOrigin(t, "https://issuer.example.com", true)
	addr := serve(t, o, &Server{ReadTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{0x16, 3, 1, 0, 200, 1}) // a ClientHello that never ends
	readClosed(t, c)
}
