//! One error type for every backend: a kind a program can branch on, and a message that
//! keeps etcd's own text ("etcdserver: requested lease not found") when the server sent one.

use std::fmt;

/// What went wrong, coarse enough to branch on. The C ABI maps each kind to one
/// `etcdc_status`; new kinds are only ever added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ErrorKind {
    InvalidArgument,
    NotFound,
    CompareFailed,
    Compacted,
    FutureRevision,
    TooLarge,
    TooManyOps,
    Unavailable,
    Timeout,
    Canceled,
    NoLeader,
    PermissionDenied,
    Auth,
    NoSpace,
    TooManyRequests,
    FailedPrecondition,
    DataLoss,
    Unsupported,
    Internal,
    Closed,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

// etcd's error texts (api/v3rpc/rpctypes) decide the kind before the gRPC code does:
// several distinct etcd errors share one gRPC code.
const BY_TEXT: &[(&str, ErrorKind)] = &[
    ("required revision has been compacted", ErrorKind::Compacted),
    (
        "required revision is a future revision",
        ErrorKind::FutureRevision,
    ),
    ("request is too large", ErrorKind::TooLarge),
    ("message larger than max", ErrorKind::TooLarge),
    ("too many operations in txn request", ErrorKind::TooManyOps),
    ("requested lease not found", ErrorKind::NotFound),
    ("member not found", ErrorKind::NotFound),
    ("key not found", ErrorKind::NotFound),
    ("etcdserver: no leader", ErrorKind::NoLeader),
    ("database space exceeded", ErrorKind::NoSpace),
    // etcdc-node's write-ahead log waiting for disk space.
    ("no space left", ErrorKind::NoSpace),
    ("too many requests", ErrorKind::TooManyRequests),
    ("permission denied", ErrorKind::PermissionDenied),
    ("invalid auth token", ErrorKind::Auth),
    ("authentication failed", ErrorKind::Auth),
    ("user name is empty", ErrorKind::Auth),
    ("revision of auth store is old", ErrorKind::Auth),
];

/// The kind etcd's error text names, if it is one of etcd's.
pub(crate) fn kind_by_text(message: &str) -> Option<ErrorKind> {
    BY_TEXT
        .iter()
        .find(|(text, _)| message.contains(text))
        .map(|&(_, kind)| kind)
}

impl From<tonic::Status> for Error {
    fn from(st: tonic::Status) -> Self {
        use tonic::Code;
        let message = if st.message().is_empty() {
            format!("grpc: {}", st.code().description())
        } else {
            st.message().to_string()
        };
        let by_text = kind_by_text(&message);
        // A broken connection reaches tonic's caller as Unknown "transport error" (with the
        // io/h2 cause as its source): not an answer from the server, so the server is
        // unavailable.
        let transport = (st.code() == Code::Unknown && st.message().starts_with("transport error"))
            // Bytes that are not HTTP/2 (a TLS server's alert to a plaintext client).
            || st.message().starts_with("h2 protocol error");
        let kind = by_text.unwrap_or(match st.code() {
            _ if transport => ErrorKind::Unavailable,
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::InvalidArgument,
            Code::NotFound => ErrorKind::NotFound,
            Code::DeadlineExceeded => ErrorKind::Timeout,
            // etcdc never cancels a call it is still waiting for (a passed deadline drops it),
            // so a cancel that arrives came from the transport or the server going away.
            Code::Cancelled | Code::Unavailable => ErrorKind::Unavailable,
            Code::PermissionDenied => ErrorKind::PermissionDenied,
            Code::Unauthenticated => ErrorKind::Auth,
            Code::ResourceExhausted => ErrorKind::TooManyRequests,
            Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
                ErrorKind::FailedPrecondition
            }
            Code::DataLoss => ErrorKind::DataLoss,
            Code::Unimplemented => ErrorKind::Unsupported,
            Code::Ok | Code::Unknown | Code::Internal => ErrorKind::Internal,
        });
        Error { kind, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_text_decides_before_grpc_code() {
        let e: Error =
            tonic::Status::out_of_range("etcdserver: mvcc: required revision has been compacted")
                .into();
        assert_eq!(e.kind, ErrorKind::Compacted);
        assert_eq!(
            e.message,
            "etcdserver: mvcc: required revision has been compacted"
        );
        let e: Error = tonic::Status::not_found("etcdserver: requested lease not found").into();
        assert_eq!(e.kind, ErrorKind::NotFound);
        let e: Error = tonic::Status::unavailable("etcdserver: no leader").into();
        assert_eq!(e.kind, ErrorKind::NoLeader);
        let e: Error = tonic::Status::out_of_range("etcdserver: too large lease TTL").into();
        assert_eq!(e.kind, ErrorKind::InvalidArgument);
        let e: Error = tonic::Status::unknown("transport error").into();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        let e: Error = tonic::Status::unknown("something else").into();
        assert_eq!(e.kind, ErrorKind::Internal);
        let e: Error = tonic::Status::cancelled("operation was canceled").into();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        let e: Error = tonic::Status::unavailable("").into();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert!(!e.message.is_empty());
    }
}
