// Package claims is the one definition of the claims of an OIDC JWT the enclave
// mints: their names, their JSON encoding and the AWS session tags they carry.
//
// The enclave fills an [OIDC] and signs its JSON encoding; the STS emulator
// (internal/stsserver) reads the tags claim with [AWSTags]; tests that look
// inside a minted JWT name the claims with the constants here. A relying party
// (AWS STS) sees exactly the bytes [OIDC] encodes to, field order included:
//
//	{"iss":"https://broker.example.com",
//	 "sub":"agentkeys:agent:0x…",
//	 "aud":"sts.amazonaws.com",
//	 "iat":…,"nbf":…,"exp":…,"jti":"…",
//	 "agentkeys_user_wallet":"0x…",
//	 "https://aws.amazon.com/tags":{"principal_tags":{"agentkeys_user_wallet":["0x…"]},
//	                                "transitive_tag_keys":["agentkeys_user_wallet"]}}
//
// testdata/oidc.json is the golden encoding of a fixed claim set; a change to
// the type that changes the bytes a relying party sees fails its test.
//
// Session tokens are a different claim set, private to the enclave (they are
// verified only by the enclave that signed them).
package claims
