// Package siwe parses, renders, signs and verifies Sign-In with Ethereum
// messages (EIP-4361) signed with personal_sign (EIP-191).
//
// Both halves of the broker use it: the agent CLI builds a [Message], renders
// it with [Message.String] and signs the text with [Sign]; the enclave receives
// that text and signature from an untrusted host and checks them with
// [VerifyText]. Everything the enclave sees passes through the strict parser
// first, so the package treats its input as hostile: it accepts at most
// [MaxMessageSize] bytes, rejects anything the EIP-4361 grammar does not allow,
// and its errors quote at most a short prefix of what they reject.
//
// # Verifying a sign-in (enclave)
//
// Call [VerifyText] with the exact text and signature that arrived. It parses
// the text, recovers the signer from a signature over those same bytes, and
// checks that the signer is the message's address:
//
//	m, wallet, err := siwe.VerifyText(text, sig)
//	if err != nil { ... }
//	// Then check what the signature is for, against what you expect:
//	//   m.Domain (and m.Scheme), m.URI, m.ChainID, m.Nonce (issued by you, single use),
//	//   and m.CheckTime(now, skew).
//
// Compare the domain and the URI's parts byte for byte with what you expect;
// take the URI's parts from [ParseURI], which splits it as written, not from
// net/url, which percent-decodes the host (so "broker%2eexample.com" would
// pass for "broker.example.com") and sets userinfo aside ("evil@…").
//
// A valid signature only proves that the wallet signed this text. It says
// nothing about whether the text was meant for you, or still is: the domain,
// URI, chain, nonce and times are the caller's to check.
//
// Do not verify a received message by parsing it and calling
// [Message.Verify]: that checks a signature over the canonical rendering, which
// is not always the text the wallet signed (see below). VerifyText checks the
// signed bytes themselves.
//
// # Signing in (CLI)
//
// Fill in a [Message], with Address set to
// ChecksumAddress(AddressOf(key.PubKey())) and IssuedAt to the current time
// truncated to the second; call [Message.Validate], which rejects any field
// that would change the layout of the text; then sign the rendering:
//
//	text := m.String()
//	sig := siwe.Sign(key, []byte(text))
//
// Send text and sig as they are. The signature is what personal_sign wallets
// return: 65 bytes r‖s‖v with v 27 or 28.
//
// # Canonical form
//
// [Message.String] writes times in UTC, with second precision when the time
// has no fractional part. [Parse] also accepts other RFC 3339 forms, such as
// "2021-09-30T16:25:24.000Z" (what JavaScript libraries write) or a numeric
// offset, so the text of a parsed message can differ from its rendering while
// describing the same instant. For every message Parse accepts, parsing its
// rendering again yields an equal Message.
//
// # What is rejected
//
// Parse follows the EIP-4361 ABNF with LF line endings only and no trailing
// newline. Where the ABNF allows a form that [Message] cannot represent, Parse
// rejects it rather than silently changing meaning: an empty statement line
// (three empty lines after the address), an empty "Request ID: ", a
// "Resources:" line with no items, and the time 0001-01-01T00:00:00Z, which
// Message uses for "absent". It also rejects a chain ID with leading zeros;
// times with a lowercase "t" or "z", a comma before the fraction, more than
// nine fractional digits or an offset beyond ±23:59 (Go's time.Parse lets the
// last three through); times that would fall outside the years 0000–9999 in
// UTC; and any byte outside printable ASCII.
package siwe
