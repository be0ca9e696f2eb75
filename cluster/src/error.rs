//! [`ClusterError`]: why a cluster operation gave no answer of its own.

/// Why a directory, liveness or link operation could not decide.
///
/// Every operation is bounded in time; running out of it is [`TimedOut`](Self::TimedOut), an
/// answer like any other (the relay refuses the upgrade with 503 rather than wait).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The operation did not complete within its timeout.
    #[error("cluster operation timed out")]
    TimedOut,
    /// NATS refused or failed the operation (the text is NATS's, for logs).
    #[error("cluster operation failed: {0}")]
    Nats(String),
    /// This instance does not hold its cluster lease (it fenced itself off, or is shutting
    /// down): it must not claim or serve anything until it holds one again.
    #[error("this instance does not hold its cluster lease")]
    NoLease,
    /// A setting cannot work (e.g. a lease that is not a whole number of seconds).
    #[error("invalid cluster setting: {0}")]
    Config(String),
}

impl ClusterError {
    /// A NATS error, kept as text (async-nats errors are generic over their kind).
    pub(crate) fn nats(error: impl std::fmt::Display) -> Self {
        ClusterError::Nats(error.to_string())
    }
}

/// Runs `operation` for at most `limit`: its own result, or [`ClusterError::TimedOut`].
pub(crate) async fn bounded<T>(
    limit: std::time::Duration,
    operation: impl Future<Output = Result<T, ClusterError>>,
) -> Result<T, ClusterError> {
    tokio::time::timeout(limit, operation)
        .await
        .unwrap_or(Err(ClusterError::TimedOut))
}
