// Package eif reads and writes AWS Nitro Enclaves image files (EIF) and computes their
// measurements: the PCR0, PCR1, PCR2 and PCR8 values that an enclave booted from the image reports
// in its attestation document, and that `nitro-cli build-enclave` and `nitro-cli describe-eif`
// print.
//
// Start with Parse, then Image.Measurements:
//
//	f, _ := os.Open("enclave.eif")
//	st, _ := f.Stat()
//	im, err := eif.Parse(f, st.Size())  // checks the whole file, streaming it once
//	m, err := im.Measurements()         // m.PCR0 ... m.PCR8, lowercase hex
//	json.Marshal(m)                     // the "Measurements" object nitro-cli prints
//
// To compare with nitro-cli's output, read it with ParseMeasurementsJSON. To make an image (tests,
// the reproducible build), use Write; the enclave's own image is made by package eif/build.
//
// # Reference
//
// The format and the measurements follow the Rust crate aws/aws-nitro-enclaves-image-format at
// commit 935dc626530bfcfd1dff634187372cb0b0f778a0 (version 0.5.0 plus build fixes; its src/ and
// README differ from tag v0.5.0 only in two unrelated lines): EifHeader, EifSectionHeader,
// EifSectionType, EIF_MAGIC, MAX_NUM_SECTIONS and CURRENT_VERSION in src/defs/mod.rs; the
// hashers in src/defs/eif_hasher.rs; EifReader::from_eif in src/utils/eif_reader.rs; get_pcrs,
// EifBuilder and its CRC in src/utils/mod.rs; and the specification in its README. The output
// shape follows aws/aws-nitro-enclaves-cli at commit 2950b3699d81ad304df2458915688a552734833d
// (release 1.5.0): EnclaveBuildInfo and EifDescribeInfo in src/common/json_output.rs. That
// nitro-cli release depends on version 0.7 of the crate, which the snapshot read here does not
// contain; docs/eif.md says what that leaves unchecked.
//
// # Format
//
// An EIF is a 548-byte header followed by sections, each a 12-byte section header and its data.
// All integers are big-endian. The header holds the magic ".eif", the format version (2 to 4 are
// published; 4 is current), flags (bit 0: aarch64), default memory and CPUs (unused), the number
// of sections (at most 32) and a table of 32 section offsets and sizes: offset i is where section
// i's header starts, size i the length of its data. The header ends with the CRC-32 (IEEE) of the
// whole file except the CRC field itself. A section header holds the type (1 kernel, 2 cmdline,
// 3 ramdisk, 4 signature, 5 metadata), reserved flags and the data size.
//
// Parse accepts a file only if:
//   - the magic matches, the version is 2, 3 or 4, and there are at most 32 sections;
//   - section 0 starts right after the header, each following section right after the previous
//     one's data, and the last one ends at the end of the file (the reference reader walks the
//     file this way and ignores the offsets, QEMU's EIF loader seeks to the offsets: requiring
//     both to agree means both kinds of reader see the same sections, and the CRC covers every
//     byte);
//   - every section header's type is one of the five above and its size equals the table's;
//   - there is exactly one kernel and one cmdline, at least one ramdisk and none before the
//     kernel, at most one signature (at most 32768 bytes) and one metadata section, and a
//     metadata section in a version 4 file;
//   - the CRC matches.
//
// Every size and offset is checked against the file size before anything is read, so a
// hostile header cannot make Parse allocate or read past the file.
//
// # Measurements
//
// Each PCR is a TPM-style extension of a zeroed register: SHA384(48 zero bytes ‖ D), where D is
// the SHA-384 of the concatenated data (never the headers) of these sections, in file order:
//
//	PCR0  kernel, cmdline, every ramdisk ("image")
//	PCR1  kernel, cmdline, the first ramdisk ("bootstrap")
//	PCR2  every ramdisk after the first ("application"); with one ramdisk, D = SHA384("")
//	PCR8  the DER of the signing certificate, only for a signed image
//
// The metadata and signature sections are in no PCR but PCR8's certificate. The signature
// section is CBOR, as serde_cbor encodes the reference's Vec<PcrSignature>: an array of maps
// {"signing_certificate": PEM bytes, "signature": COSE_Sign1 bytes}, each byte string written as
// a CBOR array of small integers. PCR8 hashes the DER of the first entry's certificate, which
// the reference obtains by parsing the PEM with OpenSSL and re-encoding it; this package takes
// the first CERTIFICATE block and requires that Go's x509 parser accept it, so the DER it hashes
// is the certificate's own strict DER, which OpenSSL's re-encoding reproduces. The COSE signature
// is not verified (describe-eif's "SignatureCheck"): that is a statement about who signed, not
// about what the enclave runs.
package eif
