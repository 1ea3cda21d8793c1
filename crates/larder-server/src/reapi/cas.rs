//! The content-addressable storage: which blobs are missing, blobs up and
//! down in batches (each checked against its digest before it is kept), and
//! directory trees a page at a time. Blobs larger than a batch travel by
//! ByteStream.

use std::collections::{HashSet, VecDeque};
use std::pin::Pin;

use bazel_remote_apis::google::rpc;
use futures_util::Stream;
use larder::{Error, ErrorKind, NoProgress, Pending, Store};
use prost::Message as _;
use tonic::{Code, Request, Response, Status};

use super::{Blob, MAX_BATCH, Reapi, check_digest_function, present, re, read_whole, status_of};
use crate::encoding::ZSTD_LEVEL;
use crate::metrics::{Metrics, Service};

/// A stream of answers, as tonic takes them.
type Answers<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Directories in a page of GetTree when the client asks for no size, and
/// the most it may ask for.
const DEFAULT_PAGE: usize = 1000;
const MAX_PAGE: usize = 10_000;

/// Directories read from the store at once while walking a tree.
const TREE_BATCH: usize = 64;

#[tonic::async_trait]
impl re::content_addressable_storage_server::ContentAddressableStorage for Reapi {
    async fn find_missing_blobs(
        &self,
        request: Request<re::FindMissingBlobsRequest>,
    ) -> Result<Response<re::FindMissingBlobsResponse>, Status> {
        let request = request.into_inner();
        check_digest_function(request.digest_function)?;
        let blobs: Vec<Blob> =
            request.blob_digests.iter().map(Blob::of).collect::<Result<_, _>>()?;
        if blobs.iter().any(Blob::is_empty) {
            self.keep_empty().await?;
        }
        let (blobs, present) = self
            .core
            .pool
            .run(move |store| present(store, &blobs).map(|p| (blobs, p)))
            .await
            .map_err(|e| status_of(&e))?;
        let (mut found, mut missing) = (Vec::new(), Vec::new());
        for (blob, present) in blobs.iter().zip(present) {
            if present {
                found.push(blob.digest);
            } else {
                missing.push(blob.proto());
            }
        }
        let counters = self.core.metrics.grpc(Service::Cas);
        Metrics::add(&counters.hits, found.len() as u64);
        Metrics::add(&counters.misses, missing.len() as u64);
        // What a build is about to reference outlives the build: with the
        // bytes left on the server, a blob evicted in between breaks it.
        self.core.pool.touch(found);
        Ok(Response::new(re::FindMissingBlobsResponse { missing_blob_digests: missing }))
    }

    async fn batch_update_blobs(
        &self,
        request: Request<re::BatchUpdateBlobsRequest>,
    ) -> Result<Response<re::BatchUpdateBlobsResponse>, Status> {
        let request = request.into_inner();
        check_digest_function(request.digest_function)?;
        let limit = self.core.uploads.limit.min(self.core.pool.capacity()).min(MAX_BATCH * 4);
        let received: u64 = request.requests.iter().map(|r| r.data.len() as u64).sum();
        Metrics::add(&self.core.metrics.bytes_in, received);
        let outcomes = self
            .core
            .pool
            .run(move |store| Ok(update(store, request.requests, limit)))
            .await
            .map_err(|e| status_of(&e))?;
        let stored = outcomes.iter().filter(|(_, status)| status.code == 0).count();
        Metrics::add(&self.core.metrics.uploads, stored as u64);
        let responses = outcomes
            .into_iter()
            .map(|(digest, status)| re::batch_update_blobs_response::Response {
                digest,
                status: Some(status),
            })
            .collect();
        Ok(Response::new(re::BatchUpdateBlobsResponse { responses }))
    }

