//! The JetStream key-value buckets the cluster uses (the directory's and the liveness's): opened
//! or created with one configuration every instance shares — history 1, file storage, limit
//! markers, and [`Nats::bucket_replicas`] replicas. An existing bucket whose settings differ is
//! updated where JetStream allows it (a stream's replicas can change: the new replicas catch up
//! in the background); where JetStream refuses, opening fails with [`ClusterError::Config`]
//! saying what differs.

use super::connection::Nats;
use super::error::ClusterError;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::StorageType;
use std::time::Duration;

/// How long the marker of an expired or purged entry stays in a bucket (so a watcher that
/// reconnects meanwhile still sees it). Part of the buckets' configuration, which every instance
/// must create identically: a constant, not a setting.
pub(crate) const MARKER_TTL: Duration = Duration::from_secs(60);

/// Opens (or creates) a bucket with the configuration every instance uses, its replicas
/// [`Nats::bucket_replicas`]. An existing bucket whose settings differ is updated to it where
/// JetStream allows (a stream's replicas can change: the new replicas catch up in the
/// background); where it does not, [`ClusterError::Config`] says what differs.
pub(crate) async fn open_bucket(nats: &Nats, bucket: &str) -> Result<kv::Store, ClusterError> {
    let config = kv::Config {
        bucket: bucket.to_owned(),
        history: 1,
        storage: StorageType::File,
        limit_markers: Some(MARKER_TTL),
        num_replicas: nats.bucket_replicas(),
        ..Default::default()
    };
    let jetstream = nats.jetstream();
    // Not found (or not answered): create it; a create racing another instance's with the same
    // configuration succeeds for both.
    let Ok(stream) = jetstream.get_stream(format!("KV_{bucket}")).await else {
        return jetstream
            .create_key_value(config)
            .await
            .map_err(ClusterError::nats);
    };
    let differs = differences(&stream.cached_info().config, &config);
    if differs.is_empty() {
        return jetstream
            .get_key_value(bucket)
            .await
            .map_err(ClusterError::nats);
    }
    match jetstream.update_key_value(config).await {
        Ok(store) => {
            tracing::info!(bucket, differed = %differs, "bucket updated to this instance's settings");
            Ok(store)
        }
        Err(error) if refused(&error) => Err(ClusterError::Config(format!(
            "bucket {bucket} exists with other settings ({differs}) and JetStream refuses to \
             change them: {error}"
        ))),
        // Not answered (no leader yet, a timeout): not a verdict, the caller may try again.
        Err(error) => Err(ClusterError::Nats(format!(
            "bucket {bucket} exists with other settings ({differs}) and could not be updated \
             now: {error}"
        ))),
    }
}

/// Whether a failed bucket update was JetStream's answer about the settings (an API error
/// other than 503 "unavailable"), rather than no answer (a timeout, no responders while a
/// leader is elected), which may pass.
fn refused(error: &async_nats::jetstream::context::UpdateKeyValueError) -> bool {
    use async_nats::jetstream::context::UpdateStreamError;
    use async_nats::jetstream::context::UpdateStreamErrorKind;
    let source = std::error::Error::source(error);
    match source.and_then(|source| source.downcast_ref::<UpdateStreamError>()) {
        Some(update) => match update.kind() {
            UpdateStreamErrorKind::JetStream(api) => api.code() != 503,
            _ => false,
        },
        None => false,
    }
}

/// What differs between an existing bucket's stream settings and `want`, as
/// `setting: has X, want Y` items (empty if nothing this crate relies on differs).
fn differences(has: &async_nats::jetstream::stream::Config, want: &kv::Config) -> String {
    let mut differs = Vec::new();
    if has.num_replicas.max(1) != want.num_replicas.max(1) {
        differs.push(format!(
            "replicas: has {}, want {}",
            has.num_replicas.max(1),
            want.num_replicas.max(1)
        ));
    }
    if has.max_messages_per_subject != want.history {
        differs.push(format!(
            "history: has {}, want {}",
            has.max_messages_per_subject, want.history
        ));
    }
    if has.storage != want.storage {
        let show = |storage: StorageType| match storage {
            StorageType::File => "file",
            StorageType::Memory => "memory",
        };
        differs.push(format!(
            "storage: has {}, want {}",
            show(has.storage),
            show(want.storage)
        ));
    }
    if has.subject_delete_marker_ttl != want.limit_markers {
        let show = |ttl: Option<Duration>| match ttl {
            Some(ttl) => format!("{}s", ttl.as_secs()),
            None => "none".to_owned(),
        };
        differs.push(format!(
            "limit markers: has {}, want {}",
            show(has.subject_delete_marker_ttl),
            show(want.limit_markers)
        ));
    }
    differs.join("; ")
}
