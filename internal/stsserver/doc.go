// Package stsserver is a local AWS Security Token Service (STS) endpoint for
// tests. There is no AWS in CI, so tests of the broker's AWS credential minting
// point the real aws-sdk-go-v2 STS client at this server through its
// BaseEndpoint, and the server answers the way STS would: same wire protocol,
// same error codes and HTTP statuses, the same checks.
//
// # Using it
//
// Describe the roles of the account, start the server, point the SDK at it:
//
//	srv := stsserver.New(stsserver.Options{
//		Roles: []stsserver.Role{{
//			ARN:            "arn:aws:iam::123456789012:role/agentkeys-data-role",
//			ProviderIssuer: issuerURL, // byte for byte what the JWTs carry in iss
//			RequireTag:     "agentkeys_user_wallet",
//		}},
//		AccessKeys: []stsserver.AccessKey{{ID: "AKIA…", Secret: "…"}}, // for AssumeRole
//		HTTPClient: issuer.Client(), // trusts the test issuer's TLS certificate
//	})
//	endpoint := srv.Start(t) // or serve srv.Handler() yourself
//	client := sts.New(sts.Options{BaseEndpoint: &endpoint, Region: "us-east-1",
//		Credentials: aws.AnonymousCredentials{}})
//
// Then assert on what happened: [Server.Calls] lists every request that named
// a supported action (successful or not), [Server.Issued] looks up the
// credentials the server handed out, with their principal tags, and
// [Server.FailNext] makes the next calls of an action fail with a chosen STS
// error.
//
// # Wire protocol
//
// The AWS Query protocol, version 2011-06-15: a form-encoded POST (or a GET with
// the same parameters in the query string) carrying Action and Version. Success
// is 200 with an XML document <ActionResponse><ActionResult>…</ActionResult>
// <ResponseMetadata><RequestId>…</RequestId></ResponseMetadata></ActionResponse>
// in the https://sts.amazonaws.com/doc/2011-06-15/ namespace; failure is
// <ErrorResponse><Error><Type>Sender|Receiver</Type><Code>…</Code>
// <Message>…</Message></Error><RequestId>…</RequestId></ErrorResponse> with the
// status STS uses for that code (400 for most Sender errors; 403 for
// AccessDenied, InvalidClientTokenId, SignatureDoesNotMatch,
// MissingAuthenticationToken, ExpiredToken, IDPRejectedClaim and
// RegionDisabledException; 500/503 for Receiver errors). Every response carries
// x-amzn-RequestId, and a Date header from Options.Now so the SDK's clock-skew
// correction sees the server's clock. Request bodies are limited to 64 KiB.
//
// # AssumeRoleWithWebIdentity
//
// Anonymous (no signature). The checks, in this order (AWS's, as far as it can
// be observed from outside):
//
//  1. Parameters: RoleArn (20–2048 chars), RoleSessionName (2–64 chars of
//     [\w+=,.@-]), WebIdentityToken (4–20000 chars), DurationSeconds
//     (900–43200) — else ValidationError, "N validation error(s) detected: …".
//  2. The token must be a compact JWS whose alg is ES256, ES384, ES512, RS256,
//     RS384 or RS512 — else InvalidIdentityToken "The ID Token provided is not
//     a valid JWT. (You may see this error if you sent an Access Token)".
//  3. Its iss must equal, byte for byte, the ProviderIssuer of some role (the
//     account's IAM OIDC providers); a trailing slash is a different issuer —
//     else InvalidIdentityToken "No OpenIDConnect provider found in your
//     account for <iss>".
//  4. The server fetches <iss>/.well-known/openid-configuration and then its
//     jwks_uri with Options.HTTPClient, every time (no cache). A connection
//     failure or timeout is IDPCommunicationError (which the SDK retries); a
//     non-200 answer, an unparsable document, or no key for the token's kid and
//     alg is InvalidIdentityToken "Couldn't retrieve verification key from your
//     identity provider,  please reference AssumeRoleWithWebIdentity
//     documentation for requirements" (the double space is AWS's).
//  5. The signature must verify with that key — else InvalidIdentityToken.
//  6. aud (a string or an array) must contain a client ID registered for the
//     provider (the Audience of a role trusting it) — else InvalidIdentityToken
//     "Incorrect token audience".
//  7. exp must be in the future — else ExpiredTokenException "Token expired:
//     current date/time N must be before the expiration date/timeM" (AWS's
//     spacing); nbf and iat must not be more than a minute in the future, sub
//     must be present — else InvalidIdentityToken.
//  8. The "https://aws.amazon.com/tags" claim, if present, must be
//     {"principal_tags": {key: [one value]}, "transitive_tag_keys": [keys]}
//     within STS's tag limits — else InvalidIdentityToken.
//  9. The role's trust policy: the role exists, trusts this provider, the
//     token's aud contains the role's Audience, and the RequireTag session tag
//     is present (the Null condition on aws:RequestTag/<key>) — else
//     AccessDenied "Not authorized to perform sts:AssumeRoleWithWebIdentity".
//  10. DurationSeconds must not exceed the role's MaxSessionDuration — else
//     ValidationError "The requested DurationSeconds exceeds the
//     MaxSessionDuration set for this role.".
//
// The answer carries Credentials (an ASIA… key id, a secret, a session token and
// an RFC 3339 Expiration), AssumedRoleUser (arn:aws:sts::ACCOUNT:assumed-role/
// ROLE/SESSION and AROA…:SESSION), SubjectFromWebIdentityToken (sub), Audience,
// Provider (the provider's ARN, arn:aws:iam::ACCOUNT:oidc-provider/HOST/PATH, as
// AWS answers for OIDC) and SourceIdentity (from the
// "https://aws.amazon.com/source_identity" claim) when there is one.
//
// # AssumeRole and GetCallerIdentity
//
// Both require a complete SigV4 signature (Authorization header, algorithm
// AWS4-HMAC-SHA256, service sts), verified with the secret of a known access
// key: Options.AccessKeys, or temporary credentials this server issued (with
// X-Amz-Security-Token). No signature is MissingAuthenticationToken; a
// malformed Authorization header is IncompleteSignature; an unknown key or a
// wrong session token is InvalidClientTokenId; an expired session is
// ExpiredToken; a wrong signature, scope or a signing time more than five
// minutes from Options.Now is SignatureDoesNotMatch.
//
// AssumeRole takes RoleArn, RoleSessionName, DurationSeconds, SourceIdentity,
// Tags.member.N.Key/Value and TransitiveTagKeys.member.N (at most 50 tags, keys
// 1–128 and values 0–256 characters, keys unique ignoring case). The caller must
// be allowed by the role's TrustedPrincipals and the RequireTag tag must be
// among the session tags — else AccessDenied "User: … is not authorized to
// perform: sts:AssumeRole on resource: …". Role chaining (calling with
// credentials this server issued) limits DurationSeconds to one hour and
// carries the caller's transitive tags (which may not be set again:
// InvalidParameterValue) and source identity (which may not change:
// AccessDenied) into the new session.
//
// GetCallerIdentity answers Account, Arn and UserId of the signing principal
// (for issued credentials, the assumed-role ARN and AROA…:SESSION).
//
// # What differs from AWS
//
//   - Only the three actions above; others are InvalidAction.
//   - Policy, PolicyArns, ExternalId, SerialNumber, TokenCode and ProviderId are
//     accepted and ignored; no permissions policy is evaluated, so
//     sts:TagSession and session policies always pass. PackedPolicySize is
//     not returned.
//   - The trust policy is the Role fields, nothing more. AssumeRole with an
//     empty TrustedPrincipals trusts every configured access key.
//   - http:// issuers are refused unless Options.AllowHTTPIssuer is set (AWS
//     requires https); loopback issuers work, which AWS could never reach.
//   - Discovery and JWKS are fetched on every call; AWS caches them, so a key
//     rotation is visible here at once and at AWS only later.
//   - AWS has been seen to answer InvalidIdentityToken, not IDPCommunicationError,
//     when the issuer times out; callers should treat both as "the issuer could
//     not be reached or verified".
//   - Error messages are AWS's where they are well known (those quoted above);
//     others are descriptive but may not match AWS's text. Callers should branch
//     on codes, never on messages.
//   - Presigned (query-string) SigV4, SigV4a and the regional/global endpoint
//     distinction are not reproduced; any region in the credential scope is
//     accepted.
//   - An oversized body is 413 RequestEntityTooLarge.
package stsserver
