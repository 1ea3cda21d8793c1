//! What the server says it does, as bazel-remote says it, so clients tuned
//! for bazel-remote behave the same here: SHA-256, zstd for ByteStream and
//! the batch calls, action results that may be written, one cache priority,
//! absolute symlinks allowed.

use bazel_remote_apis::build::bazel::semver::SemVer;
use tonic::{Request, Response, Status};

use super::{MAX_BATCH, Reapi, re};

#[tonic::async_trait]
impl re::capabilities_server::Capabilities for Reapi {
    async fn get_capabilities(
        &self,
        _request: Request<re::GetCapabilitiesRequest>,
    ) -> Result<Response<re::ServerCapabilities>, Status> {
        // The instance name changes nothing: every instance has the same.
        let limit = self.core.uploads.limit.min(self.core.pool.capacity());
        let cache = re::CacheCapabilities {
            digest_functions: vec![re::digest_function::Value::Sha256 as i32],
            action_cache_update_capabilities: Some(re::ActionCacheUpdateCapabilities {
                update_enabled: true,
            }),
            cache_priority_capabilities: Some(re::PriorityCapabilities {
                priorities: vec![re::priority_capabilities::PriorityRange {
                    min_priority: 0,
                    max_priority: 0,
                }],
            }),
            max_batch_total_size_bytes: MAX_BATCH as i64,
            symlink_absolute_path_strategy: re::symlink_absolute_path_strategy::Value::Allowed
                as i32,
            supported_compressors: vec![re::compressor::Value::Zstd as i32],
            supported_batch_update_compressors: vec![re::compressor::Value::Zstd as i32],
            max_cas_blob_size_bytes: i64::try_from(limit).unwrap_or(0),
            ..Default::default()
        };
        Ok(Response::new(re::ServerCapabilities {
            cache_capabilities: Some(cache),
            low_api_version: Some(SemVer { major: 2, ..Default::default() }),
            high_api_version: Some(SemVer { major: 2, minor: 3, ..Default::default() }),
            ..Default::default()
        }))
    }
}