    async fn batch_read_blobs(
        &self,
        request: Request<re::BatchReadBlobsRequest>,
    ) -> Result<Response<re::BatchReadBlobsResponse>, Status> {
        let request = request.into_inner();
        check_digest_function(request.digest_function)?;
        let zstd = request.acceptable_compressors.contains(&(re::compressor::Value::Zstd as i32));
        let wanted: Vec<(re::Digest, Result<Blob, Status>)> =
            request.digests.into_iter().map(|d| (d.clone(), Blob::of(&d))).collect();
        let total: u64 = wanted.iter().filter_map(|(_, b)| b.as_ref().ok()).map(|b| b.size).sum();
        if total > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "the batch asks for {total} bytes, more than the {MAX_BATCH} a batch may hold \
                 (max_batch_total_size_bytes): read large blobs with ByteStream"
            )));
        }
        let read = self
            .core
            .pool
            .run(move |store| {
                let mut read = Vec::with_capacity(wanted.len());
                for (digest, blob) in wanted {
                    let outcome = match blob {
                        Ok(blob) => match read_whole(store, &blob, MAX_BATCH) {
                            Ok(Some(data)) => Ok((blob, data)),
                            Ok(None) => Err(Status::not_found(format!("{blob} is not in the CAS"))),
                            Err(e) => Err(status_of(&e)),
                        },
                        Err(status) => Err(status),
                    };
                    read.push((digest, outcome));
                }
                Ok(read)
            })
            .await
            .map_err(|e| status_of(&e))?;
        let counters = self.core.metrics.grpc(Service::Cas);
        let mut responses = Vec::with_capacity(read.len());
        for (digest, outcome) in read {
            let response = match outcome {
                Ok((blob, data)) => {
                    Metrics::add(&counters.hits, 1);
                    self.core.pool.note(Some(blob.digest));
                    Metrics::add(&self.core.metrics.bytes_out, data.len() as u64);
                    let (data, compressor) = if zstd {
                        let compressed = tokio::task::spawn_blocking(move || {
                            zstd::bulk::compress(&data, ZSTD_LEVEL)
                        })
                        .await
                        .map_err(|e| Status::internal(e.to_string()))?
                        .map_err(|e| Status::internal(format!("compressing {blob}: {e}")))?;
                        (compressed, re::compressor::Value::Zstd as i32)
                    } else {
                        (data, re::compressor::Value::Identity as i32)
                    };
                    re::batch_read_blobs_response::Response {
                        digest: Some(digest),
                        data,
                        compressor,
                        status: Some(rpc_status(&Status::ok(""))),
                    }
                }
                Err(status) => {
                    if status.code() == Code::NotFound {
                        Metrics::add(&counters.misses, 1);
                        self.core.pool.note(None);
                    }
                    re::batch_read_blobs_response::Response {
                        digest: Some(digest),
                        status: Some(rpc_status(&status)),
                        ..Default::default()
                    }
                }
            };
            responses.push(response);
        }
        Ok(Response::new(re::BatchReadBlobsResponse { responses }))
    }

    type GetTreeStream = Answers<re::GetTreeResponse>;

    async fn get_tree(
        &self,
        request: Request<re::GetTreeRequest>,
    ) -> Result<Response<Self::GetTreeStream>, Status> {
        let request = request.into_inner();
        check_digest_function(request.digest_function)?;
        let root = Blob::required(request.root_digest.as_ref(), "root_digest")?;
        let page_size = match usize::try_from(request.page_size) {
            Ok(0) | Err(_) => DEFAULT_PAGE,
            Ok(n) => n.min(MAX_PAGE),
        };
        let skip = match request.page_token.as_str() {
            "" => 0,
            token => token.parse::<usize>().map_err(|_| {
                Status::invalid_argument(format!(
                    "page token `{}` is not one this server gave",
                    token.escape_debug()
                ))
            })?,
        };
        let pool = self.core.pool.clone();
        let root_found = pool
            .run(move |store| present(store, &[root]))
            .await
            .map_err(|e| status_of(&e))?
            .first()
            .copied()
            .unwrap_or(false);
        let counters = self.core.metrics.grpc(Service::Cas);
        if !root_found {
            Metrics::add(&counters.misses, 1);
            return Err(Status::not_found(format!("the tree root {root} is not in the CAS")));
        }
        Metrics::add(&counters.hits, 1);
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(async move {
            if let Err(status) = walk(&pool, root, page_size, skip, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        let pages = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|page| (page, rx))
        });
        Ok(Response::new(Box::pin(pages)))
    }

    async fn split_blob(
        &self,
        _request: Request<re::SplitBlobRequest>,
    ) -> Result<Response<re::SplitBlobResponse>, Status> {
        Err(unsupported("SplitBlob"))
    }

    type GetChunkMappingStream = Answers<re::GetChunkMappingResponse>;

    async fn get_chunk_mapping(
        &self,
        _request: Request<re::GetChunkMappingRequest>,
    ) -> Result<Response<Self::GetChunkMappingStream>, Status> {
        Err(unsupported("GetChunkMapping"))
    }

    async fn splice_blob(
        &self,
        _request: Request<re::SpliceBlobRequest>,
    ) -> Result<Response<re::SpliceBlobResponse>, Status> {
        Err(unsupported("SpliceBlob"))
    }

    async fn register_chunk_mapping(
        &self,
        _request: Request<tonic::Streaming<re::RegisterChunkMappingRequest>>,
    ) -> Result<Response<re::RegisterChunkMappingResponse>, Status> {
        Err(unsupported("RegisterChunkMapping"))
    }
}

