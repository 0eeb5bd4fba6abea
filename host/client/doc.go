// Package client is a Go client for the AgentKeys broker's HTTP API, and the
// reader and writer of the agent's two local files: the wallet key file and the
// session file. The agentkeys CLI is built on it, and tests use it to drive a
// real broker.
//
// # Start here
//
// Make a [Client] with [New], giving the broker's base URL, which is its OIDC
// issuer (such as "https://broker.example.com"). Sign in with a wallet key to
// get a [Session], then trade the session for short-lived JWTs:
//
//	c, err := client.New("https://broker.example.com")
//	key, _, err := client.LoadWalletFile(walletPath)
//	s, err := c.SignIn(ctx, key, client.SignInOptions{})
//	jwt, err := c.MintJWT(ctx, s.Token, "", 0) // default audience and TTL
//	// jwt.Token is an ES256 JWT for sts.amazonaws.com.
//	err = c.Revoke(ctx, s.Token) // or RevokeSession, to learn whether it was revoked already
//
// # Signing in
//
// [Client.SignIn] asks the broker for a nonce, builds an EIP-4361 (Sign-In with
// Ethereum) message naming the broker — domain = the host[:port] of BaseURL,
// URI = BaseURL + "/v1/session" — and signs it with the wallet key as
// personal_sign (EIP-191) does. The broker's enclave accepts the message only if
// its domain and URI name the broker's issuer, so BaseURL must be the issuer URL
// itself, not some other address that reaches the same server.
//
// # Errors
//
// When the broker answers with an error, the methods return an [*Error] with the
// HTTP status and, from the broker's {"error","message"} body, its kind (such as
// "unauthorized" or "bad_request") and message. Use errors.As to branch on it:
// a 401 means the session is missing, expired or revoked, and the caller should
// sign in again. Other errors (the broker could not be reached, an answer was
// malformed) are plain wrapped errors; a network failure wraps a *url.Error.
//
// No error from this package contains a session token, a JWT or a key.
//
// # Files
//
// A wallet key file, made by [NewWalletFile] and read by [LoadWalletFile], is
// a JSON object with the EIP-55 checksummed address and the secp256k1 private
// key as 64 hex digits (no 0x prefix; 0x is accepted when reading):
//
//	{
//	  "address": "0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1",
//	  "private_key": "0101010101010101010101010101010101010101010101010101010101010101"
//	}
//
// It is created with mode 0600 and never overwritten. A session file, written
// by [SaveSession] and read by [LoadSession], holds what the broker answered to
// a sign-in, with the expiration in unix seconds:
//
//	{"session": "eyJ…", "wallet": "0x1a64…", "expiration": 1767323045}
//
// It is written with mode 0600, atomically (a temporary file renamed into
// place). Both files are credentials: the loaders refuse a file that group or
// others may access. Both are read strictly (shared/strictjson): a key given
// twice, in another case or unknown is an error.
package client
