//! The one error type of the uploader. Each variant maps to an exit code of `keel-upload-ami`
//! of the shared vocabulary (keel-cli-support's `exit`), so scripts can tell bad input from an unreachable service from a refusal.

use std::path::PathBuf;

use keel_cli_support::exit;

use aws_sdk_ebs::config::http::HttpResponse;
use aws_sdk_ebs::error::{ProvideErrorMetadata, SdkError};

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// The image or an argument is wrong: the user must fix it.
    #[error("{0}")]
    Input(String),
    #[error("{}: {source}", path.display())]
    Image {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No credentials, or the endpoint could not be reached at all.
    #[error("{0}")]
    Environment(String),
    /// An AWS call failed: `call` names it, `detail` carries AWS's error code and message.
    #[error("{call} failed: {detail}")]
    Aws {
        call: String,
        detail: String,
        /// Trying the same call again may succeed (5xx, throttling, a dropped connection).
        transient: bool,
    },
    /// The endpoint did not answer (refused, reset, timed out).
    #[error("{call} failed: no answer from the endpoint: {detail}")]
    Unreachable { call: String, detail: String },
    /// The snapshot ended in AWS's `error` state or did not complete in time.
    #[error("{0}")]
    Snapshot(String),
    /// SIGINT or SIGTERM arrived before the AMI was registered.
    #[error("interrupted before the AMI was registered")]
    Interrupted,
}

impl UploadError {
    /// The process exit code for this error (the shared vocabulary).
    pub fn exit_code(&self) -> i32 {
        match self {
            UploadError::Input(_) | UploadError::Image { .. } => exit::USAGE,
            UploadError::Environment(_) | UploadError::Unreachable { .. } => exit::ENVIRONMENT,
            UploadError::Aws { .. } | UploadError::Snapshot(_) => exit::FAILED,
            UploadError::Interrupted => exit::INTERRUPTED,
        }
    }

    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UploadError::Aws {
                transient: true,
                ..
            } | UploadError::Unreachable { .. }
        )
    }
}

/// Service errors that a later attempt may not repeat. ResourceNotFound is among them because
/// a snapshot just started may not yet be visible to PutSnapshotBlock.
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "RequestThrottledException",
    "InternalServerException",
    "ServiceUnavailableException",
    "ConcurrentLimitExceededException",
    "ResourceNotFoundException",
];

/// Describes an SDK error the way a user can act on it: AWS's error code and message when the
/// service answered, the transport's own reason when it did not. A connection that could not be
/// made at all is an environment problem, not a refusal.
pub fn aws_error<E>(call: &str, err: SdkError<E, HttpResponse>) -> UploadError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &err {
        SdkError::ServiceError(se) => {
            let e = se.err();
            let code = e.code().unwrap_or("UnknownError");
            let message = e.message().unwrap_or("no message");
            let status = se.raw().status().as_u16();
            UploadError::Aws {
                call: call.into(),
                detail: format!("{code}: {message} (HTTP {status})"),
                transient: status >= 500 || status == 429 || TRANSIENT_CODES.contains(&code),
            }
        }
        SdkError::DispatchFailure(df) if df.is_io() || df.is_timeout() => {
            UploadError::Unreachable {
                call: call.into(),
                detail: chain(&err),
            }
        }
        // An answer the SDK could not read (e.g. an XML error where the API speaks JSON): its
        // status and the start of its body still say what the service meant.
        SdkError::ResponseError(re) => {
            let raw = re.raw();
            let status = raw.status().as_u16();
            let body = raw
                .body()
                .bytes()
                .map(|b| {
                    String::from_utf8_lossy(b)
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .unwrap_or_default();
            let body: String = body.chars().take(400).collect();
            UploadError::Aws {
                call: call.into(),
                detail: format!(
                    "HTTP {status}, an answer the SDK cannot read ({}): {body}",
                    chain(&err)
                ),
                transient: status >= 500 || status == 429,
            }
        }
        SdkError::TimeoutError(_) => UploadError::Aws {
            call: call.into(),
            detail: chain(&err),
            transient: true,
        },
        SdkError::ConstructionFailure(_) => UploadError::Environment(format!(
            "{call}: could not make the request: {} (are AWS credentials set? the standard chain \
             reads AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws)",
            chain(&err)
        )),
        _ => UploadError::Aws {
            call: call.into(),
            detail: chain(&err),
            transient: false,
        },
    }
}

/// The error and its sources on one line (the SDK's Display alone says only "dispatch failure").
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut src = err.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        src = s.source();
    }
    out
}