fn unsupported(call: &str) -> Status {
    Status::unimplemented(format!(
        "{call} is not served here (the capabilities say no blob splitting); send whole blobs"
    ))
}

/// A gRPC status as a batch answer carries it.
fn rpc_status(status: &Status) -> rpc::Status {
    rpc::Status {
        code: status.code() as i32,
        message: status.message().to_string(),
        details: vec![],
    }
}

/// Stores the blobs of a batch: each checked against its digest (after
/// decompressing, when zstd), all staged, then recorded in one transaction.
/// Blobs the store already has are not written again.
fn update(
    store: &Store,
    requests: Vec<re::batch_update_blobs_request::Request>,
    limit: u64,
) -> Vec<(Option<re::Digest>, rpc::Status)> {
    let mut outcomes: Vec<(Option<re::Digest>, Result<(), Status>)> = Vec::new();
    let mut staged: Vec<(usize, Pending<'_>)> = Vec::new();
    let blobs: Vec<Result<Blob, Status>> = requests
        .iter()
        .map(|r| Blob::required(r.digest.as_ref(), "the digest of a request of the batch"))
        .collect();
    let known: Vec<Blob> = blobs.iter().filter_map(|b| b.as_ref().ok()).copied().collect();
    let mut stored = present(store, &known).unwrap_or_default().into_iter();
    for (request, blob) in requests.into_iter().zip(blobs) {
        let index = outcomes.len();
        let outcome = blob.and_then(|blob| {
            if stored.next() == Some(true) {
                return Ok(());
            }
            stage(store, &blob, request.data, request.compressor, limit)
                .map(|pending| staged.push((index, pending)))
        });
        outcomes.push((request.digest, outcome));
    }
    let (indexes, pending): (Vec<usize>, Vec<Pending<'_>>) = staged.into_iter().unzip();
    for (index, result) in indexes.into_iter().zip(store.commit_staged(pending)) {
        if let Err(e) = result {
            outcomes[index].1 = Err(status_of(&e));
        }
    }
    outcomes
        .into_iter()
        .map(|(digest, outcome)| {
            let status = match outcome {
                Ok(()) => rpc_status(&Status::ok("")),
                Err(status) => rpc_status(&status),
            };
            (digest, status)
        })
        .collect()
}

/// Stages one blob of a batch, or says why it is refused.
fn stage<'s>(
    store: &'s Store,
    blob: &Blob,
    data: Vec<u8>,
    compressor: i32,
    limit: u64,
) -> Result<Pending<'s>, Status> {
    if blob.size > limit {
        return Err(Status::invalid_argument(format!(
            "{blob} is larger than a batch takes ({limit} bytes): send it with ByteStream Write"
        )));
    }
    use re::compressor::Value;
    let data = match Value::try_from(compressor) {
        Ok(Value::Identity) => data,
        Ok(Value::Zstd) => zstd::bulk::decompress(&data, blob.size as usize).map_err(|e| {
            Status::invalid_argument(format!(
                "{blob}: its zstd data does not decode to at most {} bytes: {e}; nothing was stored",
                blob.size
            ))
        })?,
        _ => {
            return Err(Status::invalid_argument(format!(
                "{blob}: compressor {compressor} is not served here: only zstd (1) is"
            )));
        }
    };
    if data.len() as u64 != blob.size {
        return Err(Status::invalid_argument(format!(
            "{blob}: its data is {} bytes, not the {} its digest says; nothing was stored",
            data.len(),
            blob.size
        )));
    }
    let what = format!("the blob {blob}");
    let pending = store
        .stage_stream(&mut &data[..], &what, Some(blob.size), &NoProgress)
        .map_err(|e| status_of(&e))?;
    match pending.digest() {
        Some(digest) if digest == blob.digest => Ok(pending),
        other => Err(Status::invalid_argument(format!(
            "{what} hashes to {}, not to {}; nothing was stored",
            other.map_or_else(|| "nothing".into(), |d| d.hex()),
            blob.digest.hex()
        ))),
    }
}

