//! The codes a client reports in an event's `errorcode`, and what a failed response maps to.

/// An update_engine `ActionExitCode` (`action_processor.h`): what a client reports in an
/// event's `errorcode`. Only the codes Keel meets are named; flag bits may be OR'ed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ActionCode(pub u32);

impl ActionCode {
    pub const SUCCESS: ActionCode = ActionCode(0);
    pub const ERROR: ActionCode = ActionCode(1);
    pub const POSTINSTALL_RUNNER_ERROR: ActionCode = ActionCode(5);
    pub const PAYLOAD_HASH_MISMATCH: ActionCode = ActionCode(10);
    pub const PAYLOAD_SIZE_MISMATCH: ActionCode = ActionCode(11);
    pub const PAYLOAD_PUBKEY_VERIFICATION: ActionCode = ActionCode(18);
    pub const INVALID_METADATA_MAGIC: ActionCode = ActionCode(21);
    /// `kActionCodeOmahaRequestEmptyResponseError`: a zero-byte body.
    pub const OMAHA_EMPTY_RESPONSE: ActionCode = ActionCode(30);
    /// `kActionCodeOmahaRequestXMLParseError`: not well-formed XML.
    pub const OMAHA_XML_PARSE_ERROR: ActionCode = ActionCode(31);
    /// `kActionCodeOmahaResponseInvalid`: well-formed, but a required part is missing or wrong.
    pub const OMAHA_RESPONSE_INVALID: ActionCode = ActionCode(34);
    /// Flatcar's rollback code (`3/0 errorcode=44` after falling back to the old slot).
    pub const ROLLBACK: ActionCode = ActionCode(44);
    /// HTTP errors are reported as this base + the HTTP status.
    pub const OMAHA_HTTP_RESPONSE_BASE: ActionCode = ActionCode(2000);
    /// Flag bit: the request went to a test Omaha URL (e.g. 268435490 = 34 | this).
    pub const TEST_OMAHA_URL_FLAG: u32 = 1 << 28;
}
