// Package audit is the host's audit store: a durable, append-only record of
// every credential the broker mints and every attempt it refuses.
//
// The rule this package exists to enforce is simple: the host hands a
// credential (an OIDC JWT, AWS credentials, a session token) to a caller only
// after the record of it is on stable storage. A handler builds a [Record],
// calls [Store.Append], and returns the credential only if Append returned a
// nil error. Refusals are recorded the same way, with Outcome naming the
// refusal; a handler that fails to record a refusal still refuses.
//
// Start with [OpenSQLite] in the host binary and [NewMemory] in tests of code
// that takes a [Store]:
//
//	store, err := audit.OpenSQLite("/var/lib/agentkeys/audit.db")
//	if err != nil {
//		return err
//	}
//	defer store.Close()
//
//	rec, err := store.Append(ctx, audit.Record{
//		Kind:         audit.KindOIDCJWT,
//		Outcome:      audit.OutcomeOK,
//		Wallet:       resp.Wallet,
//		BearerSHA256: audit.HashBearer(token),
//		Audience:     resp.Audience,
//		TTLSeconds:   resp.ExpiresAt - resp.IssuedAt,
//		Kid:          resp.Kid,
//		JTI:          resp.JTI,
//	})
//	if err != nil {
//		// Fail closed: no record, no credential.
//		return internalError(err)
//	}
//	return writeJWT(w, resp.JWT)
//
// # Records
//
// A [Record] never holds a secret. The bearer token is recorded only as its
// SHA-256 ([HashBearer]), enough to correlate the records of one session and
// useless to replay it; [Record.Validate] refuses any BearerSHA256 that is
// not 64 lowercase hex digits, so a token passed there by mistake is never
// stored. Wallets are lowercase "0x" + 40 hex digits or [WalletUnknown]. Kind
// and Outcome are snake_case names, the ones the host uses are constants here.
//
// Append normalizes what a client can influence rather than refusing it, so
// a hostile request cannot stop its own refusal from being recorded: Time is
// set if zero and cut to microseconds in UTC; Audience, Kid, JTI and Detail
// are made valid UTF-8 without NUL bytes and cut to their maximum lengths
// ([MaxDetailLen] and friends). What a client cannot influence, such as the
// wallet or the bearer hash, is validated, and an invalid record is an error
// wrapping [ErrInvalidRecord]: a bug in the caller, answered with an internal
// error and no credential.
//
// Seq numbers records from 1 in the order they were committed. It is never
// reused, even if rows are removed, so a gap shows that rows were deleted.
// That is evidence, not proof: whoever can write the database file can also
// renumber it. Proof is what the Merkle tree below is for.
//
// # Durability
//
// [SQLite] opens its database in WAL mode with synchronous=FULL: every
// transaction's commit syncs the write-ahead log to the disk (fsync, and
// F_FULLFSYNC on macOS) before it returns. The pragmas are set by the DSN on
// every connection the pool opens, and each new connection is checked and
// refused unless journal_mode is wal and synchronous is FULL, so a pragma
// that silently failed to apply makes OpenSQLite fail rather than lose
// records. The database file is created mode 0600 in a directory created
// 0700; SQLite gives the -wal and -shm files the mode of the database file.
//
// # Group commit
//
// An fsync costs milliseconds on real disks, and one per record would cap
// the whole host at a few hundred mints a second. Instead, one writer
// goroutine owns all writes. Append hands its record to the writer over a
// channel and waits. The writer takes the first record waiting, then every
// other record already queued (up to [DefaultMaxBatch], see [WithMaxBatch]),
// inserts them all in one transaction and commits once: one fsync for the
// batch. Only then does it answer each waiting Append with its Seq. Under
// load, batches grow by themselves and the cost of the fsync is shared;
// with a single caller there is no waiting for a batch to fill.
// [SQLite.Stats] counts commits and records, so the batching can be watched.
//
// # Failing closed
//
// A transaction that fails fails every record in it: each waiting Append
// gets the error, and none of them is reported durable. The error is the
// caller's signal to return no credential.
//
// An error does not prove the record absent. If the caller's context ends
// while it waits, Append returns ctx.Err() at once but the writer still
// commits the record; a commit can also fail after the data reached the
// disk. The guarantee is one way only: every credential handed out has a
// durable record, and the log may also hold records of credentials that
// were never handed out. Readers of the log must allow for that.
//
// After [Store.Close], Append returns [ErrClosed]. Close waits for the
// writer to commit everything already handed to it.
//
// # A file that vanishes
//
// SQLite keeps writing to a database file that was deleted or renamed over
// while it has it open: the records would land in a file that nobody can read
// again and that disappears when the host stops. So the writer holds one
// connection for the life of the store (which keeps the -wal file in place),
// notes which files the database and -wal paths named at open, and stats
// both paths before and after every transaction. Once either names another
// file or none, the store fails closed for good: that batch and every later
// Append and Ping return an error wrapping [ErrFileReplaced], until the host
// is restarted and opens a new log (and someone finds out what removed it).
//
// [Store.Ping] is for /readyz, and it proves that records can be committed:
// it has the writer commit a transaction that rewrites the one row of the
// heartbeat table (not the log) and reads audit_records, sharing the fsync
// with any records committed beside it. A store it cannot write to (the
// writer's connection broken, the file locked by another process, the table
// gone) fails it with [ErrNotWritable].
//
// # Aggregated refusals
//
// Some refusals can be caused by anyone, at any rate: a request with no
// bearer token at all. One record each would let a flood fill the disk.
// [Store.Count] adds such a refusal to a running aggregate instead, one per
// client, kind, outcome and wallet; at the end of each interval
// ([DefaultAggregateInterval], see [WithAggregateInterval]) and on Close, each
// aggregate is appended as one record whose Count is the number of refusals.
// The number of clients with aggregates of their own in one interval is
// bounded ([WithAggregateClients]); the refusals of any further client are
// counted under [OtherClients]. Aggregates are not durable until written, so
// a crash can lose an interval's count. Every other record has Count 1.
//
// # Storage backends
//
// Storage is behind the [Store] interface. SQLite is the default: one host,
// one file. A PostgreSQL implementation, for several hosts sharing one log,
// belongs beside it and must keep the same contract: Append returns only
// after the commit is durable (synchronous_commit on), Seq is assigned by the
// database and strictly increasing, and a failed transaction fails every
// record in it. [Memory] implements the contract in memory for tests, and
// [Memory.SetFailure] makes it fail like a broken database.
//
// # Merkle tree columns
//
// The log is to become tamper-evident: each entry a leaf of an RFC 6962
// Merkle tree (golang.org/x/mod/sumdb/tlog) whose right edge the enclave
// keeps and whose checkpoints it signs. The audit_records table already has
// the two columns this needs, NULL until then:
//
//   - leaf_hash BLOB: the entry's 32-byte RFC 6962 leaf hash,
//     SHA-256(0x00 || entry), over the entry's encoding in shared/.
//   - tree_index INTEGER UNIQUE: the entry's index in the tree, assigned by
//     the enclave (for a minted JWT it is the JWT's log index). It is not
//     seq: seq is the host's own numbering, and refusals the enclave never
//     saw may have none.
//
// Adding them to [Record] and filling them in the writer's transaction will
// need no change to the table.
package audit
