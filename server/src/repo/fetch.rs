//! Getting repository files over http(s) or from file:// URLs: small metadata files
//! with conditional requests, and archives streamed to disk with their size bounded,
//! their SHA-256 checked, and interrupted downloads resumed.

use super::RepoError;
use canopy_protocol::{ArchiveHash, Hasher};
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED, RANGE};
use reqwest::{Client, Response, StatusCode};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use url::Url;

/// How a metadata file was last seen: the validators a conditional request sends.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Validators {
    /// The `ETag` the server gave.
    pub etag: Option<String>,
    /// The `Last-Modified` the server gave.
    pub last_modified: Option<String>,
}

/// What a conditional fetch found.
pub enum Fetched {
    /// The file changed (or was never seen): its bytes and new validators.
    New(Vec<u8>, Validators),
    /// The server says the copy we have is current.
    NotModified,
    /// There is no such file (404 over http, a missing file for file://).
    Missing,
}

/// Fetches files from repositories. Its methods block; several threads may use one
/// fetcher at once.
pub struct Fetcher {
    client: Client,
    runtime: tokio::runtime::Runtime,
    /// How long a connection, an answer's head or a wait for data may take.
    timeout: Duration,
}

/// The slowest average a body may keep once the fetcher's timeout has passed: a server
/// or proxy that trickles (a byte now and then, each within the timeout) is given up
/// on, so a download of SIZE bytes takes at most timeout + SIZE / `MIN_RATE`.
const MIN_RATE: u64 = 16 * 1024;

/// Whether an error means "try again later" rather than "this is wrong".
fn transfer_error(url: &Url, e: reqwest::Error) -> RepoError {
    RepoError::Transfer {
        url: url.to_string(),
        message: error_chain(&e),
    }
}

/// An error with its causes, which reqwest keeps out of its own message.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

fn local_path(url: &Url) -> Result<PathBuf, RepoError> {
    url.to_file_path().map_err(|()| RepoError::Transfer {
        url: url.to_string(),
        message: "not a local path".into(),
    })
}

fn io_error(what: String) -> impl FnOnce(io::Error) -> RepoError {
    move |source| RepoError::Io { what, source }
}

impl Fetcher {
    /// A fetcher whose connections give up after `timeout` without progress.
    pub fn new(timeout: Duration) -> Result<Fetcher, RepoError> {
        // https uses rustls with ring; installing it twice (a second fetcher) is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(io_error("starting the download runtime".into()))?;
        // The client's connector needs the runtime's reactor to exist when it is built.
        let client = {
            let _inside = runtime.enter();
            Client::builder()
                .connect_timeout(timeout)
                .read_timeout(timeout)
                .user_agent(concat!("canopy/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| RepoError::Transfer {
                    url: String::new(),
                    message: error_chain(&e),
                })?
        };
        Ok(Fetcher {
            client,
            runtime,
            timeout,
        })
    }

    /// Fetches a metadata file of at most `limit` bytes, unless the server says
    /// `seen` is still current.
    pub fn fetch(&self, url: &Url, seen: &Validators, limit: u64) -> Result<Fetched, RepoError> {
        if url.scheme() == "file" {
            let path = local_path(url)?;
            return match File::open(&path) {
                Ok(f) => Ok(Fetched::New(
                    read_limited(f, limit, url)?,
                    Validators::default(),
                )),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Fetched::Missing),
                Err(e) => Err(io_error(format!("reading {}", path.display()))(e)),
            };
        }
        let mut req = self.client.get(url.clone());
        if let Some(etag) = &seen.etag {
            req = req.header(IF_NONE_MATCH, etag);
        }
        if let Some(lm) = &seen.last_modified {
            req = req.header(IF_MODIFIED_SINCE, lm);
        }
        let resp = self.send(req, url)?;
        match resp.status() {
            StatusCode::NOT_MODIFIED => Ok(Fetched::NotModified),
            StatusCode::NOT_FOUND | StatusCode::GONE => Ok(Fetched::Missing),
            s if s.is_success() => {
                let header = |name| {
                    resp.headers()
                        .get(name)
                        .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                        .map(str::to_string)
                };
                let validators = Validators {
                    etag: header(ETAG),
                    last_modified: header(LAST_MODIFIED),
                };
                let mut body = Vec::new();
                self.copy_body(resp, &mut body, limit, url, &|_| {})?;
                Ok(Fetched::New(body, validators))
            }
            s => Err(status_error(url, s)),
        }
    }

    /// Downloads an archive to `dest` (resuming a partial `dest` left by an earlier
    /// attempt) and checks its size and SHA-256. A file:// archive is not copied:
    /// its own path is returned once checked. `progress` is told of every chunk.
    pub fn download(
        &self,
        url: &Url,
        dest: &Path,
        size: u64,
        sha256: &ArchiveHash,
        progress: &dyn Fn(u64),
    ) -> Result<PathBuf, RepoError> {
        if url.scheme() == "file" {
            let path = local_path(url)?;
            let file =
                File::open(&path).map_err(io_error(format!("reading {}", path.display())))?;
            let mut hasher = Hasher::new();
            // One byte more than expected is enough to tell a wrong size.
            let got = io::copy(&mut file.take(size + 1), &mut hasher)
                .map_err(io_error(format!("reading {}", path.display())))?;
            progress(got);
            check(url, got, size, &ArchiveHash(hasher.finish()), sha256)?;
            return Ok(path);
        }
        let mut file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(dest)
            .map_err(io_error(format!("opening {}", dest.display())))?;
        let mut have = file
            .metadata()
            .map_err(io_error(format!("reading {}", dest.display())))?
            .len();
        if have > size {
            have = 0;
            file.set_len(0)
                .map_err(io_error(format!("truncating {}", dest.display())))?;
        }
        let send = |from: u64| {
            let mut req = self.client.get(url.clone());
            if from > 0 {
                req = req.header(RANGE, format!("bytes={from}-"));
            }
            self.send(req, url)
        };
        let mut resp = send(have)?;
        if resp.status() == StatusCode::RANGE_NOT_SATISFIABLE {
            // The partial file is complete already, or not a prefix: start again.
            have = 0;
            resp = send(0)?;
        }
        let status = resp.status();
        if !status.is_success() {
            return Err(status_error(url, status));
        }
        let mut hasher = Hasher::new();
        if status == StatusCode::PARTIAL_CONTENT && have > 0 {
            file.rewind()
                .map_err(io_error(format!("reading {}", dest.display())))?;
            io::copy(&mut (&file).take(have), &mut hasher)
                .map_err(io_error(format!("reading {}", dest.display())))?;
            progress(have);
        } else {
            // A server that ignores Range sends the whole file.
            have = 0;
            file.set_len(0)
                .map_err(io_error(format!("truncating {}", dest.display())))?;
        }
        let mut tee = Tee {
            file: &mut file,
            hasher: &mut hasher,
        };
        let got = have + self.copy_body(resp, &mut tee, size - have, url, progress)?;
        file.sync_data()
            .map_err(io_error(format!("writing {}", dest.display())))?;
        if let Err(e) = check(url, got, size, &ArchiveHash(hasher.finish()), sha256) {
            // A wrong file must not be resumed from next time.
            let _ = fs::remove_file(dest);
            return Err(e);
        }
        Ok(dest.to_path_buf())
    }
}