/// Walks the tree under `root` breadth first, each directory once, and sends
/// its directories in pages of `page_size`, from the `skip`th on. A page's
/// token is the number of directories before the next page; a directory
/// missing from the CAS is left out with what is under it.
async fn walk(
    pool: &std::sync::Arc<crate::pool::StorePool>,
    root: Blob,
    page_size: usize,
    skip: usize,
    tx: &tokio::sync::mpsc::Sender<Result<re::GetTreeResponse, Status>>,
) -> Result<(), Status> {
    let mut queue = VecDeque::from([root]);
    let mut seen = HashSet::from([root.digest]);
    let mut returned = 0usize;
    let mut page: Vec<re::Directory> = Vec::new();
    let mut page_bytes = 0u64;
    // A full page is sent once it is known not to be the last.
    let mut full: Option<Vec<re::Directory>> = None;
    while !queue.is_empty() {
        let batch: Vec<Blob> = queue.drain(..queue.len().min(TREE_BATCH)).collect();
        let dirs = pool
            .run(move |store| read_directories(store, &batch))
            .await
            .map_err(|e| status_of(&e))?;
        for dir in dirs {
            for child in &dir.directories {
                if let Some(Ok(blob)) = child.digest.as_ref().map(Blob::of)
                    && seen.insert(blob.digest)
                {
                    queue.push_back(blob);
                }
            }
            returned += 1;
            if returned <= skip {
                continue;
            }
            if let Some(done) = full.take() {
                let token = (returned - 1).to_string();
                let answer = re::GetTreeResponse { directories: done, next_page_token: token };
                if tx.send(Ok(answer)).await.is_err() {
                    return Ok(()); // the client left
                }
            }
            page_bytes += dir.encoded_len() as u64;
            page.push(dir);
            if page.len() >= page_size || page_bytes >= MAX_BATCH {
                full = Some(std::mem::take(&mut page));
                page_bytes = 0;
            }
        }
    }
    let last = full.unwrap_or(page);
    let _ = tx
        .send(Ok(re::GetTreeResponse { directories: last, next_page_token: String::new() }))
        .await;
    Ok(())
}

/// The directories of `batch` that are stored and decode, in order.
fn read_directories(store: &Store, batch: &[Blob]) -> Result<Vec<re::Directory>, Error> {
    let mut dirs = Vec::with_capacity(batch.len());
    for blob in batch {
        match read_whole(store, blob, MAX_BATCH) {
            Ok(Some(bytes)) => {
                if let Ok(dir) = re::Directory::decode(&bytes[..]) {
                    dirs.push(dir);
                }
            }
            Ok(None) => {}
            Err(e) if e.kind() == ErrorKind::InvalidInput => {} // too large to be one
            Err(e) => return Err(e),
        }
    }
    Ok(dirs)
}
