//! Action results: the key [`ac_key`] names for the instance and action,
//! holding the serialized `ActionResult`, as Bazel's HTTP cache stores it,
//! so both doors share them.
//!
//! A result is served only while every blob it names is in the CAS (output
//! files, the files of output directories' trees, stdout and stderr):
//! otherwise it is NOT_FOUND and the action runs again, so a build that
//! downloads nothing (`--remote_download_minimal`) never fails on a result
//! whose outputs were evicted. A hit marks all of them used, so they stay
//! together.

use larder::{Digest, Error, PutOptions, Store, Target};
use prost::Message as _;
use tonic::{Request, Response, Status};

use super::{Blob, Reapi, check_digest_function, present, re, read_found, read_whole, status_of};
use crate::metrics::{Metrics, Service};
use crate::paths::ac_key;

/// The largest action result or output tree read to check a result: larger
/// ones are not served (the action runs again) rather than held in memory.
const MAX_READ: u64 = 64 << 20;

#[tonic::async_trait]
impl re::action_cache_server::ActionCache for Reapi {
    async fn get_action_result(
        &self,
        request: Request<re::GetActionResultRequest>,
    ) -> Result<Response<re::ActionResult>, Status> {
        let request = request.into_inner();
        check_digest_function(request.digest_function)?;
        let action = Blob::required(request.action_digest.as_ref(), "action_digest")?;
        let key = key(&request.instance_name, &action)?;
        let found = self
            .core
            .pool
            .run(move |store| {
                let Some(found) = store.open_checked(&Target::Key(key))? else { return Ok(None) };
                if found.size > MAX_READ {
                    return Ok(None);
                }
                let digest = found.digest;
                // Not an action result (ccache's `bazel` layout keeps its own
                // entries under `ac/` over HTTP): a miss here.
                let Ok(result) = re::ActionResult::decode(&read_found(&found)?[..]) else {
                    return Ok(None);
                };
                Ok(complete(store, &result)?.map(|outputs| (digest, result, outputs)))
            })
            .await
            .map_err(|e| status_of(&e))?;
        let counters = self.core.metrics.grpc(Service::ActionCache);
        match found {
            Some((digest, result, outputs)) => {
                self.core.pool.note(Some(digest));
                self.core.pool.touch(outputs);
                Metrics::add(&counters.hits, 1);
                Ok(Response::new(result))
            }
            None => {
                self.core.pool.note(None);
                Metrics::add(&counters.misses, 1);
                Err(Status::not_found(format!(
                    "no action result for {action} under the instance name `{}`",
                    request.instance_name.escape_debug()
                )))
            }
        }
    }

    async fn update_action_result(
        &self,
        request: Request<re::UpdateActionResultRequest>,
    ) -> Result<Response<re::ActionResult>, Status> {
        let request = request.into_inner();
        check_digest_function(request.digest_function)?;
        let action = Blob::required(request.action_digest.as_ref(), "action_digest")?;
        let result = request
            .action_result
            .ok_or_else(|| Status::invalid_argument("action_result is missing"))?;
        let key = key(&request.instance_name, &action)?;
        if crate::app::is_index_key(&key) || key.starts_with(larder::INTERNAL_KEY_PREFIX) {
            return Err(Status::permission_denied(format!(
                "the instance name `{}` names keys that only the package index or larder itself write; choose another",
                request.instance_name
            )));
        }
        self.keep_empty().await?;
        let bytes = result.encode_to_vec();
        Metrics::add(&self.core.metrics.bytes_in, bytes.len() as u64);
        let what = format!("the action result for {action}");
        self.core
            .pool
            .run(move |store| {
                let opts = PutOptions { key: Some(key), ..Default::default() };
                store.put_checked(&mut &bytes[..], &what, None, &opts)
            })
            .await
            .map_err(|e| status_of(&e))?;
        Metrics::add(&self.core.metrics.uploads, 1);
        Ok(Response::new(result))
    }
}

/// The key of an action's result under an instance name.
fn key(instance: &str, action: &Blob) -> Result<String, Status> {
    ac_key(instance, &action.digest.hex()).map_err(Status::invalid_argument)
}

/// Every blob `result` names, if the CAS holds them all; `None` if one is
/// missing (or an output tree cannot be read).
fn complete(store: &Store, result: &re::ActionResult) -> Result<Option<Vec<Digest>>, Error> {
    let mut named = Vec::new();
    let mut trees = Vec::new();
    let mut add = |digest: Option<&re::Digest>| -> bool {
        match digest.map(Blob::of) {
            Some(Ok(blob)) => {
                named.push(blob);
                true
            }
            Some(Err(_)) => false,
            None => true,
        }
    };
    let mut valid = true;
    for file in &result.output_files {
        valid &= add(file.digest.as_ref());
    }
    valid &= add(result.stdout_digest.as_ref());
    valid &= add(result.stderr_digest.as_ref());
    for dir in &result.output_directories {
        valid &= add(dir.root_directory_digest.as_ref());
        match dir.tree_digest.as_ref().map(Blob::of) {
            Some(Ok(tree)) => trees.push(tree),
            Some(Err(_)) => valid = false,
            None => {}
        }
    }
    if !valid {
        return Ok(None);
    }
    for tree in &trees {
        if tree.size > MAX_READ {
            return Ok(None);
        }
        let Some(bytes) = read_whole(store, tree, MAX_READ)? else { return Ok(None) };
        let Ok(tree) = re::Tree::decode(&bytes[..]) else { return Ok(None) };
        for dir in tree.root.iter().chain(&tree.children) {
            for file in &dir.files {
                match file.digest.as_ref().map(Blob::of) {
                    Some(Ok(blob)) => named.push(blob),
                    Some(Err(_)) => return Ok(None),
                    None => {}
                }
            }
        }
    }
    named.extend(trees);
    if !present(store, &named)?.into_iter().all(|p| p) {
        return Ok(None);
    }
    Ok(Some(named.into_iter().map(|b| b.digest).collect()))
}