impl Fetcher {
    /// Sends `req` and waits for the answer's head, for at most twice the timeout
    /// (connecting and reading each have the timeout; a head that trickles in does not
    /// get longer).
    fn send(&self, req: reqwest::RequestBuilder, url: &Url) -> Result<Response, RepoError> {
        let limit = 2 * self.timeout;
        // Inside the runtime: sending arms timers, which need its reactor.
        self.runtime
            .block_on(async move { tokio::time::timeout(limit, req.send()).await })
            .map_err(|_| RepoError::Transfer {
                url: url.to_string(),
                message: format!(
                    "no answer within {} s (the server or a proxy on the way is stalled; try again or another mirror)",
                    limit.as_secs()
                ),
            })?
            .map_err(|e| transfer_error(url, e))
    }

    /// Copies a response body, refusing more than `limit` bytes, telling `progress`
    /// as it goes; returns the count copied. A body slower than [`MIN_RATE`] on
    /// average, once the timeout has passed, is given up on.
    fn copy_body(
        &self,
        mut resp: Response,
        w: &mut impl Write,
        limit: u64,
        url: &Url,
        progress: &dyn Fn(u64),
    ) -> Result<u64, RepoError> {
        let mut total = 0u64;
        let start = tokio::time::Instant::now();
        loop {
            let deadline =
                start + self.timeout + Duration::from_secs_f64(total as f64 / MIN_RATE as f64);
            // The timer is made inside the runtime, whose clock it needs.
            let next = self
                .runtime
                .block_on(async { tokio::time::timeout_at(deadline, resp.chunk()).await });
            let Ok(next) = next else {
                return Err(RepoError::Transfer {
                    url: url.to_string(),
                    message: format!(
                        "too slow: {total} bytes in {} s, under {} KiB/s on average (the server or a proxy on the way is stalled; try again or another mirror)",
                        start.elapsed().as_secs(),
                        MIN_RATE / 1024
                    ),
                });
            };
            let Some(chunk) = next.map_err(|e| transfer_error(url, e))? else {
                break;
            };
            total += chunk.len() as u64;
            if total > limit {
                return Err(too_long(url, limit));
            }
            w.write_all(&chunk)
                .map_err(io_error(format!("writing the download of {url}")))?;
            progress(chunk.len() as u64);
        }
        Ok(total)
    }
}

fn too_long(url: &Url, limit: u64) -> RepoError {
    RepoError::Mismatch {
        url: url.to_string(),
        expected: format!("at most {limit} bytes"),
        got: "more".into(),
    }
}

fn status_error(url: &Url, status: StatusCode) -> RepoError {
    RepoError::Transfer {
        url: url.to_string(),
        message: format!("server answered {status}"),
    }
}

fn check(
    url: &Url,
    got: u64,
    size: u64,
    hash: &ArchiveHash,
    want: &ArchiveHash,
) -> Result<(), RepoError> {
    if got != size || hash != want {
        return Err(RepoError::Mismatch {
            url: url.to_string(),
            expected: format!("{size} bytes, sha256 {want}"),
            got: format!("{got} bytes, sha256 {hash}"),
        });
    }
    Ok(())
}

/// Reads all of a local file, refusing more than `limit` bytes.
fn read_limited(r: impl Read, limit: u64, url: &Url) -> Result<Vec<u8>, RepoError> {
    let mut out = Vec::new();
    r.take(limit + 1)
        .read_to_end(&mut out)
        .map_err(io_error(format!("reading {url}")))?;
    if out.len() as u64 > limit {
        return Err(too_long(url, limit));
    }
    Ok(out)
}

/// Writes to a file and a hasher at once.
struct Tee<'a> {
    file: &'a mut File,
    hasher: &'a mut Hasher,
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write_all(buf)?;
        self.hasher.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}
