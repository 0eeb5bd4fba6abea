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
// renumber it. Proof is what the Merkle log below is for.
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
// one file. [Postgres] ([OpenPostgres]) keeps the same contract in a
// PostgreSQL database that several hosts share: Append returns only after
// the commit is durable (every connection is refused unless
// synchronous_commit is on and the server runs with fsync), and a failed
// transaction fails every record in it. Each host writes a log of its own,
// named when the store is opened ([CheckLogName]; "" is the default log);
// Seq counts the records of each log in commit order. The writer moves the
// log's tip (size and last seq) with a compare-and-swap at the start of each
// transaction, so two stores writing one log never store two batches at one
// index: the one that finds the tip moved reads it again and retries, and a
// batch that then disagrees with the stored log fails with [ErrLogMismatch].
// Any log in the database can be read by name ([Logs]), for serving tiles
// and proofs of every host's log. [Memory] implements the contract in memory
// for tests, and [Memory.SetFailure] makes it fail like a broken database.
//
// # The Merkle log
//
// Besides the records (the operator's queryable view), the store holds the
// tamper-evident view: the audit log whose right edge the enclave keeps
// (enclave/logtree), an RFC 6962 Merkle tree (golang.org/x/mod/sumdb/tlog) of
// entries in the format of shared/auditlog, with checkpoints the enclave
// signs (C2SP tlog-checkpoint). The enclave is its only writer: it builds
// each mint's entry, gives the JWT its index as jti, and answers with the
// batch the entry landed in (protocol.AuditBatch: entries, the stored hashes
// they add, the signed checkpoint). The host asserts what only it saw (STS
// outcomes, refusals of verified wallets) through audit_append, and those
// entries say host_asserted.
//
// A record that carries a batch (Record.Batch, with Record.Logged naming its
// entry) is stored with it in one transaction, and the batch is stored
// exactly once and in order: a batch already stored is compared with the
// stored checkpoint and not written again; one that starts past the stored
// size waits, within the same writer, until the batches before it arrive
// (bounded: [DefaultLogGapWait], see [WithLogGapWait]; past it the Append
// fails with [ErrLogGap]). Such a gap is nearly always a race between the
// callers of two consecutive batches, so the SQLite writer, before it
// commits a transaction in which a batch would wait, waits a little for the
// batches that fill the gap ([DefaultLogGapGrace], see [WithLogGapGrace]) and
// commits them together: one fsync rather than two. Before storing a batch the store checks that its
// hashes are those of its entries on top of the stored right edge and that
// its checkpoint names the tree they make ([ErrLogMismatch] otherwise), so
// the stored tree always agrees with its latest checkpoint. The tables are
// log_entries (index, entry bytes), log_hashes (tlog stored-hash index,
// hash), log_checkpoints (tree size, signed note); audit_records.tree_index
// and leaf_hash say where a record's entry is. [LogReader] reads them, for
// tiles and proofs. Opening a store checks that the log's tables agree with
// each other; a version 2 file gains them.
//
// # When a batch is not stored
//
// The enclave logs an entry before the host can store it, so a store that
// fails (or a caller that loses the enclave's answer) leaves the enclave's
// log ahead of the store. The rule is: no credential, and the enclave cannot
// run ahead silently.
//
//   - The credential whose record failed is not returned (audit_error).
//   - Every request that appends tells the enclave how many entries the
//     store holds durably ([Log.LogSize], the log_size field). The enclave
//     keeps every batch past that size in memory, and refuses to log (so to
//     mint) once 4096 entries are unacknowledged.
//   - The host, once a record with a batch failed (or a batch waited in
//     vain), fetches what the store lacks from the enclave ([Resume], the
//     audit_resume operation: the store's latest checkpoint and right edge,
//     answered with the missing batches) before it mints again; until that
//     succeeds it mints nothing. [Store.Ping] fails with ErrLogGap while a
//     batch waited in vain, so /readyz names the audit log.
//
// Why this way: the log must hold every entry the enclave logged, including
// those of credentials the host never released, and it must never fork. The
// enclave is the one place that knows the batches, so the host asks it for
// them again rather than inventing anything; storing a batch is idempotent,
// so asking twice is harmless. The acknowledgement bound keeps the enclave's
// memory bounded and turns a store that stops storing into an enclave that
// stops minting.
//
// On every new enclave connection the host runs Resume first: a restarted
// enclave continues the log from the store's checkpoint (which it checks
// against its own key and the right edge), and refuses to mint until then.
//
// # Named logs
//
// Resume names the log the store holds (the host's --audit-log-name; "" is
// the default log): several host+enclave pairs of one enclave image each
// keep their own log, origin "<issuer host+path>/audit/NAME", signed by the
// same key under that name (see shared/auditlog). The store does not know the
// name; the enclave checks that the store's checkpoint is the named log's,
// and refuses a name other than the one it was first resumed with.
package audit
